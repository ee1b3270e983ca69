"""`eva sim record --episode-steps`: an episode longer than the task records the expert holding its final pose,
the still tail a closed-loop episode that runs past the task's end sees."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from typer.testing import CliRunner

from eva_runtime.cli import app


def test_a_longer_episode_records_the_expert_holding_after_the_task(tmp_path: Path) -> None:
    out = tmp_path / "long"
    arguments = ["sim", "record", "--out", str(out), "--episodes", "1", "--fps", "12.5", "--first-seed", "3"]
    result = CliRunner().invoke(app, [*arguments, "--episode-steps", "440"])
    assert result.exit_code == 0, result.output
    with h5py.File(out / "episode_0.hdf5") as episode:
        qpos = episode["observations/qpos"][:]
        frames = episode["observations/images/cam_high"][:]
        assert bool(episode.attrs["success"])  # still handed over at tick 440, after the script ended at 400
    assert len(qpos) == 440 // 4
    tail = qpos[-8:]  # the last 0.64 s, all after the script's final waypoint
    assert np.abs(tail - tail[0]).max() < 0.02
    assert np.abs(qpos[40] - qpos[0]).max() > 0.2  # while the task runs the arms do move
    assert np.abs(frames[-1].astype(int) - frames[-8].astype(int)).mean() < 2.0
