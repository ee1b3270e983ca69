"""Benchmark: seconds per Flow-GRPO iteration against the group size G and the number of sampling steps, the full
variant (every SDE step trained) vs the fast one (a window of 2 SDE steps, ODE elsewhere), and peak memory.

Each configuration runs in its own child process (so its peak resident memory, `ru_maxrss`, is its own) on the
shipped SFT model and the shipped IDM bundle: `iterations` GRPO iterations on 2 conditions (frames from a recorded
episode when `--data` is given, else mid-grey frames) after one warm-up iteration; the median iteration time is
reported with its ratio to (G 8, 10 steps, full). One JSON document on stdout.

    .venv/bin/python bench/align.py [--threads 1] [--iterations 2] [--data data/tc_heldout]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[1]
MODEL = REPOSITORY / "models" / "wan_transfer_cube_sft"
BUNDLE = REPOSITORY / "models" / "bundle_transfer_cube_wan"


def _run(config: dict, connection: Connection) -> None:
    import torch
    from diffusers import WanImageToVideoPipeline

    torch.set_num_threads(config["threads"])
    pipeline = WanImageToVideoPipeline.from_pretrained(str(MODEL), dtype=torch.float32)
    reward, conditions, embeds = _reward_and_conditions(pipeline, config)
    times = _timed_iterations(pipeline, reward, conditions, embeds, config)
    connection.send({"seconds": times[1:], "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def _reward_and_conditions(pipeline: Any, config: dict) -> tuple[Any, list[Any], dict[str, Any]]:
    """The shipped bundle's IDM reward, the 2 conditions and the instruction's text embedding."""
    import numpy as np
    import torch

    from eva_runtime.bundle import load_bundle
    from eva_runtime.idm.decoder import IdmDecoder
    from eva_runtime.reward import RewardConfig
    from eva_runtime.training.flow_grpo import Condition
    from eva_runtime.training.idm_reward import IdmReward

    bundle = load_bundle(BUNDLE)
    decoder = IdmDecoder(bundle.idm_path, bundle.hashes()["idm"])
    reward = IdmReward(pipeline.vae, decoder, RewardConfig.from_embodiment(bundle.embodiment, decoder.fps, p0=108.5))
    instruction = "pick up the red cube with the right arm and hand it over to the left arm"
    frames = config["frames"] or [np.full((1, 64, 64, 3), 90 + 20 * i, np.uint8) for i in range(2)]
    conditions = [Condition(np.asarray(f, np.uint8), instruction) for f in frames]
    with torch.no_grad():
        embeds = {
            instruction: pipeline.encode_prompt(instruction, do_classifier_free_guidance=False, max_sequence_length=32)[
                0
            ]
        }
    return reward, conditions, embeds


def _timed_iterations(
    pipeline: Any, reward: Any, conditions: list[Any], embeds: dict[str, Any], config: dict
) -> list[float]:
    """Seconds of each GRPO iteration on a fresh LoRA, the warm-up first."""
    import numpy as np
    import torch

    from eva_runtime.training.align import _batch
    from eva_runtime.training.flow_grpo import GrpoSettings, grpo_iteration
    from eva_runtime.training.sde import NoiseSchedule
    from eva_runtime.training.update_batch import RolloutBatch, Trainee
    from eva_runtime.world_model.wan.lora import add_lora
    from eva_runtime.world_model.wan.sampling import flow_sigmas

    transformer = pipeline.transformer
    transformer.requires_grad_(False)
    add_lora(transformer, "align", 8, 8.0)
    parameters = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)
    latents, texts, keys, conditioned = _batch(conditions, config["group"], pipeline.vae, embeds, 5)
    sigmas = flow_sigmas(pipeline.scheduler, config["steps"])
    times = []
    for iteration in range(config["iterations"] + 1):
        generator = torch.Generator().manual_seed(iteration)
        window = None
        if config["fast"]:
            first = int(np.random.default_rng(iteration).integers(0, config["steps"] - 2))
            window = {first, first + 1}
        began = time.perf_counter()
        grpo_iteration(
            Trainee(transformer, transformer, optimizer, lambda loss: loss.backward(), parameters),
            RolloutBatch(
                latents, texts, conditioned, keys, torch.randn(latents.shape, generator=generator), sigmas, generator
            ),
            NoiseSchedule(),
            reward,
            GrpoSettings(),
            window,
        )
        times.append(time.perf_counter() - began)
    return times


def measure(config: dict) -> dict:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_run, args=(config, child))
    process.start()
    result = parent.recv()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--groups", default="4,8")
    parser.add_argument("--steps", default="5,10")
    parser.add_argument("--data", type=Path, default=None, help="episode directory for real conditioning frames")
    arguments = parser.parse_args()
    frames = None
    if arguments.data is not None:
        from eva_runtime.training.wm_data import load_videos

        video = load_videos(arguments.data, "cam_high", 12.5, (64, 64))[0]
        frames = [video.frames[i : i + 1].tolist() for i in (0, 40)]
    cells = []
    for group in [int(g) for g in arguments.groups.split(",")]:
        for steps in [int(s) for s in arguments.steps.split(",")]:
            for fast in (False, True):
                config = {"group": group, "steps": steps, "fast": fast, "iterations": arguments.iterations}
                config.update({"threads": arguments.threads, "frames": frames})
                result = measure(config)
                median = float(sorted(result["seconds"])[len(result["seconds"]) // 2])
                cells.append(
                    {
                        "G": group,
                        "steps": steps,
                        "variant": "fast" if fast else "full",
                        "median_s": median,
                        "peak_rss_mb": round(result["peak_rss_mb"], 1),
                    }
                )
    reference = next((c for c in cells if c["G"] == 8 and c["steps"] == 10 and c["variant"] == "full"), cells[0])
    for cell in cells:
        cell["ratio"] = round(cell["median_s"] / reference["median_s"], 3)
    print(
        json.dumps(
            {
                "benchmark": "flow_grpo_iteration",
                "conditions_per_iteration": 2,
                "reference": {k: reference[k] for k in ("G", "steps", "variant")},
                "cells": cells,
                "threads": arguments.threads,
                "machine": platform.processor() or platform.machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
