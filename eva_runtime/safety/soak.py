"""Soak test of the safety filter: millions of adversarial sequences across worker processes, violations counted.

Each worker draws sequences from its own seeded generator (:func:`random_sequence`), runs them through the
filter and checks every tick (:func:`run_sequence`). The result is reproducible from (seed, sequences, workers).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eva_runtime.embodiment import load_embodiment
from eva_runtime.safety.adversarial import random_sequence, run_sequence
from eva_runtime.safety.limits import SafetyLimits

__all__ = ["SoakResult", "soak"]


@dataclass(frozen=True)
class SoakResult:
    sequences: int
    ticks: int
    violations: int
    examples: tuple[str, ...]  # the first few violations, for a human to read
    seconds: float


def _work(args: tuple[str, int, int, int]) -> tuple[int, int, int, list[str]]:
    embodiment_path, seed, count, max_length = args
    limits = SafetyLimits.from_embodiment(load_embodiment(embodiment_path))
    rng = np.random.default_rng(seed)
    ticks = violations = 0
    examples: list[str] = []
    for _ in range(count):
        start, events = random_sequence(limits, rng, int(rng.integers(1, max_length + 1)))
        problems = run_sequence(limits, start, events)
        ticks += len(events)
        violations += len(problems)
        examples.extend(problems[: max(0, 5 - len(examples))])
    return count, ticks, violations, examples


def soak(
    embodiment_path: Path,
    sequences: int,
    workers: int = 2,
    seed: int = 0,
    max_length: int = 24,
    chunk: int = 5000,
    progress: Callable[[int], None] | None = None,
) -> SoakResult:
    """Run `sequences` random adversarial sequences; `progress` is called with the number finished so far."""
    jobs = []
    for index, first in enumerate(range(0, sequences, chunk)):
        jobs.append((str(embodiment_path), seed * 1_000_003 + index, min(chunk, sequences - first), max_length))
    started = time.perf_counter()
    done = ticks = violations = 0
    examples: list[str] = []
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for count, job_ticks, job_violations, job_examples in pool.imap_unordered(_work, jobs):
            done += count
            ticks += job_ticks
            violations += job_violations
            examples.extend(job_examples[: max(0, 5 - len(examples))])
            if progress is not None:
                progress(done)
    return SoakResult(done, ticks, violations, tuple(examples), time.perf_counter() - started)
