"""`eva run` (the autonomous loop) and `eva report` (the outcome log's tables)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from eva_runtime.cli.common import TaskOption, app, console


@app.command("report")
def report_command(
    log: Annotated[Path, typer.Option(help="Episode outcome log (SQLite .db written by the runtime).")],
    out: Annotated[
        Path | None, typer.Option(help="Directory for report.md and PNGs (default: <log stem>_report/).")
    ] = None,
    plain: Annotated[bool, typer.Option(help="Print raw Markdown instead of rich tables.")] = False,
) -> None:
    """Success tables (Wilson 95 %), model comparison, interventions, latency and executability from an outcome log."""
    from rich.markdown import Markdown

    from eva_runtime.records.outcome_log import OutcomeLog, OutcomeLogError
    from eva_runtime.records.report import build_report, render_markdown, write_markdown, write_plots

    if not log.is_file():
        console.print(f"[red]error:[/red] outcome log {log} does not exist")
        raise typer.Exit(2)
    try:
        # Read-only: a report must never mark a live runtime's running episode as aborted.
        with OutcomeLog(log, read_only=True) as opened:
            records = opened.episodes()
    except OutcomeLogError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    if not records:
        console.print(f"[red]error:[/red] outcome log {log} holds no episodes: nothing to report")
        raise typer.Exit(2)
    report = build_report(records)
    directory = out if out is not None else log.with_name(f"{log.stem}_report")
    markdown = write_markdown(report, directory / "report.md")
    pngs = write_plots(report, directory)
    if plain:
        typer.echo(render_markdown(report))
    else:
        console.print(Markdown(render_markdown(report)))
    console.print(f"report written to [bold]{markdown}[/bold]; plots: {', '.join(str(p) for p in pngs)}")


@app.command("run")
def run_command(
    task: TaskOption = "transfer_cube",
    episodes: Annotated[int, typer.Option(min=1)] = 10,
    robot: Annotated[str, typer.Option(help="Robot backend: sim (the MuJoCo bimanual robot).")] = "sim",
    bundle: Annotated[Path | None, typer.Option(help="Deployment bundle (overrides --world-model).")] = None,
    world_model: Annotated[
        str, typer.Option(help="Shipped bundle: oracle (models/bundle_<task>), wan or aligned (bundle_<task>_<name>).")
    ] = "oracle",
    log: Annotated[Path, typer.Option(help="SQLite episode outcome log (created if missing).")] = Path(
        "artifacts/eva_run.db"
    ),
    split: Annotated[str, typer.Option(help="seen or unseen (recorded with every episode).")] = "seen",
    sync: Annotated[bool, typer.Option(help="Synchronous: plan, execute, plan again (robot waits).")] = False,
    first_seed: Annotated[int, typer.Option(help="Episode i uses seed first_seed + i.")] = 1000,
    pace: Annotated[bool, typer.Option(help="Real-time pacing (off only for quick logic checks).")] = True,
    keys: Annotated[bool, typer.Option(help="Operator keys on stdin (mode switches, ESTOP, outcome labels).")] = False,
) -> None:
    """Run autonomous episodes end to end: world model -> IDM -> executability gate -> executor -> safety filter."""
    from rich.live import Live

    from eva_runtime.bundle import BundleError, load_bundle
    from eva_runtime.control.sim_session import run_sim_episodes
    from eva_runtime.records.outcome_log import OutcomeLog
    from eva_runtime.records.report import build_report, render_markdown

    if robot != "sim":
        console.print("[red]error:[/red] available now: --robot sim")
        raise typer.Exit(2)
    shipped = {"oracle": f"bundle_{task}", "wan": f"bundle_{task}_wan", "aligned": f"bundle_{task}_aligned"}
    if bundle is None and world_model not in shipped:
        console.print(f"[red]error:[/red] --world-model {world_model!r}: use one of {', '.join(shipped)}, or --bundle")
        raise typer.Exit(2)
    bundle_dir = bundle or Path(__file__).resolve().parents[2] / "models" / shipped[world_model]
    try:
        load_bundle(bundle_dir)  # refused before the simulator, the log or the planner start
    except BundleError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    operator = leader_factory = None
    if keys:
        import sys

        from eva_runtime.control.operator_keys import HELP, KeyOperator
        from eva_runtime.sim.virtual_leader import ExpertLeader

        operator = KeyOperator(sys.stdin)
        leader_factory = ExpertLeader  # in sim a scripted operator moves the leader arms
        console.print(HELP)

    with Live(console=console, refresh_per_second=4, transient=True) as live:

        def show(index, episode_id, step, modes, stats) -> None:
            if step % 10:
                return
            latency = f"{1e3 * np.median(stats.latencies_s):.0f} ms" if stats.latencies_s else "-"
            live.update(
                f"episode {index + 1}/{episodes}  step {step}  mode {modes.mode.value}  plans {stats.plans}"
                f"  plan age {stats.plan_age_s:.2f} s  planning latency {latency}"
                f"  filter clamps {sum(stats.interventions.values())}"
            )

        result = run_sim_episodes(
            bundle_dir,
            task,
            episodes,
            first_seed,
            log,
            sync=sync,
            pace=pace,
            split=split,
            on_tick=show,
            operator=operator,
            leader_factory=leader_factory,
            label=operator.take_label if operator is not None else None,
        )
    with OutcomeLog(log, read_only=True) as outcomes:
        report = build_report(outcomes.episodes(run_id=result.run_id))
    console.print(render_markdown(report))
    typer.echo(json.dumps({k: result.summary()[k] for k in _SUMMARY_KEYS}))


_SUMMARY_KEYS = (
    "task",
    "mode",
    "episodes",
    "successes",
    "planning_latency_p50_s",
    "hold_ticks_per_episode",
    "overruns",
    "max_command_step",
    "log",
    "run_id",
)
