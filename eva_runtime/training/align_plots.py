"""What an alignment run shows (see :mod:`.align`): the training curves (reward, KL, held-out guard) and sample
rollouts (a GIF of truth beside two samples, and their decoded joint trajectories).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_curves", "write_samples"]


def plot_curves(records: list[dict], checks: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    iterations = [r["iteration"] for r in records]
    axes[0].plot(iterations, [r["reward_mean"] for r in records], label="train reward (SDE)")
    if checks:
        axes[0].plot([c["iteration"] for c in checks], [c["reward"] for c in checks], "o-", label="held-out (ODE)")
    axes[0].set_title("executability reward")
    axes[0].legend()
    axes[1].plot(iterations, [r.get("kl", 0.0) for r in records])
    axes[1].set_title("KL to reference")
    if checks:
        axes[2].plot([c["iteration"] for c in checks], [c["motion_rad"] for c in checks], "o-", label="motion (rad)")
        twin = axes[2].twinx()
        twin.plot([c["iteration"] for c in checks], [c["psnr_db"] for c in checks], "s--", color="C3")
        twin.set_ylabel("PSNR (dB)", color="C3")
        axes[2].set_title("held-out guard")
        axes[2].legend(loc="lower left")
    for axis in axes:
        axis.set_xlabel("iteration")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_samples(reward_fn, condition, out: Path, iteration: int, fps: float) -> None:
    """GIF: truth | two samples of the first condition (a captured closed-loop condition has no truth: its
    newest observed frame held in its place); PNG: their decoded joint trajectories."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eva_runtime.training.wm_samples import side_by_side, write_gif

    frames, actions = reward_fn.last_frames, reward_fn.last_actions
    truth = condition.truth
    if truth is None:
        truth = np.repeat(condition.frames[-1:], len(frames[0]), axis=0)
    write_gif(out / f"iter_{iteration:05d}.gif", side_by_side(truth, frames[0], frames[1]), fps)
    figure, axes = plt.subplots(1, 2, figsize=(10, 3), sharey=True)
    for axis, sample in zip(axes, actions[:2], strict=False):
        axis.plot(np.arange(len(sample)) / fps, sample)
        axis.set_xlabel("s")
    axes[0].set_ylabel("decoded joint (rad)")
    figure.tight_layout()
    figure.savefig(out / f"iter_{iteration:05d}_joints.png", dpi=90)
    plt.close(figure)
