"""Tests for ``eva_runtime.config_files``, the one YAML loader every file the runtime reads goes through.

A repeated key (top level and nested) is refused in each kind of file (embodiment, bundle manifest, calibrated
limits, alignment config, ladder config) with the file, the key path and both lines named; any mapping written by
``yaml.safe_dump`` loads back equal, and a key duplicated anywhere in generated text is refused (property tests);
validation errors read ``<file>: <key path>: <problem>``, with the allowed range where the model has one.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from eva_runtime.bundle import BundleError, load_bundle
from eva_runtime.calibration.limits import FORMAT as LIMITS_FORMAT
from eva_runtime.calibration.limits import read_limits_yaml
from eva_runtime.config_files import TOP_LEVEL, ConfigFileError, load_model, load_yaml, parse_yaml, validate
from eva_runtime.embodiment import EmbodimentError, load_embodiment
from eva_runtime.training.align_config import AlignConfig, AlignConfigError, load_align_config
from eva_runtime.world_model.ladder import LadderConfigError, load_ladder

REPO = Path(__file__).resolve().parents[1]
ALOHA = REPO / "calibration" / "aloha_sim.yaml"
BUNDLE = REPO / "models" / "bundle_transfer_cube"
ALIGN = REPO / "configs" / "align_tiny.yaml"
LADDER = REPO / "configs" / "ladder_transfer_cube.yaml"
LIMITS = {
    "format": LIMITS_FORMAT,
    "embodiment": "aloha_sim",
    "provenance": {"percentile": 99.5, "margin": 1.2, "episodes": 3},
    "joints": {
        "left_waist": {"velocity_max": 1.5, "acceleration_max": 9.0, "jerk_max": 120.0, "sources": {"jerk": "data"}},
        "left_gripper": {"velocity_max": 0.4, "acceleration_max": 3.0, "jerk_max": 50.0, "sources": {}},
    },
}


# --- writing YAML with a repeated key ---------------------------------------------------------------------------


def _scalar(value: Any) -> str:
    # Strings double-quoted: a plain scalar such as `0,` is fine at the top of a document, not inside a flow mapping.
    style = '"' if isinstance(value, str) else None
    return yaml.safe_dump(value, default_style=style, width=10**9).removesuffix("\n...\n").strip()


def emit(node: Any, duplicate: tuple[Any, ...] = (), depth: int = 0) -> str:
    """YAML text of `node` (flow style, one entry per line); `duplicate` is a key path written twice."""
    pad = "  " * (depth + 1)
    if isinstance(node, dict | list):
        pairs = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        lines = [
            (f"{pad}{_scalar(key)}: " if isinstance(node, dict) else pad)
            + emit(value, duplicate[1:] if duplicate and duplicate[0] == key else (), depth + 1)
            for key, value in pairs
        ]
        if len(duplicate) == 1 and isinstance(node, dict):
            lines.append(f"{pad}{_scalar(duplicate[0])}: {emit(node[duplicate[0]], (), depth + 1)}")
        brackets = "{}" if isinstance(node, dict) else "[]"
        return brackets[0] + "\n" + ",\n".join(lines) + "\n" + "  " * depth + brackets[1] if lines else brackets
    return _scalar(node)


def _write(path: Path, data: Any, duplicate: tuple[Any, ...] = ()) -> Path:
    path.write_text(emit(data, duplicate) + "\n", encoding="utf-8")
    return path


# --- each kind of file refuses a repeated key ---------------------------------------------------------------------


def _embodiment(tmp: Path, duplicate: tuple[Any, ...]) -> Callable[[], Any]:
    path = _write(tmp / "robot.yaml", yaml.safe_load(ALOHA.read_text()), duplicate)
    return lambda: load_embodiment(path)


def _bundle(tmp: Path, duplicate: tuple[Any, ...]) -> Callable[[], Any]:
    copy = shutil.copytree(BUNDLE, tmp / "bundle")
    _write(copy / "manifest.yaml", yaml.safe_load((BUNDLE / "manifest.yaml").read_text()), duplicate)
    return lambda: load_bundle(copy).manifest


def _limits(tmp: Path, duplicate: tuple[Any, ...]) -> Callable[[], Any]:
    path = _write(tmp / "limits.yaml", LIMITS, duplicate)
    return lambda: read_limits_yaml(path)


def _align(tmp: Path, duplicate: tuple[Any, ...]) -> Callable[[], Any]:
    path = _write(tmp / "align.yaml", yaml.safe_load(ALIGN.read_text()), duplicate)
    return lambda: load_align_config(path)


def _ladder(tmp: Path, duplicate: tuple[Any, ...]) -> Callable[[], Any]:
    path = _write(tmp / "ladder.yaml", yaml.safe_load(LADDER.read_text()), duplicate)
    return lambda: load_ladder(path)


# (kind, builder, its error, the original loaded, a top-level key, a nested key path, that path as printed)
# fmt: off
KINDS = [
    ("embodiment", _embodiment, EmbodimentError, lambda: load_embodiment(ALOHA), ("control_rate_hz",),
     ("arms", 0, "joints", 1, "velocity_max"), "arms[0](left).joints[1](left_shoulder).velocity_max"),
    ("bundle", _bundle, BundleError, lambda: load_bundle(BUNDLE).manifest, ("format",),
     ("world_model", "horizon"), "world_model.horizon"),
    ("limits", _limits, ValueError, lambda: LIMITS, ("joints",),
     ("joints", "left_gripper", "jerk_max"), "joints.left_gripper.jerk_max"),
    ("align", _align, AlignConfigError, lambda: load_align_config(ALIGN), ("group_size",),
     ("guard", "min_motion_ratio"), "guard.min_motion_ratio"),
    ("ladder", _ladder, LadderConfigError, lambda: load_ladder(LADDER), ("episodes",),
     ("rungs", 1, "degrade", "vae"), "rungs[1](oracle + VAE (shipped SFT z8)).degrade.vae"),
]
# fmt: on


@pytest.mark.parametrize(("kind", "build", "error", "original", "top", "nested", "printed"), KINDS)
def test_every_kind_of_file_refuses_a_repeated_key(
    tmp_path: Path, kind: str, build: Callable, error: type, original: Callable, top: tuple, nested: tuple, printed: str
) -> None:
    # Written without a duplicate, the file loads to exactly what the shipped one does: the writer is faithful.
    plain = tmp_path / "same"
    plain.mkdir()
    assert build(plain, ())() == original()
    for name, duplicate, where in (("top", top, top[0]), ("nested", nested, printed)):
        directory = tmp_path / name
        directory.mkdir()
        load = build(directory, duplicate)
        with pytest.raises(error) as caught:
            load()
        message = str(caught.value)
        assert isinstance(caught.value, ValueError)
        assert re.search(rf": {re.escape(where)}: repeated key {re.escape(repr(duplicate[-1]))} at line \d+", message)
        assert re.search(r"\(first at line \d+, column \d+\)$", message), message
        assert str(directory) in message.split(": ")[0], message


# --- properties -------------------------------------------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp")), max_size=12)
_leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text
_values = st.recursive(
    _leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4), max_leaves=20
)
_mappings = st.dictionaries(_text, _values, max_size=6)


@settings(max_examples=150)
@given(data=_mappings)
def test_any_dumped_mapping_loads_back_equal(data: dict[str, Any]) -> None:
    assert parse_yaml(yaml.safe_dump(data, sort_keys=False), "generated.yaml") == data
    assert parse_yaml(emit(data), "generated.yaml") == data  # the test's own writer agrees


def _mappings_inside(node: Any) -> list[tuple[tuple[Any, ...], dict]]:
    """Non-empty mappings that are `node` or entries of it (through lists), with their path from `node`."""
    if isinstance(node, dict):
        return [((), node)] if node else []
    if isinstance(node, list):
        return [((index, *sub), found) for index, item in enumerate(node) for sub, found in _mappings_inside(item)]
    return []


@st.composite
def _mapping_and_key_path(draw: st.DrawFn) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """A non-empty mapping and the path of one of its keys, at any depth."""
    data = draw(_mappings.filter(bool))
    path: tuple[Any, ...] = ()
    node = data
    while True:
        key = draw(st.sampled_from(list(node)))
        inside = _mappings_inside(node[key])
        if not inside or not draw(st.booleans()):
            return data, (*path, key)
        sub, node = draw(st.sampled_from(inside))
        path = (*path, key, *sub)


@settings(max_examples=150)
@given(case=_mapping_and_key_path())
def test_a_key_duplicated_anywhere_is_refused(case: tuple[dict[str, Any], tuple[Any, ...]]) -> None:
    data, path = case
    with pytest.raises(ConfigFileError) as caught:
        parse_yaml(emit(data, path), "generated.yaml")
    message = str(caught.value)
    assert message.startswith("generated.yaml: ")
    assert f": repeated key {path[-1]!r} at line " in message, (path, message)


@settings(max_examples=60)
@given(group_size=st.integers(max_value=1), noise=st.floats(min_value=2.0, exclude_min=True, allow_infinity=False))
def test_errors_name_file_key_and_allowed_range(tmp_path_factory: pytest.TempPathFactory, group_size, noise) -> None:
    path = tmp_path_factory.mktemp("align") / "align.yaml"
    data = {"base": "b", "bundle": "x", "data": "d", "group_size": group_size, "schedule": {"noise_level": noise}}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(AlignConfigError) as caught:
        load_align_config(path)
    lines = str(caught.value).splitlines()
    assert lines == [
        f"{path}: group_size: Input should be greater than or equal to 2 (got {group_size})",
        f"{path}: schedule.noise_level: Input should be less than or equal to 2 "
        f"(allowed: 0.0 <= value <= 2.0; got {noise!r})",
    ]


# --- the error format -------------------------------------------------------------------------------------------


def test_every_problem_is_one_file_key_problem_line(tmp_path: Path) -> None:
    path = tmp_path / "align.yaml"
    path.write_text(
        "base: b\nbundle: x\ndata: d\nlr: 0.1\nlearning_rat: 1\ngroup_size: two\n"
        "condition_starts: [0, a]\nschedule: {kindd: wan}\n"
    )
    with pytest.raises(AlignConfigError) as caught:
        load_align_config(path)
    lines = str(caught.value).splitlines()
    assert all(re.fullmatch(rf"{re.escape(str(path))}: [\w.\[\]()<> ]+: \S.*", line) for line in lines), lines
    assert f"{path}: lr: unknown key (not part of the schema)" in lines
    assert f"{path}: learning_rat: unknown key (did you mean 'learning_rate'?)" in lines
    assert f"{path}: schedule.kindd: unknown key (did you mean 'kind'?)" in lines
    assert any(line.startswith(f"{path}: condition_starts[1]: Input should be a valid integer") for line in lines)
    assert any(line.startswith(f"{path}: group_size: Input should be a valid integer") for line in lines)


def test_list_entries_are_labelled_by_name(tmp_path: Path) -> None:
    path = tmp_path / "ladder.yaml"
    path.write_text("rungs:\n  - {name: first, bundle: b}\n  - {name: second, bundle: b, samples: 64}\n")
    with pytest.raises(LadderConfigError) as caught:
        load_ladder(path)
    assert str(caught.value) == (
        f"{path}: rungs[1](second).samples: Input should be less than or equal to 32 (allowed: 1 <= value <= 32; "
        "got 64)"
    )


@pytest.mark.parametrize(
    ("text", "found"),
    [("- a\n- b\n", "list"), ("just text\n", "str"), ("", "an empty file"), ("# c\n", "an empty file")],
)
@pytest.mark.parametrize(
    ("load", "error"),
    [
        (load_embodiment, EmbodimentError),
        (read_limits_yaml, ConfigFileError),
        (load_align_config, AlignConfigError),
        (load_ladder, LadderConfigError),
    ],
)
def test_a_top_level_that_is_not_a_mapping_is_refused(
    tmp_path: Path, text: str, found: str, load: Callable, error: type
) -> None:
    path = tmp_path / "file.yaml"
    path.write_text(text)
    with pytest.raises(error, match=re.escape(f"{path}: {TOP_LEVEL}: expected a mapping of keys, got {found}")):
        load(path)


def test_a_bundle_manifest_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    copy = shutil.copytree(BUNDLE, tmp_path / "bundle")
    (copy / "manifest.yaml").write_text("- format\n")
    with pytest.raises(BundleError, match=re.escape(f"{copy / 'manifest.yaml'}: {TOP_LEVEL}: expected a mapping")):
        load_bundle(copy)


def test_unreadable_files_invalid_yaml_and_merge_keys(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    with pytest.raises(ConfigFileError, match=re.escape(f"{missing}: cannot read ladder file (")):
        load_ladder(missing)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"a: \xff\n")
    with pytest.raises(AlignConfigError, match=re.escape(f"{binary}: cannot read alignment config (")):
        load_align_config(binary)
    with pytest.raises(ConfigFileError, match=r"(?s)^f\.yaml: not valid YAML \(.*line 1"):
        parse_yaml("a: [1\n", "f.yaml")
    with pytest.raises(ConfigFileError, match=r"^f\.yaml: b\.<<: merge key at line 3, column 3 refused"):
        parse_yaml("a: &base {k: 1}\nb:\n  <<: *base\n  k: 2\n", "f.yaml")
    # Aliases are fine (no repeated key), a recursive one too: the check visits each node once.
    assert parse_yaml("a: &x {k: 1}\nb: *x\n", "f.yaml") == {"a": {"k": 1}, "b": {"k": 1}}
    assert parse_yaml("a: &r [*r]\n", "f.yaml")["a"][0][0] is not None
    # Keys that are equal once constructed are repeated keys too.
    with pytest.raises(ConfigFileError, match=r"repeated key 1\.0"):
        parse_yaml("1: a\n1.0: b\n", "f.yaml")
    with pytest.raises(ConfigFileError, match="repeated key None"):
        parse_yaml("null: a\n~: b\n", "f.yaml")


def test_the_loaders_errors_are_config_file_errors_and_the_helpers_compose(tmp_path: Path) -> None:
    for error in (EmbodimentError, AlignConfigError, LadderConfigError):
        assert issubclass(error, ConfigFileError) and issubclass(error, ValueError)
    path = tmp_path / "align.yaml"
    shutil.copy(ALIGN, path)
    assert load_model(path, AlignConfig) == load_align_config(ALIGN)
    assert load_model(path, AlignConfig, overrides={"seed": 7}).seed == 7
    assert validate(path, AlignConfig, load_yaml(path)) == load_align_config(ALIGN)
    assert load_yaml(path, mapping=False) == yaml.safe_load(ALIGN.read_text())
    with pytest.raises(KeyError, match=re.escape(f"{path}: group_size: Input should be greater")):
        load_model(path, AlignConfig, overrides={"group_size": 0}, error=KeyError)
