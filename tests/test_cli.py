"""The `eva` command line: sub-commands exist, the safety demo and soak run end to end, file checks report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from eva_runtime.cli import app
from eva_runtime.safety import Check, SafetyLimits
from eva_runtime.safety.demo import FAULT_WINDOWS, run_demo

from .conftest import CALIBRATION

runner = CliRunner()


def test_help_lists_the_sub_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("safety", "embodiment", "version"):
        assert command in result.output
    safety = runner.invoke(app, ["safety", "--help"])
    assert "demo" in safety.output and "soak" in safety.output


def test_safety_demo_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "demo.png"
    result = runner.invoke(app, ["safety", "demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "applied commands all finite: True" in result.output


def test_demo_faults_each_trigger_their_check_and_output_stays_in_range(limits: SafetyLimits) -> None:
    run = run_demo(limits)
    assert np.all(np.isfinite(run.applied))
    assert np.all(run.applied >= limits.soft_low - 1e-9) and np.all(run.applied <= limits.soft_high + 1e-9)
    windows = {label: (start, end) for start, end, label in FAULT_WINDOWS}
    expected = {
        "teleport": Check.VELOCITY,
        "NaN burst": Check.NON_FINITE_TARGET,
        "beyond limit": Check.POSITION_LIMIT,
        "jitter": Check.ACCELERATION,
        "stale plan": Check.STALE_INPUT,
    }
    for label, check in expected.items():
        start, end = windows[label]
        inside = {item.check for time, item in run.interventions if start <= time < end + 0.2}
        assert check in inside, (label, inside)
    # Before the first fault the stream is smooth and within limits: nothing to do.
    assert all(time >= FAULT_WINDOWS[0][0] for time, _ in run.interventions)


def test_soak_reports_zero_violations_as_json() -> None:
    result = runner.invoke(app, ["safety", "soak", "--sequences", "300", "--workers", "1", "--seed", "3"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["sequences"] == 300 and report["violations"] == 0 and report["ticks"] > 300


def test_embodiment_check_passes_good_files_and_names_problems(tmp_path: Path) -> None:
    good = runner.invoke(app, ["embodiment", "check", *map(str, sorted(CALIBRATION.glob("*.yaml")))])
    assert good.exit_code == 0, good.output
    assert "left_gripper" in good.output
    bad = tmp_path / "bad.yaml"
    bad.write_text((CALIBRATION / "aloha_sim.yaml").read_text().replace("control_rate_hz: 50.0", "control_rate_hz: -5"))
    result = runner.invoke(app, ["embodiment", "check", str(bad)])
    assert result.exit_code == 1
    assert "control_rate_hz" in result.output and "bad.yaml" in result.output


def test_world_model_names_are_the_shipped_bundle_directories(tmp_path: Path) -> None:
    from eva_runtime.cli.runtime import MODELS, shipped_bundles

    for name in ("bundle_transfer_cube", "bundle_transfer_cube_wan", "bundle_transfer_cube_fgw2_aligned"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.yaml").write_text("format: eva-runtime/bundle-v1\n")
    (tmp_path / "bundle_transfer_cube_half").mkdir()  # no manifest: not a bundle
    (tmp_path / "bundle_insertion").mkdir()
    (tmp_path / "bundle_insertion" / "manifest.yaml").write_text("format: eva-runtime/bundle-v1\n")
    found = shipped_bundles("transfer_cube", tmp_path)
    assert sorted(found) == ["fgw2_aligned", "oracle", "wan"]
    assert found["oracle"] == tmp_path / "bundle_transfer_cube"
    # The repository's own: every name the README gives `eva run --world-model` is one.
    assert {"oracle", "wan", "aligned", "fgw2"} <= set(shipped_bundles("transfer_cube", MODELS))


def test_an_unknown_world_model_name_exits_2_and_lists_the_shipped_ones() -> None:
    result = runner.invoke(app, ["run", "--world-model", "nonesuch", "--episodes", "1"])
    assert result.exit_code == 2 and "nonesuch" in result.output and "fgw2" in result.output


def test_scoring_an_aligned_bundle_without_its_adapter_is_refused(tmp_path: Path) -> None:
    """Otherwise the aligned bundle's IDM would score the base model's rollouts, reported as the aligned model's."""
    repo = Path(__file__).resolve().parents[1]
    arguments = ["eval", "world-model", "--model", str(repo / "models" / "wan_transfer_cube_fgw2")]
    arguments += ["--bundle", str(repo / "models" / "bundle_transfer_cube_fgw2_aligned")]
    arguments += ["--data", str(tmp_path), "--out", str(tmp_path / "out.json")]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2 and "adapter0" in result.output and "--adapter" in result.output
    assert not (tmp_path / "out.json").exists()


def test_track_headroom_zero_runs_the_loop_without_the_tracker(tmp_path: Path) -> None:
    from eva_runtime.records.outcome_fields import TRACKER_PREFIX
    from eva_runtime.records.outcome_log import OutcomeLog

    out_of_range = runner.invoke(app, ["run", "--episodes", "1", "--track-headroom", "1.5"])
    assert out_of_range.exit_code == 2 and "track-headroom" in out_of_range.output
    log = tmp_path / "run.db"  # paced: the oracle's plans must arrive while the episode runs
    policy = os.sched_getscheduler(0)
    result = runner.invoke(app, ["run", "--episodes", "1", "--log", str(log), "--track-headroom", "0"])
    assert result.exit_code == 0, result.output
    # Paced runs ask for real-time scheduling, say what they got, and give it back when they end.
    assert "scheduler: SCHED_FIFO" in result.output or "not permitted" in result.output
    assert os.sched_getscheduler(0) == policy
    with OutcomeLog(log, read_only=True) as opened:
        (record,) = opened.episodes()
    nominal = record.nominal_interventions or {}
    assert nominal.get("joint_ticks", 0) > 0  # autonomous motion happened
    # The default tracker (0.9) bends the oracle's curve on ~16 % of joint-ticks; off, nothing is its doing.
    assert not [key for key in nominal if key.startswith(TRACKER_PREFIX)], nominal


def test_the_camera_thread_is_refused_without_pacing() -> None:
    result = runner.invoke(app, ["run", "--episodes", "1", "--no-pace", "--camera-thread"])
    assert result.exit_code == 2 and "needs real-time pacing" in " ".join(result.output.split())
