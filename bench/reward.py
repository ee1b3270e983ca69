"""Benchmark: executability reward throughput, NumPy one rollout at a time vs. torch batched (G = 8 and 64).

Prints one JSON object: rollouts per second for each case (T = 49 decoded steps, 14 joints, cobot_magic caps,
16 fps), and the ratio of each torch-batched throughput to the NumPy per-rollout one, all measured in one run
(ratios are steadier than absolute numbers on a shared machine). Torch runs under ``no_grad`` in float32, as a
reward on decoded actions does during Flow-GRPO sampling.

    .venv/bin/python bench/reward.py [--seconds 1.0] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from eva_runtime.embodiment import load_embodiment
from eva_runtime.reward import RewardConfig, executability
from eva_runtime.reward.torch_reward import executability_torch

STEPS = 49


def rate(run: Callable[[], object], rollouts_per_call: int, seconds: float) -> float:
    """Rollouts per second: the best of five timed repeats, each as many calls as fit in seconds / 5."""
    run()  # warm-up: first-call allocations and dispatch caches
    start = time.perf_counter()
    calls = 0
    while time.perf_counter() - start < 0.05:
        run()
        calls += 1
    per_repeat = max(1, int(calls * seconds / 5 / 0.05))
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(per_repeat):
            run()
        best = min(best, (time.perf_counter() - start) / per_repeat)
    return rollouts_per_call / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="Measuring time per case.")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for the torch cases.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(__file__).resolve().parents[1]
    config = RewardConfig.from_embodiment(load_embodiment(root / "calibration" / "cobot_magic.yaml"), fps=16.0)
    rng = np.random.default_rng(0)
    single = rng.normal(0, 0.01, size=(STEPS, 14)).cumsum(axis=0)
    numpy_rate = rate(lambda: executability(single, config), 1, args.seconds)
    report: dict[str, object] = {
        "steps": STEPS,
        "numpy_rollouts_per_s": round(numpy_rate),
    }
    with torch.no_grad():
        for groups in (8, 64):
            batch = torch.tensor(rng.normal(0, 0.01, size=(groups, STEPS, 14)).cumsum(axis=1), dtype=torch.float32)
            torch_rate = rate(lambda batch=batch: executability_torch(batch, config), groups, args.seconds)
            report[f"torch_G{groups}_rollouts_per_s"] = round(torch_rate)
            report[f"ratio_torch_G{groups}_over_numpy"] = round(torch_rate / numpy_rate, 2)
    report.update(
        torch_threads=torch.get_num_threads(),
        torch=torch.__version__,
        numpy=np.__version__,
        python=platform.python_version(),
        machine=platform.machine(),
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
