"""The outcome log: round trip, durability pragmas, survival of a SIGKILLed writer, validation, relabelling."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from eva_runtime.records.outcome_log import ABORTED_BY_CRASH, SCHEMA_VERSION, OutcomeLog, OutcomeLogError

REPO = Path(__file__).resolve().parents[1]
BUNDLE = {"world_model": "sha256:aa11", "idm": "sha256:bb22", "bundle_id": "eva-2026-03"}
LATENCY = {"count": 12, "mean": 850.5, "p50": 820.0, "p95": 1100.0, "max": 1300.25}
EXECUTABILITY = {"count": 12, "mean": 0.91, "min": 0.42, "rejected": 2}


def start(log: OutcomeLog, task: str = "fold_towel", **overrides: object) -> int:
    arguments: dict[str, object] = {
        "task": task,
        "instruction": f"please {task.replace('_', ' ')}",
        "split": "seen",
        "embodiment": "cobot_magic",
        "bundle": BUNDLE,
        "model_id": "rl-v2",
        "software_version": "0.1.0",
    }
    arguments.update(overrides)
    return log.start_episode(**arguments)


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    path = tmp_path / "outcomes.db"
    with OutcomeLog(path, run_id="run-a") as log:
        first = start(log, started_at=100.0)
        log.update_episode(first, teleop_interventions=1, safety_interventions={"velocity": 3})
        log.end_episode(
            first,
            "failure",
            "automatic",
            failure_reason="cube dropped",
            note="gripper slipped",
            ended_at=130.5,
            teleop_interventions=2,
            teleop_seconds=4.25,
            safety_interventions={"velocity": 5, "position": 1},
            planning_latency_ms=LATENCY,
            executability=EXECUTABILITY,
        )
        second = start(log, "stack_cups", split="unseen", model_id="sft-v1", run_id="run-b", started_at=200.0)
        log.end_episode(second, "success", "operator", ended_at=215.0)
        third = start(log, "stack_cups")
    with OutcomeLog(path, recover=False) as log:
        records = log.episodes()
        assert [r.id for r in records] == [first, second, third]
        one, two, three = records
        assert (one.run_id, one.task, one.instruction, one.split) == (
            "run-a",
            "fold_towel",
            "please fold towel",
            "seen",
        )
        assert (one.started_at, one.ended_at, one.outcome, one.labelled_by) == (100.0, 130.5, "failure", "automatic")
        assert (one.failure_reason, one.note) == ("cube dropped", "gripper slipped")
        assert (one.teleop_interventions, one.teleop_seconds) == (2, 4.25)
        assert one.safety_interventions == {"position": 1, "velocity": 5}
        assert one.planning_latency_ms == LATENCY and one.executability == EXECUTABILITY
        assert (one.embodiment, one.bundle, one.model_id, one.software_version) == (
            "cobot_magic",
            BUNDLE,
            "rl-v2",
            "0.1.0",
        )
        assert (two.run_id, two.split, two.model_id, two.outcome, two.labelled_by) == (
            "run-b",
            "unseen",
            "sft-v1",
            "success",
            "operator",
        )
        assert two.failure_reason is None and two.planning_latency_ms is None and two.safety_interventions == {}
        # recover=False leaves a running episode running; without run_id an episode takes its log's run id.
        assert three.outcome is None and three.ended_at is None and three.run_id == "run-a"
        assert log.run_id not in ("run-a", "run-b") and len(log.run_id) == 12
        assert [r.id for r in log.episodes(task="stack_cups")] == [second, third]
        assert [r.id for r in log.episodes(split="unseen", outcome="success")] == [second]
        assert log.episodes(model_id="nope") == []
        with pytest.raises(ValueError, match="instruction"):
            log.episodes(instruction="x")


def test_wal_and_full_sync_are_in_effect(tmp_path: Path) -> None:
    with OutcomeLog(tmp_path / "outcomes.db") as log:
        assert log.pragma("journal_mode") == "wal"
        assert log.pragma("synchronous") == 2  # FULL
        assert log.pragma("foreign_keys") == 1
        assert log.schema_version == SCHEMA_VERSION == 1
    # WAL is a property of the file: a fresh plain connection sees it too.
    with OutcomeLog(tmp_path / "outcomes.db", read_only=True) as reader:
        assert reader.pragma("journal_mode") == "wal"


CHILD = textwrap.dedent(
    """
    import sys, time
    from eva_runtime.records.outcome_log import OutcomeLog

    log = OutcomeLog(sys.argv[1], run_id="doomed")
    bundle = {"world_model": "sha256:aa11"}
    for index in range(3):
        episode = log.start_episode("fold_towel", f"fold {index}", "seen", "cobot_magic", bundle, "rl-v2", "0.1.0",
                                    started_at=10.0 * index)
        log.update_episode(episode, teleop_interventions=index)
        outcome = "success" if index % 2 == 0 else "failure"
        log.end_episode(episode, outcome, "automatic", ended_at=10.0 * index + 5, teleop_seconds=1.5 * index,
                        safety_interventions={"velocity": index})
    fourth = log.start_episode("stack_cups", "stack", "unseen", "cobot_magic", bundle, "rl-v2", "0.1.0")
    log.update_episode(fourth, teleop_interventions=7, teleop_seconds=3.5, safety_interventions={"jerk": 4})
    print("READY", flush=True)
    time.sleep(600)
    """
)


def test_a_killed_writer_loses_nothing_committed_and_its_open_episode_is_aborted(tmp_path: Path) -> None:
    path = tmp_path / "outcomes.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        ready, _, _ = select.select([child.stdout], [], [], 120)
        assert ready, "the writer never reported READY"
        line = child.stdout.readline()
        assert line.strip() == "READY", child.stderr.read()
        # While the writer lives, nobody else may open the log for writing (so nobody can abort its episode).
        with pytest.raises(OutcomeLogError, match="another process"):
            OutcomeLog(path)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()
    with OutcomeLog(path, read_only=True) as reader:
        assert reader.pragma("integrity_check") == "ok"
        assert reader.episodes()[3].outcome is None  # a reader never recovers
    with OutcomeLog(path) as log:
        assert log.pragma("integrity_check") == "ok"
        records = log.episodes()
        assert len(records) == 4
        for index, record in enumerate(records[:3]):
            assert (record.run_id, record.instruction, record.outcome) == (
                "doomed",
                f"fold {index}",
                "success" if index % 2 == 0 else "failure",
            )
            assert (record.started_at, record.ended_at) == (10.0 * index, 10.0 * index + 5)
            assert (record.teleop_interventions, record.teleop_seconds) == (index, 1.5 * index)
            assert record.safety_interventions == {"velocity": index}
        fourth = records[3]
        assert (fourth.task, fourth.split, fourth.outcome, fourth.labelled_by) == (
            "stack_cups",
            "unseen",
            "aborted",
            "automatic",
        )
        assert fourth.failure_reason == ABORTED_BY_CRASH and fourth.ended_at is None
        assert (fourth.teleop_interventions, fourth.teleop_seconds) == (7, 3.5)
        assert fourth.safety_interventions == {"jerk": 4}
        assert [label[:2] for label in log.labels(fourth.id)] == [("aborted", "automatic")]


def test_validation_names_the_field(tmp_path: Path) -> None:
    with OutcomeLog(tmp_path / "outcomes.db") as log:
        with pytest.raises(ValueError, match="split"):
            start(log, split="validation")
        with pytest.raises(ValueError, match="task"):
            start(log, task="")
        with pytest.raises(ValueError, match="bundle"):
            start(log, bundle={"hash": object()})
        episode = start(log)
        with pytest.raises(ValueError, match="outcome"):
            log.end_episode(episode, "partial", "automatic")
        with pytest.raises(ValueError, match="labelled_by"):
            log.end_episode(episode, "success", "robot")
        with pytest.raises(ValueError, match="teleop_interventions"):
            log.update_episode(episode, teleop_interventions=-1)
        with pytest.raises(ValueError, match="teleop_seconds"):
            log.update_episode(episode, teleop_seconds=float("nan"))
        with pytest.raises(ValueError, match="planning_latency_ms"):
            log.update_episode(episode, planning_latency_ms={"count": 3, "mean": 1.0})
        with pytest.raises(ValueError, match=r"safety_interventions\['velocity'\]"):
            log.update_episode(episode, safety_interventions={"velocity": 1.5})
        with pytest.raises(ValueError, match="wheels"):
            log.update_episode(episode, wheels=3)
        with pytest.raises(ValueError, match="episode_id"):
            log.update_episode(episode + 100, teleop_interventions=1)
        log.end_episode(episode, "success", "automatic", teleop_interventions=1)
        with pytest.raises(ValueError, match=r"episode_id \d+ already ended"):
            log.end_episode(episode, "failure", "automatic")
        with pytest.raises(ValueError, match="already ended"):
            log.update_episode(episode, teleop_interventions=9)
        # Rejected writes changed nothing.
        record = log.episode(episode)
        assert (record.outcome, record.teleop_interventions, record.labelled_by) == ("success", 1, "automatic")
        assert len(log.episodes()) == 1


def test_operator_relabel_overrides_the_automatic_label_and_keeps_history(tmp_path: Path) -> None:
    with OutcomeLog(tmp_path / "outcomes.db") as log:
        episode = start(log)
        running = start(log)
        log.end_episode(episode, "success", "automatic", note="detector: towel folded")
        log.label_episode(episode, "failure", note="towel corner not folded")
        record = log.episode(episode)
        assert (record.outcome, record.labelled_by, record.note) == ("failure", "operator", "towel corner not folded")
        history = log.labels(episode)
        assert [(outcome, by) for outcome, by, _, _ in history] == [("success", "automatic"), ("failure", "operator")]
        with pytest.raises(ValueError, match="still running"):
            log.label_episode(running, "success")
        with pytest.raises(ValueError, match="outcome"):
            log.label_episode(episode, "maybe")


def test_a_reader_cannot_write_and_a_non_log_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "outcomes.db"
    with OutcomeLog(path) as log:
        start(log)
    with OutcomeLog(path, read_only=True) as reader, pytest.raises(OutcomeLogError, match="read-only"):
        start(reader)
    with pytest.raises(OutcomeLogError, match="does not exist"):
        OutcomeLog(tmp_path / "missing.db", read_only=True)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(OutcomeLogError, match="not a readable outcome log"):
        OutcomeLog(garbage)


def test_a_log_from_before_nominal_interventions_gains_the_column_and_keeps_its_rows(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with OutcomeLog(path) as log:
        episode = log.start_episode("t", "i", "seen", "e", {}, "m", "0.1.0")
        log.end_episode(episode, "success", "automatic")
    with sqlite3.connect(path) as db:  # the schema as it was: no nominal_interventions column
        db.execute("ALTER TABLE episodes DROP COLUMN nominal_interventions")
    with OutcomeLog(path, read_only=True) as log:
        assert log.episodes()[0].nominal_interventions is None  # an old log reads
    with OutcomeLog(path) as log:  # a writer adds the column; the old row keeps its values
        assert log.episodes()[0].outcome == "success"
        episode = log.start_episode("t", "i", "seen", "e", {}, "m", "0.1.0")
        log.end_episode(episode, "success", "automatic", nominal_interventions={"joint_ticks": 14, "velocity": 1})
        assert log.episodes()[-1].nominal_interventions == {"joint_ticks": 14, "velocity": 1}
    with pytest.raises(ValueError, match="nominal_interventions"), OutcomeLog(path) as log:
        log.start_episode("t", "i", "seen", "e", {}, "m", "0.1.0")
        log.update_episode(log.episodes()[-1].id, nominal_interventions={"velocity": -1})


def test_the_executed_motion_reward_rides_along_and_unknown_summary_keys_are_refused(tmp_path: Path) -> None:
    executed = {**EXECUTABILITY, "executed_count": 4, "executed_mean": 0.87}
    with OutcomeLog(tmp_path / "outcomes.db") as log:
        episode = start(log)
        log.end_episode(episode, "success", "automatic", executability=executed)
        assert log.episodes()[0].executability == executed
        other = start(log)
        with pytest.raises(ValueError, match="optionally executed_count, executed_mean"):
            log.end_episode(other, "success", "automatic", executability={**EXECUTABILITY, "executed_best": 1.0})
        with pytest.raises(ValueError, match="executability"):
            log.end_episode(other, "success", "automatic", executability={"executed_count": 1, "executed_mean": 2.0})
