"""Side-by-side comparison of deployment bundles (oracle / SFT / aligned world models) on the same held-out data:
open-loop rollout executability and fidelity, and closed-loop success through the full runtime (`eva run`,
safety filter included), in one run, written as Markdown, JSON and a plot.

The oracle's open-loop rollouts are the recorded futures themselves (it re-simulates the expert that recorded
them, bit for bit: tested in tests/test_oracle.py), so its row is the recorded video's, with PSNR marked exact.
Closed loop runs each bundle through `run_sim_episodes`, the in-process path behind `eva run`, on the same seeds,
so the numbers come from exactly the code a user runs, returned as typed results.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eva_runtime.records.success_rate import mean_interval, wilson_interval

__all__ = ["ClosedLoop", "closed_loop", "held_out_videos", "open_loop", "render_table", "reward_config_of"]


@dataclass(frozen=True)
class ClosedLoop:
    successes: int
    episodes: int
    latency_p50_s: float | None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.episodes)


def reward_config_of(bundle):
    """The bundle's reward constants (P0, form, gamma) on its embodiment at its IDM's fps."""
    from eva_runtime.reward import RewardConfig

    stated = bundle.manifest.reward
    fps = bundle.manifest.idm.fps
    return RewardConfig.from_embodiment(bundle.embodiment, fps, p0=stated.p0, form=stated.form, gamma=stated.gamma)


def held_out_videos(bundle, data: Path, episodes: int, cache: dict) -> list:
    """DATA's first EPISODES videos as the bundle's IDM sees them; bundles reading alike share one load via CACHE."""
    from eva_runtime.training.wm_data import load_videos

    key = (bundle.manifest.idm.cameras[0], bundle.manifest.world_model.fps, tuple(bundle.manifest.idm.image_size))
    if key not in cache:
        cache[key] = load_videos(data, *key)[:episodes]
    return cache[key]


def open_loop(
    bundle,
    videos,
    starts,
    horizon: int,
    seed: int = 0,
    threads: int | None = None,
    reward_config=None,
    samples: int = 1,
    history_frames: int | None = None,
    steps: int | None = None,
) -> dict:
    """Summary of `evaluate_world_model` for a Wan bundle, or of the recorded futures for the oracle.

    `reward_config`: score with these constants instead of the bundle's (rows of one table must share one P0).
    `samples` > 1: best-of-N, the row of the rollout the gate executes. The model sees as many observed frames as
    on the robot (its bundle's history, or `history_frames`); `steps`: the sampler's steps instead of the bundle's.
    """
    from eva_runtime.control.sim_runtime import world_model_spec
    from eva_runtime.idm.decoder import IdmDecoder
    from eva_runtime.world_model.evaluation import decoded_scores, evaluate_world_model, summarise

    decoder = IdmDecoder(bundle.idm_path, bundle.hashes()["idm"])
    config = reward_config if reward_config is not None else reward_config_of(bundle)
    if bundle.manifest.world_model.kind == "oracle":
        rows = []
        camera = decoder.config.cameras[0]
        for video in videos:
            for start in starts:
                if start + horizon <= len(video.frames):
                    rows.append(
                        decoded_scores(decoder, {camera: video.frames[None, start : start + horizon]}, config)[0]
                    )
        summary = {key: mean_interval(np.array([r[key] for r in rows])) for key in rows[0]}
        return {"conditions": len(rows), "psnr_db": None, "model": summary}
    from eva_runtime.world_model.wan.backend import load_wan_world_model

    spec = world_model_spec(bundle, task="", threads=threads)
    changes = {"history_frames": history_frames, "steps": steps}
    model = load_wan_world_model(spec | {key: value for key, value in changes.items() if value is not None})
    history = model.settings.history_frames
    results = evaluate_world_model(
        model, decoder, config, videos, starts, horizon, samples, seed, history_frames=history, best_of=samples > 1
    )
    summary = summarise(results)
    return {"conditions": summary["conditions"], "psnr_db": summary["psnr_db"], "model": summary["model"]}


def closed_loop(bundle_dir: Path, task: str, episodes: int, first_seed: int, log: Path, sync: bool) -> ClosedLoop:
    """The bundle through the same in-process path as `eva run` (`run_sim_episodes`), on the given seeds."""
    from eva_runtime.control.sim_session import run_sim_episodes

    result = run_sim_episodes(bundle_dir, task, episodes, first_seed, log, sync=sync)
    return ClosedLoop(result.successes, result.episodes, result.planning_latency_p50_s)


def _cell(triple, digits: int = 3) -> str:
    if triple is None:
        return "exact (the recording)"
    mean, low, high = triple
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def render_table(rows: dict[str, dict]) -> str:
    lines = [
        "| world model | reward | kinematically plausible | jerk penalty | motion (rad) | frame PSNR (dB) "
        "| closed-loop success |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        model = row["open_loop"]["model"]
        loop = row.get("closed_loop")
        success = "-"
        if loop is not None:
            low, high = wilson_interval(loop["successes"], loop["episodes"])
            success = f"{loop['successes']}/{loop['episodes']} [{low:.2f}, {high:.2f}]"
        lines.append(
            f"| {name} | {_cell(model['reward'])} | {_cell(model['plausible'], 2)} | {_cell(model['p_jerk'], 1)} "
            f"| {_cell(model['motion_rad'])} | {_cell(row['open_loop']['psnr_db'], 2)} | {success} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for axis, key, title in ((axes[0], "reward", "executability reward"), (axes[1], "plausible", "plausible share")):
        means = [rows[n]["open_loop"]["model"][key][0] for n in names]
        errors = [
            [max(0.0, m - rows[n]["open_loop"]["model"][key][1]) for n, m in zip(names, means, strict=True)],
            [max(0.0, rows[n]["open_loop"]["model"][key][2] - m) for n, m in zip(names, means, strict=True)],
        ]
        axis.bar(names, means, yerr=errors, capsize=4, color=["C7", "C0", "C2"][: len(names)])
        axis.set_title(title)
    loops = [rows[n].get("closed_loop") for n in names]
    if all(loops):
        rates = [loop["successes"] / loop["episodes"] for loop in loops]
        bounds = [wilson_interval(loop["successes"], loop["episodes"]) for loop in loops]
        # Clamped: a Wilson bound at 0 or n successes can sit a rounding error past the rate.
        errors = [
            [max(0.0, r - b[0]) for r, b in zip(rates, bounds, strict=True)],
            [max(0.0, b[1] - r) for r, b in zip(rates, bounds, strict=True)],
        ]
        axes[2].bar(names, rates, yerr=errors, capsize=4, color=["C7", "C0", "C2"][: len(names)])
        axes[2].set_ylim(0, 1)
    axes[2].set_title("closed-loop success (Wilson 95 %)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
