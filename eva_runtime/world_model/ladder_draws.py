"""Two models compared over several draws of the sampler's noise each, on the same seeds.

A synchronous closed loop is deterministic for a given model, seed and noise draw (a rerun agrees on 49 of 50
seeds), but another draw of the sampler's noise (a ladder rung's `sampling_draw`) changes the outcome of about a
third of the seeds at the same success rate. So two models compared once each, paired by seed
(`ladder_paired.py`), differ by the noise as much as by the models. Here each model is one or more rungs (its
draws); per seed, its success is the share of its draws that succeeded, and its plan executability their mean;
the comparison is the mean per-seed difference with a 95 % normal interval, beside each model's pooled success
(Wilson) and how often its own draws disagree on a seed (the noise's share of any single comparison).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eva_runtime.records.success_rate import wilson_interval
from eva_runtime.world_model.ladder_paired import find_rung, mean_and_half_width

__all__ = ["DrawComparison", "ModelDraws", "compare_draws", "load_draws", "render_draws"]


@dataclass(frozen=True)
class ModelDraws:
    """One model's rungs (its draws) on the same seeds: per draw, per seed, success and mean plan executability."""

    names: tuple[str, ...]
    first_seed: int | None
    outcomes: tuple[tuple[bool, ...], ...]
    plan_scores: tuple[tuple[float | None, ...], ...] | None

    @classmethod
    def from_rows(cls, rows: list[dict]) -> ModelDraws:
        if not rows:
            raise ValueError("a model needs at least one rung")
        if any("per_episode" not in row for row in rows):
            raise ValueError("a ladder row without per_episode outcomes cannot be compared by seed")
        counts = {len(row["per_episode"]) for row in rows}
        seeds = {row.get("first_seed") for row in rows} - {None}
        if len(counts) > 1 or len(seeds) > 1:
            raise ValueError(f"the rungs {[row['rung'] for row in rows]} did not run the same seeds")
        scores = [row.get("per_episode_plan_score") for row in rows]
        return cls(
            names=tuple(row["rung"] for row in rows),
            first_seed=next(iter(seeds), None),
            outcomes=tuple(tuple(bool(x) for x in row["per_episode"]) for row in rows),
            plan_scores=None if None in scores else tuple(tuple(s) for s in scores),
        )

    @property
    def episodes(self) -> int:
        return len(self.outcomes[0])

    def success_share(self) -> list[float]:
        """Per seed, the share of the draws that succeeded."""
        return [sum(draw[i] for draw in self.outcomes) / len(self.outcomes) for i in range(self.episodes)]

    def plan_score(self) -> list[float | None]:
        """Per seed, the mean plan executability over the draws that scored a plan (None where none did)."""
        if self.plan_scores is None:
            return [None] * self.episodes
        values = [[draw[i] for draw in self.plan_scores if draw[i] is not None] for i in range(self.episodes)]
        return [sum(v) / len(v) if v else None for v in values]

    def disagreement(self) -> float | None:
        """The share of seeds whose draws do not all agree (None for a single draw)."""
        if len(self.outcomes) < 2:
            return None
        return sum(len({draw[i] for draw in self.outcomes}) > 1 for i in range(self.episodes)) / self.episodes


@dataclass(frozen=True)
class DrawComparison:
    a: ModelDraws
    b: ModelDraws
    success_change: tuple[float, float] | None  # mean per-seed (b - a) success share, 95 % half-width
    plan_score_change: tuple[float, float] | None  # mean per-seed (b - a) plan executability, 95 % half-width


def compare_draws(a: ModelDraws, b: ModelDraws) -> DrawComparison:
    """Model `b` against model `a`, seed by seed over their draws; refused unless both ran the same seeds."""
    known = None not in (a.first_seed, b.first_seed)
    if a.episodes != b.episodes or (known and a.first_seed != b.first_seed):
        raise ValueError(f"{a.names} and {b.names} did not run the same seeds")
    shares = [y - x for x, y in zip(a.success_share(), b.success_share(), strict=True)]
    scores = [y - x for x, y in zip(a.plan_score(), b.plan_score(), strict=True) if x is not None and y is not None]
    return DrawComparison(a, b, mean_and_half_width(shares), mean_and_half_width(scores))


def load_draws(specs: list[str]) -> ModelDraws:
    """A model from ``LADDER_JSON:RUNG_NAME`` specs, one per draw; a ValueError for a malformed spec or file."""
    rows = []
    for spec in specs:
        path, colon, rung = spec.partition(":")
        if not (colon and path and rung):
            raise ValueError(f"a draw is LADDER_JSON:RUNG_NAME, got {spec!r}")
        rows.append(find_rung(Path(path), rung))
    return ModelDraws.from_rows(rows)


def render_draws(c: DrawComparison) -> str:
    """A Markdown table: each model's pooled success and its draws' disagreement, then the per-seed changes."""

    def model(m: ModelDraws, label: str) -> str:
        wins, runs = sum(map(sum, m.outcomes)), len(m.outcomes) * m.episodes
        low, high = wilson_interval(wins, runs)
        split = "-" if m.disagreement() is None else f"{m.disagreement():.2f}"
        names = "; ".join(m.names)
        return f"| {label} | {names} | {len(m.outcomes)} | {wins}/{runs} | [{low:.2f}, {high:.2f}] | {split} |"

    def change(value: tuple[float, float] | None) -> str:
        return "-" if value is None else f"{value[0]:+.3f} +- {value[1]:.3f}"

    return (
        "\n".join(
            [
                "| model | rungs (draws) | draws | success | Wilson 95 % | seeds its draws disagree on |",
                "|---|---|---:|---:|---:|---:|",
                model(c.a, "A"),
                model(c.b, "B"),
                "",
                f"Per seed over the draws, B - A (95 %): success share {change(c.success_change)}, "
                f"plan executability {change(c.plan_score_change)}.",
            ]
        )
        + "\n"
    )
