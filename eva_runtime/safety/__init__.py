"""Safety: the filter every command passes through on its way to the arms, and the limits it enforces."""

from eva_runtime.safety.filter import (
    Check,
    FilterRequest,
    FilterResult,
    FilterState,
    Intervention,
    filter_step,
    reset_state,
)
from eva_runtime.safety.limits import SafetyLimits
from eva_runtime.safety.safety_filter import SafetyFilter

__all__ = [
    "Check",
    "FilterRequest",
    "FilterResult",
    "FilterState",
    "Intervention",
    "SafetyFilter",
    "SafetyLimits",
    "filter_step",
    "reset_state",
]
