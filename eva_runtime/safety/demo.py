"""The safety-filter demo: a deliberately bad command stream, filtered, and a plot of requested vs applied.

The stream is a smooth motion with faults spliced in at known times: a teleporting target, a NaN burst, a push
beyond a position limit, sign-flipping jitter and a stale plan. It is the first picture a new user sees of what
the filter does, and the numbers it prints come from the same run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eva_runtime.safety.filter import FilterRequest, Intervention, filter_step, reset_state
from eva_runtime.safety.limits import SafetyLimits

__all__ = ["FAULT_WINDOWS", "DemoRun", "plot_demo", "run_demo"]

# (start s, end s, label) of each injected fault.
FAULT_WINDOWS = (
    (1.0, 1.6, "teleport"),
    (2.0, 2.3, "NaN burst"),
    (2.8, 3.8, "beyond limit"),
    (4.2, 4.8, "jitter"),
    (5.3, 5.9, "stale plan"),
)


@dataclass(frozen=True)
class DemoRun:
    times: np.ndarray  # (T,)
    requested: np.ndarray  # (T, dof), NaN where the stream sent NaN
    applied: np.ndarray  # (T, dof)
    interventions: tuple[tuple[float, Intervention], ...]

    def counts(self) -> Counter[str]:
        return Counter(item.check.value for _, item in self.interventions)


def _requested_stream(limits: SafetyLimits, times: np.ndarray, home: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bad stream and the stamp of the plan each tick's target came from."""
    rng = np.random.default_rng(7)
    span = 0.15 * (limits.soft_high - limits.soft_low)
    requested = home + span * np.sin(0.8 * times[:, None] + np.arange(limits.dof))
    stamps = times.copy()
    in_window = {label: (times >= a) & (times < b) for a, b, label in FAULT_WINDOWS}
    requested[in_window["teleport"]] += 1.2 * span  # the target jumps away and back
    requested[in_window["NaN burst"], 0:3] = np.nan
    beyond = in_window["beyond limit"]
    requested[beyond, 1] = limits.hard_high[1] + 0.5  # shoulder pushed past its hard limit
    flips = np.where(np.arange(len(times)) % 2 == 0, 1.0, -1.0)[:, None]
    requested[in_window["jitter"]] += 0.3 * flips[in_window["jitter"]] + rng.normal(0, 0.02, (1, limits.dof))
    stamps[in_window["stale plan"]] = FAULT_WINDOWS[-1][0] - limits.timeouts_s["plan"] - 0.1
    return requested, stamps


def run_demo(limits: SafetyLimits, seconds: float = 6.5) -> DemoRun:
    period = limits.control_period_s
    times = np.arange(1, int(seconds / period) + 1) * period
    home = (limits.soft_low + limits.soft_high) / 2.0
    requested, stamps = _requested_stream(limits, times, home)
    # The arm is already moving along the stream when it starts, so the first ticks need no intervention.
    state = reset_state(limits, 0.0, 2 * requested[0] - requested[1], (requested[1] - requested[0]) / period)
    applied = np.empty_like(requested)
    log: list[tuple[float, Intervention]] = []
    for k, time in enumerate(times):
        request = FilterRequest(time=float(time), target=requested[k], input_stamps={"plan": float(stamps[k])})
        result = filter_step(limits, state, request)
        state = result.state
        applied[k] = state.command
        log.extend((float(time), item) for item in result.interventions)
    return DemoRun(times, requested, applied, tuple(log))


def plot_demo(run: DemoRun, limits: SafetyLimits, out: Path, joints: tuple[int, ...] = (0, 1, 2, 6)) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(joints), 1, figsize=(11, 2.3 * len(joints)), sharex=True)
    for axis, joint in zip(np.atleast_1d(axes), joints, strict=True):
        for start, end, label in FAULT_WINDOWS:
            axis.axvspan(start, end, color="0.92", zorder=0)
            if joint == joints[0]:
                axis.text((start + end) / 2, 1.02, label, transform=axis.get_xaxis_transform(), ha="center", fontsize=8)
        axis.plot(run.times, run.requested[:, joint], color="tab:red", lw=0.9, alpha=0.8, label="requested")
        nan_times = run.times[~np.isfinite(run.requested[:, joint])]
        axis.plot(nan_times, np.full_like(nan_times, run.applied[:, joint].mean()), "x", color="tab:red", ms=3)
        axis.plot(run.times, run.applied[:, joint], color="tab:blue", lw=1.6, label="applied (filtered)")
        for value, style in (
            (limits.hard_low, "-"),
            (limits.hard_high, "-"),
            (limits.soft_low, ":"),
            (limits.soft_high, ":"),
        ):
            axis.axhline(value[joint], color="k", lw=0.8, ls=style)
        low, high = limits.hard_low[joint], limits.hard_high[joint]
        requested = run.requested[:, joint][np.isfinite(run.requested[:, joint])]
        pad = 0.3 * (high - low)  # show requests beyond the limits, up to a point
        bottom = min(low, max(low - pad, requested.min()))
        top = max(high, min(high + pad, requested.max()))
        axis.set_ylim(bottom - 0.04 * (top - bottom), top + 0.04 * (top - bottom))
        unit = "" if limits.is_gripper[joint] else " [rad]"
        axis.set_ylabel(f"{limits.joint_names[joint]}{unit}", fontsize=8)
    first = np.atleast_1d(axes)[0]
    first.legend(loc="upper right", fontsize=8, ncols=2)
    np.atleast_1d(axes)[-1].set_xlabel("time [s]   (solid black: hard limits, dotted: limits minus margin)")
    counts = ", ".join(f"{check} {n}" for check, n in sorted(run.counts().items()))
    figure.suptitle(f"Safety filter on a bad command stream - interventions: {counts}", fontsize=9)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out
