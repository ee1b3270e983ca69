"""`eva version`, `eva embodiment check`, `eva safety demo|soak`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from eva_runtime.cli.common import EmbodimentOption, app, console, embodiment_path, load_limits

safety_app = typer.Typer(help="The safety filter every command passes through.", no_args_is_help=True)
embodiment_app = typer.Typer(help="Embodiment files (joints, limits, cameras, topics).", no_args_is_help=True)
app.add_typer(safety_app, name="safety")
app.add_typer(embodiment_app, name="embodiment")


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

    limits = load_limits(embodiment)
    run = run_demo(limits)
    plot_demo(run, limits, out)
    table = Table(title=f"Safety filter demo on {embodiment_path(embodiment).name}: {len(run.times)} ticks")
    table.add_column("check")
    table.add_column("interventions", justify="right")
    for check, count in sorted(run.counts().items()):
        table.add_row(check, str(count))
    console.print(table)
    faults = ", ".join(label for _, _, label in FAULT_WINDOWS)
    console.print(f"injected faults: {faults}")
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

    path = embodiment_path(embodiment)
    load_limits(path)  # fail here, with a clear message, rather than in every worker
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
