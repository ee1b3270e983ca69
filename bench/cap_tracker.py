"""Benchmark: what the executor's cap tracker (control/cap_tracker.py) costs per tick and what it takes from the filter.

Two streams of 14-joint targets at the control rate, each sent to the safety filter alone and through the tracker
then the filter, interleaved round by round (ratios are steadier than microseconds on a noisy machine):
- smooth: a sinusoid well inside the caps (the tracker should change nothing);
- fast: a decoded plan at its worst, random poses held for 0.1-0.8 s (far beyond the velocity caps).
Per case: median and p99 microseconds per tick, the ratio of tracker + filter to the filter alone, and the
filter's interventions and the tracker's changes per joint-tick.

    .venv/bin/python bench/cap_tracker.py [--embodiment calibration/aloha_sim.yaml] [--headroom 0.9] [--ticks 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import Counter
from pathlib import Path

import numpy as np

from eva_runtime.control.cap_tracker import CapTracker
from eva_runtime.embodiment import load_embodiment
from eva_runtime.safety import SafetyFilter, SafetyLimits


def smooth_targets(limits: SafetyLimits, ticks: int) -> np.ndarray:
    middle, span = (limits.soft_low + limits.soft_high) / 2, 0.05 * (limits.soft_high - limits.soft_low)
    t = np.arange(1, ticks + 1)[:, None] * limits.control_period_s
    return middle + span * np.sin(0.5 * t)


def fast_targets(limits: SafetyLimits, ticks: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    middle, half = (limits.soft_low + limits.soft_high) / 2, 0.3 * (limits.soft_high - limits.soft_low)
    poses = middle + half * rng.uniform(-1, 1, size=(ticks, limits.dof))
    return np.repeat(poses, rng.integers(5, 40, size=ticks), axis=0)[:ticks]


def run(limits: SafetyLimits, targets: np.ndarray, headroom: float | None) -> tuple[np.ndarray, Counter, Counter]:
    """Per-tick seconds, the filter's interventions and the tracker's changes over the stream."""
    safety = SafetyFilter(limits)
    safety.reset(0.0, targets[0])
    tracker = None if headroom is None else CapTracker(limits, headroom)
    filtered, changed, seconds = Counter(), Counter(), np.empty(len(targets))
    period = limits.control_period_s
    for tick, target in enumerate(targets, start=1):
        began = time.perf_counter()
        now = tick * period
        asked = target if tracker is None else tracker.follow(now, target, safety.state, changed)
        result = safety.step(now, asked)
        seconds[tick - 1] = time.perf_counter() - began
        filtered.update(result.interventions.counts())
    return seconds, filtered, changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--embodiment", type=Path, default=Path(__file__).resolve().parents[1] / "calibration/aloha_sim.yaml"
    )
    parser.add_argument("--headroom", type=float, default=0.9)
    parser.add_argument("--ticks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    limits = SafetyLimits.from_embodiment(load_embodiment(args.embodiment))
    streams = {"smooth": smooth_targets(limits, args.ticks), "fast": fast_targets(limits, args.ticks)}
    variants = {"filter_only": None, "tracker_then_filter": args.headroom}
    times: dict[tuple[str, str], list[np.ndarray]] = {}
    counts: dict[tuple[str, str], tuple[Counter, Counter]] = {}
    load_before = os.getloadavg()[0]
    for _ in range(args.rounds):  # interleaved so drift in machine load hits every variant alike
        for stream, targets in streams.items():
            for variant, headroom in variants.items():
                seconds, filtered, changed = run(limits, targets, headroom)
                times.setdefault((stream, variant), []).append(seconds)
                counts[stream, variant] = (filtered, changed)
    joint_ticks = args.ticks * limits.dof
    cases: dict[str, dict] = {}
    for stream in streams:
        medians = {}
        for variant in variants:
            micros = np.concatenate(times[stream, variant]) * 1e6
            filtered, changed = counts[stream, variant]
            medians[variant] = float(np.median(micros))
            cases.setdefault(stream, {})[variant] = {
                "median_us": round(medians[variant], 2),
                "p99_us": round(float(np.percentile(micros, 99)), 2),
                "filter_interventions_per_joint_tick": round(sum(filtered.values()) / joint_ticks, 4),
                "tracker_changes_per_joint_tick": round(sum(changed.values()) / joint_ticks, 4),
            }
        cases[stream]["ratio_tracker_then_filter_to_filter_only"] = round(
            medians["tracker_then_filter"] / medians["filter_only"], 2
        )
    print(
        json.dumps(
            {
                "benchmark": "cap_tracker",
                "embodiment": args.embodiment.stem,
                "headroom": args.headroom,
                "ticks": args.ticks,
                "rounds": args.rounds,
                "python": platform.python_version(),
                "numpy": np.__version__,
                "load_average_before": round(load_before, 2),
                "cases": cases,
            }
        )
    )


if __name__ == "__main__":
    main()
