"""A Wan deployment bundle end to end: `eva bundle create --world-model wan`, `eva run` closed loop with a learned
(tiny) world model, and `eva eval compare` against the oracle bundle on the same data and seeds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from eva_runtime.bundle import BundleError, load_bundle
from eva_runtime.cli import app
from tests.wan_helpers import record_expert_episodes, save_tiny_base, write_square_episodes

REPOSITORY = Path(__file__).resolve().parents[1]
ORACLE = REPOSITORY / "models" / "bundle_transfer_cube"


@pytest.fixture(scope="module")
def wan_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wan")
    base = save_tiny_base(root / "base")
    bundle = root / "bundle"
    arguments = ["bundle", "create", "--idm", str(ORACLE / "idm.onnx"), "--out", str(bundle)]
    arguments += ["--world-model", "wan", "--wm-base", str(base), "--horizon", "9", "--wm-steps", "2"]
    arguments += ["--p0", "47.4354"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    return bundle


def test_wan_bundle_pins_its_base(wan_bundle: Path) -> None:
    deployed = load_bundle(wan_bundle)
    entry = deployed.manifest.world_model
    assert entry.kind == "wan" and entry.base == "../base" and entry.sampling.steps == 2
    assert deployed.world_model_base == (wan_bundle.parent / "base").resolve()
    listing = wan_bundle.parent / "base" / "eva_hashes.json"
    original = listing.read_text()
    try:
        listing.write_text(original.replace("{", '{\n  "extra": "0",', 1))
        with pytest.raises(BundleError, match="base_sha256"):
            load_bundle(wan_bundle)
    finally:
        listing.write_text(original)


def test_compare_runs_oracle_and_wan_side_by_side(wan_bundle: Path, tmp_path: Path) -> None:
    data = write_square_episodes(tmp_path / "data", count=2, frames=40)
    out = tmp_path / "compare"
    arguments = ["eval", "compare", "--bundles", f"oracle={ORACLE},tiny={wan_bundle}", "--data", str(data)]
    arguments += ["--out", str(out), "--episodes", "2", "--starts", "0,4", "--horizon", "9"]
    arguments += ["--closed-loop-episodes", "1", "--threads", "1"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "compare.json").read_text())
    assert list(rows) == ["oracle", "tiny"]
    assert {row["reward_from"] for row in rows.values()} == {"tiny"}  # one P0 for every row of the table
    assert rows["oracle"]["open_loop"]["psnr_db"] is None  # the recorded future itself
    assert rows["tiny"]["open_loop"]["conditions"] == 4
    for name in ("oracle", "tiny"):
        loop = rows[name]["closed_loop"]
        assert loop["episodes"] == 1 and loop["successes"] in (0, 1)
        assert 0.0 <= rows[name]["open_loop"]["model"]["plausible"][0] <= 1.0
    table = (out / "compare.md").read_text()
    assert "| oracle |" in table and "| tiny |" in table and "exact (the recording)" in table
    assert (out / "compare.png").stat().st_size > 0
    assert (out / "tiny.db").is_file()  # the closed loop went through eva run's outcome log


def test_open_loop_eval_reports_errors_against_the_recording_per_start_frame(wan_bundle: Path, tmp_path: Path) -> None:
    data = write_square_episodes(tmp_path / "data", count=2, frames=40)
    out = tmp_path / "open_loop.json"
    arguments = ["eval", "world-model", "--model", str(wan_bundle.parent / "base"), "--bundle", str(wan_bundle)]
    arguments += ["--data", str(data), "--out", str(out), "--episodes", "2", "--starts", "0,4,8", "--horizon", "9"]
    arguments += ["--steps", "2", "--history-frames", "5", "--threads", "1"]
    arguments += ["--reference-vae", str(wan_bundle.parent / "base")]  # the model's own VAE, round trip only
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert list(report["summary"]["by_start"]) == ["0", "4", "8"]  # start 0 pads its history, as on the robot
    truth = report["summary"]["truth"]
    assert truth["arm_error_rad"][0] >= 0.0 and truth["gripper_error"][0] >= 0.0  # the IDM's own error
    for row in report["summary"]["by_start"].values():
        assert row["conditions"] == 2 and row["arm_error_rad"] >= 0.0 and row["motion_ratio"] >= 0.0
        assert row["reference_gripper_error"] >= 0.0
    reference = report["summary"]["reference"]
    assert reference["arm_error_rad"][0] > 0.0  # a VAE round trip is not the recording
    table = out.with_suffix(".md").read_text()
    assert "| start frame |" in table and "| reference |" in table and "reference gripper error" in table


def test_open_loop_eval_plays_decoded_plans_from_replayed_starts(wan_bundle: Path, tmp_path: Path) -> None:
    data = record_expert_episodes(tmp_path / "sim", 2)
    out = tmp_path / "open_loop.json"
    arguments = ["eval", "world-model", "--model", str(wan_bundle.parent / "base"), "--bundle", str(wan_bundle)]
    arguments += ["--data", str(data), "--out", str(out), "--episodes", "2", "--starts", "0,4", "--horizon", "9"]
    arguments += ["--steps", "2", "--threads", "1", "--task-progress", "transfer_cube"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    for source in ("model", "truth"):
        progress, low, high = report["summary"][source]["task_progress"]
        assert 0.0 <= low <= progress <= high <= 5.0
        assert report["summary"][source]["task_closest_reach_m"][0] > 0.0
    rows = report["conditions"]
    assert len(rows) == 4 and all("task_final_stage" in row["model"] for row in rows)
    assert all("task_progress" in row for row in report["summary"]["by_start"].values())
    assert "| video | task progress | final stage |" in out.with_suffix(".md").read_text()


def test_the_shipped_wan_bundle_verifies_and_imagines_the_configured_horizon() -> None:
    from eva_runtime.control.sim_runtime import world_model_spec
    from eva_runtime.sim.tasks import task_spec
    from eva_runtime.world_model.protocol import RolloutRequest
    from eva_runtime.world_model.wan.backend import load_wan_world_model

    deployed = load_bundle(REPOSITORY / "models" / "bundle_transfer_cube_wan")  # every hash, the base pinned
    entry = deployed.manifest.world_model
    assert entry.kind == "wan" and entry.fps == deployed.manifest.idm.fps
    model = load_wan_world_model(world_model_spec(deployed, "transfer_cube"))
    frame = np.full((1, 64, 64, 3), 90, np.uint8)
    instruction = task_spec("transfer_cube").instruction
    rollout = model.rollout(RolloutRequest({"cam_high": frame}, instruction, entry.horizon, seed=0, samples=2))
    assert rollout.frames["cam_high"].shape == (2, entry.horizon, 64, 64, 3)


def test_best_of_n_open_loop_keeps_the_rollout_the_gate_would_execute(wan_bundle: Path, tmp_path: Path) -> None:
    from eva_runtime.control.sim_runtime import world_model_spec
    from eva_runtime.idm.decoder import IdmDecoder
    from eva_runtime.training.wm_data import load_videos
    from eva_runtime.world_model.comparison import reward_config_of
    from eva_runtime.world_model.evaluation import evaluate_world_model
    from eva_runtime.world_model.wan.backend import load_wan_world_model

    deployed = load_bundle(wan_bundle)
    model = load_wan_world_model(world_model_spec(deployed, task="", threads=1))
    decoder = IdmDecoder(deployed.idm_path, deployed.hashes()["idm"])
    videos = load_videos(write_square_episodes(tmp_path / "data", count=2, frames=40), "cam_high", 12.5, (64, 64))
    reward = reward_config_of(deployed)
    runs = {
        best_of: evaluate_world_model(model, decoder, reward, videos, [0, 4], 9, samples=3, best_of=best_of)
        for best_of in (False, True)
    }
    for mean, best in zip(runs[False], runs[True], strict=True):
        assert (mean.episode, mean.start) == (best.episode, best.start)  # the same three rollouts, seeded alike
        assert best.model["reward"] >= mean.model["reward"] - 1e-9  # the best of three is never below their mean
        assert best.truth == mean.truth
    assert any(b.model["reward"] > m.model["reward"] + 1e-6 for m, b in zip(runs[False], runs[True], strict=True))


def test_the_ladder_measures_each_rung_open_loop_as_it_runs(wan_bundle: Path, tmp_path: Path) -> None:
    data = write_square_episodes(tmp_path / "data", count=2, frames=40)
    config = tmp_path / "configs" / "ladder.yaml"
    config.parent.mkdir()
    config.write_text(
        "rungs:\n"
        f"  - {{name: oracle, bundle: {ORACLE}}}\n"
        f"  - {{name: oracle slowed, bundle: {ORACLE}, degrade: {{motion_scale: 0.5}}}}\n"
        f"  - {{name: tiny best of 2, bundle: {wan_bundle}, samples: 2}}\n"
    )
    out = tmp_path / "ladder"
    arguments = ["eval", "ladder", "--config", str(config), "--out", str(out), "--episodes", "1"]
    arguments += ["--episode-steps", "20", "--open-loop-data", str(data), "--open-loop-episodes", "2"]
    arguments += ["--starts", "0,4", "--horizon", "9"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    rows = {row["rung"]: row for row in json.loads((out / "ladder.json").read_text())}
    assert rows["oracle"]["open_loop"]["psnr_db"] is None  # the recorded future itself
    assert "open_loop" not in rows["oracle slowed"]  # an instrument on the oracle's frames: closed loop only
    tiny = rows["tiny best of 2"]["open_loop"]
    assert tiny["conditions"] == 4 and tiny["samples"] == 2
    mean, low, high = tiny["reward"]
    assert low <= mean <= high and 0.0 <= tiny["plausible"][0] <= 1.0 and tiny["psnr_db"][0] > 0.0
    assert all(row["episodes"] == 1 for row in rows.values())  # and each rung still ran closed loop
    table = (out / "ladder.md").read_text()
    assert "Open loop, 4 held-out conditions" in table
    assert "| oracle | exact |" in table and "| tiny best of 2 |" in table and "| oracle slowed | exact" not in table


def test_a_bad_open_loop_start_list_is_refused(tmp_path: Path) -> None:
    arguments = ["eval", "ladder", "--config", str(REPOSITORY / "configs" / "ladder_transfer_cube.yaml")]
    arguments += ["--out", str(tmp_path / "ladder"), "--open-loop-data", str(tmp_path), "--starts", "0,x"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2 and "--starts" in result.output
    assert not (tmp_path / "ladder" / "ladder.json").exists()
