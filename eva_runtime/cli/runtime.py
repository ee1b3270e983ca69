"""`eva run`: the autonomous loop on the simulated robot or the Piper arms."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from eva_runtime.cli.common import TaskOption, app, console

MODELS = Path(__file__).resolve().parents[2] / "models"


# The longer options of `eva run`, named here so the command's signature reads as a list.
_RobotOption = Annotated[
    str, typer.Option(help="sim (the MuJoCo bimanual robot) or piper (the CobotMagic's arms over CAN).")
]
_WorldModelOption = Annotated[
    str,
    typer.Option(help="Shipped bundle: oracle (models/bundle_<task>), or N: models/bundle_<task>_N (wan, fgw2, ...)."),
]
_LogOption = Annotated[Path, typer.Option(help="SQLite episode outcome log (created if missing).")]
_WorldModelUrlOption = Annotated[
    str | None, typer.Option(help="Use the world model served at this URL (eva serve world-model) instead.")
]
_EmbodimentOption = Annotated[
    Path | None, typer.Option(help="piper: the robot's embodiment file (default calibration/cobot_magic.yaml).")
]
_CameraOption = Annotated[
    list[str] | None, typer.Option(help="piper: NAME=SOURCE per camera (/dev/video0, an index, a video file).")
]
_RecordOption = Annotated[
    Path | None,
    typer.Option(help="Record each episode as MCAP here (cameras, joints, commands, plans, imagined frames)."),
]
_InstructionOption = Annotated[str | None, typer.Option(help="The instruction (a real robot has no task of its own).")]
_RealtimeOption = Annotated[
    bool,
    typer.Option(
        help="Paced runs: SCHED_FIFO for the loop (on its own core where there are 4+), restored after the run; "
        "prints what was granted or why not."
    ),
]
_CameraThreadOption = Annotated[
    bool | None,
    typer.Option(
        "--camera-thread/--no-camera-thread",
        help="sim: render the cameras on a thread of their own at their fps (as a real robot's arrive), not inside "
        "the tick that asks; default: on for paced runs above 50 Hz (a render here is longer than their period).",
    ),
]
_TrackHeadroomOption = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        max=1.0,
        help="Follow the executor's curve within this share of the velocity and acceleration caps before the safety "
        "filter (control/cap_tracker.py); 0: no tracker, the filter shapes what exceeds the caps. Default: the loop's.",
    ),
]
_LiveOption = Annotated[
    bool, typer.Option(help="Serve the same streams live to Foxglove (WebSocket on 127.0.0.1 only, no ROS).")
]


@app.command("run")
def run_command(
    task: TaskOption = "transfer_cube",
    episodes: Annotated[int, typer.Option(min=1)] = 10,
    robot: _RobotOption = "sim",
    bundle: Annotated[Path | None, typer.Option(help="Deployment bundle (overrides --world-model).")] = None,
    world_model: _WorldModelOption = "oracle",
    log: _LogOption = Path("artifacts/eva_run.db"),
    split: Annotated[str, typer.Option(help="seen or unseen (recorded with every episode).")] = "seen",
    sync: Annotated[bool, typer.Option(help="Synchronous: plan, execute, plan again (robot waits).")] = False,
    first_seed: Annotated[int, typer.Option(help="Episode i uses seed first_seed + i.")] = 1000,
    pace: Annotated[bool, typer.Option(help="Real-time pacing (off only for quick logic checks).")] = True,
    keys: Annotated[bool, typer.Option(help="Operator keys on stdin (mode switches, ESTOP, outcome labels).")] = False,
    world_model_url: _WorldModelUrlOption = None,
    embodiment: _EmbodimentOption = None,
    can_left: Annotated[str, typer.Option(help="piper: CAN channel of the left follower arm.")] = "can_left",
    can_right: Annotated[str, typer.Option(help="piper: CAN channel of the right follower arm.")] = "can_right",
    can_interface: Annotated[str, typer.Option(help="piper: python-can interface (socketcan; virtual).")] = "socketcan",
    camera: _CameraOption = None,
    instruction: _InstructionOption = None,
    episode_seconds: Annotated[float, typer.Option(min=0.1, help="piper: length of each episode.")] = 8.0,
    record: _RecordOption = None,
    live: _LiveOption = False,
    live_port: Annotated[int, typer.Option(min=0, max=65535, help="--live: the port (0: any free one).")] = 8766,
    realtime: _RealtimeOption = True,
    track_headroom: _TrackHeadroomOption = None,
    camera_thread: _CameraThreadOption = None,
) -> None:
    """Run autonomous episodes end to end: world model -> IDM -> executability gate -> executor -> safety filter."""
    if robot not in ("sim", "piper"):
        console.print(f"[red]error:[/red] --robot {robot!r}: use sim or piper")
        raise typer.Exit(2)
    if record is not None:
        _check_record(record)
    if camera_thread and not pace:
        console.print("[red]error:[/red] --camera-thread needs real-time pacing (unpaced, the renders fall behind)")
        raise typer.Exit(2)
    bundle_dir = _bundle_dir(task, bundle, world_model)
    remote = {"kind": "remote", "url": world_model_url} if world_model_url else None
    loop = _loop_changes(track_headroom) | ({} if camera_thread is None else {"stream_cameras": camera_thread})
    sink = _start_live(live_port) if live else None
    try:
        with _scheduler(realtime and (pace or robot == "piper")) as granted:
            console.print(f"scheduler: {granted}")  # granted, or why not (the loop runs either way)
            run = (bundle_dir, task, episodes, first_seed, log, split, sync)
            if robot == "piper":
                piper = PiperOptions(embodiment, can_left, can_right, can_interface, camera or [], episode_seconds)
                _run_piper(*run, keys, remote, instruction, piper, record, sink, loop)
                return
            _run_sim(*run, pace, keys, remote, instruction, record, sink, loop)
    finally:
        if sink is not None:
            sink.close()


def _scheduler(realtime: bool):
    """SCHED_FIFO for the run (`control/realtime.py`), or a note that it was not asked for."""
    if realtime:
        from eva_runtime.control.realtime import realtime_loop

        return realtime_loop()
    return contextlib.nullcontext("default (real-time scheduling not requested: --no-realtime or --no-pace)")


def _loop_changes(track_headroom: float | None) -> dict:
    """`LoopSettings` fields the options change; the loop's own defaults for the rest."""
    if track_headroom is None:
        return {}
    return {"track_headroom": track_headroom or None}  # 0 turns the tracker off


def _check_record(record: Path) -> None:
    """--record refused (exit 2) before anything starts, let alone moves, when it cannot be written."""
    from eva_runtime.records.mcap_recorder import RecordingError, check_recording_dir

    try:
        check_recording_dir(record)
    except RecordingError as error:
        console.print(f"[red]error:[/red] --record: {error}")
        raise typer.Exit(2) from None


def _start_live(port: int):
    """The --live view's server, started before anything moves; exit 2 when its port cannot be bound."""
    from eva_runtime.records.foxglove_live import FoxgloveLive, LiveViewError

    try:
        sink = FoxgloveLive(port)
    except LiveViewError as error:
        console.print(f"[red]error:[/red] --live: {error}")
        raise typer.Exit(2) from None
    console.print(f"live view: open Foxglove on [bold]{sink.url}[/bold] (layout: docs/foxglove_layout.json)")
    return sink


def shipped_bundles(task: str, models: Path = MODELS) -> dict[str, Path]:
    """The bundles shipped for `task` by --world-model name: oracle is models/bundle_<task>, any other name N is
    models/bundle_<task>_N (wan, aligned, fgw2, fgw2_aligned, ...)."""
    prefix = f"bundle_{task}"
    found = {p.name.removeprefix(prefix).removeprefix("_") or "oracle": p for p in models.glob(f"{prefix}*")}
    return {name: path for name, path in sorted(found.items()) if (path / "manifest.yaml").is_file()}


def _bundle_dir(task: str, bundle: Path | None, world_model: str) -> Path:
    """--bundle, or the shipped bundle --world-model names; exit 2 for a name that is not shipped."""
    if bundle is not None:
        return bundle
    shipped = shipped_bundles(task)
    if world_model not in shipped:
        names = ", ".join(shipped) or f"none (no models/bundle_{task}*)"
        console.print(f"[red]error:[/red] --world-model {world_model!r}: shipped for {task}: {names}; or --bundle")
        raise typer.Exit(2)
    return shipped[world_model]


def _run_sim(
    bundle_dir: Path,
    task: str,
    episodes: int,
    first_seed: int,
    log: Path,
    split: str,
    sync: bool,
    pace: bool,
    keys: bool,
    remote: dict | None,
    instruction: str | None,
    record: Path | None = None,
    view=None,
    loop: dict | None = None,
) -> None:
    """The simulated robot under a live status line, then the run's report and its summary as one JSON line."""
    from rich.live import Live

    from eva_runtime.bundle import BundleError, load_bundle
    from eva_runtime.control.sim_session import run_sim_episodes
    from eva_runtime.records.outcome_log import OutcomeLog
    from eva_runtime.records.report import build_report, render_markdown

    try:
        load_bundle(bundle_dir)  # refused before the simulator, the log or the planner start
    except BundleError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    operator, leader_factory = _sim_operator(keys)
    with Live(console=console, refresh_per_second=4, transient=True) as live:
        result = run_sim_episodes(
            bundle_dir,
            task,
            episodes,
            first_seed,
            log,
            sync=sync,
            pace=pace,
            split=split,
            on_tick=_live_status(live, episodes),
            operator=operator,
            leader_factory=leader_factory,
            label=operator.take_label if operator is not None else None,
            world_model=remote,
            instruction=instruction,
            record=record,
            live=view,
            loop=loop,
        )
    with OutcomeLog(log, read_only=True) as outcomes:
        report = build_report(outcomes.episodes(run_id=result.run_id))
    console.print(render_markdown(report))
    typer.echo(json.dumps({k: result.summary()[k] for k in _SUMMARY_KEYS}))


def _sim_operator(keys: bool):
    """With --keys: operator keys on stdin and, since the sim has no person at the leader arms, a scripted one."""
    if not keys:
        return None, None
    import sys

    from eva_runtime.control.operator_keys import HELP, KeyOperator
    from eva_runtime.sim.virtual_leader import ExpertLeader

    operator = KeyOperator(sys.stdin)
    console.print(HELP)
    return operator, ExpertLeader


def _live_status(live, episodes: int):
    """The per-tick callback that refreshes the live line every 10th tick."""

    def show(index, episode_id, step, modes, stats) -> None:
        if step % 10:
            return
        latency = f"{1e3 * np.median(stats.latencies_s):.0f} ms" if stats.latencies_s else "-"
        live.update(
            f"episode {index + 1}/{episodes}  step {step}  mode {modes.mode.value}  plans {stats.plans}"
            f"  plan age {stats.plan_age_s:.2f} s  planning latency {latency}"
            f"  filter clamps {sum(stats.interventions.values())}"
        )

    return show


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
    "stages_reached",
    "closest_reach_p50_m",
)


@dataclass(frozen=True)
class PiperOptions:
    embodiment: Path | None
    can_left: str
    can_right: str
    can_interface: str
    cameras: list[str]
    episode_seconds: float


def _run_piper(
    bundle_dir,
    task,
    episodes,
    first_seed,
    log,
    split,
    sync,
    keys,
    remote,
    instruction,
    options,
    record=None,
    view=None,
    loop=None,
) -> None:
    """The same deployment and loop as in simulation, on the arms: Piper over CAN, cameras through OpenCV."""
    import sys

    from eva_runtime.bundle import BundleError
    from eva_runtime.control.autonomous_loop import LoopSettings
    from eva_runtime.control.deployment import Deployment, run_episodes
    from eva_runtime.embodiment import EmbodimentError, load_embodiment
    from eva_runtime.robots.opencv_cameras import OpenCvCameras, parse_camera_sources
    from eva_runtime.robots.piper.piper_robot import PiperRobot, PiperRobotConfig

    root = Path(__file__).resolve().parents[2]
    try:
        embodiment = load_embodiment(options.embodiment or root / "calibration" / "cobot_magic.yaml")
        deployment = Deployment.from_bundle(bundle_dir, task, embodiment=embodiment, world_model=remote)
        if deployment.oracle:
            raise ValueError("the oracle world model re-simulates the simulator: give a learned one for the arms")
        if not (instruction or "").strip():
            raise ValueError("--instruction is required on a real robot")
        sources = parse_camera_sources(options.cameras)
        missing = sorted(set(deployment.bundle.manifest.idm.cameras) - set(sources))
        if missing:
            raise ValueError(f"no --camera for {missing} (the IDM reads them)")
    except (BundleError, EmbodimentError, ValueError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    config = PiperRobotConfig.bimanual(options.can_left, options.can_right, interface=options.can_interface)
    operator = None
    if keys:
        from eva_runtime.control.operator_keys import HELP, KeyOperator

        operator = KeyOperator(sys.stdin)
        console.print(HELP)
    steps = round(options.episode_seconds * embodiment.control_rate_hz)
    settings = LoopSettings(synchronous=sync, max_steps=steps, **(loop or {}))
    with OpenCvCameras(sources) as cameras, PiperRobot(embodiment, config, cameras) as arms:
        planner = deployment.start_planner()
        try:
            result = run_episodes(
                deployment,
                arms,
                planner,
                episodes,
                first_seed,
                log,
                settings,
                split=split,
                operator=operator,
                label=operator.take_label if operator is not None else None,
                restart_planner=lambda: planner.alive or planner.start(wait_s=None),
                instruction=instruction,
                record=record,
                live=view,
            )
        finally:
            planner.close()
    typer.echo(json.dumps({k: result.summary()[k] for k in _SUMMARY_KEYS}))
