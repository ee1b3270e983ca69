"""Task progress of decoded plans (training/task_progress.py, task_reward.py): replayed starts in real MuJoCo,
plans played through the real executor and safety filter, and the reward that adds the progress."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from eva_runtime.embodiment import load_embodiment
from eva_runtime.training.flow_grpo import Condition, ConditionOrigin
from eva_runtime.training.task_progress import GRASP_REACH_M, TaskProgress, reach_bonus
from eva_runtime.training.task_reward import TaskAwareReward

REPOSITORY = Path(__file__).resolve().parents[1]
SEED, STRIDE, HORIZON = 5, 4, 37  # 12.5 fps plans on the 50 Hz simulation


@pytest.fixture(scope="module")
def embodiment():
    return load_embodiment(REPOSITORY / "calibration" / "aloha_sim.yaml")


@pytest.fixture(scope="module")
def expert_commands(embodiment) -> np.ndarray:
    """What the recorder stores as `action`: the command applied at every control step of an expert episode."""
    from eva_runtime.robots.mujoco_robot import MujocoRobot
    from eva_runtime.sim.evaluation import ExpertPolicy, run_episode

    robot = MujocoRobot(embodiment, "transfer_cube")
    robot.connect()
    applied: list[np.ndarray] = []
    run_episode(robot, ExpertPolicy(), SEED, 220, on_step=lambda _s, _o, a: applied.append(a), frames_every=10**6)
    robot.disconnect()
    return np.array(applied)


@pytest.fixture(scope="module")
def progress(embodiment):
    measured = TaskProgress("transfer_cube", embodiment)
    yield measured
    measured.close()


def _expert_plan(commands: np.ndarray, step: int) -> np.ndarray:
    return commands[step : step + HORIZON * STRIDE : STRIDE]


def test_replayed_start_reproduces_the_recording_and_refuses_a_changed_one(progress, expert_commands) -> None:
    start = progress.start_state(SEED, 60, expert_commands[60])
    assert start.step == 60 and start.snapshot.time == pytest.approx(60 * 0.02)
    changed = expert_commands[64].copy()
    changed[3] += 0.01
    with pytest.raises(ValueError, match=r"seed 5, step 64: the replayed expert commands 1\.00e-02 away"):
        progress.start_state(SEED, 64, changed)


def test_the_experts_future_progresses_and_holding_still_does_not(progress, expert_commands) -> None:
    start = progress.start_state(SEED, 40, expert_commands[40])
    expert = progress.play(start, _expert_plan(expert_commands, 40), 12.5)
    still = progress.play(start, np.repeat(expert_commands[40][None], HORIZON, axis=0), 12.5)
    assert expert.furthest_held >= 2 and expert.final >= 2  # the expert lifts the cube within these 2.9 s
    assert expert.closest_reach_m < 0.045 < 0.12 < still.closest_reach_m
    assert (still.furthest_held, still.final) == (0, 0)
    assert expert.progress > still.progress + 2.0
    # Played again from the cached start: the same outcome (the start is restored, not consumed).
    assert progress.play(start, _expert_plan(expert_commands, 40), 12.5) == expert


def test_a_stage_counts_only_once_held(embodiment, expert_commands) -> None:
    strict = TaskProgress("transfer_cube", embodiment, hold_ticks=10**4)
    try:
        start = strict.start_state(SEED, 40, expert_commands[40])
        played = strict.play(start, _expert_plan(expert_commands, 40), 12.5)
    finally:
        strict.close()
    assert played.furthest_held == 0 and played.final >= 2


@given(st.floats(0.0, 0.5), st.floats(0.0, 0.5))
def test_reach_bonus_is_bounded_and_falls_with_distance(near: float, far: float) -> None:
    near, far = min(near, far), max(near, far)
    assert 0.0 <= reach_bonus(far) <= reach_bonus(near) <= 1.0
    assert reach_bonus(min(near, GRASP_REACH_M)) == 1.0 and reach_bonus(max(far, 0.12)) == 0.0


def _idm_reward():
    """The real alignment reward path: a tiny Wan VAE's frames decoded by the shipped bundle's ONNX IDM."""
    from eva_runtime.bundle import load_bundle
    from eva_runtime.idm.decoder import IdmDecoder
    from eva_runtime.reward import RewardConfig
    from eva_runtime.training.idm_reward import IdmReward
    from tests.wan_helpers import tiny_pipeline

    bundle = load_bundle(REPOSITORY / "models" / "bundle_transfer_cube")
    decoder = IdmDecoder(bundle.idm_path, bundle.hashes()["idm"])
    config = RewardConfig.from_embodiment(bundle.embodiment, decoder.fps, p0=bundle.manifest.reward.p0)
    return IdmReward(tiny_pipeline(size=32).vae, decoder, config)


def test_the_reward_adds_weighted_progress_per_condition(progress, expert_commands) -> None:
    idm_reward = _idm_reward()
    latents = torch.randn(4, 4, 4, 4, 4, generator=torch.Generator().manual_seed(0))  # 4 rollouts, 13 frames
    origin = ConditionOrigin(SEED, 40, expert_commands[40])
    frames = np.zeros((1, 8, 8, 3), np.uint8)
    conditions = [Condition(frames, "t", origin=origin), Condition(frames, "t")]  # the second: no simulated origin
    executability, _ = idm_reward(latents)
    reward = TaskAwareReward(idm_reward, progress, 12.5, weight=2.0)
    rewards, stats = reward.for_conditions(conditions, group=2)(latents)
    start = progress.start_state(SEED, 40)
    expected = [progress.play(start, plan, 12.5).progress for plan in reward.last_actions[:2]]
    assert rewards.tolist() == pytest.approx((executability + torch.tensor([*expected, 0.0, 0.0]) * 2.0).tolist())
    assert stats["task_progress"] == pytest.approx(sum(expected) / 4)
    assert stats["task_progress_group_std"] >= 0 and "motion_rad" in stats
    with pytest.raises(ValueError, match="4 rollouts for 1 conditions of 2"):
        reward.for_conditions(conditions[:1], group=2)(latents)
    with pytest.raises(ValueError, match=">= 0"):
        TaskAwareReward(idm_reward, progress, 12.5, weight=-1.0)
