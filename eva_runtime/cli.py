"""The `eva` command: one entry point with a sub-command per job (sub-command modules are imported lazily)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="eva-runtime: deploy and train video-world-model robot policies (EVA).", no_args_is_help=True)
safety_app = typer.Typer(help="The safety filter every command passes through.", no_args_is_help=True)
embodiment_app = typer.Typer(help="Embodiment files (joints, limits, cameras, topics).", no_args_is_help=True)
app.add_typer(safety_app, name="safety")
app.add_typer(embodiment_app, name="embodiment")
sim_app = typer.Typer(help="The MuJoCo bimanual simulation: demonstrations, evaluation, exports.", no_args_is_help=True)
app.add_typer(sim_app, name="sim")

console = Console()


def calibration_dir() -> Path:
    """Where the embodiment YAMLs live: $EVA_CALIBRATION_DIR, else the source tree's calibration/."""
    configured = os.environ.get("EVA_CALIBRATION_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[1] / "calibration"


EmbodimentOption = Annotated[
    Path | None, typer.Option("--embodiment", "-e", help="Embodiment YAML (default: calibration/aloha_sim.yaml).")
]


def _embodiment_path(path: Path | None) -> Path:
    return path if path is not None else calibration_dir() / "aloha_sim.yaml"


def _load_limits(path: Path | None):
    from eva_runtime.embodiment import EmbodimentError, load_embodiment
    from eva_runtime.safety import SafetyLimits

    try:
        return SafetyLimits.from_embodiment(load_embodiment(_embodiment_path(path)))
    except (EmbodimentError, ValueError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None


@app.command()
def version() -> None:
    """Print the installed version and the ONNX Runtime distribution the runtime will use."""
    from eva_runtime import __version__
    from eva_runtime.onnx_install import OnnxRuntimeInstallError, installed_onnxruntime

    typer.echo(f"eva-runtime {__version__}")
    try:
        name, number = installed_onnxruntime()
    except OnnxRuntimeInstallError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    typer.echo(f"{name} {number}")


@embodiment_app.command("check")
def embodiment_check(files: Annotated[list[Path], typer.Argument(help="Embodiment YAML files to validate.")]) -> None:
    """Validate embodiment files; print a summary of each, or every problem with file and key."""
    from eva_runtime.embodiment import EmbodimentError, load_embodiment

    failed = False
    for path in files:
        try:
            embodiment = load_embodiment(path)
        except EmbodimentError as error:
            failed = True
            console.print(f"[red]{error}[/red]")
            continue
        table = Table(title=f"{path}: {embodiment.name} ({embodiment.dof} joints, {embodiment.control_rate_hz} Hz)")
        for column in ("joint", "kind", "min", "max", "v max", "a max"):
            table.add_column(column)
        for joint in embodiment.joints:
            low, high = joint.position
            row = (joint.name, joint.kind.value, f"{low:g}", f"{high:g}", f"{joint.velocity_max:g}")
            table.add_row(*row, f"{joint.acceleration_max:g}")
        console.print(table)
    if failed:
        raise typer.Exit(1)


@safety_app.command("demo")
def safety_demo(
    out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("artifacts/safety_demo.png"),
    embodiment: EmbodimentOption = None,
) -> None:
    """Feed a deliberately bad command stream through the filter and plot requested vs filtered."""
    from eva_runtime.safety.demo import FAULT_WINDOWS, plot_demo, run_demo

    limits = _load_limits(embodiment)
    run = run_demo(limits)
    plot_demo(run, limits, out)
    table = Table(title=f"Safety filter demo on {_embodiment_path(embodiment).name}: {len(run.times)} ticks")
    table.add_column("check")
    table.add_column("interventions", justify="right")
    for check, count in sorted(run.counts().items()):
        table.add_row(check, str(count))
    console.print(table)
    faults = ", ".join(label for _, _, label in FAULT_WINDOWS)
    console.print(f"injected faults: {faults}")
    import numpy as np

    finite = bool(np.all(np.isfinite(run.applied)))
    console.print(f"applied commands all finite: {finite}; plot written to [bold]{out}[/bold]")


@safety_app.command("soak")
def safety_soak(
    sequences: Annotated[int, typer.Option(min=1, help="Number of random adversarial sequences.")] = 1_000_000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the sequence generator.")] = 0,
    max_length: Annotated[int, typer.Option(min=1, help="Longest sequence, in ticks.")] = 24,
    embodiment: EmbodimentOption = None,
) -> None:
    """Run many adversarial sequences through the filter; print JSON with the violation count (must be 0)."""
    from rich.progress import Progress

    from eva_runtime.safety.soak import soak

    path = _embodiment_path(embodiment)
    _load_limits(path)  # fail here, with a clear message, rather than in every worker
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("soak", total=sequences)
        result = soak(path, sequences, workers, seed, max_length, progress=lambda n: progress.update(task, completed=n))
    report = {
        "embodiment": str(path),
        "sequences": result.sequences,
        "ticks": result.ticks,
        "violations": result.violations,
        "examples": list(result.examples),
        "seconds": round(result.seconds, 1),
        "seed": seed,
    }
    typer.echo(json.dumps(report))
    if result.violations:
        raise typer.Exit(1)


TaskOption = Annotated[str, typer.Option(help="Simulated task: transfer_cube or insertion.")]


def _sim_robot(task: str, embodiment: Path | None):
    from eva_runtime.embodiment import EmbodimentError, load_embodiment
    from eva_runtime.robots.mujoco_robot import MujocoRobot

    try:
        robot = MujocoRobot(load_embodiment(_embodiment_path(embodiment)), task)
        robot.connect()
    except (EmbodimentError, ValueError, RuntimeError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    return robot


@sim_app.command("record")
def sim_record(
    out: Annotated[Path, typer.Option(help="Directory for episode_XXXX.hdf5 files.")],
    task: TaskOption = "transfer_cube",
    episodes: Annotated[int, typer.Option(min=1)] = 50,
    fps: Annotated[float, typer.Option(help="Recorded frame rate (must divide the 50 Hz control rate).")] = 25.0,
    first_seed: Annotated[int, typer.Option(help="Episode i uses seed first_seed + i.")] = 0,
    embodiment: EmbodimentOption = None,
) -> None:
    """Record scripted-expert demonstrations (vendor HDF5 layout, three cameras, qpos, action)."""
    from rich.progress import Progress

    from eva_runtime.sim.demonstrations import record_demonstrations

    robot = _sim_robot(task, embodiment)
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
    robot = _sim_robot(task, embodiment)
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
    data: Annotated[Path, typer.Option(help="Directory of recorded episode_XXXX.hdf5 files.")],
    out: Annotated[Path, typer.Option(help="New directory for the LeRobotDataset v3.0.")],
    repo_id: Annotated[str, typer.Option(help="Dataset id written into the metadata.")] = "local/eva_sim",
) -> None:
    """Export recorded episodes to a LeRobotDataset v3.0 directory (parquet + mp4)."""
    from eva_runtime.records.hdf5_episodes import list_episodes
    from eva_runtime.records.lerobot_export import export_lerobot_v3

    paths = list_episodes(data)
    if not paths:
        console.print(f"[red]error:[/red] no episode_XXXX.hdf5 files in {data}")
        raise typer.Exit(2)
    export_lerobot_v3(paths, out, repo_id=repo_id, robot_type="aloha_sim")
    console.print(f"exported {len(paths)} episodes to {out}")


if __name__ == "__main__":
    app()
