"""The machine probe a ladder row carries: a timing of a fixed one-thread torch workload."""

from __future__ import annotations

import math

import pytest
import torch

from eva_runtime.world_model.machine_probe import probe_machine


def test_the_probe_times_positive_milliseconds_and_restores_the_thread_count() -> None:
    before = torch.get_num_threads()
    probe = probe_machine(repeats=3, products=4)
    assert math.isfinite(probe["milliseconds"]) and probe["milliseconds"] > 0.0
    assert probe["spread_ms"] >= 0.0 and probe["threads"] == 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(("repeats", "products"), [(0, 1), (1, 0)])
def test_an_empty_probe_is_refused(repeats: int, products: int) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        probe_machine(repeats=repeats, products=products)
