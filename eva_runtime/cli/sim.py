"""`eva sim record|eval|export-lerobot`: the simulated robot's commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from eva_runtime.cli.common import EmbodimentOption, TaskOption, app, console, sim_robot

VaryTimingOption = Annotated[
    float, typer.Option(min=0.0, max=0.99, help="Varied expert: each 1 s of its script lasts 1 +- this (uniform).")
]
VaryMissOption = Annotated[
    float, typer.Option(min=0.0, max=0.05, help="Varied expert: grasps first arrive up to this far off (m).")
]
VaryMissShareOption = Annotated[float, typer.Option(min=0.0, max=1.0, help="Varied expert: share of grasps missed.")]
VaryRegraspOption = Annotated[
    float,
    typer.Option(min=0.0, max=1.0, help="Varied expert: share of missed grasps that close on the miss, then reopen."),
]


def _variation(timing: float, miss: float, share: float, regrasp: float):
    """The expert variation of `eva sim record|eval` (sim/expert_variation.py); None when nothing varies."""
    from eva_runtime.sim.expert_variation import ExpertVariation

    variation = ExpertVariation(timing=timing, miss_m=miss, miss_share=share, regrasp_share=regrasp)
    return variation if variation.active else None


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
    vary_timing: VaryTimingOption = 0.0,
    vary_miss: VaryMissOption = 0.0,
    vary_miss_share: VaryMissShareOption = 0.5,
    vary_regrasp: VaryRegraspOption = 0.0,
    successful_only: Annotated[
        bool, typer.Option(help="Write only the episodes the expert completed (the others are counted).")
    ] = False,
    episode_steps: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Control ticks per episode (default: the task's; longer ones record the expert holding its final"
            " pose, as a closed-loop episode that runs past the task's end sees it).",
        ),
    ] = None,
) -> None:
    """Record scripted-expert demonstrations (vendor HDF5 layout, three cameras, qpos, action)."""
    from rich.progress import Progress

    from eva_runtime.sim.demonstrations import record_demonstrations

    variation = _variation(vary_timing, vary_miss, vary_miss_share, vary_regrasp)
    robot = sim_robot(task, embodiment)
    wins = 0
    with Progress(console=console) as progress:
        bar = progress.add_task(f"recording {task}", total=episodes)

        def advance(item) -> None:
            nonlocal wins
            wins += item.result.success
            progress.update(bar, advance=1, description=f"recording {task}: {wins} successful")

        recorded = record_demonstrations(
            robot, episodes, out, fps=fps, first_seed=first_seed, on_episode=advance,
            variation=variation, successful_only=successful_only, max_steps=episode_steps,
        )  # fmt: skip
    robot.disconnect()
    if not recorded:
        console.print(f"[red]error:[/red] the expert completed none of the {episodes} episodes; nothing written")
        raise typer.Exit(1)
    frames = recorded[0].frames
    console.print(f"{len(recorded)} episodes written ({wins} of {episodes} successful, {frames} frames each) in {out}")


@sim_app.command("eval")
def sim_eval(
    task: TaskOption = "transfer_cube",
    episodes: Annotated[int, typer.Option(min=1)] = 50,
    policy: Annotated[str, typer.Option(help="Policy to evaluate: expert.")] = "expert",
    first_seed: Annotated[int, typer.Option(help="Episode i uses seed first_seed + i.")] = 0,
    embodiment: EmbodimentOption = None,
    vary_timing: VaryTimingOption = 0.0,
    vary_miss: VaryMissOption = 0.0,
    vary_miss_share: VaryMissShareOption = 0.5,
    vary_regrasp: VaryRegraspOption = 0.0,
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
            ExpertPolicy(_variation(vary_timing, vary_miss, vary_miss_share, vary_regrasp)),
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
