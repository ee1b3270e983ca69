"""Executed-plan clips (training/executed_labels.py): a captured state's best decoded plan, played in real MuJoCo
through the executor and the safety filter, rendered, and kept only when it advanced the task; the rendering hook
of `TaskProgress.play` that records it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eva_runtime.control.plan_states import CapturedStates
from eva_runtime.embodiment import load_embodiment
from eva_runtime.training.executed_labels import label_with_own_plans, worth_keeping
from eva_runtime.training.task_progress import PlayedPlan, TaskProgress
from eva_runtime.world_model.oracle import OracleWorldModel
from eva_runtime.world_model.protocol import Rollout

REPOSITORY = Path(__file__).resolve().parents[1]
SEED, STEP, HORIZON, HISTORY = 7, 100, 37, 5


@given(
    start=st.integers(0, 4),
    furthest=st.integers(0, 4),
    final=st.integers(0, 4),
    reach=st.floats(0.0, 0.3, allow_nan=False),
)
def test_a_label_is_kept_only_when_its_plan_advanced_the_task(start, furthest, final, reach) -> None:
    kept = worth_keeping(start, PlayedPlan(furthest, final, reach))
    if start >= 2:  # the cube was lifted: only a plan that still holds it (or got further) teaches anything
        assert kept == (final >= start)
    elif final == 0:  # nothing touched at the plan's end
        assert not kept
    elif final >= 2:
        assert kept
    else:  # touched only: a grasp around the cube, not fingers beside it
        assert kept == (reach <= 0.045 or final > max(start, 1))


@pytest.fixture(scope="module")
def scene():
    """The expert's state at step 100 (hand descending onto the cube), its true future, and 5 earlier frames."""
    embodiment = load_embodiment(REPOSITORY / "calibration" / "aloha_sim.yaml")
    progress = TaskProgress("transfer_cube", embodiment)
    oracle = OracleWorldModel("transfer_cube", embodiment, 12.5)
    try:
        history = np.stack(
            [oracle.imagine(progress.start_state(SEED, step), 1)[0]["cam_high"][0] for step in range(84, 101, 4)]
        )
        start = progress.start_state(SEED, STEP)
        future, commands = oracle.imagine(start, HORIZON)
        yield embodiment, progress, start, history, future["cam_high"], commands
    finally:
        oracle.close()
        progress.close()


def test_a_played_plan_records_a_frame_at_every_frame_time_and_plays_the_same(scene) -> None:
    _, progress, start, _, _, commands = scene
    frames: list[np.ndarray] = []
    seen: list[np.ndarray] = []

    def keep(sim, command) -> None:
        frames.append(sim.render(("cam_high",), 128, 128)["cam_high"])
        seen.append(np.array(command))

    silent = progress.play(start, commands, 12.5)
    recorded = progress.play(start, commands, 12.5, on_frame=keep)
    assert recorded == silent  # rendering does not change what the simulation does
    assert len(frames) == HORIZON and len(seen) == HORIZON
    np.testing.assert_array_equal(seen[0], start.filter_state.command)
    assert not np.array_equal(frames[0], frames[-1])  # the arm moved between the first and last frame


@pytest.mark.parametrize("late", [5.639999999999601, 7.539999999999392, 11.120000000000383])
def test_a_plan_late_in_an_episode_still_plays_every_frame(scene, late) -> None:
    """Simulated time is a running float sum (these are real plan-request times of a 600-tick episode); the plan's
    last tick, and with it the last frame, must not be lost to rounding."""
    import dataclasses

    from eva_runtime.sim.bimanual_sim import SimSnapshot

    _, progress, start, _, _, commands = scene
    state = start.snapshot.state.copy()
    state[0] = late  # mjSTATE_INTEGRATION begins with the time
    shifted = dataclasses.replace(
        start,
        snapshot=SimSnapshot(state, late),
        filter_state=dataclasses.replace(start.filter_state, time=late),
    )
    frames: list[int] = []
    progress.play(shifted, commands, 12.5, on_frame=lambda sim, command: frames.append(1))
    assert len(frames) == HORIZON


class _FixedVideos:
    """A world model whose rollouts are given videos (real renders), G of them in order: which one the labeller
    keeps is then known."""

    cameras = ("cam_high",)
    fps = 12.5

    def __init__(self, videos: list[np.ndarray]) -> None:
        self.videos, self.requests = videos, []

    def rollout(self, request):
        self.requests.append(request)
        return Rollout({"cam_high": np.stack(self.videos[: request.samples])}, self.fps, 0.0, "fixed")


def _captured(start, history: np.ndarray) -> CapturedStates:
    f = start.filter_state
    return CapturedStates(
        frames=history[None], sim_state=start.snapshot.state[None], sim_time=np.array([start.snapshot.time]),
        step=np.array([start.step]), filter_time=np.array([f.time]), filter_command=f.command[None],
        filter_velocity=f.velocity[None], filter_target=f.target[None], seed=np.array([SEED]),
        metadata={"task": "transfer_cube", "camera": "cam_high", "instruction": "pick up the cube", "fps": 12.5},
    )  # fmt: skip


def test_the_plan_that_grasps_is_the_label_and_its_clip_is_what_the_camera_saw(scene) -> None:
    from eva_runtime.cli.world_model_eval import idm_and_reward

    embodiment, progress, start, history, future, _ = scene
    decoder, reward, _ = idm_and_reward(REPOSITORY / "models" / "bundle_transfer_cube")
    still = np.repeat(history[-1:], HORIZON, axis=0)
    model = _FixedVideos([still, future])
    clips, outcomes = label_with_own_plans(_captured(start, history), model, decoder, reward, progress, HORIZON, 2)

    (outcome,) = outcomes
    assert model.requests[0].samples == 2 and model.requests[0].frames["cam_high"].shape[0] == HISTORY
    assert outcome.progress_of_samples[1] > outcome.progress_of_samples[0] + 1.0  # the true future lifts the cube
    assert outcome.kept and outcome.chosen.final >= 2
    assert clips is not None and len(clips) == 1 and clips.stage_end[0] == outcome.chosen.final
    assert clips.frames.shape == (1, HISTORY - 1 + HORIZON, 64, 64, 3)
    np.testing.assert_array_equal(clips.frames[0, : HISTORY - 1], history[:-1])
    np.testing.assert_array_equal(clips.frames[0, HISTORY - 1], future[0])  # the same state, rendered the same way
    gap = np.abs(clips.frames[0, HISTORY - 1 :].astype(int) - future.astype(int)).mean()
    assert gap < 10.0  # what the camera saw playing the decoded plan is close to the expert's own future
    assert clips.actions.shape == (1, HORIZON, embodiment.dof)


def test_a_state_whose_plans_go_nowhere_gives_no_clip(scene) -> None:
    from eva_runtime.cli.world_model_eval import idm_and_reward

    _, progress, start, history, _, _ = scene
    decoder, reward, _ = idm_and_reward(REPOSITORY / "models" / "bundle_transfer_cube")
    still = np.repeat(history[-1:], HORIZON, axis=0)
    clips, outcomes = label_with_own_plans(
        _captured(start, history), _FixedVideos([still, still]), decoder, reward, progress, HORIZON, 2
    )
    assert clips is None and not outcomes[0].kept and outcomes[0].chosen.final == 0
