"""Deployment assembly and the one episode-logging path: a verified bundle becomes a planner spec and a model id;
the oracle refuses a robot that is not the simulation; every episode reaches the outcome log (the robot's check,
an operator's relabel kept beside it, "aborted" with the reason where nobody can judge, and an episode cut short
by an error ended as aborted, never lost)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eva_runtime.bundle import BundleError
from eva_runtime.control.autonomous_loop import LoopSettings
from eva_runtime.control.deployment import Deployment, run_episodes, stage_funnel
from eva_runtime.control.episode_stats import EpisodeStats
from eva_runtime.control.executor import Plan
from eva_runtime.control.planner import PlanOutcome, PlanRequest
from eva_runtime.control.planner_port import InProcessPlanner
from eva_runtime.records.outcome_log import OutcomeLog
from eva_runtime.safety import SafetyLimits
from tests.fakes import Clock, FakeRobot

REPO = Path(__file__).resolve().parents[1]
ORACLE = REPO / "models" / "bundle_transfer_cube"
LEARNED = REPO / "models" / "bundle_transfer_cube_wan"


def robot_and_planner(step_rad: float = 0.002) -> tuple[FakeRobot, InProcessPlanner, Clock]:
    clock = Clock()
    probe = FakeRobot(clock, np.zeros(14))
    limits = SafetyLimits.from_embodiment(probe.embodiment)
    robot = FakeRobot(clock, (limits.soft_low + limits.soft_high) / 2, advance_on_send=True)

    def plan(request: PlanRequest) -> PlanOutcome:
        actions = robot.position + np.arange(37)[:, None] * step_rad
        return PlanOutcome(Plan(request.time, 12.5, actions, "ramp", 1.0), (1.0,), 0.2)

    return robot, InProcessPlanner(plan, clock, 0.2), clock


def test_a_bundle_becomes_a_planner_spec_and_a_model_id_with_its_overrides() -> None:
    plain = Deployment.from_bundle(ORACLE, "transfer_cube")
    assert plain.oracle and plain.spec.world_model["kind"] == "oracle" and plain.spec.idm_sha256
    assert plain.model_id.startswith("oracle") and "~" not in plain.model_id
    changed = Deployment.from_bundle(
        ORACLE, "transfer_cube", world_model={"degrade": {"motion_scale": 0.6}}, planner={"samples": 4}
    )
    assert changed.spec.world_model["degrade"] == {"motion_scale": 0.6} and changed.spec.settings.samples == 4
    assert changed.model_id.endswith("~motion_scale=0.6,samples=4")
    fewer_steps = Deployment.from_bundle(ORACLE, "transfer_cube", world_model={"steps": 3})
    assert fewer_steps.spec.world_model["steps"] == 3 and fewer_steps.model_id.endswith("~steps=3")


def test_a_tampered_bundle_is_refused_before_anything_starts(tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(ORACLE, copy)
    data = bytearray((copy / "idm.onnx").read_bytes())
    data[len(data) // 3] ^= 0xFF
    (copy / "idm.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"idm\.onnx"):
        Deployment.from_bundle(copy, "transfer_cube")


def test_the_oracle_cannot_drive_a_robot_that_is_not_the_simulation() -> None:
    robot, _, _ = robot_and_planner()
    with pytest.raises(ValueError, match="simulation instrument"):
        Deployment.from_bundle(ORACLE, "transfer_cube").privileged_source(robot)
    assert Deployment.from_bundle(LEARNED, "transfer_cube").privileged_source(robot) is None


def test_committed_frames_need_a_learned_model_whose_planner_sends_its_imagined_frames_back() -> None:
    robot, _, _ = robot_and_planner()
    committed = LoopSettings(committed_frames=12)
    for deployment in (
        Deployment.from_bundle(ORACLE, "transfer_cube", planner={"keep_imagined": True}),  # it re-simulates
        Deployment.from_bundle(LEARNED, "transfer_cube"),  # its plans would carry nothing to commit to
    ):
        with pytest.raises(ValueError, match="committed_frames"):
            deployment.loop_settings(committed, robot.embodiment)
    kept = Deployment.from_bundle(LEARNED, "transfer_cube", planner={"keep_imagined": True})
    assert kept.loop_settings(committed, robot.embodiment).committed_frames == 12


def test_episodes_without_a_success_check_are_logged_aborted_unless_an_operator_labels_them(tmp_path: Path) -> None:
    robot, planner, clock = robot_and_planner()
    deployment = Deployment.from_bundle(LEARNED, "transfer_cube")
    labels = iter([None, "success"])
    log = tmp_path / "log.db"
    result = run_episodes(
        deployment,
        robot,
        planner,
        2,
        50,
        log,
        LoopSettings(max_steps=40, pace=False),
        label=lambda: next(labels),
        clock=clock,
        instruction="transfer the cube",
    )
    assert result.episodes == 2 and result.plans >= 2 and result.model_id == deployment.model_id
    with OutcomeLog(log, read_only=True) as opened:
        records = opened.episodes(run_id=result.run_id)
    assert [r.outcome for r in records] == ["aborted", "success"]
    assert records[0].labelled_by == "automatic" and "no success check" in (records[0].failure_reason or "")
    assert records[1].labelled_by == "operator"
    assert all(r.model_id == deployment.model_id for r in records)
    assert planner.requests[0].instruction == "transfer the cube"
    with pytest.raises(ValueError, match="no instruction"):
        run_episodes(deployment, robot, planner, 1, 0, tmp_path / "other.db", LoopSettings(max_steps=5, pace=False))


def test_an_episode_cut_short_by_an_error_is_ended_as_aborted_not_lost(tmp_path: Path) -> None:
    robot, planner, clock = robot_and_planner()
    sent = robot.send

    def failing_send(result):
        if len(robot.sent) == 25:
            raise ConnectionError("CAN bus down")
        return sent(result)

    robot.send = failing_send
    log = tmp_path / "log.db"
    with pytest.raises(ConnectionError):
        run_episodes(
            Deployment.from_bundle(LEARNED, "transfer_cube"),
            robot,
            planner,
            3,
            50,
            log,
            LoopSettings(max_steps=40, pace=False),
            clock=clock,
            instruction="transfer the cube",
        )
    with OutcomeLog(log, read_only=True) as opened:
        records = opened.episodes()
    assert len(records) == 1 and records[0].outcome == "aborted"


@given(st.lists(st.integers(0, 4), max_size=30))
def test_the_stage_funnel_never_grows_along_the_task(reached: list[int]) -> None:

    stages = ("touched", "lifted", "both holding", "handed over")
    funnel = list(stage_funnel(stages, [EpisodeStats(stage=s) for s in reached]).values())
    assert funnel == sorted(funnel, reverse=True)
    assert funnel[0] == sum(s > 0 for s in reached) and funnel[-1] == reached.count(4)


@pytest.mark.parametrize("track_headroom", [0.5, None])
def test_the_run_shares_are_the_logged_counts_over_the_nominal_joint_ticks(tmp_path: Path, track_headroom) -> None:
    from eva_runtime.records.outcome_fields import TRACKER_PREFIX

    robot, planner, clock = robot_and_planner(step_rad=0.1)  # 1.25 rad/s per joint, from rest: beyond the caps
    deployment = Deployment.from_bundle(LEARNED, "transfer_cube")
    settings = LoopSettings(max_steps=60, pace=False, track_headroom=track_headroom)
    log = tmp_path / "log.db"
    result = run_episodes(deployment, robot, planner, 2, 0, log, settings, clock=clock, instruction="transfer")
    with OutcomeLog(log, read_only=True) as opened:
        counts = [r.nominal_interventions or {} for r in opened.episodes(run_id=result.run_id)]
    joint_ticks = sum(c.get("joint_ticks", 0) for c in counts)
    assert joint_ticks > 0
    tracker = sum(n for c in counts for key, n in c.items() if key.startswith(TRACKER_PREFIX))
    safety = sum(n for c in counts for key, n in c.items() if key != "joint_ticks") - tracker
    assert result.nominal_intervention_share == pytest.approx(safety / joint_ticks)
    if track_headroom is None:  # the filter shapes what exceeds the caps
        assert result.tracker_change_share is None and tracker == 0 and safety > 0
    else:  # the tracker does, and the filter finds nothing left to change
        assert result.tracker_change_share == pytest.approx(tracker / joint_ticks) and tracker > 0
