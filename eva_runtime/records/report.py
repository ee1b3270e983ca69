"""The outcome report: success tables with Wilson intervals, model comparison, interventions, latency, executability.

Success rate = successes / (successes + failures). Aborted episodes (operator stop, crash) say nothing about the
policy's ability and are counted in their own column, never in a rate; running episodes are left out altogether.
Interventions count in every finished or aborted episode, because they happened whatever the outcome.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from eva_runtime.records.outcome_fields import TRACKER_PREFIX
from eva_runtime.records.outcome_log import EpisodeRecord
from eva_runtime.records.success_rate import wilson_interval

__all__ = [
    "ExecutabilityRow",
    "InterventionRow",
    "LatencyRow",
    "Report",
    "SuccessRow",
    "build_report",
    "render_markdown",
    "write_markdown",
    "write_plots",
]

ALL = "all"
RATE_NOTE = (
    "Rate = successes / (successes + failures), with a Wilson 95 % interval. Aborted episodes are counted "
    "separately and excluded from every rate; running episodes are left out."
)

LATENCY_NOTE = (
    "Mean and max are exact over all plans; p50 and p95 are medians over episodes of each episode's value "
    "(pooled percentiles cannot be rebuilt from per-episode summaries); worst p95 is the highest episode p95."
)


@dataclass(frozen=True)
class SuccessRow:
    """Outcome counts of one group of episodes; ``rate`` is None when none finished as success or failure."""

    group: str
    successes: int
    failures: int
    aborted: int

    @property
    def trials(self) -> int:
        return self.successes + self.failures

    @property
    def episodes(self) -> int:
        return self.trials + self.aborted

    @property
    def rate(self) -> float | None:
        return self.successes / self.trials if self.trials else None

    @property
    def wilson95(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.trials)

    def cell(self) -> str:
        """EVA-paper style "k/n (rate) [low, high]"."""
        if not self.trials:
            return f"0/0 (-), {self.aborted} aborted" if self.aborted else "-"
        low, high = self.wilson95
        return f"{self.successes}/{self.trials} ({self.rate:.0%}) [{low:.2f}, {high:.2f}]"


@dataclass(frozen=True)
class InterventionRow:
    """Teleop and safety-filter interventions of one group, totals and means per episode."""

    group: str
    episodes: int
    teleop_interventions: int
    teleop_seconds: float
    safety: dict[str, int]

    def per_episode(self, total: float) -> float:
        return total / self.episodes if self.episodes else 0.0

    @property
    def safety_total(self) -> int:
        return sum(self.safety.values())


@dataclass(frozen=True)
class NominalRow:
    """Filter interventions of one model while executing plans in AUTONOMOUS (not holds, estops, handovers)."""

    group: str
    episodes: int
    joint_ticks: int
    checks: dict[str, int]

    @property
    def share(self) -> float | None:
        return sum(self.checks.values()) / self.joint_ticks if self.joint_ticks else None


def _nominal(group: str, records: Sequence[EpisodeRecord]) -> NominalRow | None:
    counted = [r.nominal_interventions for r in records if r.nominal_interventions]
    if not counted:
        return None
    checks: dict[str, int] = {}
    for entry in counted:
        for check, count in entry.items():
            if check != "joint_ticks" and not check.startswith(TRACKER_PREFIX):  # shaping, not safety
                checks[check] = checks.get(check, 0) + count
    return NominalRow(group, len(counted), sum(e.get("joint_ticks", 0) for e in counted), checks)


def _nominal_lines(rows: Sequence[NominalRow]) -> list[str]:
    lines = ["## Safety interventions during nominal autonomous motion", ""]
    if not rows:
        return [*lines, "None counted (logs written before they were).", ""]
    checks = sorted({check for row in rows for check in row.checks})
    table = [
        [row.group, row.episodes, row.joint_ticks, "-" if row.share is None else f"{row.share:.2%}"]
        + [row.checks.get(check, 0) for check in checks]
        for row in rows
    ]
    return [*lines, *_table(["model", "episodes", "joint-ticks", "share of joint-ticks", *checks], table)]


@dataclass(frozen=True)
class LatencyRow:
    """Planning latency of one model: ``mean`` and ``max`` are exact over all plans; the percentiles are the median
    over episodes of each episode's p50/p95 (pooled percentiles cannot be rebuilt from per-episode summaries)."""

    group: str
    episodes: int
    plans: int
    mean: float
    p50: float
    p95: float
    worst_p95: float
    max: float


@dataclass(frozen=True)
class ExecutabilityRow:
    """Executability scores of one model: plans scored, count-weighted mean, lowest score, plans rejected."""

    group: str
    episodes: int
    plans: int
    mean: float
    min: float
    rejected: int


@dataclass(frozen=True)
class Report:
    """Everything ``write_markdown`` and ``write_plots`` show; built from log records by ``build_report``."""

    total: SuccessRow
    running: int
    operator_labelled: int
    by_task: list[SuccessRow]
    by_split: list[SuccessRow]
    tasks: list[str]
    models: list[str]
    comparison: dict[tuple[str, str], SuccessRow] = field(default_factory=dict)  # (task or "all", model_id)
    interventions: list[InterventionRow] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    latency: list[LatencyRow] = field(default_factory=list)
    executability: list[ExecutabilityRow] = field(default_factory=list)
    nominal: list[NominalRow] = field(default_factory=list)


def _success(group: str, records: Sequence[EpisodeRecord]) -> SuccessRow:
    outcomes = [r.outcome for r in records]
    return SuccessRow(group, outcomes.count("success"), outcomes.count("failure"), outcomes.count("aborted"))


def _grouped(records: Sequence[EpisodeRecord], key: Callable[[EpisodeRecord], str]) -> dict[str, list[EpisodeRecord]]:
    groups: dict[str, list[EpisodeRecord]] = {}
    for record in records:
        groups.setdefault(key(record), []).append(record)
    return groups


def _interventions(group: str, records: Sequence[EpisodeRecord]) -> InterventionRow:
    safety: dict[str, int] = {}
    for record in records:
        for check, count in record.safety_interventions.items():
            safety[check] = safety.get(check, 0) + count
    teleop = sum(r.teleop_interventions for r in records)
    return InterventionRow(group, len(records), teleop, sum(r.teleop_seconds for r in records), safety)


def _latency(group: str, records: Sequence[EpisodeRecord]) -> LatencyRow | None:
    summaries = [r.planning_latency_ms for r in records if r.planning_latency_ms and r.planning_latency_ms["count"]]
    if not summaries:
        return None
    plans = sum(s["count"] for s in summaries)
    mean = sum(s["count"] * s["mean"] for s in summaries) / plans
    p50 = statistics.median(s["p50"] for s in summaries)
    p95 = [s["p95"] for s in summaries]
    return LatencyRow(
        group, len(summaries), plans, mean, p50, statistics.median(p95), max(p95), max(s["max"] for s in summaries)
    )


def _executability(group: str, records: Sequence[EpisodeRecord]) -> ExecutabilityRow | None:
    summaries = [r.executability for r in records if r.executability and r.executability["count"]]
    if not summaries:
        return None
    plans = sum(s["count"] for s in summaries)
    mean = sum(s["count"] * s["mean"] for s in summaries) / plans
    rejected = sum(s["rejected"] for s in summaries)
    return ExecutabilityRow(group, len(summaries), plans, mean, min(s["min"] for s in summaries), rejected)


def build_report(records: Iterable[EpisodeRecord]) -> Report:
    """Aggregate log records (any order) into the report's tables."""
    every = list(records)
    done = [r for r in every if r.outcome is not None]
    by_task = _grouped(done, lambda r: r.task)
    by_model = _grouped(done, lambda r: r.model_id)  # first-appearance order: older versions come first
    tasks, models = sorted(by_task), list(by_model)
    comparison = {}
    for task in [*tasks, ALL]:
        for model in models:
            group = [r for r in by_model[model] if task in (ALL, r.task)]
            if group:
                comparison[task, model] = _success(f"{task} / {model}", group)
    checks = sorted({check for r in done for check in r.safety_interventions})
    latency = [row for m in models if (row := _latency(m, by_model[m]))]
    executability = [row for m in models if (row := _executability(m, by_model[m]))]
    # An "all" row only adds information when at least two models contributed rows.
    if len(latency) > 1:
        latency.append(_latency(ALL, done))
    if len(executability) > 1:
        executability.append(_executability(ALL, done))
    return Report(
        total=_success(ALL, done),
        running=len(every) - len(done),
        operator_labelled=sum(r.labelled_by == "operator" for r in done),
        by_task=[_success(t, by_task[t]) for t in tasks],
        by_split=[_success(s, g) for s, g in sorted(_grouped(done, lambda r: r.split).items())],
        tasks=tasks,
        models=models,
        comparison=comparison,
        interventions=[*(_interventions(t, by_task[t]) for t in tasks), _interventions(ALL, done)],
        checks=checks,
        latency=latency,
        executability=executability,
        nominal=[row for m in models if (row := _nominal(m, by_model[m]))],
    )


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def _success_rows(rows: Iterable[SuccessRow]) -> list[list[object]]:
    out = []
    for row in rows:
        low, high = row.wilson95
        rate = "-" if row.rate is None else f"{row.rate:.1%}"
        interval = "-" if row.rate is None else f"[{low:.3f}, {high:.3f}]"
        out.append([row.group, row.episodes, row.successes, row.failures, row.aborted, rate, interval])
    return out


def render_markdown(report: Report) -> str:
    """The report as Markdown text."""
    total = report.total
    lines = [
        "# Episode outcome report",
        "",
        f"{total.episodes} closed episodes ({total.successes} success, {total.failures} failure, "
        f"{total.aborted} aborted), {report.running} still running; "
        f"{report.operator_labelled} labelled by an operator.",
        "",
        RATE_NOTE,
        "",
    ]
    header = ["", "episodes", "successes", "failures", "aborted", "rate", "Wilson 95 %"]
    lines += ["## Success by task", "", *_table(["task", *header[1:]], _success_rows([*report.by_task, total]))]
    lines += ["## Success by split", "", *_table(["split", *header[1:]], _success_rows(report.by_split))]
    lines += ["## Model comparison", "", "Cells: successes/trials (rate) [Wilson 95 %].", ""]
    comparison = [
        [task, *(report.comparison[task, m].cell() if (task, m) in report.comparison else "-" for m in report.models)]
        for task in [*report.tasks, ALL]
    ]
    lines += _table(["task", *report.models], comparison)
    lines += ["## Interventions per episode", "", "Means over finished and aborted episodes.", ""]
    rows = [
        [
            row.group,
            row.episodes,
            f"{row.per_episode(row.teleop_interventions):.2f}",
            f"{row.per_episode(row.teleop_seconds):.1f}",
            f"{row.per_episode(row.safety_total):.2f}",
            *(f"{row.per_episode(row.safety.get(check, 0)):.2f}" for check in report.checks),
        ]
        for row in report.interventions
    ]
    head = ["task", "episodes", "teleop", "teleop s", "safety (all)", *(f"safety: {c}" for c in report.checks)]
    lines += _table(head, rows)
    lines += _nominal_lines(report.nominal)
    lines += ["## Planning latency (ms)", ""]
    if report.latency:
        lines += [LATENCY_NOTE, ""]
        head = ["model", "episodes", "plans", "mean", "p50", "p95", "worst p95", "max"]
        latency = [
            [r.group, r.episodes, r.plans, *(f"{v:.1f}" for v in (r.mean, r.p50, r.p95, r.worst_p95, r.max))]
            for r in report.latency
        ]
        lines += _table(head, latency)
    else:
        lines += ["No planning latency recorded.", ""]
    lines += ["## Executability", ""]
    if report.executability:
        head = ["model", "episodes", "plans", "mean score", "min score", "rejected", "rejected share"]
        rows = [
            [r.group, r.episodes, r.plans, f"{r.mean:.3f}", f"{r.min:.3f}", r.rejected, f"{r.rejected / r.plans:.1%}"]
            for r in report.executability
        ]
        lines += _table(head, rows)
    else:
        lines += ["No executability scores recorded.", ""]
    return "\n".join(lines)


def write_markdown(report: Report, path: str | Path) -> Path:
    """Write the Markdown report (parent directories created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_markdown(report), encoding="utf-8")
    return path


def write_plots(report: Report, out_dir: str | Path) -> list[Path]:
    """Success rate per task and model (Wilson error bars) and interventions per episode, as PNGs."""
    # Figure + the Agg canvas directly: no pyplot, so no global backend switch and no GUI even on a desktop.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = [*report.tasks, ALL]
    width = 0.8 / max(1, len(report.models))

    figure = Figure(figsize=(max(6.0, 1.6 * len(labels) * max(1, len(report.models)) ** 0.5), 4.5))
    axes = figure.add_subplot()
    for index, model in enumerate(report.models):
        xs, rates, below, above = [], [], [], []
        for position, task in enumerate(labels):
            row = report.comparison.get((task, model))
            if row is None or row.rate is None:
                continue
            low, high = row.wilson95
            xs.append(position + (index - (len(report.models) - 1) / 2) * width)
            rates.append(row.rate)
            below.append(row.rate - low)
            above.append(high - row.rate)
        axes.bar(xs, rates, width, yerr=[below, above], capsize=3, label=model)
    axes.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("success rate (Wilson 95 %)")
    axes.set_title("Success rate per task and model (aborted excluded)")
    if report.models:
        axes.legend(fontsize="small")
    figure.tight_layout()
    success_png = out / "success_rate.png"
    FigureCanvasAgg(figure).print_png(success_png)

    figure = Figure(figsize=(max(6.0, 1.2 * len(report.interventions)), 4.5))
    axes = figure.add_subplot()
    groups = [row.group for row in report.interventions]
    series = {
        "teleop interventions": [r.per_episode(r.teleop_interventions) for r in report.interventions],
        "teleop seconds": [r.per_episode(r.teleop_seconds) for r in report.interventions],
        "safety-filter interventions": [r.per_episode(r.safety_total) for r in report.interventions],
    }
    width = 0.8 / len(series)
    for index, (name, values) in enumerate(series.items()):
        axes.bar([p + (index - 1) * width for p in range(len(groups))], values, width, label=name)
    axes.set_xticks(range(len(groups)), groups, rotation=20, ha="right")
    tallest = max((value for values in series.values() for value in values), default=0.0)
    axes.set_ylim(0, 1.35 * tallest if tallest > 0 else 1.0)  # headroom so the legend does not cover bars
    axes.set_ylabel("per episode")
    axes.set_title("Interventions per episode")
    axes.legend(fontsize="small")
    figure.tight_layout()
    interventions_png = out / "interventions.png"
    FigureCanvasAgg(figure).print_png(interventions_png)
    return [success_png, interventions_png]
