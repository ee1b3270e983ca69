"""`eva view`: an episode's recording as a video of the real camera beside the world model's imagined frames,
over the commanded and measured joint traces (the rendering is `records.episode_view`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from eva_runtime.cli.common import app, console


@app.command("view")
def view_command(
    out: Annotated[Path, typer.Option(help="The video: a GIF, or MP4 when the name ends in .mp4.")],
    log: Annotated[
        Path | None, typer.Option(help="Outcome log (with --episode): the recording it names, hash-checked.")
    ] = None,
    episode: Annotated[int | None, typer.Option(help="--log: the episode id.")] = None,
    mcap: Annotated[Path | None, typer.Option(help="A recording file, viewed as it is (no hash to check).")] = None,
    camera: Annotated[str, typer.Option(help="The camera shown, real and imagined.")] = "cam_high",
    arm_topic: Annotated[
        str, typer.Option(help="Follower JointState topic whose joints are traced.")
    ] = "/puppet/joint_left",
    scale: Annotated[int, typer.Option(min=1, max=16, help="Upscaling of the frames (nearest neighbour).")] = 4,
) -> None:
    """Imagination vs reality: real and imagined frames side by side, command and measurement below, per frame."""
    from eva_runtime.records.episode_view import ViewError, compose_frames, read_episode, write_video

    try:
        path = _recording_path(log, episode, mcap)
        streams = read_episode(path, camera, arm_topic)
        count = write_video(compose_frames(streams, scale), out, streams.fps)
    except ViewError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    plans = sum(1 for plan in streams.plans if plan.frames)
    console.print(f"{out}: {count} frames at {streams.fps:.2f} fps; {plans} plans with imagined {camera} frames")


def _recording_path(log: Path | None, episode: int | None, mcap: Path | None) -> Path:
    """--mcap as given, or the recording --log names for --episode once its SHA-256 matches (ViewError if not)."""
    from eva_runtime.records.episode_view import ViewError, verify_recording
    from eva_runtime.records.outcome_log import OutcomeLog, OutcomeLogError

    if (log is None) == (mcap is None):
        raise ViewError("give either --log with --episode, or --mcap")
    if mcap is not None:
        if not mcap.is_file():
            raise ViewError(f"--mcap {mcap} does not exist")
        return mcap
    if episode is None:
        raise ViewError("--log needs --episode (the id `eva report` and the log show)")
    try:
        with OutcomeLog(log, read_only=True) as opened:  # read-only: a running runtime's log is left as it is
            entry = opened.recording(episode)
    except OutcomeLogError as error:
        raise ViewError(str(error)) from None
    return verify_recording(entry, episode)
