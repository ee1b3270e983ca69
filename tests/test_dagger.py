"""DAgger clips for the world model: plan states captured in the real control loop on real MuJoCo
(control/plan_states.py), the scripted expert rejoining its script from a policy's state (sim/experts.join_step),
the labelled clips (training/dagger_labels.py) and how an SFT run mixes them into its batches
(training/wm_extra_clips.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from eva_runtime.control.plan_states import PlanStateCapture, load_captured_states
from eva_runtime.embodiment import load_embodiment
from eva_runtime.robots.mujoco_robot import MujocoRobot
from eva_runtime.sim.evaluation import ExpertPolicy, run_episode
from eva_runtime.sim.experts import join_step
from eva_runtime.training.dagger_labels import label_states, load_clip_set, merge_clip_sets, save_clip_set
from eva_runtime.training.wm_extra_clips import training_batch
from tests.plan_state_helpers import capture_hold_states

REPOSITORY = Path(__file__).resolve().parents[1]
SEED = 5


@pytest.fixture(scope="module")
def embodiment():
    return load_embodiment(REPOSITORY / "calibration" / "aloha_sim.yaml")


@pytest.fixture(scope="module")
def captured(embodiment, tmp_path_factory):
    """A capture of 200 ticks of the real loop on the simulated robot, with a planner that holds the arms, and
    every privileged state the planner was sent."""
    sent: list[object] = []
    path = tmp_path_factory.mktemp("dagger") / "states.safetensors"
    capture_hold_states(embodiment, path, seed=SEED, sent=sent)
    return load_captured_states(path), sent, path


def test_the_capture_keeps_every_request_and_the_model_never_sees_the_state(captured) -> None:
    states, sent, _ = captured
    assert len(sent) >= 2 and len(states) == len(sent)
    assert all(state is None for state in sent)  # the learned model is sent the request without the state
    assert states.frames.shape[1:] == (5, 64, 64, 3) and states.frames.dtype == np.uint8
    assert np.all(states.seed == SEED)
    assert np.all(np.diff(states.sim_time) > 0)  # one row per request, in order
    assert states.metadata["camera"] == "cam_high" and states.metadata["fps"] == 12.5


def test_the_capture_refuses_what_it_cannot_restore(embodiment, tmp_path) -> None:
    capture = PlanStateCapture("cam_high", (64, 64))
    with pytest.raises(ValueError, match="no plan request was captured"):
        capture.save(tmp_path / "empty.safetensors")
    with pytest.raises(ValueError, match="simulated robot"):
        capture.source(object())
    from safetensors.numpy import save_file

    save_file({"frames": np.zeros((1, 2), np.uint8)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a plan-state capture"):
        load_captured_states(tmp_path / "other.safetensors")


def test_labels_continue_the_observed_frames_exactly(captured, embodiment, tmp_path) -> None:
    states, _, _ = captured
    clips = label_states(states, "transfer_cube", embodiment, horizon=9)
    assert clips.frames.shape == (len(states), 4 + 9, 64, 64, 3)
    # The restored state renders the frame the model was given: the clip is seamless at the request.
    assert np.array_equal(clips.frames[:, 4], states.frames[:, -1])
    assert np.array_equal(clips.frames[:, :4], states.frames[:, :4])
    assert clips.actions.shape == (len(states), 9, 14)
    path = tmp_path / "clips.npz"
    sha = save_clip_set(path, clips)
    loaded = load_clip_set(path)
    assert loaded.sha256 == sha and np.array_equal(loaded.frames, clips.frames)
    assert loaded.instruction == states.metadata["instruction"] and loaded.history_frames == 5
    merged = merge_clip_sets([clips, loaded])  # DAgger aggregates every iteration's labels
    assert len(merged) == 2 * len(clips) and np.array_equal(merged.frames[len(clips) :], clips.frames)
    with pytest.raises(ValueError, match="clip sets differ"):
        merge_clip_sets([clips, dataclasses.replace(clips, instruction="insert the peg")])


@pytest.fixture(scope="module")
def expert_at_130(embodiment):
    """The expert's own episode stopped at step 130 (closing on the cube)."""
    robot = MujocoRobot(embodiment, "transfer_cube")
    robot.connect()
    run_episode(robot, ExpertPolicy(), SEED, 130, frames_every=10**6)
    yield robot
    robot.disconnect()


def test_the_expert_joins_its_own_states_where_it_is(expert_at_130) -> None:
    sim = expert_at_130.sim
    assert join_step("transfer_cube", sim, 130) == 130  # on the cube's axis at its height: close as scripted
    assert join_step("insertion", sim, 130) == 130  # no recovery rule: the script's step
    # The same state later than the script has it (a slow policy): close and lift, never the script's release.
    assert join_step("transfer_cube", sim, 300) == 110


def test_a_hand_above_the_cube_late_comes_down_onto_it(embodiment) -> None:
    robot = MujocoRobot(embodiment, "transfer_cube")
    robot.connect()
    try:
        run_episode(robot, ExpertPolicy(), SEED, 95, frames_every=10**6)  # descending from the pre-grasp
        assert join_step("transfer_cube", robot.sim, 95) == 95  # where the script expects it
        assert join_step("transfer_cube", robot.sim, 140) == 80  # late: down onto the cube, then close
    finally:
        robot.disconnect()


def test_a_hand_off_the_cube_goes_back_above_it_and_the_label_grasps(expert_at_130, embodiment) -> None:
    from eva_runtime.safety import SafetyFilter
    from eva_runtime.world_model.oracle import OracleState, OracleWorldModel

    sim = expert_at_130.sim
    saved = sim.snapshot()
    try:
        joint = sim.model.body("box").jntadr[0]
        address = sim.model.jnt_qposadr[joint]
        sim.data.qpos[address + 1] += 0.05  # the cube 5 cm from where the hand closes
        sim._mujoco.mj_forward(sim.model, sim.data)
        assert join_step("transfer_cube", sim, 130) == 30
        moved = sim.snapshot()
    finally:
        sim.restore(saved)
    safety = SafetyFilter.for_embodiment(embodiment)
    safety.reset(moved.time, sim.joint_positions())
    oracle = OracleWorldModel("transfer_cube", embodiment, 12.5, ("cam_high",), (64, 64))
    try:
        future = oracle.imagine_rejoined(OracleState(moved, 130, safety.state), horizon=50)
    finally:
        oracle.close()
    assert future.joined_step == 30 and future.stage_start < 2  # not lifted (a finger may touch it)
    assert future.stage_end >= 2  # re-approached, grasped and lifted the moved cube


def test_a_batch_draws_its_share_from_the_extra_clips() -> None:
    from types import SimpleNamespace

    data = {
        "latents": torch.zeros(50, 2, 3, 4, 4),
        "text": torch.zeros(50, dtype=torch.long),
        "weights": torch.ones(50, 3, 4, 4),
        "clip_latents": torch.ones(7, 2, 3, 4, 4),
        "clip_text": torch.ones(7, dtype=torch.long),
        "clip_weights": torch.full((7, 3, 4, 4), 2.0),
    }
    run = SimpleNamespace(batch=32, clips_fraction=0.25)
    latents, text, weights = training_batch(data, run, torch.Generator().manual_seed(0))
    assert latents.shape[0] == text.shape[0] == weights.shape[0] == 32
    from_clips = latents.flatten(1).mean(1) == 1.0
    assert int(from_clips.sum()) == 8 and torch.equal(text.bool(), from_clips)
    assert torch.all(weights[from_clips] == 2.0) and torch.all(weights[~from_clips] == 1.0)
    no_clips = {k: v for k, v in data.items() if not k.startswith("clip_")}
    latents, _, _ = training_batch(no_clips, run, torch.Generator().manual_seed(0))
    assert latents.shape[0] == 32 and float(latents.abs().sum()) == 0.0


def _tiny_wan_bundle(tmp_path: Path) -> tuple[Path, Path]:
    """An untrained tiny Wan base (64x64, 5 observed frames) and a bundle of it with the shipped IDM, horizon 9."""
    from typer.testing import CliRunner

    from eva_runtime.cli import app
    from tests.wan_helpers import save_tiny_base

    base = save_tiny_base(tmp_path / "base", size=64, history_frames=5)
    bundle = tmp_path / "bundle"
    arguments = ["bundle", "create", "--idm", str(REPOSITORY / "models" / "bundle_transfer_cube" / "idm.onnx")]
    arguments += ["--out", str(bundle), "--world-model", "wan", "--wm-base", str(base), "--horizon", "9"]
    arguments += ["--wm-steps", "2", "--p0", "47.4354"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    return base, bundle


def test_open_loop_from_captured_states_plays_each_plan_from_its_state(captured, embodiment, tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from eva_runtime.cli import app

    states, _, states_path = captured
    clips_path = tmp_path / "clips.npz"
    save_clip_set(clips_path, label_states(states, "transfer_cube", embodiment, horizon=9))
    base, bundle = _tiny_wan_bundle(tmp_path)
    runner = CliRunner()
    out = tmp_path / "open_loop.json"
    arguments = ["eval", "world-model-states", "--model", str(base), "--bundle", str(bundle), "--states"]
    arguments += [str(states_path), "--clips", str(clips_path), "--out", str(out), "--steps", "2", "--threads", "1"]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["summary"]["conditions"] == len(states)
    for source in ("model", "truth"):  # the model's plans and the expert's labelled video, decoded the same way
        progress, low, high = report["summary"][source]["task_progress"]
        assert low <= progress <= high and 0.0 <= progress <= 5.0
    shuffled = dataclasses.replace(load_clip_set(clips_path), steps=states.step[::-1].copy())
    save_clip_set(tmp_path / "other.npz", shuffled)
    arguments[arguments.index(str(clips_path))] = str(tmp_path / "other.npz")
    refused = runner.invoke(app, arguments)
    assert refused.exit_code == 2 and "not the labels of these states" in refused.output


def test_executed_labels_from_the_command_line_report_every_state_and_refuse_to_write_nothing(
    captured, tmp_path
) -> None:
    """`eva train executed-label` on a capture with a real (untrained, tiny) Wan model and the shipped IDM: every
    state's outcome goes to OUT.json; an untrained model's plans from the start pose go nowhere, so no clip set is
    written and the command says so (exit 1), and an earlier clip set given with --include is then what is written."""
    import json

    from typer.testing import CliRunner

    from eva_runtime.cli import app

    states, _, states_path = captured
    base, bundle = _tiny_wan_bundle(tmp_path)
    runner = CliRunner()
    out = tmp_path / "executed.npz"
    arguments = ["train", "executed-label", "--states", str(states_path), "--model", str(base), "--bundle"]
    arguments += [str(bundle), "--out", str(out), "--samples", "2", "--horizon", "9", "--steps", "2", "--threads", "1"]
    result = runner.invoke(app, arguments)
    report = json.loads(out.with_suffix(".json").read_text())
    assert len(report["states"]) == report["summary"]["states"] == len(states)
    assert all(len(row["progress_of_samples"]) == 2 for row in report["states"])
    assert result.exit_code == 1 and not out.exists(), result.output
    assert "no plan worth keeping" in " ".join(result.output.split())
    earlier = tmp_path / "earlier.npz"
    save_clip_set(
        earlier,
        label_states(
            states, "transfer_cube", load_embodiment(REPOSITORY / "calibration" / "aloha_sim.yaml"), horizon=9
        ),
    )
    result = runner.invoke(app, [*arguments, "--include", str(earlier)])
    assert result.exit_code == 0, result.output
    assert len(load_clip_set(out)) == len(states)  # nothing new kept: the earlier labels, one per state
