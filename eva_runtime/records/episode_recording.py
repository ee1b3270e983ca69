"""EpisodeRecording: an MCAP file per episode for any driver of the autonomous loop (`eva run`, the ROS node),
and the same streams to live sinks (`eva run --live`) with or without a file.

The driver opens one per episode (`begin`), hands it every tick's result (`tick`), and closes it when the episode
ends (`end`), which also names the file and its SHA-256 in the episode's outcome row. Camera frames are grabbed
from the robot at the IDM's frame rate (what the model saw and would see), not at the control rate: on the
simulator each grab renders the cameras on the control thread, so that rate is the recording's cost per tick.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from eva_runtime.records.mcap_recorder import (
    EpisodeRecorder,
    RecorderTopics,
    RecordingSummary,
    check_recording_dir,
    record_tick,
    recorder_channels,
)
from eva_runtime.records.outcome_log import OutcomeLog
from eva_runtime.records.record_sinks import RecordSink

__all__ = ["EpisodeRecording"]


class EpisodeRecording:
    def __init__(
        self,
        directory: Path | None,
        robot,
        image_size: tuple[int, int],
        frame_fps: float,
        sinks: Sequence[RecordSink] = (),
    ) -> None:
        """`directory`: where the MCAP files go (None: no files, only `sinks`, which the caller owns and closes).
        Refuses (RecordingError) a directory it cannot write, before any episode starts."""
        self.directory = None if directory is None else check_recording_dir(directory)
        self.robot = robot
        self.topics = RecorderTopics.for_embodiment(robot.embodiment, image_size)
        self.sinks = tuple(sinks)
        for sink in self.sinks:  # a viewer that connects before the first episode sees every channel already
            sink.advertise(recorder_channels(self.topics))
        self.cameras = tuple(self.topics.cameras)
        period = robot.embodiment.control_period_s
        self.every = max(1, round(1.0 / (frame_fps * period)))  # ticks between camera grabs
        self._recorder: EpisodeRecorder | None = None
        self._ticks = 0

    def begin(self, run_id: str, episode_id: int) -> Path | None:
        path = None if self.directory is None else self.directory / f"episode_{episode_id:06d}_{run_id}.mcap"
        self._recorder = EpisodeRecorder(path, self.topics, sinks=self.sinks)
        self._ticks = 0
        return path

    def tick(self, result) -> None:
        recorder = self._recorder
        if recorder is None:
            return
        frames = None
        if self._ticks % self.every == 0:
            frames = self.robot.observe(cameras=self.cameras).frames
        self._ticks += 1
        record_tick(recorder, result, frames)

    def end(self, log: OutcomeLog, episode_id: int) -> RecordingSummary | None:
        recorder, self._recorder = self._recorder, None
        if recorder is None:
            return None
        summary = recorder.close()
        if recorder.path is None:
            return None  # live only: there is no file to name in the log
        log.attach_recording(episode_id, summary.as_dict())
        return summary
