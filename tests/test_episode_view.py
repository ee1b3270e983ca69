"""`eva view`: a recorded episode as real frames beside imagined ones over the joint traces, through the real
`eva` entry point, read back with Pillow and OpenCV.

The recordings come from the control loop on simulated time (a fake robot whose camera gives noise, a planner
whose imagined frames are uniform greys distinct per plan and per frame), so what the view must show at each
frame is known from what the loop did, independently of the viewer's own reading of the file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from PIL import Image

from eva_runtime.control.executor import Plan
from eva_runtime.records.episode_view import imagined_at, read_episode
from eva_runtime.records.mcap_recorder import EpisodeRecorder, RecorderTopics
from tests.recording_helpers import EMBODIMENT, record_an_episode

EVA = str(Path(sys.executable).parent / "eva")
SCALE = 4
PANEL = 64 * SCALE  # each of real and imagined, upscaled
CAPTION = 24  # rows of a panel's top the caption band may cover


def eva(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EVA, *map(str, args)], capture_output=True, text=True, timeout=300)


def gif_frames(path: Path) -> list[np.ndarray]:
    with Image.open(path) as gif:
        frames = []
        for index in range(gif.n_frames):
            gif.seek(index)
            frames.append(np.asarray(gif.convert("RGB")).astype(int))
    return frames


def camera_frames_in(path: Path, camera: str = "cam_high") -> int:
    """The real frames of `camera` in a recording, counted with the library's indexed reader."""
    with open(path, "rb") as handle:
        reader = make_reader(handle, decoder_factories=[DecoderFactory()])
        return sum(
            1
            for _, channel, _, decoded in reader.iter_decoded_messages()
            if channel.topic.endswith("/compressed")
            and not channel.topic.startswith("/eva/imagined/")
            and decoded.header.frame_id == camera
        )


def expected_greys(results: list, frame_times: list[float]) -> list[float | None]:
    """From the loop's own plans: the grey of the latest imagined frame, depicting a time <= t, of the most
    recent plan stamped <= t (None before the first plan)."""
    plans = sorted(
        (plan for _, plan in (r.installed for r in results if r.installed is not None)), key=lambda p: p.start_time
    )
    greys: list[float | None] = []
    for t in frame_times:
        current = [plan for plan in plans if plan.start_time <= t + 1e-6]
        if not current:
            greys.append(None)
            continue
        plan = current[-1]
        rollout = np.asarray(plan.metadata["rollout"]["cam_high"])
        span = (len(plan.actions) - 1) / plan.fps
        times = [plan.start_time + span * k / (len(rollout) - 1) for k in range(len(rollout))]
        greys.append(float(rollout[[k for k, at in enumerate(times) if at <= t + 1e-6][-1]].mean()))
    return greys


def test_eva_view_shows_each_camera_frame_beside_what_the_world_model_imagined_for_it(tmp_path: Path) -> None:
    entry, results, log_path = record_an_episode(tmp_path, ticks=200)
    out = tmp_path / "view" / "episode.gif"
    done = eva("view", "--log", log_path, "--episode", 1, "--out", out)
    assert done.returncode == 0, done.stdout + done.stderr
    frames = gif_frames(out)
    recorded = camera_frames_in(Path(entry["path"]))
    assert len(frames) == recorded == 50  # one per camera grab: 200 ticks at 50 Hz, camera at 12.5 fps
    height, width, _ = frames[0].shape
    assert width == 2 * PANEL and height > PANEL + 150  # the traces under the two panels
    every = 4  # ticks between camera grabs
    times = [results[i * every].time for i in range(len(frames))]
    greys = expected_greys(results, times)
    assert len(set(greys)) >= 4  # the episode spans several plans and several frames of each
    for frame, grey in zip(frames, greys, strict=True):
        real, imagined = frame[CAPTION:PANEL, :PANEL], frame[CAPTION:PANEL, PANEL:]
        assert grey is not None  # the first plan is stamped with the first observation
        assert abs(imagined.mean() - grey) < 4 and imagined.std() < 4  # that plan's frame, uniform as imagined
        assert real.std() > 10  # the camera's noise (averaged by the downscale to 64x64), not a grey
        assert np.abs(real - imagined).mean() > 20  # so the two halves differ


def test_the_imagined_panel_is_blank_before_the_first_plan_and_follows_plans_and_their_frames(tmp_path: Path) -> None:
    path = tmp_path / "two_plans.mcap"
    recorder = EpisodeRecorder(path, RecorderTopics.for_embodiment(EMBODIMENT, (64, 64)))
    rng = np.random.default_rng(0)
    for step in range(25):  # 2 s of camera at 12.5 fps
        recorder.command(step * 0.08, None, np.full(14, step * 0.01))
        recorder.frame(step * 0.08, "cam_high", rng.integers(0, 255, (128, 128, 3), np.uint8))
    for start, greys in ((0.4, (40, 90, 140)), (1.2, (200, 220, 240))):  # 3 frames over 0.4 s each
        rollout = np.broadcast_to(np.array(greys, np.uint8)[:, None, None, None], (3, 64, 64, 3))
        recorder.plan(
            int(start * 10), Plan(start, 12.5, np.zeros((6, 14)), "m", 0.5, metadata={"rollout": {"cam_high": rollout}})
        )
    assert recorder.close().error is None
    streams = read_episode(path)
    assert len(streams.frames) == 25 and [len(p.frames) for p in streams.plans] == [3, 3]
    stamps = streams.frame_stamps
    shown = [imagined_at(streams, int(s)) for s in stamps]
    assert all(plan is None and image is None for image, plan in shown[:5])  # t < 0.4 s: no plan yet
    greys = [int(np.median(image)) for image, _ in shown[5:]]
    # t = 0.4 .. 1.12 s: plan 4 (its frames at 0.4, 0.6, 0.8 s); from t = 1.2 s plan 12 (1.2, 1.4, 1.6 s).
    assert greys[:10] == [40] * 3 + [90] * 2 + [140] * 5
    assert greys[10:] == [200] * 3 + [220] * 2 + [240] * 5

    out = tmp_path / "two_plans.gif"
    done = eva("view", "--mcap", path, "--out", out, "--scale", SCALE)
    assert done.returncode == 0, done.stdout + done.stderr
    frames = gif_frames(out)
    assert len(frames) == 25
    blank = frames[0][CAPTION:PANEL, PANEL:]
    assert blank.std() < 2 and abs(blank.mean() - 48) < 3  # blank, not a stale or invented frame
    assert abs(frames[12][CAPTION:PANEL, PANEL:].mean() - 140) < 4


def test_an_mp4_has_one_frame_per_camera_frame(tmp_path: Path) -> None:
    entry, _, _ = record_an_episode(tmp_path, ticks=80)
    out = tmp_path / "episode.mp4"
    done = eva("view", "--mcap", entry["path"], "--out", out)
    assert done.returncode == 0, done.stdout + done.stderr
    video = cv2.VideoCapture(str(out))
    count, first = 0, None
    while True:
        ok, frame = video.read()
        if not ok:
            break
        first = frame if first is None else first
        count += 1
    video.release()
    assert count == camera_frames_in(Path(entry["path"])) == 20
    assert first is not None and first.shape[1] == 2 * PANEL


def test_a_recording_changed_after_it_was_logged_is_refused(tmp_path: Path) -> None:
    entry, _, log_path = record_an_episode(tmp_path, ticks=40)
    path = Path(entry["path"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one byte
    path.write_bytes(bytes(data))
    out = tmp_path / "tampered.gif"
    done = eva("view", "--log", log_path, "--episode", 1, "--out", out)
    assert done.returncode == 2 and "SHA-256" in done.stdout + done.stderr
    assert not out.exists()
    path.unlink()
    done = eva("view", "--log", log_path, "--episode", 1, "--out", out)
    assert done.returncode == 2 and "missing" in done.stdout + done.stderr
    done = eva("view", "--log", log_path, "--episode", 2, "--out", out)  # no such episode, so no recording
    assert done.returncode == 2 and "no recording" in done.stdout + done.stderr
    (tmp_path / "notes.mcap").write_text("not a recording")
    done = eva("view", "--mcap", tmp_path / "notes.mcap", "--out", out)
    assert done.returncode == 2 and "not a readable MCAP" in done.stdout + done.stderr
    assert not out.exists()
