"""`eva eval ladder`: the closed-loop ladder from the oracle to the learned world model (one YAML of rungs);
`eva eval paired`: two of its rungs compared seed by seed; `eva eval draws`: two models over several sampling
draws each; `eva eval ladder-plot`: rungs of several runs in one figure."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from eva_runtime.cli.common import console
from eva_runtime.cli.models import eval_app


@eval_app.command("ladder")
def eval_ladder_command(
    config: Annotated[Path, typer.Option(help="Ladder YAML (e.g. configs/ladder_transfer_cube.yaml).")],
    out: Annotated[Path, typer.Option(help="Directory: ladder.json, ladder.md, ladder.db (every episode).")],
    episodes: Annotated[int | None, typer.Option(min=1, help="Episodes per rung (default: the YAML's).")] = None,
    rungs: Annotated[str, typer.Option(help="Comma-separated rung names to run (default: all).")] = "",
    episode_steps: Annotated[
        int | None, typer.Option(min=1, help="Control ticks per episode (default: the YAML's, 400 = 8 s).")
    ] = None,
    open_loop_data: Annotated[
        Path | None,
        typer.Option(help="Also measure each rung open loop on these held-out recordings (PSNR, reward, motion)."),
    ] = None,
    open_loop_episodes: Annotated[int, typer.Option(min=1, help="Held-out recordings used open loop.")] = 10,
    starts: Annotated[str, typer.Option(help="Open-loop start frames (model fps), comma-separated.")] = "0,16,32,48",
    horizon: Annotated[int, typer.Option(min=2, help="Open-loop imagined frames.")] = 37,
) -> None:
    """Closed loop on the same seeds for every rung: oracle, oracle degraded (VAE, motion, blur, jitter), learned
    models and best-of-N; each rung's result is merged into OUT/ladder.json as it finishes (re-run replaces it).
    With --open-loop-data each rung is first measured open loop as it runs (its history, best-of-N)."""
    from eva_runtime.world_model.ladder import LadderConfigError, load_ladder, run_ladder

    try:
        loaded = load_ladder(config)
    except LadderConfigError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    only = tuple(r for r in rungs.split(",") if r)
    unknown = sorted(set(only) - {r.name for r in loaded.rungs})
    if unknown:
        console.print(f"[red]error:[/red] unknown rungs {unknown}; the config has {[r.name for r in loaded.rungs]}")
        raise typer.Exit(2)
    root = config.resolve().parent.parent
    measure = None
    if open_loop_data is not None:
        from eva_runtime.world_model.ladder_open_loop import OpenLoopConditions, RungOpenLoop

        conditions = OpenLoopConditions(open_loop_data, open_loop_episodes, _frames(starts), horizon)
        first = next(r for r in loaded.rungs if not only or r.name in only)
        measure = RungOpenLoop(conditions, root / first.bundle)
    run_ladder(loaded, root, out, episodes, only, episode_steps, log=console.print, open_loop=measure)
    console.print((out / "ladder.md").read_text())


def _frames(starts: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in starts.split(","))
    except ValueError:
        console.print(f"[red]error:[/red] --starts takes comma-separated frame numbers, got {starts!r}")
        raise typer.Exit(2) from None


@eval_app.command("paired")
def eval_paired_command(
    ladder: Annotated[Path, typer.Option(help="A ladder.json (`eva eval ladder --out DIR` writes DIR/ladder.json).")],
    a: Annotated[str, typer.Option(help="The rung to compare against (e.g. the earlier model).")],
    b: Annotated[str, typer.Option(help="The rung compared.")],
    ladder_b: Annotated[Path | None, typer.Option(help="B's ladder.json, when it ran in another run.")] = None,
) -> None:
    """Rung B against rung A seed by seed: both / A only / B only / neither, McNemar's exact p on the discordant
    seeds, and the mean per-seed change in furthest stage and closest reach (95 %); a Markdown table."""
    from eva_runtime.world_model.ladder_paired import compare_rungs, find_rung, render_paired

    try:
        comparison = compare_rungs(find_rung(ladder, a), find_rung(ladder_b or ladder, b))
    except ValueError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    typer.echo(render_paired(comparison))


@eval_app.command("draws")
def eval_draws_command(
    a: Annotated[list[str], typer.Option(help="LADDER_JSON:RUNG_NAME of model A, repeated once per draw.")],
    b: Annotated[list[str], typer.Option(help="LADDER_JSON:RUNG_NAME of model B, repeated once per draw.")],
) -> None:
    """Model B against model A over several draws of the sampler's noise each (rungs with `sampling_draw`), on
    the same seeds: pooled success (Wilson 95 %), the share of seeds a model's own draws disagree on, and the mean
    per-seed change in success share and plan executability (95 %); a Markdown table."""
    from eva_runtime.world_model.ladder_draws import compare_draws, load_draws, render_draws

    try:
        comparison = compare_draws(load_draws(a), load_draws(b))
    except ValueError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    typer.echo(render_draws(comparison))


@eval_app.command("ladder-plot")
def eval_ladder_plot_command(
    rung: Annotated[
        list[str], typer.Option(help="LABEL=LADDER_JSON:RUNG_NAME, repeated; drawn top to bottom in this order.")
    ],
    out: Annotated[Path, typer.Option(help="The PNG to write.")],
    title: Annotated[str, typer.Option(help="A title over the figure.")] = "",
    target: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="A success rate to mark (e.g. 0.3).")] = None,
) -> None:
    """Rungs of one or more ladder runs in one figure: success (Wilson 95 %) and the furthest task stage reached."""
    from eva_runtime.world_model.ladder_plot import load_rungs, plot_rungs

    try:
        rungs = load_rungs(rung)
    except ValueError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    plot_rungs(rungs, out, title, target)
    console.print(f"wrote {out}")
