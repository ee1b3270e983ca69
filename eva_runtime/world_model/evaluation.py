"""Open-loop evaluation of a world model on held-out episodes: how close its rollouts are to what happened, and
how executable the motion the IDM reads from them is.

For each condition (episode, start frame) the model gets the observed frame(s) and the instruction and imagines
`horizon` frames. Reported per condition and summarised:
- frame PSNR of the imagined future against the recorded future (frames 1..H-1; frame 0 is the observation);
- the executability reward (and its parts, including the paper's kinematic plausibility) of the IDM-decoded,
  smoothed actions, exactly as the planner scores them, next to the same numbers for the recorded video;
- decoded-motion magnitude (mean absolute joint displacement over the horizon, rad), because a motionless video
  scores a perfect reward: an executability number is only meaningful beside it;
- how far the decoded actions are from the actions recorded with the future (arm joints in rad, grippers apart):
  the closest open-loop proxy for "would this plan do what the expert did". For the recorded video itself this is
  the IDM's own error;
- with a task-progress measure (`training/task_progress.py`) and episodes recorded in simulation: what the
  decoded plan achieves when played on the simulated arms from the condition's replayed start (task stage held
  and at the end, closest reach), the measure the task-aware alignment reward adds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from eva_runtime.idm.smoothing import moving_average
from eva_runtime.idm.windows import resize_video
from eva_runtime.records.success_rate import mean_interval
from eva_runtime.reward import RewardConfig, executability
from eva_runtime.world_model.protocol import RolloutRequest

__all__ = [
    "ConditionResult",
    "decoded_scores",
    "evaluate_on_states",
    "evaluate_world_model",
    "frame_psnr",
    "summarise",
]


@dataclass(frozen=True)
class ConditionResult:
    episode: str
    start: int
    psnr_db: float  # mean over imagined frames 1..H-1
    psnr_by_frame: tuple[float, ...]
    model: dict  # executability fields + motion of the model's rollouts (mean over samples)
    truth: dict  # the same for the recorded video
    seconds: float
    reference: dict | None = None  # the same for a reference video of the future (e.g. the VAE's round trip)


def frame_psnr(reference: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """PSNR (dB) per frame of two (T, H, W, 3) uint8 videos."""
    error = (reference.astype(np.float64) - estimate.astype(np.float64)) ** 2
    mse = error.reshape(len(reference), -1).mean(axis=1)
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))


def decoded_scores(
    decoder, videos: dict[str, np.ndarray], reward: RewardConfig, smooth: int = 3, keep: list | None = None
) -> list[dict]:
    """IDM-decode (G, T, H, W, 3) videos per camera, smooth like the planner, score each; also motion.
    With `keep`, the smoothed actions (T, J) are appended to it (for P0 calibration)."""
    size = decoder.config.image_size
    resized = {c: np.stack([resize_video(v, size) for v in videos[c]]) for c in decoder.config.cameras}
    scores = []
    for actions in decoder.decode_batch(resized):
        smoothed = moving_average(actions, smooth)
        if keep is not None:
            keep.append(smoothed)
        breakdown = executability(smoothed, reward)
        row = {name: float(getattr(breakdown, name)) for name in ("reward", "p_jerk", "p_acc", "p_vel", "p_alim")}
        row["plausible"] = float(breakdown.kinematically_plausible)
        row["motion_rad"] = float(np.mean(np.abs(smoothed[-1] - smoothed[0])))
        row["path_rad"] = float(np.mean(np.sum(np.abs(np.diff(smoothed, axis=0)), axis=0)))
        scores.append(row)
    return scores


def _add_errors(rows: list[dict], actions: list[np.ndarray], truth: np.ndarray, gripper_indices: Sequence[int]) -> None:
    """Each row gains how far its decoded actions are from the actions recorded with the future: the
    arm joints (rad) and the grippers apart, since a grasp is lost by the gripper long before an arm error shows."""
    grippers = np.zeros(truth.shape[1], dtype=bool)
    grippers[list(gripper_indices)] = True
    for row, decoded in zip(rows, actions, strict=True):
        error = np.abs(decoded - truth)
        row["arm_error_rad"] = float(error[:, ~grippers].mean())
        row["gripper_error"] = float(error[:, grippers].mean())


def _mean_rows(rows: list[dict]) -> dict:
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}


def evaluate_world_model(
    model,
    decoder,
    reward: RewardConfig,
    videos: Sequence,
    starts: Sequence[int],
    horizon: int,
    samples: int = 1,
    seed: int = 0,
    history_frames: int = 1,
    best_of: bool = False,
    smooth: int = 3,
    keep_actions: list | None = None,
    reference: Callable[[np.ndarray], np.ndarray] | None = None,
    progress=None,
    steps_per_frame: int = 4,
) -> list[ConditionResult]:
    """Every (episode, start) with a full future in the recording; `videos` are EpisodeVideo at the model's fps.
    `reference(truth)`: another video of the same future (e.g. the recording through the model's VAE), scored the
    same way, so a model's errors can be set beside what its VAE alone costs. `progress` (a TaskProgress): every
    decoded plan of a seeded episode is also played from the replayed start (control step = frame x
    `steps_per_frame`). `best_of`: keep only the rollout the planner's gate executes, else the samples' mean."""
    camera = model.cameras[0]
    results = []
    for index, video in enumerate(videos):
        for start in starts:
            if start + horizon > len(video.frames):
                continue
            # Before the episode has `history_frames` frames the model pads with the oldest, as on the robot.
            first = max(0, start - (history_frames - 1))
            rollout = model.rollout(
                RolloutRequest(
                    frames={camera: video.frames[first : start + 1]},
                    instruction=video.instruction,
                    horizon=horizon,
                    seed=seed * 100_000 + index * 1000 + start,
                    samples=samples,
                )
            )
            future = slice(start, start + horizon)
            play = _player(progress, video, start, steps_per_frame, model.fps)
            scored = _Scorer(decoder, reward, smooth, camera, video.frames[future], video.actions[future], play)
            imagined = rollout.frames[camera]
            model_rows, model_actions, imagined = _chosen(*scored.decoded(imagined), imagined, best_of)
            if keep_actions is not None:
                keep_actions.extend(model_actions)
            other = None if reference is None else _mean_rows(scored.decoded(reference(scored.truth)[None])[0])
            per_frame = scored.psnr_by_frame(imagined)
            results.append(
                ConditionResult(
                    video.name,
                    int(start),
                    float(per_frame.mean()),
                    tuple(float(x) for x in per_frame),
                    _mean_rows(model_rows),
                    scored.truth_row,
                    rollout.seconds,
                    other,
                )
            )
    return results


def _chosen(rows: list[dict], actions: list[np.ndarray], frames: np.ndarray, best_of: bool):
    """The rows, actions and (G, T, H, W, 3) frames that count for a condition: all samples, or the gate's pick
    (the highest reward; a NaN reward never wins)."""
    if not best_of or len(rows) == 1:
        return rows, actions, frames
    rewards = np.array([row["reward"] for row in rows])
    best = int(np.argmax(np.where(np.isfinite(rewards), rewards, -np.inf)))
    return [rows[best]], [actions[best]], frames[best : best + 1]


def _player(progress, video, start: int, steps_per_frame: int, fps: float):
    """Decoded actions -> their task-progress fields, played from the condition's replayed start (None: not
    measured, without a measure or for an episode without a seed)."""
    if progress is None or video.seed is None:
        return None
    origin = progress.start_state(int(video.seed), start * steps_per_frame, video.actions[start])
    return _playing_from(progress, origin, fps)


def _playing_from(progress, origin, fps: float):
    def play(actions: np.ndarray) -> dict:
        return progress.play(origin, actions, fps).row()

    return play


def evaluate_on_states(model, decoder, reward: RewardConfig, clips, states, progress, seed: int = 0, smooth: int = 3):
    """Conditions from a learned model's own closed-loop plan requests (`control/plan_states.py`) and their expert
    labels (`training/dagger_labels.py`): the frames the model was given, the labelled future as the truth, and
    every decoded plan played from the captured state itself (no replay). Open loop on the states where the task
    is lost, not on the expert's."""
    if not (np.array_equal(clips.seeds, states.seed) and np.array_equal(clips.steps, states.step)):
        raise ValueError("the clip set is not the labels of these states (seeds or steps differ, or their order)")
    camera, history = model.cameras[0], clips.history_frames
    horizon = clips.frames.shape[1] - (history - 1)
    results = []
    for i in range(len(clips)):
        origin = states.oracle_state(i)  # the captured state itself: nothing to replay
        request = RolloutRequest({camera: clips.frames[i, :history]}, clips.instruction, horizon, seed=seed + i)
        rollout = model.rollout(request)
        truth = clips.frames[i, history - 1 :]
        play = _playing_from(progress, origin, model.fps)
        scored = _Scorer(decoder, reward, smooth, camera, truth, clips.actions[i], play)
        rows, _ = scored.decoded(rollout.frames[camera])
        per_frame = scored.psnr_by_frame(rollout.frames[camera])
        name = f"seed{int(clips.seeds[i])}"
        results.append(
            ConditionResult(
                name, int(clips.steps[i]), float(per_frame.mean()), tuple(float(x) for x in per_frame),
                _mean_rows(rows), scored.truth_row, rollout.seconds,
            )
        )  # fmt: skip
    return results


class _Scorer:
    """One condition's recorded future (video and commanded actions), against which any video of that future is
    scored. Errors are measured against the recorded actions, not against the IDM's reading of the recorded video:
    an IDM trained on VAE frames reads clean frames less well, and that must not count as the model's error."""

    def __init__(
        self, decoder, reward: RewardConfig, smooth: int, camera: str, truth: np.ndarray, recorded: np.ndarray, play
    ) -> None:
        self.decoder, self.reward, self.smooth, self.camera, self.truth = decoder, reward, smooth, camera, truth
        self.play = play
        self.recorded = np.asarray(recorded, dtype=np.float64)
        self.truth_row = self.decoded(truth[None])[0][0]

    def decoded(self, videos: np.ndarray) -> tuple[list[dict], list[np.ndarray]]:
        """Score rows and smoothed actions of (G, T, H, W, 3) videos, errors against the recording included."""
        actions: list = []
        rows = decoded_scores(self.decoder, {self.camera: videos}, self.reward, self.smooth, actions)
        _add_errors(rows, actions, self.recorded, self.reward.gripper_indices)
        if self.play is not None:
            for row, decoded in zip(rows, actions, strict=True):
                row.update(self.play(decoded))
        return rows, actions

    def psnr_by_frame(self, videos: np.ndarray) -> np.ndarray:
        size = self.truth.shape[1:3]
        return np.mean([frame_psnr(self.truth[1:], resize_video(v, size)[1:]) for v in videos], axis=0)


def summarise(results: list[ConditionResult]) -> dict:
    if not results:
        raise ValueError("no condition had a full future in the recording")
    summary: dict = {"conditions": len(results)}
    summary["psnr_db"] = mean_interval(np.array([r.psnr_db for r in results]))
    summary["psnr_by_frame_db"] = [float(x) for x in np.mean([r.psnr_by_frame for r in results], axis=0)]
    sources = ("model", "truth", "reference") if all(r.reference is not None for r in results) else ("model", "truth")
    for source in sources:
        rows = [getattr(r, source) for r in results]
        summary[source] = {key: mean_interval(np.array([row[key] for row in rows])) for key in rows[0]}
    summary["rollout_seconds_median"] = float(np.median([r.seconds for r in results]))
    summary["by_start"] = _by_start(results)
    return summary


def _by_start(results: list[ConditionResult]) -> dict[str, dict[str, float]]:
    """Means per start frame, i.e. per phase of the task: where in the episode the model's plans go wrong.
    `motion_ratio` is the model's decoded path length over the recorded future's (1: the expert's speed)."""
    table = {}
    for start in sorted({r.start for r in results}):
        rows = [r for r in results if r.start == start]
        model_path = np.mean([r.model["path_rad"] for r in rows])
        truth_path = np.mean([r.truth["path_rad"] for r in rows])
        table[str(start)] = {
            "conditions": len(rows),
            "psnr_db": float(np.mean([r.psnr_db for r in rows])),
            "arm_error_rad": float(np.mean([r.model["arm_error_rad"] for r in rows])),
            "gripper_error": float(np.mean([r.model["gripper_error"] for r in rows])),
            "motion_ratio": float(model_path / max(truth_path, 1e-9)),
            "reward": float(np.mean([r.model["reward"] for r in rows])),
        }
        if all("task_progress" in r.model for r in rows):
            table[str(start)]["task_progress"] = float(np.mean([r.model["task_progress"] for r in rows]))
        if all(r.reference is not None for r in rows):
            table[str(start)]["reference_arm_error_rad"] = float(np.mean([r.reference["arm_error_rad"] for r in rows]))
            table[str(start)]["reference_gripper_error"] = float(np.mean([r.reference["gripper_error"] for r in rows]))
    return table
