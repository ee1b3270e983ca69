"""`eva eval plan-penalties`: where saved decoded plans (`eva eval world-model --save-actions`) lose their
executability, the arms' joints against the grippers, and how far each group moves; with two sets of the same
conditions, the plan-by-plan difference (e.g. an aligned model against its SFT model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from eva_runtime.cli.common import console
from eva_runtime.cli.models import eval_app
from eva_runtime.cli.options import ResultsFileOption, ScoringBundleOption


@eval_app.command("plan-penalties")
def eval_plan_penalties_command(
    plans: Annotated[
        list[str], typer.Option(help="NAME=PATH of a (N, T, D) .npy of decoded plans; repeat. The first is A.")
    ],
    bundle: ScoringBundleOption,
    out: ResultsFileOption,
) -> None:
    """Penalty split between arm joints and grippers, and their travel, per set of saved plans (95 %); with two
    sets of equal size, the plan-by-plan difference of the second from the first."""
    import numpy as np

    from eva_runtime.cli.world_model_eval import idm_and_reward
    from eva_runtime.reward.plan_breakdown import paired_plan_differences, plan_breakdown, summarise_plans

    named = _named_paths(plans)
    _, config, _ = idm_and_reward(bundle)
    per_set = {}
    for name, path in named:
        try:
            actions = np.load(path, allow_pickle=False)  # no pickle: a plan file is numbers only
        except (OSError, ValueError) as error:
            console.print(f"[red]error:[/red] {path}: not a readable .npy of plans ({error})")
            raise typer.Exit(2) from None
        if actions.ndim != 3 or not np.isfinite(actions).all():
            console.print(f"[red]error:[/red] {path}: expected finite (N, T, D) plans, got shape {actions.shape}")
            raise typer.Exit(2)
        per_set[name] = plan_breakdown(actions, config)
    results: dict = {"bundle": str(bundle), "sets": {name: summarise_plans(rows) for name, rows in per_set.items()}}
    names = list(per_set)
    if len(names) == 2 and len(per_set[names[0]]["reward"]) == len(per_set[names[1]]["reward"]):
        results["paired"] = {"a": names[0], "b": names[1], **paired_plan_differences(*per_set.values())}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    table = _markdown(results)
    out.with_suffix(".md").write_text(table)
    console.print(table)


def _named_paths(plans: list[str]) -> list[tuple[str, Path]]:
    named = []
    for item in plans:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            console.print(f"[red]error:[/red] --plans {item!r}: expected NAME=PATH")
            raise typer.Exit(2)
        named.append((name, Path(path)))
    if len({name for name, _ in named}) != len(named):
        console.print("[red]error:[/red] --plans: names must be distinct")
        raise typer.Exit(2)
    return named


def _markdown(results: dict) -> str:
    def cell(triple) -> str:
        mean, low, high = triple
        return f"{mean:.3g} [{low:.3g}, {high:.3g}]"

    from eva_runtime.reward.plan_breakdown import PLAN_FIELDS

    rows = list(results["sets"].items())
    if "paired" in results:
        rows.append((f"{results['paired']['b']} - {results['paired']['a']} (paired)", results["paired"]))
    lines = ["| plans | " + " | ".join(PLAN_FIELDS) + " |", "|---|" + "---:|" * len(PLAN_FIELDS)]
    lines += [f"| {name} | " + " | ".join(cell(row[field]) for field in PLAN_FIELDS) + " |" for name, row in rows]
    return "\n".join(lines) + "\n"
