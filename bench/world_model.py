"""Benchmark: tiny Wan world-model rollout latency on CPU vs sampling steps and batch size G, and what one call spends.

Times `WanWorldModel.rollout` for the shipped architecture (`TinyWanConfig()` defaults: 64x64 frames, VAE /4 in
space and time, a 4-layer transformer) at horizon 17 frames over a grid of sampling steps x G (rollouts per call).
Weights do not change latency, so by default the model is built from the config with `build_pipeline` (untrained
weights); `--model DIR` loads a trained model directory instead (hash-verified, as the runtime does). For each
cell: median and p90 seconds per call (over `--repeats` calls: with few repeats p90 is near the slowest one),
seconds per rollout, and both as ratios to the (steps=10, G=1) cell. A straight-line fit of call time vs steps,
per G, gives the cost of one denoising step and the fixed per-call cost. Then one call at 10 steps, at the
smallest and the largest G, is split into its pieces, each timed on its own: the VAE encoding of the observed
frame, transformer denoising (`sample_latents` minus that encoding) and the VAE decode (`decode_latents`); the
text encoder (`encode_prompt`) is reported beside them, uncached, but a rollout does not pay it: the runtime
caches its output per instruction.

The machine may be shared: timed calls run in rounds (every cell once per round) so a slow spell of another job
lands on all cells alike, and the load average before and after is printed. Beside wall time, each call's CPU
time (this process, `time.process_time`) is recorded: other processes' load takes wall time from us and changes
CPU time much less, so the CPU-time ratios, fit and shares are the steadier numbers on a busy machine (with one
torch thread, CPU time is about wall time on an idle one). Prints one JSON document.

    .venv/bin/python bench/world_model.py --threads 1 [--model DIR] [--repeats 4] [--steps 1,2,5,10,20]
        [--samples 1,2,4,8] [--horizon 17] [--breakdown-repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eva_runtime.world_model.protocol import RolloutRequest
from eva_runtime.world_model.wan.backend import WanSettings, WanWorldModel, load_wan_world_model
from eva_runtime.world_model.wan.components import TinyWanConfig, build_pipeline, instruction_vocabulary
from eva_runtime.world_model.wan.latents import decode_latents, encode_frames

REFERENCE_STEPS = 10  # the runtime's default (`WanSettings.steps`)
HORIZON = 17  # frames per rollout, the observed one included (`eva train world-model --horizon`)
CAMERA = "cam_high"
FPS = 12.5


def task_instructions() -> list[str]:
    from eva_runtime.sim.tasks import TASKS

    return [spec.instruction for spec in TASKS.values()]


def build_world_model(model: Path | None, threads: int) -> tuple[WanWorldModel, str]:
    """The world model on CPU and a description of where it came from."""
    if model is not None:
        loaded = load_wan_world_model({"base": str(model), "device": "cpu", "threads": threads})
        return loaded, str(model)
    config = TinyWanConfig(vocabulary=instruction_vocabulary(task_instructions()))
    pipeline = build_pipeline(config, seed=0)
    pipeline.transformer.eval()
    pipeline.vae.eval()
    settings = WanSettings(
        base="built from TinyWanConfig()",
        camera=CAMERA,
        fps=FPS,
        image_size=config.image_size,
        steps=REFERENCE_STEPS,
        device="cpu",
        model_id="tiny-wan-untrained",
    )
    return WanWorldModel(pipeline, settings), "TinyWanConfig() defaults, untrained weights (build_pipeline)"


def with_steps(model: WanWorldModel, steps: int) -> WanWorldModel:
    """The same pipeline sampling with `steps` denoising steps."""
    return WanWorldModel(model.pipeline, replace(model.settings, steps=steps))


def rollout_request(model: WanWorldModel, samples: int, horizon: int, seed: int = 0) -> RolloutRequest:
    """One observed frame (content does not change latency) and the first task's instruction."""
    height, width = model.settings.image_size
    frames = np.random.default_rng(seed).integers(0, 256, size=(1, height, width, 3), dtype=np.uint8)
    return RolloutRequest({model.settings.camera: frames}, task_instructions()[0], horizon, seed, samples)


@dataclass
class Times:
    """Seconds per call: wall clock, and CPU time of this whole process (every thread: a server thread too)."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def interleaved_times(
    calls: Mapping[Hashable, Callable[[], object]],
    repeats: int,
    warm_ups: Mapping[Hashable, Callable[[], object]] | None = None,
) -> dict[Hashable, Times]:
    """Times of `repeats` rounds of one call per entry, after one warm-up call per warm-up (default: per entry).
    Rounds rather than one entry at a time: a shared machine's slow spells hit all entries alike. CPU time is
    what other processes' load disturbs least (they take wall time from us, not CPU time)."""
    for warm_up in (warm_ups if warm_ups is not None else calls).values():
        warm_up()
    times = {key: Times() for key in calls}
    for _ in range(repeats):
        for key, call in calls.items():
            began, began_cpu = time.perf_counter(), time.process_time()
            call()
            times[key].cpu.append(time.process_time() - began_cpu)
            times[key].wall.append(time.perf_counter() - began)
    return times


def median(values: list[float]) -> float:
    return float(np.median(values))


def p90(values: list[float]) -> float:
    return float(np.percentile(values, 90))


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import diffusers

    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def count_parameters(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def describe(model: WanWorldModel, horizon: int) -> dict[str, Any]:
    pipeline = model.pipeline
    spatial = int(pipeline.vae.config.scale_factor_spatial)
    height, width = model.settings.image_size
    latent = [int(pipeline.vae.config.z_dim), (horizon - 1) // model.temporal + 1, height // spatial, width // spatial]
    patch = pipeline.transformer.config.patch_size
    return {
        "image_size": [height, width],
        "horizon": horizon,
        "latent_shape_per_rollout": latent,
        "transformer_tokens_per_rollout": latent[1] // patch[0] * (latent[2] // patch[1]) * (latent[3] // patch[2]),
        "parameters": {
            "transformer": count_parameters(pipeline.transformer),
            "vae": count_parameters(pipeline.vae),
            "text_encoder": count_parameters(pipeline.text_encoder),
        },
    }


def grid(
    model: WanWorldModel, steps_grid: list[int], samples_grid: list[int], horizon: int, repeats: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    models = {steps: with_steps(model, steps) for steps in steps_grid}
    requests = {samples: rollout_request(model, samples, horizon) for samples in samples_grid}
    calls = {
        (steps, samples): (lambda m=models[steps], r=requests[samples]: m.rollout(r))
        for steps in steps_grid
        for samples in samples_grid
    }
    # Shapes depend on G only: one cheap (fewest steps) warm-up per G.
    fewest = models[min(steps_grid)]
    warm_ups = {samples: (lambda r=requests[samples]: fewest.rollout(r)) for samples in samples_grid}
    times = interleaved_times(calls, repeats, warm_ups)
    reference_key = (REFERENCE_STEPS if REFERENCE_STEPS in steps_grid else steps_grid[0], samples_grid[0])
    reference, reference_cpu = median(times[reference_key].wall), median(times[reference_key].cpu)
    cells = []
    for (steps, samples), measured in times.items():
        call, cpu = median(measured.wall), median(measured.cpu)
        cells.append(
            {
                "steps": steps,
                "samples": samples,
                "median_s": round(call, 4),
                "p90_s": round(p90(measured.wall), 4),
                "per_rollout_s": round(call / samples, 4),
                "ratio_to_reference": round(call / reference, 3),
                "per_rollout_ratio_to_reference": round(call / samples / reference, 3),
                "median_cpu_s": round(cpu, 4),
                "cpu_ratio_to_reference": round(cpu / reference_cpu, 3),
            }
        )
    fits = {}
    if len(steps_grid) >= 2:
        for samples in samples_grid:
            fit = {}
            for clock in ("wall", "cpu"):
                medians = [median(getattr(times[(steps, samples)], clock)) for steps in steps_grid]
                slope, intercept = np.polyfit(steps_grid, medians, 1)
                prefix = "" if clock == "wall" else "cpu_"
                fit.update(
                    {f"{prefix}ms_per_step": round(slope * 1e3, 2), f"{prefix}fixed_ms": round(intercept * 1e3, 1)}
                )
            fits[f"G{samples}"] = fit
    reference_cell = {
        "steps": reference_key[0],
        "samples": reference_key[1],
        "median_s": round(reference, 4),
        "median_cpu_s": round(reference_cpu, 4),
    }
    return cells, {"reference": reference_cell, "linear_fit_vs_steps": fits}


def breakdown(model: WanWorldModel, samples: int, horizon: int, repeats: int, rollout: float) -> dict[str, Any]:
    """One rollout call's time, piece by piece, at the model's steps and G = `samples`; `rollout` is the median
    seconds of the whole call, from the grid."""
    request = rollout_request(model, samples, horizon)
    history = model.history(request.frames[model.settings.camera])
    settings = model.settings
    latents = model.sample_latents(history, request.instruction, horizon, samples, request.seed)

    def text_encoder() -> object:  # uncached: what the first call with a new instruction pays
        with torch.no_grad():
            return model.pipeline.encode_prompt(
                request.instruction,
                negative_prompt=settings.negative_prompt,
                do_classifier_free_guidance=settings.guidance != 1.0,
                max_sequence_length=settings.max_sequence_length,
                device=model.device,
            )

    calls: dict[Hashable, Callable[[], object]] = {
        "text_encoder": text_encoder,
        "vae_encode": lambda: encode_frames(model.pipeline.vae, history[None]),
        "sample_latents": lambda: model.sample_latents(history, request.instruction, horizon, samples, request.seed),
        "vae_decode": lambda: decode_latents(model.pipeline.vae, latents),
    }
    times = interleaved_times(calls, repeats)
    pieces: dict[str, float] = {}
    cpu_pieces: dict[str, float] = {}
    for clock, into in (("wall", pieces), ("cpu", cpu_pieces)):
        seconds = {key: median(getattr(measured, clock)) for key, measured in times.items()}
        into["vae_encode"] = seconds["vae_encode"]
        into["transformer_denoising"] = max(0.0, seconds["sample_latents"] - seconds["vae_encode"])
        into["vae_decode"] = seconds["vae_decode"]
    total, cpu_total = sum(pieces.values()), sum(cpu_pieces.values())
    return {
        "steps": settings.steps,
        "samples": samples,
        # The whole call (the grid's cell): it differs from the pieces' sum by noise and by what only a rollout
        # does (resizing the frame, drawing the noise, slicing), which is small.
        "rollout_ms": round(rollout * 1e3, 1),
        "pieces_sum_ms": round(total * 1e3, 1),
        "text_encoder_uncached_ms": round(median(times["text_encoder"].wall) * 1e3, 2),
        "pieces_ms": {key: round(value * 1e3, 1) for key, value in pieces.items()},
        "pieces_cpu_ms": {key: round(value * 1e3, 1) for key, value in cpu_pieces.items()},
        # Shares of CPU time: the steadier clock on a shared machine.
        "shares_of_pieces": {key: round(value / cpu_total, 3) for key, value in cpu_pieces.items()},
        "transformer_ms_per_step": round(pieces["transformer_denoising"] * 1e3 / settings.steps, 2),
        "transformer_cpu_ms_per_step": round(cpu_pieces["transformer_denoising"] * 1e3 / settings.steps, 2),
        "dominant": max(cpu_pieces, key=cpu_pieces.__getitem__),
    }


def integers(text: str) -> list[int]:
    return [int(value) for value in text.split(",") if value]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="A model directory (default: built from config).")
    parser.add_argument("--steps", type=integers, default=[1, 2, 5, 10, 20], help="Comma-separated steps.")
    parser.add_argument("--samples", type=integers, default=[1, 2, 4, 8], help="Comma-separated G values.")
    parser.add_argument("--horizon", type=int, default=HORIZON)
    parser.add_argument("--repeats", type=int, default=4, help="Timed calls per cell (after a warm-up per G).")
    parser.add_argument("--breakdown-repeats", type=int, default=3, help="Timed calls per piece of one call.")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads.")
    parser.add_argument("--quick", action="store_true", help="Smoke run: steps 1,10; G 1; horizon 5; 1 repeat.")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.samples, args.horizon, args.repeats, args.breakdown_repeats = [1, 10], [1], 5, 1, 1
    torch.set_num_threads(args.threads)
    began, load_before = time.perf_counter(), load_average()
    model, source = build_world_model(args.model, args.threads)
    cells, summary = grid(model, sorted(args.steps), sorted(args.samples), args.horizon, args.repeats)
    reference_steps = summary["reference"]["steps"]
    reference_model = with_steps(model, reference_steps)
    whole = {cell["samples"]: cell["median_s"] for cell in cells if cell["steps"] == reference_steps}
    pieces = [
        breakdown(reference_model, samples, args.horizon, args.breakdown_repeats, whole[samples])
        for samples in sorted({min(args.samples), max(args.samples)})
    ]
    report = {
        "benchmark": "wan_world_model_rollout",
        "model": source,
        **describe(model, args.horizon),
        "repeats": args.repeats,
        "breakdown_repeats": args.breakdown_repeats,
        **summary,
        "cells": cells,
        "breakdown": pieces,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "bench_seconds": round(time.perf_counter() - began, 1),
        **machine(),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
