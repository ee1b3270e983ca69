"""Two ladder rungs compared seed by seed: which seeds succeed with both, with one only, with neither; an exact
test of the discordant seeds; the mean per-seed change in how far the task got, how close the hand came and how
executable the episode's plans were (the mean executability reward of its plans).

Two success rates on the same 50 seeds are not two independent samples: most seeds succeed or fail with both
models, and only the discordant seeds say which model is better. So the test is McNemar's, exact (a two-sided
binomial test of the discordant seeds at one half), and the stage and reach changes are means of per-seed
differences with a 95 % normal interval. Rows are `eva eval ladder` rows (OUT/ladder.json), from one run or two.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PairedComparison", "compare_rungs", "find_rung", "mcnemar_exact_p", "mean_and_half_width", "render_paired"]

Z95 = 1.959963984540054


@dataclass(frozen=True)
class PairedComparison:
    a: str
    b: str
    episodes: int
    both: int
    a_only: int
    b_only: int
    neither: int
    mcnemar_p: float
    stage_change: tuple[float, float] | None  # mean (b - a) furthest stage per seed, 95 % half-width
    reach_change_m: tuple[float, float] | None  # mean (b - a) closest reach per seed (m), 95 % half-width
    # mean (b - a) of each episode's mean plan executability, 95 % half-width (None: rows written before 2026-12-07)
    plan_score_change: tuple[float, float] | None = None


def mcnemar_exact_p(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: the chance of a split of the discordant seeds at least this uneven if
    either model were as likely as the other to be the one that succeeds."""
    if a_only < 0 or b_only < 0:
        raise ValueError(f"discordant counts must be >= 0, got {a_only} and {b_only}")
    n = a_only + b_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(a_only, b_only) + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def mean_and_half_width(differences: list[float]) -> tuple[float, float] | None:
    """The mean and its 95 % normal half-width; None for fewer than two values."""
    if len(differences) < 2:
        return None
    mean = sum(differences) / len(differences)
    variance = sum((d - mean) ** 2 for d in differences) / (len(differences) - 1)
    return mean, Z95 * math.sqrt(variance / len(differences))


def compare_rungs(a: dict, b: dict) -> PairedComparison:
    """Rung `b` against rung `a`, seed by seed; refused unless both ran the same seeds."""
    runs = (a, b)
    if any("per_episode" not in row for row in runs):
        raise ValueError("a ladder row without per_episode outcomes cannot be paired")
    if len(a["per_episode"]) != len(b["per_episode"]):
        raise ValueError(f"{a['rung']!r} ran {len(a['per_episode'])} episodes, {b['rung']!r} {len(b['per_episode'])}")
    seeds = [row.get("first_seed") for row in runs]
    if None not in seeds and seeds[0] != seeds[1]:
        raise ValueError(f"{a['rung']!r} started at seed {seeds[0]}, {b['rung']!r} at seed {seeds[1]}")
    pairs = list(zip(a["per_episode"], b["per_episode"], strict=True))
    a_only = sum(x and not y for x, y in pairs)
    b_only = sum(y and not x for x, y in pairs)
    return PairedComparison(
        a=a["rung"],
        b=b["rung"],
        episodes=len(pairs),
        both=sum(x and y for x, y in pairs),
        a_only=a_only,
        b_only=b_only,
        neither=sum(not x and not y for x, y in pairs),
        mcnemar_p=mcnemar_exact_p(a_only, b_only),
        stage_change=mean_and_half_width(_per_seed_differences(a, b, "per_episode_stage")),
        reach_change_m=mean_and_half_width(_per_seed_differences(a, b, "per_episode_reach_m")),
        plan_score_change=mean_and_half_width(_per_seed_differences(a, b, "per_episode_plan_score")),
    )


def _per_seed_differences(a: dict, b: dict, key: str) -> list[float]:
    """b - a for each seed where both rows have the value."""
    pairs = zip(a.get(key, []), b.get(key, []), strict=False)
    return [float(y - x) for x, y in pairs if x is not None and y is not None]


def find_rung(path: Path, name: str) -> dict:
    """The row named `name` in a ladder.json; a ValueError naming the file and what is wrong with it otherwise (not
    readable, not JSON, or the rungs it has)."""
    try:
        rows = json.loads(Path(path).read_text())
    except OSError as error:
        raise ValueError(f"{path}: {error.strerror or error}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a ladder.json ({error})") from None
    for row in rows:
        if row.get("rung") == name:
            return row
    raise ValueError(f"{path}: no rung {name!r}; it has {[row.get('rung') for row in rows]}")


def render_paired(c: PairedComparison) -> str:
    """A Markdown table of one comparison."""

    def change(value: tuple[float, float] | None, scale: float, unit: str) -> str:
        return "-" if value is None else f"{scale * value[0]:+.2f} +- {scale * value[1]:.2f}{unit}"

    return (
        "\n".join(
            [
                "| A | B | seeds | both | A only | B only | neither | McNemar exact p | stage B - A | reach B - A "
                "| plan executability B - A |",
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
                f"| {c.a} | {c.b} | {c.episodes} | {c.both} | {c.a_only} | {c.b_only} | {c.neither} | "
                f"{c.mcnemar_p:.3f} | {change(c.stage_change, 1.0, '')} | {change(c.reach_change_m, 100.0, ' cm')} "
                f"| {change(c.plan_score_change, 1.0, '')} |",
            ]
        )
        + "\n"
    )
