"""Calibration from data: joint caps from demonstrations and the reward's P0 from pre-RL rollouts (no torch)."""

from eva_runtime.calibration.limits import calibrate_limits, read_limits_yaml, write_limits_yaml
from eva_runtime.calibration.reward_p0 import P0Estimate, Rollouts, estimate_p0, load_rollouts, write_p0_yaml

__all__ = [
    "P0Estimate",
    "Rollouts",
    "calibrate_limits",
    "estimate_p0",
    "load_rollouts",
    "read_limits_yaml",
    "write_limits_yaml",
    "write_p0_yaml",
]
