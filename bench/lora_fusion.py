"""Benchmark: what a LoRA adapter costs a plan, kept as LoRA layers against fused into the weights, beside the base.

The runtime fuses a bundle's adapters at load (`wan/lora.py:fuse_loaded_adapters`); unfused, every adapted linear
layer runs its low-rank path beside the base one. Three models from the shipped files: the base
(`models/wan_transfer_cube_fgw2`), the same with the aligned adapter `models/wan_transfer_cube_fgw2_task_h5_lora`
kept as LoRA, and fused. One rollout a call as the planner makes it (37 frames, 5 steps, 5 observed frames), in
rounds (each model once per round) so a slow spell of the machine lands on all alike. Prints one JSON document:
median wall and CPU seconds per rollout and each as a ratio to the base.

    MUJOCO_GL=egl .venv/bin/python bench/lora_fusion.py [--repeats 6] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "models" / "wan_transfer_cube_fgw2"
ADAPTER = ROOT / "models" / "wan_transfer_cube_fgw2_task_h5_lora"


def _models(threads: int) -> dict:
    from eva_runtime.world_model.wan.backend import load_wan_world_model

    spec = {"base": str(BASE), "steps": 5, "history_frames": 5, "threads": threads, "model_id": "bench"}
    adapted = {**spec, "adapters": [{"name": "aligned", "path": str(ADAPTER), "weight": 1.0}]}
    return {
        "base": load_wan_world_model(spec),
        "adapter as LoRA layers": load_wan_world_model(adapted, fuse_adapters=False),
        "adapter fused": load_wan_world_model(adapted),
    }


def main() -> None:
    from eva_runtime.world_model.protocol import RolloutRequest

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    models = _models(args.threads)
    frames = np.random.default_rng(0).integers(0, 255, (5, 64, 64, 3), dtype=np.uint8)
    request = RolloutRequest({"cam_high": frames}, "transfer the cube", 37, seed=0)
    for model in models.values():  # warm-up: the prompt cache and first-call allocations
        model.rollout(request)
    wall: dict[str, list[float]] = {name: [] for name in models}
    cpu: dict[str, list[float]] = {name: [] for name in models}
    load_before = os.getloadavg()[0]
    for _ in range(args.repeats):
        for name, model in models.items():
            began, began_cpu = time.perf_counter(), time.process_time()
            model.rollout(request)
            wall[name].append(time.perf_counter() - began)
            cpu[name].append(time.process_time() - began_cpu)
    base_wall, base_cpu = statistics.median(wall["base"]), statistics.median(cpu["base"])
    report = {
        "repeats": args.repeats,
        "threads": args.threads,
        "load_average_before_after": [load_before, os.getloadavg()[0]],
        "models": {
            name: {
                "wall_s_median": statistics.median(wall[name]),
                "cpu_s_median": statistics.median(cpu[name]),
                "wall_ratio_to_base": statistics.median(wall[name]) / base_wall,
                "cpu_ratio_to_base": statistics.median(cpu[name]) / base_cpu,
            }
            for name in models
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
