"""Shared fixtures: the repository's embodiment files and the safety limits derived from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from eva_runtime.embodiment import Embodiment, load_embodiment
from eva_runtime.safety import SafetyLimits

REPO = Path(__file__).resolve().parents[1]
CALIBRATION = REPO / "calibration"

# CI replays the same generated cases every run (a red CI must be reproducible); locally the default profile
# explores new cases each run.
settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.load_profile("ci" if __import__("os").environ.get("CI") else "dev")


@pytest.fixture(params=["aloha_sim", "cobot_magic"])
def embodiment(request: pytest.FixtureRequest) -> Embodiment:
    return load_embodiment(CALIBRATION / f"{request.param}.yaml")


@pytest.fixture
def limits(embodiment: Embodiment) -> SafetyLimits:
    return SafetyLimits.from_embodiment(embodiment)
