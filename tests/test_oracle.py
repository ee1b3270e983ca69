"""The oracle world model (a test instrument): its frames are the true future, its artifacts are controlled."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eva_runtime.embodiment import load_embodiment
from eva_runtime.idm.windows import resize_video
from eva_runtime.safety import SafetyFilter
from eva_runtime.sim.bimanual_sim import START_POSE, BimanualSim
from eva_runtime.sim.experts import make_expert
from eva_runtime.sim.tasks import task_spec
from eva_runtime.world_model.artifacts import ArtifactConfig, inject_artifacts
from eva_runtime.world_model.oracle import OracleState, OracleWorldModel
from eva_runtime.world_model.protocol import RolloutRequest

from .conftest import CALIBRATION

EMBODIMENT = load_embodiment(CALIBRATION / "aloha_sim.yaml")


@pytest.fixture(scope="module")
def live():
    """A transfer-cube episode run by the expert to step 130 (the right gripper is closing on the cube)."""
    sim = BimanualSim("transfer_cube")
    sim.reset(START_POSE, task_spec("transfer_cube").sample_objects(9))
    safety = SafetyFilter.for_embodiment(EMBODIMENT)
    safety.reset(sim.time, sim.joint_positions())
    expert = make_expert("transfer_cube", sim)
    for step in range(130):
        sim.apply(safety.step(sim.time + 0.02, expert(sim, step), sim.joint_positions()).command)
    yield sim, safety, OracleState(sim.snapshot(), 130, safety.state)
    sim.close()


def test_oracle_frames_equal_a_direct_resimulation(live) -> None:
    sim, safety, state = live
    oracle = OracleWorldModel("transfer_cube", EMBODIMENT, fps=12.5, cameras=("cam_high", "cam_left_wrist"))
    rollout = oracle.rollout(RolloutRequest({}, "hand over the cube", horizon=8, seed=0, privileged_state=state))
    oracle.close()
    assert rollout.frames["cam_high"].shape == (1, 8, 64, 64, 3) and rollout.fps == 12.5
    # Re-simulate the same future directly in the live simulation, from the same state.
    sim.restore(state.snapshot)
    safety.restore(state.filter_state)
    expert = make_expert("transfer_cube", sim, start_step=130, start_command=state.filter_state.command)

    # Rendered at the cameras' own size (128x128) and shrunk as recorded episodes are for training.
    def render():
        return {name: resize_video(image[None], (64, 64))[0] for name, image in sim.render(cams, 128, 128).items()}

    cams = ("cam_high", "cam_left_wrist")
    direct = [render()]
    actions = [safety.state.command]
    step = 130
    for _ in range(7):
        for _ in range(4):  # 50 Hz / 12.5 fps
            sim.apply(safety.step(sim.time + 0.02, expert(sim, step), sim.joint_positions()).command)
            step += 1
        direct.append(render())
        actions.append(safety.state.command)
    for camera in ("cam_high", "cam_left_wrist"):
        assert np.array_equal(rollout.frames[camera][0], np.stack([frame[camera] for frame in direct]))
    assert np.array_equal(rollout.actions, np.stack(actions))
    assert not np.array_equal(rollout.frames["cam_high"][0, 0], rollout.frames["cam_high"][0, -1])  # it moves


def test_samples_differ_only_by_their_artifacts(live) -> None:
    _, _, state = live
    clean = OracleWorldModel("transfer_cube", EMBODIMENT, fps=25.0)
    noisy = OracleWorldModel("transfer_cube", EMBODIMENT, fps=25.0, artifacts=ArtifactConfig(jitter_px=2, noise_std=8))
    request = RolloutRequest({}, "x", horizon=5, seed=3, samples=3, privileged_state=state)
    plain, glitched = clean.rollout(request).frames["cam_high"], noisy.rollout(request).frames["cam_high"]
    assert np.array_equal(plain[0], plain[1]) and np.array_equal(plain[1], plain[2])
    assert not np.array_equal(glitched[0], glitched[1])
    assert np.array_equal(glitched[:, 0], plain[:, 0])  # the conditioning frame is never altered
    assert np.array_equal(noisy.rollout(request).frames["cam_high"], glitched)  # deterministic per seed
    assert "artifacts" in noisy.model_id and "artifacts" not in clean.model_id


def test_oracle_refuses_an_fps_that_does_not_divide_the_control_rate() -> None:
    with pytest.raises(ValueError, match="divide"):
        OracleWorldModel("transfer_cube", EMBODIMENT, fps=16.0)


def test_oracle_refuses_a_camera_the_embodiment_does_not_have() -> None:
    with pytest.raises(ValueError, match="cam_belly"):
        OracleWorldModel("transfer_cube", EMBODIMENT, fps=25.0, cameras=("cam_high", "cam_belly"))


def test_oracle_needs_the_privileged_state() -> None:
    oracle = OracleWorldModel("transfer_cube", EMBODIMENT, fps=25.0)
    with pytest.raises(TypeError, match="privileged_state"):
        oracle.rollout(RolloutRequest({}, "x", horizon=3, seed=0))


# --- artifact injection ------------------------------------------------------------------------------------------


def ramp(length: int = 12) -> np.ndarray:
    """Frame k is filled with the value 10 k, so a frame's value tells which source frame it shows."""
    return np.stack([np.full((8, 8, 3), 10 * k, dtype=np.uint8) for k in range(length)])


def shown(frames: np.ndarray) -> list[int]:
    return [int(frame[0, 0, 0]) // 10 for frame in frames]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (ArtifactConfig(drop_prob=1.0), [0] * 12),
        (ArtifactConfig(repeat_prob=1.0), [0] * 12),
        (ArtifactConfig(jump_prob=1.0, jump_frames=3), [0, 3, 6, 9, 11, 11, 11, 11, 11, 11, 11, 11]),
        (ArtifactConfig(), list(range(12))),
    ],
    ids=["drop_all", "repeat_all", "jump_all", "none"],
)
def test_timeline_artifacts(config: ArtifactConfig, expected: list[int]) -> None:
    assert shown(inject_artifacts(ramp(), config, np.random.default_rng(0))) == expected


def test_jitter_shifts_whole_frames_and_noise_is_bounded() -> None:
    rng = np.random.default_rng(1)
    video = rng.integers(0, 255, size=(6, 16, 16, 3), dtype=np.uint8)
    jittered = inject_artifacts(video, ArtifactConfig(jitter_px=3), np.random.default_rng(2))
    for k in range(1, 6):
        assert any(
            np.array_equal(jittered[k], np.roll(video[k], (dy, dx), axis=(0, 1)))
            for dy in range(-3, 4)
            for dx in range(-3, 4)
        )
    noisy = inject_artifacts(video, ArtifactConfig(noise_std=5.0), np.random.default_rng(2))
    difference = np.abs(noisy[1:].astype(int) - video[1:])
    assert 1.0 < difference.mean() < 8.0 and np.array_equal(noisy[0], video[0])


@settings(max_examples=200)
@given(
    drop=st.floats(0, 1),
    repeat=st.floats(0, 1),
    jump=st.floats(0, 1),
    jump_frames=st.integers(1, 5),
    length=st.integers(1, 25),  # frame k is painted 10 k, which must fit in uint8
    seed=st.integers(0, 2**32 - 1),
)
def test_timeline_never_goes_back_and_stays_in_range(
    drop: float, repeat: float, jump: float, jump_frames: int, length: int, seed: int
) -> None:
    config = ArtifactConfig(drop_prob=drop, repeat_prob=repeat, jump_prob=jump, jump_frames=jump_frames)
    order = shown(inject_artifacts(ramp(length), config, np.random.default_rng(seed)))
    assert order[0] == 0 and all(b >= a for a, b in itertools.pairwise(order))
    assert max(order) <= length - 1


@pytest.mark.parametrize(
    "bad", [{"drop_prob": 1.5}, {"repeat_prob": -0.1}, {"jitter_px": -1}, {"noise_std": -2.0}, {"jump_frames": 0}]
)
def test_artifact_config_is_validated(bad: dict) -> None:
    with pytest.raises(ValueError):
        ArtifactConfig(**bad)
