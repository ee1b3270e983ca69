"""Benchmark: cost of one 14-joint safety-filter tick, clean vs. adversarial vs. holding, next to a bare np.clip.

Prints one JSON object: per case the median and p99 in microseconds (each sample is the mean of a batch of
ticks, so timer resolution does not dominate), each case's ratio to the np.clip baseline and to the reference
filter (tests/filter_reference.py: the filter before it was optimised, which the equivalence tests hold it to),
all measured in the same run, interleaved (ratios are steadier than microseconds on a noisy machine).

    .venv/bin/python bench/safety_filter.py [--embodiment calibration/aloha_sim.yaml] [--samples 400]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

from eva_runtime.embodiment import load_embodiment
from eva_runtime.safety import FilterRequest, SafetyLimits, filter_step, reset_state

BATCH = 50
REPO = Path(__file__).resolve().parents[1]


def load_reference() -> ModuleType:
    """The pre-optimisation filter, kept under tests/ (not importable from the package) as the equivalence oracle."""
    spec = importlib.util.spec_from_file_location("filter_reference", REPO / "tests/filter_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through the module's entry
    spec.loader.exec_module(module)
    return module


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


Step = Callable[[SafetyLimits, object, FilterRequest], object]


def replay(limits: SafetyLimits, step: Step, requests: list[FilterRequest]) -> tuple[list[object], float]:
    """The filter's state before each request, from rest at mid-range, and the mean interventions per tick.

    Timed batches start from these states, so a batch in the middle of the clean trajectory is clean tracking
    (starting it from rest would make its first ticks catch up with the moving target under the caps).
    """
    state: object = reset_state(
        limits, requests[0].time - limits.control_period_s, (limits.soft_low + limits.soft_high) / 2
    )
    states, interventions = [], 0
    for request in requests:
        states.append(state)
        result = step(limits, state, request)
        interventions += len(result.interventions)  # type: ignore[attr-defined]
        state = result.state  # type: ignore[attr-defined]
    return states, interventions / len(requests)


def time_filter(
    limits: SafetyLimits, step: Step, requests: list[FilterRequest], states: list[object], samples: int
) -> np.ndarray:
    per_tick = []
    for sample in range(samples):
        first = (sample * BATCH) % (len(requests) - BATCH)
        batch, state = requests[first : first + BATCH], states[first]
        began = time.perf_counter()
        for request in batch:
            state = step(limits, state, request).state  # type: ignore[attr-defined]
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


def summary(micros: np.ndarray, clip: float, reference: np.ndarray | None = None) -> dict[str, float]:
    median = float(np.median(micros))
    result = {
        "median_us": round(median, 2),
        "p99_us": round(float(np.percentile(micros, 99)), 2),
        "ratio_to_clip": round(median / clip, 1),
    }
    if reference is not None:
        result["reference_median_us"] = round(float(np.median(reference)), 2)
        result["reference_p99_us"] = round(float(np.percentile(reference, 99)), 2)
        result["ratio_to_reference"] = round(median / float(np.median(reference)), 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--embodiment", type=Path, default=Path(__file__).resolve().parents[1] / "calibration/aloha_sim.yaml"
    )
    parser.add_argument("--samples", type=int, default=400)
    args = parser.parse_args()
    limits = SafetyLimits.from_embodiment(load_embodiment(args.embodiment))
    steps: dict[str, Step] = {"": filter_step, "reference_": load_reference().filter_step}
    count = args.samples * BATCH // 4 + BATCH + 1
    cases = {
        "clean": clean_requests(limits, count),
        "adversarial": adversarial_requests(limits, count),
        "hold": hold_requests(limits, count),
    }
    replays = {
        (name, prefix): replay(limits, step, requests)
        for name, requests in cases.items()
        for prefix, step in steps.items()
    }
    # Interleave the cases and both filters round by round so drift in machine load hits all of them alike.
    results: dict[str, list[np.ndarray]] = {"np_clip_baseline": []}
    load_before = os.getloadavg()[0]
    rounds = 8
    for _ in range(rounds):
        results["np_clip_baseline"].append(time_clip(limits, args.samples // rounds))
        for name, requests in cases.items():
            for prefix, step in steps.items():
                states = replays[name, prefix][0]
                results.setdefault(prefix + name, []).append(
                    time_filter(limits, step, requests, states, args.samples // rounds)
                )
    merged = {name: np.concatenate(parts) for name, parts in results.items()}
    clip = float(np.median(merged["np_clip_baseline"]))
    report = {
        "benchmark": "safety_filter_tick",
        "embodiment": args.embodiment.stem,
        "dof": limits.dof,
        "ticks_per_sample": BATCH,
        "samples": len(merged["clean"]),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "load_average_before": round(load_before, 2),
        "reference": "tests/filter_reference.py",
        "cases": {
            **{
                name: {
                    "interventions_per_tick": round(replays[name, ""][1], 2),
                    **summary(merged[name], clip, merged["reference_" + name]),
                }
                for name in cases
            },
            "np_clip_baseline": summary(merged["np_clip_baseline"], clip),
        },
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
