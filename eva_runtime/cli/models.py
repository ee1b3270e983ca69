"""`eva train idm`, `eva export idm`, `eva eval idm-replay`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer

from eva_runtime.cli.common import EmbodimentOption, TaskOption, app, console, embodiment_path, sim_robot
from eva_runtime.cli.options import SQUARE_64, FrameSizeOption, PositiveIntOption

if TYPE_CHECKING:
    from eva_runtime.idm.config import IdmConfig
    from eva_runtime.idm.train import TrainSettings

train_app = typer.Typer(help="Training: the IDM now; the world model and alignment later.", no_args_is_help=True)
export_app = typer.Typer(help="Export trained models for deployment.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluations that need trained models.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(export_app, name="export")
app.add_typer(eval_app, name="eval")


@train_app.command("idm")
def train_idm_command(
    data: Annotated[Path, typer.Option(help="Recorded episode_{i}.hdf5 files, or a LeRobotDataset v3.0 directory.")],
    out: Annotated[Path, typer.Option(help="Run directory (checkpoints, metrics.jsonl, split.json).")],
    steps: PositiveIntOption = 20_000,
    batch_size: PositiveIntOption = 32,
    learning_rate: float = 3e-4,
    cameras: Annotated[str, typer.Option(help="Comma-separated camera names.")] = "cam_high",
    image_size: FrameSizeOption = SQUARE_64,
    window: Annotated[int, typer.Option(help="k: frames t-k..t+k.")] = 1,
    fps: Annotated[float, typer.Option(help="IDM frame/action rate (divides the recording fps).")] = 12.5,
    backbone: Annotated[str, typer.Option(help="small, resnet18 or resnet50.")] = "small",
    held_out: Annotated[float, typer.Option(help="Fraction of episodes held out for validation.")] = 0.1,
    eval_every: PositiveIntOption = 1000,
    seed: int = 0,
    threads: Annotated[int, typer.Option(min=1, help="torch threads (measure: 1 can beat 2 on a shared box).")] = 2,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.safetensors.")] = False,
    embodiment: EmbodimentOption = None,
) -> None:
    """Train the inverse dynamics model on recorded episodes (safetensors checkpoints, resumable)."""
    from eva_runtime.idm.train import TrainSettings

    config = _idm_config(embodiment, cameras, image_size.hw, window, fps, backbone)
    settings = TrainSettings(
        data=data,
        out=out,
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        held_out=held_out,
        eval_every=eval_every,
        seed=seed,
        threads=threads,
    )
    _train_with_progress(settings, config, resume)
    console.print(f"checkpoints in {out} (last.safetensors, best.safetensors), metrics in {out / 'metrics.jsonl'}")


def _idm_config(
    embodiment: Path | None, cameras: str, image_size: tuple[int, int], window: int, fps: float, backbone: str
) -> IdmConfig:
    """The IDM's architecture and timing, with the joints and grippers of the embodiment it is trained for."""
    from eva_runtime.embodiment import load_embodiment
    from eva_runtime.idm.config import IdmConfig

    robot = load_embodiment(embodiment_path(embodiment))
    return IdmConfig(
        cameras=tuple(c.strip() for c in cameras.split(",") if c.strip()),
        image_size=image_size,
        window=window,
        fps=fps,
        joint_names=robot.joint_names,
        gripper_indices=tuple(int(i) for i in robot.gripper_mask().nonzero()[0]),
        backbone=backbone,
    )


def _train_with_progress(settings: TrainSettings, config: IdmConfig, resume: bool) -> None:
    """train_idm under a progress bar that also prints each validation report; a ValueError exits 2."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from eva_runtime.idm.train import train_idm

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"))
    with Progress(*columns, TimeRemainingColumn(), console=console) as progress:
        bar = progress.add_task("IDM", total=settings.steps)

        def show(step: int, loss: float, report: dict | None) -> None:
            progress.update(bar, completed=step, description=f"IDM loss {loss:.4f}")
            if report:
                v = report["validation"]
                progress.console.print(
                    f"step {step}: arm MAE {v['arm_mae']:.4f} rad, gripper MAE {v['gripper_mae']:.4f}, "
                    f"accuracy {v['accuracy']:.3f}"
                )

        try:
            train_idm(settings, config, resume=resume, on_progress=show)
        except ValueError as error:
            console.print(f"[red]error:[/red] {error}")
            raise typer.Exit(2) from None


@export_app.command("idm")
def export_idm_command(
    checkpoint: Annotated[Path, typer.Option(help="IDM checkpoint (.safetensors with its .sha256).")],
    out: Annotated[Path, typer.Option(help="The .onnx file to write.")],
    data: Annotated[Path | None, typer.Option(help="Episodes (HDF5 or LeRobot v3) for parity inputs.")] = None,
    tolerance: float = 1e-4,
) -> None:
    """Export an IDM checkpoint to one self-contained ONNX file and verify parity against torch."""
    from eva_runtime.idm.checkpoint import CheckpointError, load_checkpoint
    from eva_runtime.idm.export import ParityError, export_idm, parity_batch_from_data

    try:
        inputs = None
        if data is not None:
            model, _, _ = load_checkpoint(checkpoint)
            inputs = parity_batch_from_data(model.config.to_json(), data)
        report = export_idm(checkpoint, out, inputs, tolerance)
    except (CheckpointError, ParityError, ValueError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None
    typer.echo(
        json.dumps(
            {
                "onnx": str(report.path),
                "sha256": report.sha256,
                "max_abs_difference": report.max_abs_difference,
                "parity_samples": report.samples,
                "provider": report.provider,
            }
        )
    )


@eval_app.command("idm-replay")
def eval_idm_replay(
    idm: Annotated[Path, typer.Option(help="Exported IDM (.onnx).")],
    data: Annotated[Path, typer.Option(help="Held-out recorded episodes (never trained on).")],
    task: TaskOption = "transfer_cube",
    episodes: Annotated[int, typer.Option(min=1, help="How many episodes of DATA to replay.")] = 50,
    smooth: Annotated[int, typer.Option(help="Centred moving average over this many decoded frames (1: none).")] = 3,
    embodiment: EmbodimentOption = None,
) -> None:
    """Decode held-out ground-truth videos with the IDM and execute them in simulation; success table + JSON."""
    from rich.progress import Progress

    from eva_runtime.idm.decoder import IdmDecoder
    from eva_runtime.idm.replay import replay_episode
    from eva_runtime.records.hdf5_episodes import list_episodes
    from eva_runtime.sim.evaluation import summarize
    from eva_runtime.sim.tasks import task_spec

    decoder = IdmDecoder(idm)
    paths = list_episodes(data)[:episodes]
    robot = sim_robot(task, embodiment)
    results, errors = [], []
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task("IDM replay", total=len(paths))
        for path in paths:
            result, error = replay_episode(robot, decoder, path, task_spec(task).episode_steps, smooth)
            results.append(result)
            errors.append(error)
            progress.update(bar, advance=1)
    robot.disconnect()
    summary = summarize(results)
    low, high = summary["wilson95"]
    console.print(
        f"IDM replay on {len(paths)} held-out {task} episodes: {summary['successes']}/{len(paths)} "
        f"({summary['success_rate']:.0%}, Wilson 95 % [{low:.2f}, {high:.2f}]), "
        f"arm decoding MAE {np.mean(errors):.4f} rad, provider {decoder.provider}"
    )
    typer.echo(
        json.dumps({"idm": str(idm), "arm_mae": float(np.mean(errors)), "provider": decoder.provider, **summary})
    )
