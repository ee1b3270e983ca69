"""`eva calibrate limits|reward`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from eva_runtime.cli.common import EmbodimentOption, app, console, embodiment_path

calibrate_app = typer.Typer(help="Calibration from data: joint caps and the reward's P0.", no_args_is_help=True)
app.add_typer(calibrate_app, name="calibrate")


def _calibrate_embodiment(path: Path | None):
    from eva_runtime.embodiment import EmbodimentError, load_embodiment

    try:
        return load_embodiment(embodiment_path(path))
    except EmbodimentError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None


@calibrate_app.command("limits")
def calibrate_limits_command(
    data: Annotated[Path, typer.Option(help="Directory of episode_{i}.hdf5 demonstrations.")],
    out: Annotated[Path, typer.Option(help="Limits YAML to write.")],
    embodiment: EmbodimentOption = None,
    percentile: Annotated[float, typer.Option(help="Percentile of |velocity| etc. over all samples.")] = 99.5,
    margin: Annotated[float, typer.Option(help="Factor on the percentile (capped at the hard limits).")] = 1.2,
) -> None:
    """Estimate per-joint velocity, acceleration and jerk caps from demonstrations; write YAML, print a table."""
    from eva_runtime.calibration.limits import calibrate_limits, write_limits_yaml
    from eva_runtime.records.hdf5_episodes import list_episodes

    robot = _calibrate_embodiment(embodiment)
    paths = list_episodes(data) if data.is_dir() else []
    if not paths:
        console.print(f"[red]error:[/red] no episode_<n>.hdf5 files in {data}")
        raise typer.Exit(2)
    try:
        result = calibrate_limits(paths, robot, percentile=percentile, margin=margin)
    except (ValueError, OSError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    write_limits_yaml(out, result)
    table = Table(title=f"{robot.name}: caps from {result['episodes']} episodes (p{percentile:g} x {margin:g})")
    for column in ("joint", "v max", "v hard", "a max", "a hard", "jerk max", "limited by (v, a, j)"):
        table.add_column(column)
    for joint in robot.joints:
        entry = result["joints"][joint.name]
        sources = ", ".join(entry["sources"][name] for name in ("velocity", "acceleration", "jerk"))
        caps = (entry["velocity_max"], joint.velocity_max, entry["acceleration_max"], joint.acceleration_max)
        table.add_row(joint.name, *(f"{value:.4g}" for value in caps), f"{entry['jerk_max']:.4g}", sources)
    console.print(table)
    console.print(f"limits written to [bold]{out}[/bold] (data digest {result['data_digest'][:12]})")


@calibrate_app.command("reward")
def calibrate_reward_command(
    rollouts: Annotated[
        list[Path], typer.Option(help="Rollouts: .npy (G, T, D) or HDF5 episode directories/files; repeatable.")
    ],
    embodiment: EmbodimentOption = None,
    fps: Annotated[float | None, typer.Option(help="Rollout rate, sets dt (default: the episodes' fps).")] = None,
    horizon: Annotated[int, typer.Option(help="Window length, in steps, that episodes are cut into.")] = 49,
    statistic: Annotated[str, typer.Option(help="P0 statistic of the penalties: mean or median.")] = "mean",
    out: Annotated[Path | None, typer.Option(help="YAML to write P0 and its provenance to.")] = None,
) -> None:
    """Estimate the reward's penalty scale P0 from rollouts of the pre-RL model (or demonstration stand-ins)."""
    from eva_runtime.calibration.reward_p0 import estimate_p0, load_rollouts, write_p0_yaml
    from eva_runtime.reward.config import RewardConfig

    robot = _calibrate_embodiment(embodiment)
    try:
        loaded = load_rollouts(rollouts, robot, fps=fps, horizon=horizon)
        config = RewardConfig.from_embodiment(robot, loaded.fps)
        estimate = estimate_p0(loaded.batches, config, statistic=statistic)
    except (ValueError, OSError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    table = Table(title=f"P0 from {estimate.n_rollouts} rollouts on {robot.name} at {loaded.fps:g} fps")
    for column in ("P0", "statistic", "mean", "median", "p10", "p90"):
        table.add_column(column, justify="right")
    values = (estimate.p0, estimate.mean, estimate.median, estimate.p10, estimate.p90)
    table.add_row(f"{values[0]:.6g}", statistic, *(f"{v:.6g}" for v in values[1:]))
    console.print(table)
    typer.echo(f"P0 = {estimate.p0:.6g}")
    if out is not None:
        write_p0_yaml(out, estimate, config, loaded, extra={"horizon": horizon, "embodiment": robot.name})
        console.print(f"P0 written to [bold]{out}[/bold]")
