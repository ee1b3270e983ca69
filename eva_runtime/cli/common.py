"""Shared pieces of the `eva` command: the typer app, the console, and option types and helpers every group uses."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

__all__ = [
    "EmbodimentOption",
    "TaskOption",
    "app",
    "calibration_dir",
    "console",
    "embodiment_path",
    "load_limits",
    "sim_robot",
]

app = typer.Typer(help="eva-runtime: deploy and train video-world-model robot policies (EVA).", no_args_is_help=True)
console = Console()


def calibration_dir() -> Path:
    """Where the embodiment YAMLs live: $EVA_CALIBRATION_DIR, else the source tree's calibration/."""
    configured = os.environ.get("EVA_CALIBRATION_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "calibration"


EmbodimentOption = Annotated[
    Path | None, typer.Option("--embodiment", "-e", help="Embodiment YAML (default: calibration/aloha_sim.yaml).")
]
TaskOption = Annotated[str, typer.Option(help="Simulated task: transfer_cube or insertion.")]


def embodiment_path(path: Path | None) -> Path:
    return path if path is not None else calibration_dir() / "aloha_sim.yaml"


def load_limits(path: Path | None):
    from eva_runtime.embodiment import EmbodimentError, load_embodiment
    from eva_runtime.safety import SafetyLimits

    try:
        return SafetyLimits.from_embodiment(load_embodiment(embodiment_path(path)))
    except (EmbodimentError, ValueError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None


def sim_robot(task: str, embodiment: Path | None):
    from eva_runtime.embodiment import EmbodimentError, load_embodiment
    from eva_runtime.robots.mujoco_robot import MujocoRobot

    try:
        robot = MujocoRobot(load_embodiment(embodiment_path(embodiment)), task)
        robot.connect()
    except (EmbodimentError, ValueError, RuntimeError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    return robot
