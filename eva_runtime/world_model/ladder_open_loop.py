"""Open-loop columns for the closed-loop ladder: what each rung's world model imagines on held-out recordings.

The ladder's closed loop says whether a model completes the task; the open loop says why: frame PSNR against the
recorded future, and the executability reward, plausible share, jerk, decoded motion and distance from the
recorded actions of what the IDM reads from the imagined frames. Each rung is evaluated as it runs on the robot:
its bundle's world model, its observed-frame history, and best-of-N as the planner's gate applies it (the highest
reward of N rollouts is the row). Every row is scored with one reward (one P0), so rows compare.

The oracle's rollouts are the recorded futures themselves (its PSNR is exact by construction). Rungs that degrade
the oracle's frames are instruments of the closed loop only: their open-loop cells stay empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["OpenLoopConditions", "RungOpenLoop", "open_loop_cells", "render_open_loop"]

# The fields a ladder row keeps (mean and 95 % interval each), in the table's order.
KEPT = ("reward", "plausible", "p_jerk", "motion_rad", "arm_error_rad", "gripper_error")


@dataclass(frozen=True)
class OpenLoopConditions:
    """Held-out recordings and the (episode, start) conditions every rung imagines from."""

    data: Path
    episodes: int
    starts: tuple[int, ...]
    horizon: int
    threads: int = 2


@dataclass
class RungOpenLoop:
    """Evaluates rungs one after another; the held-out videos are loaded once per camera/fps/size."""

    conditions: OpenLoopConditions
    reward_bundle: Path  # whose reward constants score every row
    _videos: dict = field(default_factory=dict, init=False)
    _reward: object | None = field(default=None, init=False)

    def __call__(self, bundle_dir: Path, rung) -> dict | None:
        """`rung`: a `ladder.Rung` (its samples, observed history and sampler steps; degraded rungs get none)."""
        if rung.degrade:
            return None
        from eva_runtime.bundle import load_bundle
        from eva_runtime.world_model.comparison import held_out_videos, open_loop, reward_config_of

        if self._reward is None:
            self._reward = reward_config_of(load_bundle(self.reward_bundle))
        bundle = load_bundle(bundle_dir)
        c = self.conditions
        summary = open_loop(
            bundle,
            held_out_videos(bundle, c.data, c.episodes, self._videos),
            list(c.starts),
            c.horizon,
            threads=c.threads,
            reward_config=self._reward,
            samples=rung.samples,
            history_frames=rung.history_frames,
            steps=rung.sampling_steps,
        )
        return open_loop_cells(summary, rung.samples)


def open_loop_cells(summary: dict, samples: int) -> dict:
    """The part of an open-loop summary a ladder row keeps: conditions, PSNR, the decoded-motion fields."""
    model = summary["model"]
    return {
        "conditions": summary["conditions"],
        "samples": samples,
        "psnr_db": None if summary["psnr_db"] is None else list(summary["psnr_db"]),
        **{name: list(model[name]) for name in KEPT if name in model},
    }


def render_open_loop(rows: list[dict]) -> list[str]:
    """Markdown lines of the open-loop table for the ladder rows that have one (none: no lines)."""
    measured = [row for row in rows if row.get("open_loop")]
    if not measured:
        return []
    conditions = measured[0]["open_loop"]["conditions"]
    lines = [
        "",
        f"Open loop, {conditions} held-out conditions per rung (mean [95 % interval]; best-of-N: the gate's pick):",
        "",
        "| rung | frame PSNR (dB) | reward | plausible | jerk penalty | decoded motion (rad) | arm error (rad) "
        "| gripper error |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in measured:
        cells = row["open_loop"]
        psnr = cells["psnr_db"]
        lines.append(
            f"| {row['rung']} | {'exact' if psnr is None else _cell(psnr, 1)} | "
            + " | ".join(_cell(cells.get(name), 3 if name != "p_jerk" else 0) for name in KEPT)
            + " |"
        )
    return lines


def _cell(triple: list[float] | None, digits: int) -> str:
    if triple is None:
        return "-"
    mean, low, high = triple
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
