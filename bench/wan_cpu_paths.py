"""Benchmark: a Wan rollout on the CPU with PyTorch's stock kernels vs the serving fast paths, side by side.

Loads the same world model twice, once with `cpu_fast_paths=False` (stock PyTorch) and once with the fast paths
of `eva_runtime/world_model/wan/cpu_fast_paths.py` (oneDNN convolutions at batch 1, a contiguous RMS norm), and
times in interleaved rounds, per variant:
- a whole `rollout` (history of 5 frames, horizon 37, G = 1) at each `--steps`;
- its pieces at the first `--steps`: VAE encoding of the history, denoising, VAE decoding.
It also reports the largest pixel difference between the two variants' rollouts (same seed). Ratios are
fast / stock, so a noisy machine shifts both alike. Prints one JSON document.

    .venv/bin/python bench/wan_cpu_paths.py --threads 1 [--model DIR] [--steps 10,5] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from world_model import interleaved_times, load_average, machine, median, with_steps

from eva_runtime.world_model.protocol import RolloutRequest
from eva_runtime.world_model.wan.backend import WanSettings, WanWorldModel, load_wan_world_model
from eva_runtime.world_model.wan.components import TinyWanConfig, build_pipeline
from eva_runtime.world_model.wan.latents import decode_latents, encode_frames

HISTORY = 5
HORIZON = 37


def load(model: Path | None, fast: bool, threads: int) -> WanWorldModel:
    if model is not None:
        spec = {"base": str(model), "device": "cpu", "threads": threads, "history_frames": HISTORY}
        return load_wan_world_model({**spec, "cpu_fast_paths": fast})
    config = TinyWanConfig(vocabulary=("transfer the cube",))
    pipeline = build_pipeline(config, seed=0)
    settings = WanSettings(
        base="TinyWanConfig()",
        camera="cam_high",
        fps=12.5,
        image_size=config.image_size,
        history_frames=HISTORY,
        device="cpu",
        cpu_fast_paths=fast,
    )
    return WanWorldModel(pipeline, settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="a Wan model directory (default: built, untrained)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", default="10,5")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps_grid = [int(value) for value in args.steps.split(",")]
    load_before = load_average()
    models = {fast: load(args.model, fast, args.threads) for fast in (False, True)}
    frames = np.random.default_rng(0).integers(0, 256, (HISTORY, 64, 64, 3), dtype=np.uint8)
    request = RolloutRequest({"cam_high": frames}, "transfer the cube", HORIZON, seed=1)
    calls = {}
    for fast, model in models.items():
        for steps in steps_grid:
            stepped = with_steps(model, steps)
            calls[("rollout", fast, steps)] = lambda m=stepped: m.rollout(request)
        stepped = with_steps(model, steps_grid[0])
        history = stepped.history(frames)
        latents = stepped.sample_latents(history, request.instruction, HORIZON, 1, 1)
        calls[("encode", fast, 0)] = lambda m=stepped, h=history: encode_frames(m.pipeline.vae, h[None])
        calls[("denoise", fast, steps_grid[0])] = lambda m=stepped, h=history: m.sample_latents(
            h, request.instruction, HORIZON, 1, 1
        )
        calls[("decode", fast, 0)] = lambda m=stepped, z=latents: decode_latents(m.pipeline.vae, z)
    times = interleaved_times(calls, args.repeats)
    rows = []
    for (what, fast, steps), measured in times.items():
        if fast:
            continue
        stock, quick = median(measured.wall), median(times[(what, True, steps)].wall)
        rows.append(
            {
                "what": what,
                "steps": steps or None,
                "stock_s": round(stock, 4),
                "fast_s": round(quick, 4),
                "fast_over_stock": round(quick / stock, 3),
                "fast_over_stock_cpu_time": round(median(times[(what, True, steps)].cpu) / median(measured.cpu), 3),
            }
        )
    began = time.perf_counter()
    rollouts = [with_steps(models[fast], steps_grid[0]).rollout(request).frames["cam_high"] for fast in (False, True)]
    difference = np.abs(rollouts[0].astype(int) - rollouts[1].astype(int))
    report = {
        "benchmark": "wan_cpu_paths",
        "model": str(args.model) if args.model else "TinyWanConfig() defaults, untrained",
        "history_frames": HISTORY,
        "horizon": HORIZON,
        "repeats": args.repeats,
        "rows": rows,
        "rollout_max_pixel_difference": int(difference.max()),
        "rollout_share_of_pixels_differing": float((difference > 0).mean()),
        "comparison_seconds": round(time.perf_counter() - began, 2),
        "load_average": {"before": load_before, "after": load_average()},
        "machine": machine(),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
