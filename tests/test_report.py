"""The outcome report: hand-computed numbers on a synthetic log, the `eva report` command, and a count property."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from eva_runtime.cli import app
from eva_runtime.records.outcome_log import OutcomeLog
from eva_runtime.records.report import build_report, render_markdown, write_markdown, write_plots
from eva_runtime.records.success_rate import wilson_interval

PNG = b"\x89PNG\r\n\x1a\n"
runner = CliRunner()

# (task, model, split, successes, failures, aborted) of the synthetic log.
GROUPS = [
    ("fold_towel", "sft-v1", "seen", 3, 2, 1),
    ("fold_towel", "rl-v2", "unseen", 4, 1, 0),
    ("stack_cups", "sft-v1", "unseen", 1, 3, 0),
    ("stack_cups", "rl-v2", "seen", 3, 1, 2),
]
SFT_LATENCY = [
    {"count": 10, "mean": 100.0, "p50": 90.0, "p95": 150.0, "max": 200.0},
    {"count": 30, "mean": 200.0, "p50": 180.0, "p95": 260.0, "max": 400.0},
]
RL_LATENCY = {"count": 5, "mean": 50.0, "p50": 45.0, "p95": 70.0, "max": 80.0}
SFT_EXECUTABILITY = [
    {"count": 10, "mean": 0.9, "min": 0.5, "rejected": 1},
    {"count": 30, "mean": 0.8, "min": 0.3, "rejected": 3},
]


def write_synthetic_log(path: Path) -> None:
    """The GROUPS episodes; sft-v1 episodes get one teleop intervention of 2 s and {velocity: 2} each,
    rl-v2 ones {velocity: 1, jerk: 1}; a few carry latency/executability summaries; one extra stays running."""
    with OutcomeLog(path) as log:
        sft_seen, rl_timed = 0, False
        for task, model, split, successes, failures, aborted in GROUPS:
            for outcome in ["success"] * successes + ["failure"] * failures + ["aborted"] * aborted:
                episode = log.start_episode(task, task, split, "cobot_magic", {"model": model}, model, "0.1.0")
                counters: dict[str, object]
                if model == "sft-v1":
                    counters = {
                        "teleop_interventions": 1,
                        "teleop_seconds": 2.0,
                        "safety_interventions": {"velocity": 2},
                    }
                    if task == "fold_towel" and sft_seen < 2:
                        counters["planning_latency_ms"] = SFT_LATENCY[sft_seen]
                        counters["executability"] = SFT_EXECUTABILITY[sft_seen]
                        sft_seen += 1
                else:
                    counters = {"safety_interventions": {"velocity": 1, "jerk": 1}}
                    if task == "stack_cups" and outcome == "aborted" and not rl_timed:
                        counters["planning_latency_ms"] = RL_LATENCY  # an aborted episode's plans still count
                        rl_timed = True
                labelled_by = "operator" if outcome == "aborted" else "automatic"
                log.end_episode(episode, outcome, labelled_by, **counters)
        running = log.start_episode("fold_towel", "x", "seen", "cobot_magic", {}, "rl-v2", "0.1.0")
        log.update_episode(running, teleop_interventions=50, safety_interventions={"velocity": 99})


@pytest.fixture(scope="module")
def synthetic_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "deploy.db"
    write_synthetic_log(path)
    return path


def success_tuple(row) -> tuple[str, int, int, int]:
    return (row.group, row.successes, row.failures, row.aborted)


def test_report_numbers_match_hand_counts(synthetic_log: Path) -> None:
    with OutcomeLog(synthetic_log, read_only=True) as log:
        report = build_report(log.episodes())
    # Aborted episodes are their own column and never enter a rate: fold_towel is 7/10, not 7/11.
    assert [success_tuple(r) for r in report.by_task] == [("fold_towel", 7, 3, 1), ("stack_cups", 4, 4, 2)]
    assert [success_tuple(r) for r in report.by_split] == [("seen", 6, 3, 3), ("unseen", 5, 4, 0)]
    assert success_tuple(report.total) == ("all", 11, 7, 3)
    assert (report.running, report.operator_labelled) == (1, 3)
    fold = report.by_task[0]
    assert (fold.trials, fold.episodes, fold.rate) == (10, 11, 0.7)
    assert fold.wilson95 == wilson_interval(7, 10)
    assert fold.wilson95 == pytest.approx((0.3968, 0.8922), abs=1e-4)  # Wilson 95 % for 7/10, by hand
    assert report.by_task[1].rate == 0.5 and report.by_task[1].wilson95 == wilson_interval(4, 8)
    assert report.total.wilson95 == wilson_interval(11, 18)


def test_report_model_comparison_matches_hand_counts(synthetic_log: Path) -> None:
    with OutcomeLog(synthetic_log, read_only=True) as log:
        report = build_report(log.episodes())
    # Model comparison: one column per model_id in the order they first appear, one row per task plus "all".
    assert report.models == ["sft-v1", "rl-v2"] and report.tasks == ["fold_towel", "stack_cups"]
    cells = {key: (row.successes, row.trials) for key, row in report.comparison.items()}
    assert cells == {
        ("fold_towel", "sft-v1"): (3, 5),
        ("fold_towel", "rl-v2"): (4, 5),
        ("stack_cups", "sft-v1"): (1, 4),
        ("stack_cups", "rl-v2"): (3, 4),
        ("all", "sft-v1"): (4, 9),
        ("all", "rl-v2"): (7, 9),
    }
    low, high = wilson_interval(3, 5)
    assert (
        report.comparison["fold_towel", "sft-v1"].cell()
        == f"3/5 (60%) [{low:.2f}, {high:.2f}]"
        == ("3/5 (60%) [0.23, 0.88]")
    )


def test_report_interventions_latency_and_executability_match_hand_counts(synthetic_log: Path) -> None:
    with OutcomeLog(synthetic_log, read_only=True) as log:
        report = build_report(log.episodes())
    # Interventions: fold_towel has 6 sft-v1 + 5 rl-v2 finished/aborted episodes; the running one is left out.
    fold_i, stack_i, all_i = report.interventions
    assert (fold_i.group, fold_i.episodes, fold_i.teleop_interventions, fold_i.teleop_seconds) == (
        "fold_towel",
        11,
        6,
        12.0,
    )
    assert fold_i.safety == {"velocity": 6 * 2 + 5, "jerk": 5}
    assert fold_i.per_episode(fold_i.teleop_interventions) == pytest.approx(6 / 11)
    assert (stack_i.episodes, stack_i.teleop_interventions, stack_i.safety) == (10, 4, {"velocity": 14, "jerk": 6})
    assert (all_i.group, all_i.episodes, all_i.safety_total) == ("all", 21, 17 + 5 + 14 + 6)
    assert report.checks == ["jerk", "velocity"]

    # Latency: mean exact over plans, p50/p95 medians of episode values, max exact.
    sft, rl, both = report.latency
    assert (sft.group, sft.episodes, sft.plans, sft.mean, sft.p50, sft.p95, sft.worst_p95, sft.max) == (
        "sft-v1",
        2,
        40,
        (10 * 100 + 30 * 200) / 40,
        135.0,
        205.0,
        260.0,
        400.0,
    )
    assert (rl.plans, rl.mean, rl.p50, rl.max) == (5, 50.0, 45.0, 80.0)
    assert (both.group, both.plans, both.p50, both.p95, both.worst_p95, both.max) == ("all", 45, 90.0, 150.0, 260, 400)
    assert both.mean == pytest.approx((1000 + 6000 + 250) / 45)
    (executability,) = report.executability  # one model with scores: no "all" row
    assert (executability.group, executability.plans, executability.min, executability.rejected) == (
        "sft-v1",
        40,
        0.3,
        4,
    )
    assert executability.mean == pytest.approx((10 * 0.9 + 30 * 0.8) / 40)


def test_markdown_and_plots(synthetic_log: Path, tmp_path: Path) -> None:
    with OutcomeLog(synthetic_log, read_only=True) as log:
        report = build_report(log.episodes())
    text = write_markdown(report, tmp_path / "nested" / "report.md").read_text()
    assert text == render_markdown(report)
    assert "| task | sft-v1 | rl-v2 |" in text
    assert "| fold_towel | 3/5 (60%) [0.23, 0.88] | 4/5 (80%) [0.38, 0.96] |" in text
    assert "| fold_towel | 11 | 7 | 3 | 1 | 70.0% | [0.397, 0.892] |" in text
    assert "excluded from every rate" in text
    paths = write_plots(report, tmp_path / "plots")
    assert [p.name for p in paths] == ["success_rate.png", "interventions.png"]
    assert all(p.read_bytes()[:8] == PNG for p in paths)


def test_eva_report_writes_markdown_and_pngs(synthetic_log: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["report", "--log", str(synthetic_log), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "fold_towel" in result.output and "stack_cups" in result.output
    text = (out / "report.md").read_text()
    assert "fold_towel" in text and "stack_cups" in text
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["interventions.png", "success_rate.png"]
    assert all(p.read_bytes()[:8] == PNG for p in pngs)
    # Default directory: next to the log; the report opens read-only, so the running episode stays running.
    copy = tmp_path / "copy.db"
    copy.write_bytes(synthetic_log.read_bytes())
    plain = runner.invoke(app, ["report", "--log", str(copy), "--plain"])
    assert plain.exit_code == 0, plain.output
    assert "| fold_towel | 11 | 7 | 3 | 1 |" in plain.output
    assert (tmp_path / "copy_report" / "report.md").is_file()
    with OutcomeLog(copy, read_only=True) as log:
        assert [r.outcome for r in log.episodes()].count(None) == 1


def test_eva_report_refuses_missing_and_empty_logs(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    OutcomeLog(empty).close()
    result = runner.invoke(app, ["report", "--log", str(empty)])
    assert result.exit_code == 2
    assert "error:" in result.output and "holds no episodes" in " ".join(result.output.split())
    assert not (tmp_path / "empty_report").exists()
    missing = runner.invoke(app, ["report", "--log", str(tmp_path / "nope.db")])
    assert missing.exit_code == 2 and "does not exist" in " ".join(missing.output.split())


EPISODES = st.lists(
    st.tuples(
        st.sampled_from(["fold_towel", "stack_cups", "wipe_table"]),
        st.sampled_from(["success", "failure", "aborted", None]),
        st.sampled_from(["sft-v1", "rl-v2"]),
        st.sampled_from(["seen", "unseen"]),
    ),
    max_size=12,
)


@settings(max_examples=30)
@given(EPISODES)
def test_report_counts_equal_a_direct_count(episodes: list[tuple[str, str | None, str, str]]) -> None:
    with tempfile.TemporaryDirectory() as directory, OutcomeLog(Path(directory) / "log.db") as log:
        for task, outcome, model, split in episodes:
            episode = log.start_episode(task, task, split, "sim", {}, model, "0.1.0")
            if outcome is not None:
                log.end_episode(episode, outcome, "automatic")
        report = build_report(log.episodes())
    finished = [e for e in episodes if e[1] is not None]
    counts = Counter((task, outcome) for task, outcome, _, _ in finished)
    tasks = sorted({task for task, *_ in finished})
    assert [r.group for r in report.by_task] == tasks
    for row in report.by_task:
        expected = (counts[row.group, "success"], counts[row.group, "failure"], counts[row.group, "aborted"])
        assert (row.successes, row.failures, row.aborted) == expected
        assert row.wilson95 == wilson_interval(expected[0], expected[0] + expected[1])
    assert report.running == len(episodes) - len(finished)
    assert report.total.episodes == len(finished)
    per_model = Counter((model, outcome) for _, outcome, model, _ in finished)
    for model in report.models:
        row = report.comparison["all", model]
        assert (row.successes, row.failures) == (per_model[model, "success"], per_model[model, "failure"])
    assert sum(r.successes for r in report.by_split) == report.total.successes == counts_total(counts, "success")


def counts_total(counts: Counter, outcome: str) -> int:
    return sum(n for (_, o), n in counts.items() if o == outcome)


def test_nominal_interventions_are_reported_per_model_as_a_share_of_joint_ticks(tmp_path: Path) -> None:
    with OutcomeLog(tmp_path / "log.db") as log:
        # The cap tracker's changes (tracker_*) are shaping before the filter, not safety interventions.
        smooth = {"joint_ticks": 5600, "acceleration": 14, "tracker_velocity": 900}
        for model, nominal in (("smooth", smooth), ("jerky", None)):
            for _ in range(2):
                episode = log.start_episode("t", "i", "seen", "e", {}, model, "0.1.0")
                counters = {"safety_interventions": {"acceleration": 100}}
                if nominal is not None:
                    counters["nominal_interventions"] = nominal
                log.end_episode(episode, "success", "automatic", **counters)
        report = build_report(log.episodes())
    assert [(r.group, r.episodes, r.joint_ticks, r.checks) for r in report.nominal] == [
        ("smooth", 2, 11200, {"acceleration": 28})
    ]
    assert report.nominal[0].share == 28 / 11200
    text = render_markdown(report)
    assert (
        "## Safety interventions during nominal autonomous motion" in text and "| smooth | 2 | 11200 | 0.25% |" in text
    )
