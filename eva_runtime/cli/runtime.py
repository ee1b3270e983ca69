"""`eva run` (the autonomous loop) and `eva report` (the outcome log's tables)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from eva_runtime.cli.common import TaskOption, app, console, sim_robot


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

    from eva_runtime import __version__
    from eva_runtime.bundle import BundleError, load_bundle
    from eva_runtime.control.episode_runner import LoopSettings, episode_counters, run_autonomous_episode
    from eva_runtime.control.planner_process import PlannerProcess
    from eva_runtime.control.sim_runtime import oracle_state_source, planner_spec
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
        deployed = load_bundle(bundle_dir)  # every hash, the embodiment and the timing are checked here
    except BundleError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    sim = sim_robot(task, deployed.files["embodiment"])
    planner = PlannerProcess(planner_spec(deployed, task))
    planner.start()
    settings = LoopSettings(synchronous=sync, pace=pace)
    period = sim.embodiment.control_period_s
    model_id = f"{deployed.manifest.world_model.id}+idm:{deployed.hashes()['idm'][:8]}"
    # Only the oracle (a test instrument) reads the simulator's state; a learned model sees only the cameras.
    privileged = oracle_state_source(sim) if deployed.manifest.world_model.kind == "oracle" else None
    operator = leader = None
    if keys:
        import sys

        from eva_runtime.control.operator_keys import HELP, KeyOperator
        from eva_runtime.sim.virtual_leader import ExpertLeader

        operator, leader = KeyOperator(sys.stdin), ExpertLeader(sim)  # in sim a scripted operator moves the leaders
        console.print(HELP)

    log.parent.mkdir(parents=True, exist_ok=True)
    results = []
    with OutcomeLog(log) as outcomes, Live(console=console, refresh_per_second=4, transient=True) as live:
        run_id = outcomes.run_id
        for index in range(episodes):
            episode_id = outcomes.start_episode(
                task, sim.instruction, split, sim.embodiment.name, deployed.hashes(), model_id, __version__
            )

            def show(step: int, modes, stats, index=index, episode_id=episode_id) -> None:
                if step % 10:
                    return
                latency = f"{1e3 * np.median(stats.latencies_s):.0f} ms" if stats.latencies_s else "-"
                live.update(
                    f"episode {index + 1}/{episodes}  step {step}  mode {modes.mode.value}  plans {stats.plans}"
                    f"  plan age {stats.plan_age_s:.2f} s  planning latency {latency}"
                    f"  filter clamps {sum(stats.interventions.values())}"
                )
                if step % 100 == 0:
                    outcomes.update_episode(episode_id, **episode_counters(stats, period))

            stats = run_autonomous_episode(
                sim, planner, first_seed + index, settings, privileged, show, operator=operator, leader=leader
            )
            results.append(stats)
            reason = None if stats.success else ("planner faults" if stats.planner_faults else "task not completed")
            outcome = "success" if stats.success else "failure"
            outcomes.end_episode(episode_id, outcome, "automatic", reason, **episode_counters(stats, period))
            label = operator.take_label() if operator is not None else None
            if label is not None:  # the operator's judgement overrides the automatic check; both are kept
                outcomes.label_episode(episode_id, label, "operator")
        report = build_report(outcomes.episodes(run_id=run_id))
    planner.close()
    sim.disconnect()
    console.print(render_markdown(report))
    latencies = [x for r in results for x in r.latencies_s]
    summary = {
        "task": task,
        "mode": "sync" if sync else "async",
        "episodes": len(results),
        "successes": sum(r.success for r in results),
        "planning_latency_p50_s": float(np.median(latencies)) if latencies else None,
        "hold_ticks_per_episode": float(np.mean([r.hold_ticks for r in results])),
        "overruns": sum(r.overruns for r in results),
        "max_command_step": max(r.max_step_change for r in results),
        "log": str(log),
        "run_id": run_id,
    }
    typer.echo(json.dumps(summary))
