"""Executed-plan clips: the model's own best plan from each closed-loop state, played in simulation and rendered,
kept as a world-model training clip when it advanced the task.

DAgger labels (`dagger_labels.py`) follow each captured state with the scripted expert's future. They taught the
model to go back to the cube and made its plans less executable (docs/world_model.md, "Training on the model's own
states"): the expert's recovery from a state the expert never visits is a fast, large motion, imagined less cleanly
than the demonstrations'. This labeller asks the model itself instead. From each captured request it samples G
rollouts, decodes them as the planner does (IDM, moving average), plays every decoded plan from the captured state
through the executor, the safety filter and the simulated arms (`task_progress.TaskProgress.play`), and keeps the
one that got furthest (task progress; executability breaks ties). That plan is played once more with the camera
rendering at the model's fps, shrunk as recordings are, and the clip is the request's K - 1 older frames followed
by what the camera saw. So a label is a future the runtime actually produced from that state, by construction
decodable and executable, selected for what it achieved: reward-filtered self-training (RAFT, Dong et al. 2023;
expert iteration), the supervised neighbour of Flow-GRPO that spends two CPU cores on sampling instead of on
policy gradients.

A clip is kept only when its plan did something worth imitating (`worth_keeping`): it ends with the cube lifted,
or further than its state began, or, before the cube is touched, with the right fingers closed around it (a centred
grasp's reach, 4.5 cm); and, from a state that had already lifted the cube, only when the cube is still held at the
end. Everything else (a plan that brushed the cube, dropped it, or went nowhere) is discarded and counted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from eva_runtime.training.dagger_labels import ClipSet
from eva_runtime.training.task_progress import PlayedPlan, TaskProgress
from eva_runtime.world_model.protocol import RolloutRequest

__all__ = ["LabelOutcome", "label_with_own_plans", "worth_keeping"]

CENTRED_GRASP_M = 0.045  # the right fingers' reach of a centred grasp reads about 4 cm (sim/tasks.py)
LIFTED = 2  # transfer cube's stages: 1 touched, 2 lifted, 3 both holding, 4 handed over


def worth_keeping(stage_start: int, played: PlayedPlan) -> bool:
    """Whether a played plan from a state at `stage_start` is a label worth training on (module docstring)."""
    if stage_start >= LIFTED:
        return played.final >= stage_start
    if played.final >= LIFTED or played.final > max(stage_start, 1):
        return True
    return played.final >= 1 and played.closest_reach_m <= CENTRED_GRASP_M


@dataclass(frozen=True)
class LabelOutcome:
    """What happened at one captured state: the stage it began at, the chosen plan's result, whether kept."""

    seed: int
    step: int
    stage_start: int
    chosen: PlayedPlan
    progress_of_samples: tuple[float, ...]
    kept: bool

    def row(self) -> dict:
        return {
            "seed": self.seed,
            "step": self.step,
            "stage_start": self.stage_start,
            **self.chosen.row(),
            "progress_of_samples": list(self.progress_of_samples),
            "kept": self.kept,
        }


def label_with_own_plans(
    states,
    model,
    decoder,
    reward,
    progress: TaskProgress,
    horizon: int,
    samples: int,
    seed: int = 0,
    smooth: int = 3,
    report: Callable[[int, int], None] | None = None,
) -> tuple[ClipSet | None, list[LabelOutcome]]:
    """One candidate clip per captured request (`control/plan_states.py`), kept when `worth_keeping`; the clip set
    (None when nothing was kept) and every state's outcome."""
    meta = states.metadata
    camera = model.cameras[0]
    if meta.get("camera", camera) != camera:
        raise ValueError(f"the states were captured from {meta['camera']!r}, the model imagines {camera!r}")
    labeller = _Labeller(model, decoder, reward, progress, horizon, smooth, camera)
    clips, actions, outcomes = [], [], []
    for i in range(len(states)):
        request = RolloutRequest({camera: states.frames[i]}, meta["instruction"], horizon, seed + i, samples)
        outcome, future = labeller.label(states.oracle_state(i), request, int(states.seed[i]), int(states.step[i]))
        outcomes.append(outcome)
        if future is not None:
            clips.append(np.concatenate([states.frames[i, :-1], future[0]]))
            actions.append(future[1])
        if report is not None:
            report(i + 1, len(states))
    if not clips:
        return None, outcomes
    kept = [o for o in outcomes if o.kept]
    clip_set = ClipSet(
        frames=np.stack(clips),
        actions=np.stack(actions).astype(np.float32),
        seeds=np.asarray([o.seed for o in kept], np.int64),
        steps=np.asarray([o.step for o in kept], np.int64),
        joined=np.asarray([o.step for o in kept], np.int64),  # no script joined: the model's own plan
        stage_start=np.asarray([o.stage_start for o in kept], np.int64),
        stage_end=np.asarray([o.chosen.final for o in kept], np.int64),
        instruction=str(meta["instruction"]),
        history_frames=states.frames.shape[1],
        fps=float(model.fps),
    )
    return clip_set, outcomes


@dataclass
class _Labeller:
    model: object
    decoder: object
    reward: object
    progress: TaskProgress
    horizon: int
    smooth: int
    camera: str

    def label(self, origin, request: RolloutRequest, seed: int, step: int):
        """(outcome, (frames, commands) of the kept future or None) for one captured state."""
        from eva_runtime.world_model.evaluation import decoded_scores

        videos = self.model.rollout(request).frames[self.camera]
        decoded: list[np.ndarray] = []
        scores = decoded_scores(self.decoder, {self.camera: videos}, self.reward, self.smooth, decoded)
        played = [self.progress.play(origin, plan, self.model.fps) for plan in decoded]
        best = max(range(len(played)), key=lambda g: (played[g].progress, scores[g]["reward"]))
        self.progress.sim.restore(origin.snapshot)
        stage_start = self.progress.spec.stage(self.progress.sim)
        future = None
        if worth_keeping(stage_start, played[best]):
            image_size = tuple(request.frames[self.camera].shape[1:3])
            future = _rendered(self.progress, origin, decoded[best], self.model.fps, self.camera, image_size)
            if len(future[0]) != self.horizon:
                future = None  # the executor ran out before the horizon: not a full clip
        progress_of_samples = tuple(p.progress for p in played)
        return LabelOutcome(seed, step, stage_start, played[best], progress_of_samples, future is not None), future


def _rendered(progress: TaskProgress, origin, plan: np.ndarray, fps: float, camera: str, image_size):
    """The plan played again from `origin`, the camera rendered at every frame time and shrunk as recordings are
    (the simulation is deterministic, so this is the play that was chosen)."""
    from eva_runtime.world_model.oracle import render_shrunk, render_sizes

    render_size = render_sizes(progress.embodiment, (camera,))[camera]
    frames: list[np.ndarray] = []
    commands: list[np.ndarray] = []

    def keep(sim, command: np.ndarray) -> None:
        frames.append(render_shrunk(sim, camera, render_size, image_size))
        commands.append(np.array(command, dtype=np.float64))

    progress.play(origin, plan, fps, on_frame=keep)
    return np.stack(frames), np.stack(commands)
