"""The `eva` command: one entry point with a sub-command per job (sub-command modules are imported lazily)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import numpy as np
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


calibrate_app = typer.Typer(help="Calibration from data: joint caps and the reward's P0.", no_args_is_help=True)
app.add_typer(calibrate_app, name="calibrate")


def _calibrate_embodiment(path: Path | None):
    from eva_runtime.embodiment import EmbodimentError, load_embodiment

    try:
        return load_embodiment(_embodiment_path(path))
    except EmbodimentError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None


@calibrate_app.command("limits")
def calibrate_limits_command(
    data: Annotated[Path, typer.Option(help="Directory of episode_XXXX.hdf5 demonstrations.")],
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
        console.print(f"[red]error:[/red] no episode_XXXX.hdf5 files in {data}")
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


train_app = typer.Typer(help="Training: the IDM now; the world model and alignment later.", no_args_is_help=True)
export_app = typer.Typer(help="Export trained models for deployment.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluations that need trained models.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(export_app, name="export")
app.add_typer(eval_app, name="eval")


@train_app.command("idm")
def train_idm_command(
    data: Annotated[Path, typer.Option(help="Directory of recorded episode_XXXX.hdf5 files.")],
    out: Annotated[Path, typer.Option(help="Run directory (checkpoints, metrics.jsonl, split.json).")],
    steps: Annotated[int, typer.Option(min=1)] = 20_000,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    learning_rate: float = 3e-4,
    cameras: Annotated[str, typer.Option(help="Comma-separated camera names.")] = "cam_high",
    image_size: Annotated[int, typer.Option(help="Square input size in pixels.")] = 64,
    window: Annotated[int, typer.Option(help="k: frames t-k..t+k.")] = 1,
    fps: Annotated[float, typer.Option(help="IDM frame/action rate (divides the recording fps).")] = 12.5,
    backbone: Annotated[str, typer.Option(help="small, resnet18 or resnet50.")] = "small",
    held_out: Annotated[float, typer.Option(help="Fraction of episodes held out for validation.")] = 0.1,
    eval_every: Annotated[int, typer.Option(min=1)] = 1000,
    seed: int = 0,
    threads: Annotated[int, typer.Option(min=1, help="torch threads (measure: 1 can beat 2 on a shared box).")] = 2,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.safetensors.")] = False,
    embodiment: EmbodimentOption = None,
) -> None:
    """Train the inverse dynamics model on recorded episodes (safetensors checkpoints, resumable)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from eva_runtime.embodiment import load_embodiment
    from eva_runtime.idm.config import IdmConfig
    from eva_runtime.idm.train import TrainSettings, train_idm

    robot = load_embodiment(_embodiment_path(embodiment))
    config = IdmConfig(
        cameras=tuple(c.strip() for c in cameras.split(",") if c.strip()),
        image_size=(image_size, image_size),
        window=window,
        fps=fps,
        joint_names=robot.joint_names,
        gripper_indices=tuple(int(i) for i in robot.gripper_mask().nonzero()[0]),
        backbone=backbone,
    )
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
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"))
    with Progress(*columns, TimeRemainingColumn(), console=console) as progress:
        bar = progress.add_task("IDM", total=steps)

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
    console.print(f"checkpoints in {out} (last.safetensors, best.safetensors), metrics in {out / 'metrics.jsonl'}")


@export_app.command("idm")
def export_idm_command(
    checkpoint: Annotated[Path, typer.Option(help="IDM checkpoint (.safetensors with its .sha256).")],
    out: Annotated[Path, typer.Option(help="The .onnx file to write.")],
    data: Annotated[Path | None, typer.Option(help="Recorded episodes for real parity inputs.")] = None,
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
    robot = _sim_robot(task, embodiment)
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


bundle_app = typer.Typer(help="Deployment bundles: the IDM, embodiment and settings, hashed.", no_args_is_help=True)
app.add_typer(bundle_app, name="bundle")


@bundle_app.command("create")
def bundle_create_command(
    idm: Annotated[Path, typer.Option(help="The exported IDM (.onnx).")],
    out: Annotated[Path, typer.Option(help="New (or empty) bundle directory.")],
    embodiment: EmbodimentOption = None,
    world_model: Annotated[str, typer.Option(help="World model: oracle (wan bundles need adapters).")] = "oracle",
    horizon: Annotated[int, typer.Option(help="Frames per imagined rollout, frame 0 included.")] = 37,
    p0: Annotated[float, typer.Option(help="The reward's penalty scale P0.")] = 2000.0,
    reward_form: Annotated[str, typer.Option(help="Reward form: authors or paper.")] = "authors",
) -> None:
    """Write a deployment bundle; the world model's fps is the IDM's (read from the ONNX file)."""
    from eva_runtime.bundle import BundleError, create_bundle

    if world_model != "oracle":
        console.print(f"[red]error:[/red] --world-model {world_model!r}: only 'oracle' can be bundled from here")
        raise typer.Exit(2)
    try:
        manifest = create_bundle(
            out,
            idm,
            _embodiment_path(embodiment),
            world_model={"kind": "oracle", "id": "oracle", "horizon": horizon},  # fps: the IDM's
            reward={"p0": p0, "form": reward_form},
        )
    except (BundleError, OSError) as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(2) from None
    table = Table(title=f"bundle {out} ({manifest.format})")
    table.add_column("entry")
    table.add_column("value")
    robot, net, wm, reward = manifest.embodiment, manifest.idm, manifest.world_model, manifest.reward
    table.add_row("embodiment", f"{robot.name} ({len(robot.joint_names)} joints, {robot.control_rate_hz:g} Hz)")
    size = "x".join(str(n) for n in net.image_size)
    table.add_row("idm", f"{net.fps:g} fps, window {net.window}, {size}, cameras {', '.join(net.cameras)}")
    table.add_row("world model", f"{wm.kind} ({wm.id}), {wm.fps:g} fps, horizon {wm.horizon}")
    table.add_row("reward", f"{reward.form}, p0 {reward.p0:g}, gamma {reward.gamma:g}")
    for entry in manifest.files:
        table.add_row(f"file {entry.role}", f"{entry.path} ({entry.bytes} bytes, sha256 {entry.sha256[:12]})")
    console.print(table)


@bundle_app.command("verify")
def bundle_verify_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.")],
    embodiment: Annotated[
        Path | None, typer.Option("--embodiment", "-e", help="Also check the bundle is for this robot.")
    ] = None,
) -> None:
    """Re-hash every file and check the manifest; print OK and the hashes, or the problem (exit 1)."""
    from eva_runtime.bundle import BundleError, load_bundle
    from eva_runtime.embodiment import EmbodimentError, load_embodiment

    try:
        robot = load_embodiment(embodiment) if embodiment is not None else None
    except EmbodimentError as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(2) from None
    try:
        loaded = load_bundle(bundle, robot)
    except BundleError as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(1) from None
    typer.echo(f"OK {loaded.path} ({loaded.manifest.embodiment.name}, manifest sha256 {loaded.manifest_sha256})")
    for role, digest in loaded.hashes().items():
        typer.echo(f"{role}: {digest}")


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


def _episode_counters(stats) -> dict:
    """The episode log's counters from one episode's loop statistics."""
    latencies = np.array(stats.latencies_s) * 1e3
    scores = np.array(stats.scores)
    counters = {"safety_interventions": dict(stats.interventions), "teleop_interventions": 0, "teleop_seconds": 0.0}
    if latencies.size:
        counters["planning_latency_ms"] = {
            "count": int(latencies.size),
            "mean": float(latencies.mean()),
            "p50": float(np.percentile(latencies, 50)),
            "p95": float(np.percentile(latencies, 95)),
            "max": float(latencies.max()),
        }
    if scores.size:
        counters["executability"] = {
            "count": int(scores.size),
            "mean": float(scores.mean()),
            "min": float(scores.min()),
            "rejected": int(stats.rejected),
        }
    return counters


@app.command("run")
def run_command(
    task: TaskOption = "transfer_cube",
    episodes: Annotated[int, typer.Option(min=1)] = 10,
    robot: Annotated[str, typer.Option(help="Robot backend: sim (the MuJoCo bimanual robot).")] = "sim",
    bundle: Annotated[Path | None, typer.Option(help="Deployment bundle; default: models/bundle_<task>.")] = None,
    log: Annotated[Path, typer.Option(help="SQLite episode outcome log (created if missing).")] = Path(
        "artifacts/eva_run.db"
    ),
    split: Annotated[str, typer.Option(help="seen or unseen (recorded with every episode).")] = "seen",
    sync: Annotated[bool, typer.Option(help="Synchronous: plan, execute, plan again (robot waits).")] = False,
    first_seed: Annotated[int, typer.Option(help="Episode i uses seed first_seed + i.")] = 1000,
    pace: Annotated[bool, typer.Option(help="Real-time pacing (off only for quick logic checks).")] = True,
) -> None:
    """Run autonomous episodes end to end: world model -> IDM -> executability gate -> executor -> safety filter."""
    from rich.live import Live

    from eva_runtime import __version__
    from eva_runtime.bundle import BundleError, load_bundle
    from eva_runtime.control.episode_runner import LoopSettings, run_autonomous_episode
    from eva_runtime.control.planner_process import PlannerProcess
    from eva_runtime.records.outcome_log import OutcomeLog
    from eva_runtime.records.report import build_report, render_markdown
    from eva_runtime.world_model.oracle import OracleState

    if robot != "sim":
        console.print("[red]error:[/red] available now: --robot sim")
        raise typer.Exit(2)
    bundle_dir = bundle or Path(__file__).resolve().parents[1] / "models" / f"bundle_{task}"
    try:
        deployed = load_bundle(bundle_dir)  # every hash, the embodiment and the timing are checked here
    except BundleError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    if deployed.manifest.world_model.kind != "oracle":
        console.print("[red]error:[/red] only the oracle world model runs in this version")
        raise typer.Exit(2)
    embodiment_path = deployed.files["embodiment"]
    sim = _sim_robot(task, embodiment_path)
    reward = deployed.manifest.reward
    spec = {
        "idm": str(deployed.idm_path),
        "idm_sha256": deployed.hashes()["idm"],
        "embodiment": str(embodiment_path),
        "world_model": {"kind": "oracle", "task": task},
        "reward": {"p0": reward.p0, "form": reward.form, "gamma": reward.gamma},
        "settings": {"horizon": deployed.manifest.world_model.horizon, "attempts": 2, "threshold": 0.0},
    }
    planner = PlannerProcess(spec)
    planner.start()
    settings = LoopSettings(synchronous=sync, pace=pace)
    model_id = f"{deployed.manifest.world_model.id}+idm:{deployed.hashes()['idm'][:8]}"

    def privileged(progress: int, filter_state: object) -> OracleState:
        return OracleState(sim.sim.snapshot(), progress, filter_state)

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
                    f"  planning latency {latency}  filter clamps {sum(stats.interventions.values())}"
                )
                if step % 100 == 0:
                    outcomes.update_episode(episode_id, **_episode_counters(stats))

            stats = run_autonomous_episode(
                sim, planner, first_seed + index, settings, privileged, show, restart_planner=None
            )
            results.append(stats)
            reason = None if stats.success else ("planner faults" if stats.planner_faults else "task not completed")
            outcome = "success" if stats.success else "failure"
            outcomes.end_episode(episode_id, outcome, "automatic", reason, **_episode_counters(stats))
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


if __name__ == "__main__":
    app()
