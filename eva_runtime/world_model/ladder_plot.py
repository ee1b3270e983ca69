"""One figure of ladder rungs from several runs: closed-loop success with its Wilson interval, and per rung the
share of episodes that reached each task stage, so where the task is lost reads at a glance.

Each rung comes from a ladder.json (`eva eval ladder --out DIR` writes DIR/ladder.json) by name, under a label of
the caller's choosing; rungs from different runs are drawn side by side as they were measured (one run each).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eva_runtime.records.success_rate import wilson_interval
from eva_runtime.world_model.ladder_paired import find_rung

__all__ = ["PlottedRung", "load_rungs", "parse_rung_spec", "plot_rungs"]


@dataclass(frozen=True)
class PlottedRung:
    label: str
    row: dict  # the rung's ladder.json row


def parse_rung_spec(spec: str) -> tuple[str, Path, str]:
    """``LABEL=PATH:RUNG`` -> (label, path, rung); a ValueError saying the form otherwise."""
    label, sep, rest = spec.partition("=")
    path, colon, rung = rest.partition(":")
    if not (sep and colon and label and path and rung):
        raise ValueError(f"a rung is LABEL=LADDER_JSON:RUNG_NAME, got {spec!r}")
    return label, Path(path), rung


def load_rungs(specs: list[str]) -> list[PlottedRung]:
    """The rungs the specs name, in order; a ValueError for a malformed spec, a missing file or an unknown rung."""
    rungs = []
    for spec in specs:
        label, path, rung = parse_rung_spec(spec)
        rungs.append(PlottedRung(label, find_rung(path, rung)))
    return rungs


def plot_rungs(rungs: list[PlottedRung], path: Path, title: str = "", target: float | None = None) -> None:
    """Success (Wilson 95 %) on the left, with a dotted line at `target`; the stage funnel on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rungs:
        raise ValueError("nothing to plot: no rungs")
    labels = [rung.label for rung in rungs]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 0.45 * len(rungs) + 2.2))
    rates, lows, highs = [], [], []
    for rung in rungs:
        successes, episodes = int(rung.row["successes"]), int(rung.row["episodes"])
        low, high = wilson_interval(successes, episodes)
        rate = successes / episodes
        rates.append(rate)
        lows.append(max(0.0, rate - low))  # a bound at 0 or n can sit a rounding error past the rate
        highs.append(max(0.0, high - rate))
    positions = list(range(len(rungs)))[::-1]
    left.barh(positions, rates, xerr=[lows, highs], capsize=3, color="C0")
    left.set_yticks(positions, labels)
    left.set_xlim(0, 1)
    left.set_xlabel("closed-loop success (Wilson 95 %)")
    for position, rung, rate, high in zip(positions, rungs, rates, highs, strict=True):
        count = f"{rung.row['successes']}/{rung.row['episodes']}"
        left.text(min(rate + high + 0.02, 0.93), position, count, ha="left", va="center", fontsize=8)
    if target is not None:
        left.axvline(target, color="C3", linestyle=":", label=f"target {target:.0%}")
        left.legend(fontsize=7, loc="lower right")
    _funnel(right, rungs)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _funnel(axis, rungs: list[PlottedRung]) -> None:
    """Share of episodes reaching each stage, then success, one line per rung that measured stages."""
    for index, rung in enumerate(rungs):
        stages = rung.row.get("stages_reached") or {}
        if not stages:
            continue
        episodes = int(rung.row["episodes"])
        names = [*stages, "success"]
        shares = [count / episodes for count in stages.values()] + [int(rung.row["successes"]) / episodes]
        axis.plot(names, shares, marker="o", label=rung.label, color=f"C{index % 10}")
    axis.set_ylim(0, 1.02)
    axis.set_ylabel("share of episodes")
    axis.set_title("furthest task stage reached")
    if axis.lines:
        axis.legend(fontsize=7, loc="lower left")
