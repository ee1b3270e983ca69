"""`eva sim record|eval|export-lerobot`: the simulated robot's commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from eva_runtime.cli.common import EmbodimentOption, TaskOption, app, console, sim_robot

sim_app = typer.Typer(help="The MuJoCo bimanual simulation: demonstrations, evaluation, exports.", no_args_is_help=True)
app.add_typer(sim_app, name="sim")


@sim_app.command("record")
def sim_record(
    out: Annotated[Path, typer.Option(help="Directory for episode_{i}.hdf5 files.")],
    task: TaskOption = "transfer_cube",
    episodes: Annotated[int, typer.Option(min=1)] = 50,
    fps: Annotated[float, typer.Option(help="Recorded frame rate (must divide the 50 Hz control rate).")] = 25.0,
    first_seed: Annotated[int, typer.Option(help="Episode i uses seed first_seed + i.")] = 0,
    embodiment: EmbodimentOption = None,
) -> None:
    """Record scripted-expert demonstrations (vendor HDF5 layout, three cameras, qpos, action)."""
    from rich.progress import Progress

    from eva_runtime.sim.demonstrations import record_demonstrations

    robot = sim_robot(task, embodiment)
    wins = 0
    with Progress(console=console) as progress:
        bar = progress.add_task(f"recording {task}", total=episodes)

        def advance(item) -> None:
            nonlocal wins
            wins += item.result.success
            progress.update(bar, advance=1, description=f"recording {task}: {wins} successful")

        recorded = record_demonstrations(robot, episodes, out, fps=fps, first_seed=first_seed, on_episode=advance)
    robot.disconnect()
    console.print(f"{len(recorded)} episodes ({wins} successful, {recorded[0].frames} frames each) in {out}")


@sim_app.command("eval")
def sim_eval(
    task: TaskOption = "transfer_cube",
    episodes: Annotated[int, typer.Option(min=1)] = 50,
    policy: Annotated[str, typer.Option(help="Policy to evaluate: expert.")] = "expert",
    first_seed: Annotated[int, typer.Option(help="Episode i uses seed first_seed + i.")] = 0,
    embodiment: EmbodimentOption = None,
) -> None:
    """Closed-loop evaluation: N seeded episodes through the safety filter; a table and a JSON summary."""
    from rich.progress import Progress

    from eva_runtime.sim.evaluation import ExpertPolicy, evaluate, summarize
    from eva_runtime.sim.tasks import task_spec

    if policy != "expert":
        console.print(f"[red]error:[/red] unknown policy {policy!r} (available: expert)")
        raise typer.Exit(2)
    robot = sim_robot(task, embodiment)
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task(f"{task} with {policy}", total=episodes)
        results = evaluate(
            robot,
            ExpertPolicy(),
            range(first_seed, first_seed + episodes),
            task_spec(task).episode_steps,
            on_episode=lambda _: progress.update(bar, advance=1),
        )
    robot.disconnect()
    summary = summarize(results)
    table = Table(title=f"{task}, policy {policy}, seeds {first_seed}..{first_seed + episodes - 1}")
    for column in ("episodes", "successes", "success rate", "Wilson 95 %", "filter interventions / episode"):
        table.add_column(column)
    low, high = summary["wilson95"]
    per_episode = sum(summary["interventions"].values()) / episodes
    row = (str(episodes), str(summary["successes"]), f"{summary['success_rate']:.0%}", f"[{low:.2f}, {high:.2f}]")
    table.add_row(*row, f"{per_episode:.1f}")
    console.print(table)
    typer.echo(json.dumps({"task": task, "policy": policy, **summary}))


@sim_app.command("export-lerobot")
def sim_export_lerobot(
    data: Annotated[Path, typer.Option(help="Directory of recorded episode_{i}.hdf5 files.")],
    out: Annotated[Path, typer.Option(help="New directory for the LeRobotDataset v3.0.")],
    repo_id: Annotated[str, typer.Option(help="Dataset id written into the metadata.")] = "local/eva_sim",
) -> None:
    """Export recorded episodes to a LeRobotDataset v3.0 directory (parquet + mp4)."""
    from eva_runtime.records.hdf5_episodes import list_episodes
    from eva_runtime.records.lerobot_export import export_lerobot_v3

    paths = list_episodes(data)
    if not paths:
        console.print(f"[red]error:[/red] no episode_<n>.hdf5 files in {data}")
        raise typer.Exit(2)
    export_lerobot_v3(paths, out, repo_id=repo_id, robot_type="aloha_sim")
    console.print(f"exported {len(paths)} episodes to {out}")
