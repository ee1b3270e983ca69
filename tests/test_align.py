"""`eva train align` end to end on tiny real models: 2 CPU ranks under torchrun, telemetry, guard, resume; and the
config's validation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from eva_runtime.training.align_config import AlignConfigError, load_align_config
from tests.wan_helpers import record_expert_episodes, save_tiny_base, write_square_episodes

REPOSITORY = Path(__file__).resolve().parents[1]
BUNDLE = REPOSITORY / "models" / "bundle_transfer_cube"
TELEMETRY_KEYS = {
    "reward_mean",
    "reward_std",
    "penalty_p_jerk",
    "penalty_p_acc",
    "penalty_p_vel",
    "penalty_p_alim",
    "plausible_fraction",
    "motion_rad",
    "kl",
    "clip_fraction",
    "approx_kl",
    "ratio_mean",
    "ratio_min",
    "ratio_max",
    "flat_group_fraction",
    "loss",
}


def _config(tmp_path: Path, **overrides) -> Path:
    values = {
        "base": str(save_tiny_base(tmp_path / "base")),
        "bundle": str(BUNDLE),
        "data": str(write_square_episodes(tmp_path / "data", count=5)),
        "iterations": 2,
        "conditions_per_iteration": 1,
        "group_size": 2,
        "sampling_steps": 3,
        "horizon": 9,
        "condition_starts": [0, 2],
        "held_out": 2,
        "guard": {"eval_every": 1, "eval_conditions": 2, "min_motion_ratio": 0.0, "max_psnr_drop_db": 100.0},
        "sample_every": 1,
        "checkpoint_every": 1,
        "clip_range": 0.2,
        "lora_rank": 2,
        "lora_alpha": 2.0,
    }
    values.update(overrides)
    path = tmp_path / "align.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _eva(*arguments: str, ranks: int = 1) -> subprocess.CompletedProcess:
    eva = str(Path(sys.executable).with_name("eva"))
    prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks), eva]
    command = prefix if ranks > 1 else [eva]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*command, *arguments], capture_output=True, text=True, timeout=400, env=environment)


def test_two_rank_alignment_with_telemetry_guard_and_resume(tmp_path: Path) -> None:
    config = _config(tmp_path)
    out = tmp_path / "run"
    finished = _eva("train", "align", "--config", str(config), "--out", str(out), ranks=2)
    assert finished.returncode == 0, finished.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["iterations"] == 2
    records = [json.loads(line) for line in (out / "telemetry.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2]
    assert set(records[0]) >= TELEMETRY_KEYS, TELEMETRY_KEYS - set(records[0])
    assert [c["iteration"] for c in summary["checks"]] == [0, 1, 2]  # the SFT reference, then every iteration
    assert all({"reward", "motion_rad", "psnr_db", "plausible"} <= set(c) for c in summary["checks"])
    for produced in ("training_curves.png", "samples/iter_00001.gif", "samples/iter_00001_joints.png"):
        assert (out / produced).stat().st_size > 0
    assert (out / "best_lora" / "pytorch_lora_weights.safetensors").is_file()
    assert json.loads((out / "last" / "state.json").read_text())["iteration"] == 2

    resumed = _eva("train", "align", "--config", str(config), "--out", str(out), "--resume", "--iterations", "3")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed at iteration 2" in resumed.stdout
    records = [json.loads(line) for line in (out / "telemetry.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2, 3]


def test_guard_stops_when_motion_collapses(tmp_path: Path) -> None:
    # A motion floor no rollout can reach: the first check fails and training stops there.
    config = _config(tmp_path, iterations=3, guard={"eval_every": 1, "eval_conditions": 2, "min_motion_ratio": 1.0})
    out = tmp_path / "run"
    finished = _eva("train", "align", "--config", str(config), "--out", str(out), "--base", str(tmp_path / "base"))
    assert finished.returncode == 0, finished.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    if summary["checks"][1]["motion_rad"] < summary["checks"][0]["motion_rad"]:
        assert summary["stopped"] and "motion collapsed" in summary["stopped"] and summary["iterations"] == 1
    else:  # the adapter moved more than the reference: the guard passes, as it should
        assert summary["checks"][1]["passed"]


def test_config_errors_name_file_key_and_range(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"base": "b", "bundle": "x", "data": "d", "group_size": 1, "lr": 0.1}))
    with pytest.raises(AlignConfigError) as error:
        load_align_config(path)
    message = str(error.value)
    assert f"{path}: group_size" in message and "greater than or equal to 2" in message
    assert f"{path}: lr: unknown key" in message
    presets = ("align_tiny.yaml", "align_wan14b.yaml", "align_fgw2.yaml", "align_fgw2_task.yaml")
    for preset in (*presets, "align_regrasp_closed_loop.yaml", "align_var2_task.yaml", "align_var2_ranked.yaml"):
        loaded = load_align_config(REPOSITORY / "configs" / preset)
        assert loaded.group_size == 8
        if preset != "align_wan14b.yaml":  # the 14B base lives on the GPU machine, not in the repository
            assert (REPOSITORY / loaded.base / "eva_hashes.json").is_file(), preset
            assert (REPOSITORY / loaded.bundle / "manifest.yaml").is_file(), preset
    authors = load_align_config(REPOSITORY / "configs" / "align_wan14b.yaml")
    assert (authors.learning_rate, authors.sampling_steps, authors.inner_epochs) == (2e-4, 40, 4)
    assert (authors.clip_range, authors.lora_rank, authors.schedule.kind) == (1e-5, 32, "wan")
    # The authors' beta 0.004 divides the KL by the schedule variance; ours by the step variance (1/|dt| larger).
    assert authors.kl_beta == pytest.approx(0.004 / authors.sampling_steps)


def test_task_reward_plays_decoded_plans_from_replayed_starts(tmp_path: Path) -> None:
    task_reward = {"task": "transfer_cube", "weight": 1.0}
    data = record_expert_episodes(tmp_path / "sim", 3)
    config = _config(tmp_path, data=str(data), iterations=1, held_out=1, task_reward=task_reward)
    finished = _eva("train", "align", "--config", str(config), "--out", str(tmp_path / "run"))
    assert finished.returncode == 0, finished.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "telemetry.jsonl").read_text().splitlines()[0])
    assert {"task_progress", "task_progress_group_std", "task_final_stage", "task_closest_reach_m"} <= set(record)
    assert 0.0 <= record["task_progress"] <= 5.0 and record["task_closest_reach_m"] > 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert all("task_progress" in check for check in summary["checks"])

    # Episodes the simulation cannot reproduce (these squares carry seeds but no expert made them): refused.
    squares = tmp_path / "squares"
    squares.mkdir()
    config = _config(squares, task_reward=task_reward)
    refused = _eva("train", "align", "--config", str(config), "--out", str(squares / "run"))
    assert refused.returncode != 0 and "the replayed expert commands" in refused.stderr + refused.stdout


def test_conditions_carry_the_models_history_padded_at_the_episode_start() -> None:
    import numpy as np

    from eva_runtime.training.align_data import _conditions
    from eva_runtime.training.wm_data import EpisodeVideo

    frames = np.arange(30, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8)
    video = EpisodeVideo("e", frames, np.zeros((30, 14)), "t", seed=7)
    at_start, later = _conditions([video], (0, 8, 25), horizon=9, history=5, steps_per_frame=4)  # 25: no future
    assert [int(f[0, 0, 0]) for f in at_start.frames] == [0, 0, 0, 0, 0]  # padded as SFT and the robot pad
    assert [int(f[0, 0, 0]) for f in later.frames] == [4, 5, 6, 7, 8]  # the newest observed frame last
    assert int(later.truth[0, 0, 0, 0]) == 8 and len(later.truth) == 9
    assert (later.origin.seed, later.origin.step) == (7, 32)


def test_a_resumed_run_with_other_settings_is_refused_naming_the_field(tmp_path: Path) -> None:
    config = _config(tmp_path, iterations=1, guard={"eval_every": 1, "eval_conditions": 1})
    out = tmp_path / "run"
    finished = _eva("train", "align", "--config", str(config), "--out", str(out))
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["settings"]["learning_rate"] == pytest.approx(1e-4)

    changed = _config(tmp_path, iterations=2, learning_rate=3e-4, guard={"eval_every": 1, "eval_conditions": 1})
    refused = _eva("train", "align", "--config", str(changed), "--out", str(out), "--resume")
    assert refused.returncode == 2
    assert "'learning_rate' is 0.0003, the run used 0.0001" in refused.stdout, refused.stdout + refused.stderr
    assert len((out / "telemetry.jsonl").read_text().splitlines()) == 1  # nothing trained, nothing overwritten

    # Another SFT model under the same path: its hashes differ, and that is refused too.
    longer = _config(tmp_path, iterations=2, guard={"eval_every": 1, "eval_conditions": 1})
    save_tiny_base(tmp_path / "base", seed=1)  # after _config, which writes the seed-0 base
    refused = _eva("train", "align", "--config", str(longer), "--out", str(out), "--resume")
    assert refused.returncode == 2 and "'base eva_hashes.json' is" in refused.stdout, refused.stdout


def test_closed_loop_conditions_are_played_from_their_captured_states(tmp_path: Path) -> None:
    from eva_runtime.control.plan_states import load_captured_states
    from eva_runtime.embodiment import load_embodiment
    from tests.plan_state_helpers import capture_hold_states

    embodiment = load_embodiment(REPOSITORY / "calibration" / "aloha_sim.yaml")
    states = tmp_path / "states.safetensors"
    capture_hold_states(embodiment, states, seed=11, ticks=120, history_frames=1, image_size=(32, 32))
    assert len(load_captured_states(states)) >= 2
    data = record_expert_episodes(tmp_path / "sim", 3)
    common = {"data": str(data), "iterations": 1, "held_out": 1, "task_reward": {"task": "transfer_cube"}}
    closed_loop = {"states": str(states), "fraction": 0.5}
    config = _config(tmp_path, closed_loop=closed_loop, conditions_per_iteration=2, **common)
    finished = _eva("train", "align", "--config", str(config), "--out", str(tmp_path / "run"))
    assert finished.returncode == 0, finished.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "telemetry.jsonl").read_text().splitlines()[0])
    # One condition of two came from the capture: its progress was played from captured states, which no replay
    # could produce (seed 11 is in no recording); the telemetry keeps the two sources apart.
    assert 0.0 <= record["task_progress"] <= 5.0 and record["task_closest_reach_m"] > 0
    halves = (record["task_progress_closed_loop"] + record["task_progress_recorded"]) / 2
    assert halves == pytest.approx(record["task_progress"], abs=1e-6)  # equal shares: the mean is their mean
    assert (tmp_path / "run" / "samples" / "iter_00001.gif").stat().st_size > 0  # no truth: the held frame instead

    # A capture that does not fit the model (5 observed frames against the run's 1) is refused, naming why.
    wide = tmp_path / "wide.safetensors"
    capture_hold_states(embodiment, wide, seed=11, ticks=60, history_frames=5, image_size=(32, 32))
    closed_loop = {"states": str(wide), "fraction": 0.5}
    config = _config(tmp_path, closed_loop=closed_loop, **common)
    refused = _eva("train", "align", "--config", str(config), "--out", str(tmp_path / "run2"))
    assert refused.returncode == 2 and "observed frames 5, the run needs 1" in refused.stdout, refused.stdout


def test_closed_loop_conditions_need_the_task_reward(tmp_path: Path) -> None:
    path = tmp_path / "align.yaml"
    path.write_text(yaml.safe_dump({"base": "b", "bundle": "x", "data": "d", "closed_loop": {"states": "s"}}))
    with pytest.raises(AlignConfigError, match="closed_loop needs task_reward"):
        load_align_config(path)


def test_a_resumption_accepts_a_rebuilt_bundle_and_refuses_a_changed_one(tmp_path: Path) -> None:
    import shutil

    from eva_runtime.training.align_config import load_align_config
    from eva_runtime.training.align_state import claim_run

    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE, bundle)
    config = load_align_config(_config(tmp_path, bundle=str(bundle)))
    out = tmp_path / "run"
    claim_run(out, config, resume=False)
    (out / "last").mkdir()
    (out / "last" / "state.json").write_text("{}")  # a checkpoint exists: the next claim is a resumption
    manifest = bundle / "manifest.yaml"
    data = yaml.safe_load(manifest.read_text())
    data["created"] = "2031-01-01T00:00:00Z"  # rebuilt later from the same files
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))
    claim_run(out, config, resume=True)
    data["reward"]["p0"] = data["reward"]["p0"] * 2  # another calibration: another bundle
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ValueError, match="'bundle content'"):
        claim_run(out, config, resume=True)


def test_reward_ranked_alignment_trains_guards_and_resumes(tmp_path: Path) -> None:
    config = _config(tmp_path, group_size=3, ranked={"keep": 1, "updates": 1, "anchor": True})
    out = tmp_path / "run"
    finished = _eva("train", "align", "--config", str(config), "--out", str(out))
    assert finished.returncode == 0, finished.stderr[-3000:]
    records = [json.loads(line) for line in (out / "telemetry.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2]
    assert {"reward_mean", "loss", "ranked_group_fraction", "kept_reward_mean", "motion_rad"} <= set(records[0])
    assert all(r["kept_reward_mean"] >= r["reward_mean"] for r in records)  # the best of each group is kept
    assert "clip_fraction" not in records[0]  # no ratio, no clipping: not Flow-GRPO
    assert all(r["anchored"] == 1 for r in records)  # the one drawn condition's recorded clip, beside its best
    summary = json.loads((out / "summary.json").read_text())
    assert [c["iteration"] for c in summary["checks"]] == [0, 1, 2]
    assert (out / "best_lora" / "pytorch_lora_weights.safetensors").is_file()
    resumed = _eva("train", "align", "--config", str(config), "--out", str(out), "--resume", "--iterations", "3")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed at iteration 2" in resumed.stdout
    with pytest.raises(AlignConfigError, match=r"ranked\.keep"):
        load_align_config(_config(tmp_path, group_size=2, ranked={"keep": 2}))
