"""Benchmark: cost of one 14-joint safety-filter tick, clean vs. adversarial vs. holding, next to a bare np.clip.

Prints one JSON object: per case the median and p99 in microseconds (each sample is the mean of a batch of
ticks, so timer resolution does not dominate) and each case's ratio to the np.clip baseline, measured in the
same run (ratios are steadier than microseconds on a noisy machine).

    .venv/bin/python bench/safety_filter.py [--embodiment calibration/aloha_sim.yaml] [--samples 400]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from eva_runtime.embodiment import load_embodiment
from eva_runtime.safety import FilterRequest, SafetyLimits, filter_step, reset_state

BATCH = 50


def clean_requests(limits: SafetyLimits, count: int) -> list[FilterRequest]:
    period = limits.control_period_s
    middle = (limits.soft_low + limits.soft_high) / 2
    span = 0.1 * (limits.soft_high - limits.soft_low)
    return [
        FilterRequest(
            time=k * period, target=middle + span * (1 - np.cos(0.5 * k * period)), input_stamps={"plan": k * period}
        )
        for k in range(1, count + 1)
    ]


def adversarial_requests(limits: SafetyLimits, count: int) -> list[FilterRequest]:
    """Targets that violate velocity/acceleration/position caps on every tick (teleports and flips)."""
    rng = np.random.default_rng(1)
    period = limits.control_period_s
    targets = rng.uniform(limits.hard_low - 0.5, limits.hard_high + 0.5, size=(count, limits.dof))
    targets[::7, 3] = np.nan
    return [FilterRequest(time=k * period, target=targets[k - 1]) for k in range(1, count + 1)]


def hold_requests(limits: SafetyLimits, count: int) -> list[FilterRequest]:
    period = limits.control_period_s
    return [FilterRequest(time=k * period, target=None) for k in range(1, count + 1)]


def time_filter(limits: SafetyLimits, requests: list[FilterRequest], samples: int) -> np.ndarray:
    start = (limits.soft_low + limits.soft_high) / 2
    per_tick = []
    for sample in range(samples):
        batch = requests[(sample * BATCH) % (len(requests) - BATCH) :][:BATCH]
        state = reset_state(limits, batch[0].time - limits.control_period_s, start)
        began = time.perf_counter()
        for request in batch:
            state = filter_step(limits, state, request).state
        per_tick.append((time.perf_counter() - began) / BATCH)
    return np.array(per_tick) * 1e6


def time_clip(limits: SafetyLimits, samples: int) -> np.ndarray:
    values = np.random.default_rng(2).normal(size=(BATCH, limits.dof))
    per_tick = []
    for _ in range(samples):
        began = time.perf_counter()
        for row in values:
            np.clip(row, limits.soft_low, limits.soft_high)
        per_tick.append((time.perf_counter() - began) / BATCH)
    return np.array(per_tick) * 1e6


def summary(micros: np.ndarray, baseline: float) -> dict[str, float]:
    median = float(np.median(micros))
    return {
        "median_us": round(median, 2),
        "p99_us": round(float(np.percentile(micros, 99)), 2),
        "ratio_to_clip": round(median / baseline, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--embodiment", type=Path, default=Path(__file__).resolve().parents[1] / "calibration/aloha_sim.yaml"
    )
    parser.add_argument("--samples", type=int, default=400)
    args = parser.parse_args()
    limits = SafetyLimits.from_embodiment(load_embodiment(args.embodiment))
    count = args.samples * BATCH // 4 + BATCH + 1
    # Interleave the cases round by round so drift in machine load hits all of them alike.
    results: dict[str, list[np.ndarray]] = {"np_clip_baseline": [], "clean": [], "adversarial": [], "hold": []}
    cases = {
        "clean": clean_requests(limits, count),
        "adversarial": adversarial_requests(limits, count),
        "hold": hold_requests(limits, count),
    }
    rounds = 4
    for _ in range(rounds):
        results["np_clip_baseline"].append(time_clip(limits, args.samples // rounds))
        for name, requests in cases.items():
            results[name].append(time_filter(limits, requests, args.samples // rounds))
    merged = {name: np.concatenate(parts) for name, parts in results.items()}
    baseline = float(np.median(merged["np_clip_baseline"]))
    report = {
        "benchmark": "safety_filter_tick",
        "embodiment": args.embodiment.stem,
        "dof": limits.dof,
        "ticks_per_sample": BATCH,
        "samples": len(merged["clean"]),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cases": {name: summary(values, baseline) for name, values in merged.items()},
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
