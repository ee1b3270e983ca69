"""Tests for ``eva_runtime.embodiment``: the calibration YAML files load and keep the bimanual layout, key values
match their documented sources, malformed files are refused with ``<file>: <key path>: <problem>`` messages, the
loaded objects are frozen, and a joint's position range is accepted exactly when min < max (property test).
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from eva_runtime.embodiment import EmbodimentError, JointKind, load_embodiment

REPO = Path(__file__).resolve().parents[1]
CALIBRATION = REPO / "calibration"
CALIBRATION_FILES = sorted(CALIBRATION.glob("*.yaml"))
COBOT = CALIBRATION / "cobot_magic.yaml"
ALOHA = CALIBRATION / "aloha_sim.yaml"
COBOT_TEXT = COBOT.read_text(encoding="utf-8")
COBOT_DATA: dict[str, Any] = yaml.safe_load(COBOT_TEXT)

# Key paths in cobot_magic.yaml as the loader prints them.
J2 = "arms[0](left).joints[1](left_joint2)"
J3 = "arms[0](left).joints[2](left_joint3)"

Builder = Callable[[str], str]


def _mutate(change: Callable[[dict[str, Any]], None]) -> Builder:
    """A builder that parses the YAML text, applies ``change`` to the dict and dumps it back."""

    def build(text: str) -> str:
        data = copy.deepcopy(yaml.safe_load(text))
        change(data)
        return yaml.safe_dump(data, sort_keys=False)

    return build


def _walk(data: Any, keys: tuple[str | int, ...]) -> Any:
    for key in keys:
        data = data[key]
    return data


def _set(keys: tuple[str | int, ...], value: Any) -> Builder:
    return _mutate(lambda data: _walk(data, keys[:-1]).__setitem__(keys[-1], value))


def _delete(keys: tuple[str | int, ...]) -> Builder:
    return _mutate(lambda data: _walk(data, keys[:-1]).pop(keys[-1]))


def _replace(old: str, new: str) -> Builder:
    """A builder that edits the YAML text itself (first occurrence), e.g. to write ``.nan`` literally."""

    def build(text: str) -> str:
        assert old in text, f"{old!r} not in the source YAML"
        return text.replace(old, new, 1)

    return build


def _rename_key(keys: tuple[str | int, ...], old: str, new: str) -> Builder:
    return _mutate(lambda data: _walk(data, keys).__setitem__(new, _walk(data, keys).pop(old)))


def _write(directory: Path, text: str) -> Path:
    path = directory / "embodiment.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _left_joint(index: int, key: str) -> tuple[str | int, ...]:
    return ("arms", 0, "joints", index, key)


# --- 1. every calibration file loads and has the bimanual layout ---------------------------------------------


def test_calibration_glob_finds_the_known_files() -> None:
    assert {COBOT, ALOHA} <= set(CALIBRATION_FILES)


@pytest.mark.parametrize("path", CALIBRATION_FILES, ids=[path.stem for path in CALIBRATION_FILES])
def test_calibration_file_loads_with_bimanual_layout(path: Path) -> None:
    embodiment = load_embodiment(path)
    assert embodiment.dof == 14
    assert [arm.name for arm in embodiment.arms] == ["left", "right"]
    assert np.flatnonzero(embodiment.gripper_mask()).tolist() == [6, 13]
    assert [i for i, joint in enumerate(embodiment.joints) if joint.kind is JointKind.GRIPPER] == [6, 13]
    names = embodiment.joint_names
    assert len(set(names)) == len(names) == 14
    for index, name in enumerate(names):
        assert embodiment.joint_index(name) == index
    with pytest.raises(KeyError, match="no_such_joint"):
        embodiment.joint_index("no_such_joint")


# --- 2. values from the sources -------------------------------------------------------------------------------


def test_cobot_magic_values() -> None:
    embodiment = load_embodiment(COBOT)
    assert embodiment.name == "cobot_magic"
    assert embodiment.control_rate_hz == 200.0
    assert embodiment.control_period_s == pytest.approx(0.005)
    assert embodiment.gripper_units == "m"
    for side in ("left", "right"):
        joints = embodiment.joints
        assert joints[embodiment.joint_index(f"{side}_joint2")].position == (0.0, 3.14)
        assert joints[embodiment.joint_index(f"{side}_joint3")].position == (-2.967, 0.0)
        gripper = joints[embodiment.joint_index(f"{side}_gripper")]
        assert gripper.kind is JointKind.GRIPPER
        assert gripper.position == (0.0, 0.07)
    cameras = {camera.name: camera.topic for camera in embodiment.cameras}
    assert cameras == {
        "cam_high": "/camera_f/color/image_raw",
        "cam_left_wrist": "/camera_l/color/image_raw",
        "cam_right_wrist": "/camera_r/color/image_raw",
    }
    assert embodiment.topics is not None
    assert embodiment.topics.follower_state == {"left": "/puppet/joint_left", "right": "/puppet/joint_right"}
    assert embodiment.topics.command == {"left": "/master/joint_left", "right": "/master/joint_right"}


def test_aloha_sim_values() -> None:
    embodiment = load_embodiment(ALOHA)
    assert embodiment.name == "aloha_sim"
    assert embodiment.control_rate_hz == 50.0
    assert embodiment.control_period_s == pytest.approx(0.02)
    assert embodiment.gripper_units == "normalized"


# --- 3. malformed copies are refused with file, key path and problem ------------------------------------------

MALFORMED = [
    pytest.param(
        _delete(("safety", "timeouts_s")), ["safety.timeouts_s: required key is missing"], id="missing-timeouts"
    ),
    pytest.param(_delete(("control_rate_hz",)), ["control_rate_hz: required key is missing"], id="missing-rate"),
    pytest.param(_set(("control_rate_hz",), "50"), ["control_rate_hz: ", "valid number", "'50'"], id="rate-string"),
    pytest.param(
        _set(_left_joint(2, "acceleration_max"), True),
        [f"{J3}.acceleration_max: ", "valid number", "True"],
        id="acceleration-bool",
    ),
    pytest.param(
        _set(_left_joint(2, "position"), [1.0, -1.0]),
        [f"{J3}.position: ", "min 1.0 must be below max -1.0"],
        id="position-min-above-max",
    ),
    pytest.param(
        _set(_left_joint(2, "position"), [0.5, 0.5]),
        [f"{J3}.position: ", "min 0.5 must be below max 0.5"],
        id="position-min-equals-max",
    ),
    pytest.param(
        _set(_left_joint(2, "position"), [float("nan"), 0.0]),
        [f"{J3}.position[0]: ", "must be a finite number, got nan"],
        id="position-nan-dumped",
    ),
    pytest.param(
        _replace("position: [0.0, 3.14]", "position: [0.0, .inf]"),
        [f"{J2}.position[1]: ", "must be a finite number, got inf"],
        id="position-inf-literal",
    ),
    pytest.param(
        _replace("velocity_max: 2.89,", "velocity_max: .nan,"),
        [f"{J2}.velocity_max: ", "must be a finite number, got nan"],
        id="velocity-nan-literal",
    ),
    pytest.param(
        _set(_left_joint(2, "velocity_max"), float("inf")),
        [f"{J3}.velocity_max: ", "must be a finite number, got inf"],
        id="velocity-inf-dumped",
    ),
    pytest.param(
        _set(_left_joint(2, "velocity_max"), -1.0),
        [f"{J3}.velocity_max: ", "greater than 0", "-1.0"],
        id="velocity-negative",
    ),
    pytest.param(
        _set(_left_joint(2, "velocity_max"), 0.0), [f"{J3}.velocity_max: ", "greater than 0"], id="velocity-zero"
    ),
    pytest.param(
        _rename_key(("arms", 0, "joints", 2), "velocity_max", "velocty_max"),
        [f"{J3}.velocty_max: unknown key", f"{J3}.velocity_max: required key is missing"],
        id="joint-key-typo",
    ),
    pytest.param(
        _set(_left_joint(2, "kind"), "prismatic"),
        [f"{J3}.kind: ", "'revolute' or 'gripper'", "'prismatic'"],
        id="unknown-joint-kind",
    ),
    pytest.param(
        _mutate(lambda data: data["arms"][0]["joints"].insert(5, data["arms"][0]["joints"].pop())),
        ["arms[0](left): arm 'left'", "exactly one gripper last"],
        id="gripper-not-last",
    ),
    pytest.param(
        _set(_left_joint(2, "kind"), "gripper"),
        ["arms[0](left): arm 'left'", "exactly one gripper last"],
        id="two-grippers",
    ),
    pytest.param(
        _set(("arms", 1, "joints", 0, "name"), "left_joint1"),
        ["<top level>: joint names must be unique", "left_joint1"],
        id="duplicate-joint-names",
    ),
    pytest.param(
        _set(("topics", "command", "middle"), "/master/joint_middle"),
        ["<top level>: topics.command must name exactly the arms", "middle"],
        id="topics-unknown-arm",
    ),
    pytest.param(
        _delete(("topics", "follower_state", "right")),
        ["<top level>: topics.follower_state must name exactly the arms", "['left']"],
        id="topics-missing-arm",
    ),
    pytest.param(
        _set(("topics", "joint_names"), ["joint0", "joint1", "joint2"]),
        ["<top level>: topics.joint_names has 3 names but arms have [7] joints"],
        id="topics-joint-names-count",
    ),
    pytest.param(
        _set(("safety", "max_tick_interval_s"), 0.001),
        ["<top level>: safety.max_tick_interval_s 0.001 is shorter than one control period"],
        id="tick-shorter-than-period",
    ),
    pytest.param(lambda _source: "name: [cobot_magic\ncontrol_rate_hz: 200\n", ["not valid YAML"], id="invalid-yaml"),
    pytest.param(
        # A doubled key must not let the second value silently raise a limit.
        _replace("velocity_max: 2.89,", "velocity_max: 2.89, velocity_max: 99.0,"),
        [f"{J2}.velocity_max: repeated key 'velocity_max' at line 22", "(first at line 22"],
        id="repeated-key",
    ),
    pytest.param(
        lambda _source: "- name: cobot_magic\n- control_rate_hz: 200\n",
        ["<top level>: ", "got list"],
        id="top-level-list",
    ),
]


@pytest.mark.parametrize(("build", "fragments"), MALFORMED)
def test_malformed_file_is_refused_with_clear_message(build: Builder, fragments: list[str], tmp_path: Path) -> None:
    path = _write(tmp_path, build(COBOT_TEXT))
    with pytest.raises(EmbodimentError) as caught:
        load_embodiment(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in message, message


def test_unmodified_copy_loads(tmp_path: Path) -> None:
    """Guards the malformed cases: the dump/load round trip alone does not break the file."""
    assert load_embodiment(_write(tmp_path, _mutate(lambda data: None)(COBOT_TEXT))) == load_embodiment(COBOT)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "does_not_exist.yaml"
    with pytest.raises(EmbodimentError) as caught:
        load_embodiment(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "cannot read embodiment file" in message


def test_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(EmbodimentError, match="cannot read embodiment file") as caught:
        load_embodiment(path)
    assert str(caught.value).startswith(f"{path}: ")


# --- 4. frozen objects and derived arrays ---------------------------------------------------------------------


def test_loaded_objects_are_frozen() -> None:
    embodiment = load_embodiment(COBOT)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        embodiment.control_rate_hz = 10.0  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        embodiment.arms[0].joints[0].velocity_max = 100.0  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        embodiment.safety.max_tick_interval_s = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        embodiment.arms[0].joints[0] = embodiment.arms[0].joints[1]  # type: ignore[index]
    with pytest.raises(TypeError):  # nested mappings are read-only too: a timeout cannot be edited after checks
        embodiment.safety.timeouts_s["plan"] = -5.0  # type: ignore[index]
    with pytest.raises(TypeError):
        embodiment.topics.command["left"] = "/elsewhere"  # type: ignore[index,union-attr]
    assert embodiment.control_rate_hz == 200.0


@pytest.mark.parametrize("path", CALIBRATION_FILES, ids=[path.stem for path in CALIBRATION_FILES])
def test_position_limits_match_yaml(path: Path) -> None:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    expected = np.array([joint["position"] for arm in raw["arms"] for joint in arm["joints"]], dtype=np.float64)
    low, high = load_embodiment(path).position_limits()
    assert low.dtype == high.dtype == np.float64
    assert low.shape == high.shape == (14,)
    np.testing.assert_array_equal(low, expected[:, 0])
    np.testing.assert_array_equal(high, expected[:, 1])
    assert np.all(low < high)


# --- 5. property: a position range is accepted exactly when min < max ----------------------------------------

_finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=200)
@given(bounds=st.tuples(_finite, _finite) | _finite.map(lambda value: (value, value)))
def test_position_range_accepted_iff_ordered(bounds: tuple[float, float]) -> None:
    low, high = bounds
    data = copy.deepcopy(COBOT_DATA)
    data["arms"][0]["joints"][0]["position"] = [low, high]
    with tempfile.TemporaryDirectory() as directory:
        path = _write(Path(directory), yaml.safe_dump(data, sort_keys=False))
        if low < high:
            assert load_embodiment(path).arms[0].joints[0].position == (low, high)
        else:
            with pytest.raises(EmbodimentError) as caught:
                load_embodiment(path)
            message = str(caught.value)
            assert message.startswith(f"{path}: arms[0](left).joints[0](left_joint1).position: ")
            assert "must be below" in message
