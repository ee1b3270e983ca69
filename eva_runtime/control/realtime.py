"""What the operating system can do for a steady control loop, asked for and reported, never assumed.

- Garbage collection: a full collection of a large heap stalls Python for tens of milliseconds, longer than a
  control period. During an episode the loop's process collects nothing (`gc_paused`): everything alive at the
  start is frozen out of the collector's reach, automatic collection is off, and one collection runs between
  episodes, where a pause costs nothing.
- The planner process runs at a lower priority (`nice`) and, on a machine with at least four cores, away from the
  core the loop keeps (`planner_cpu_placement`): the world model may use every other core. On two cores a core
  reserved for a loop that needs a few percent of one would halve the planner's compute: there only the priority
  separates them.
- Real-time scheduling (SCHED_FIFO) for the loop's process where the system permits it (`request_realtime`,
  `realtime_loop` for the length of a run); where it does not (an unprivileged user, a container without
  CAP_SYS_NICE, not Linux), the reason is reported, and the loop runs as before. `eva run` asks for it on paced
  runs (`--no-realtime` declines): a paced loop sleeps most of each period, and the kernel's real-time throttling
  (95 % of a core by default) bounds what a runaway one could take. Measured at 200 Hz with the planner busy:
  period jitter p99 2.6 ms -> 0.1 ms (README, "Control-loop timing").
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "PLANNER_NICE",
    "gc_paused",
    "leave_realtime",
    "loop_cpu",
    "planner_cpu_placement",
    "realtime_loop",
    "request_realtime",
]

PLANNER_NICE = 5  # below the loop; mild, since the planner still needs most of a core for its plans to be in time


@contextmanager
def gc_paused() -> Iterator[None]:
    """No garbage collection inside the block; a collection before it, and the collector restored after it."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.freeze()  # what exists now is never scanned again during the block
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()


RESERVE_FROM_CPUS = 4  # with fewer, a core kept for a loop that needs a few percent of one starves the planner


def loop_cpu() -> int | None:
    """The core the loop keeps for itself (the first one this process may use), or None on a machine with fewer
    than RESERVE_FROM_CPUS cores or where affinity is not available."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[0] if len(cpus) >= RESERVE_FROM_CPUS else None


def leave_realtime() -> bool:
    """Back to the default scheduler if this process runs real-time (a planner started from a real-time loop on a
    system without reset-on-fork); whether it did."""
    if not hasattr(os, "sched_setscheduler") or os.sched_getscheduler(0) == os.SCHED_OTHER:
        return False
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    return True


def planner_cpu_placement(nice: int = PLANNER_NICE) -> str:
    """Lower this (planner) process's priority and keep it off the loop's core; returns what was done."""
    done = ["default scheduler"] if leave_realtime() else []
    try:
        os.nice(nice)
        done.append(f"nice +{nice}")
    except OSError as error:
        done.append(f"nice not changed ({error})")
    reserved = loop_cpu()
    if reserved is not None:
        others = set(os.sched_getaffinity(0)) - {reserved}
        os.sched_setaffinity(0, others)
        done.append(f"cpus {sorted(others)}")
    return ", ".join(done)


def request_realtime(priority: int = 50) -> str:
    """SCHED_FIFO at `priority` for this process, pinned to the loop's core; returns what was granted or why not."""
    if not hasattr(os, "sched_setscheduler"):
        return "real-time scheduling not available on this system"
    # Reset on fork: a process or thread started from the loop (the planner, a camera thread, a renderer's
    # workers) runs at the default policy; a CPU-bound child under SCHED_FIFO would take a core from everything.
    policy = os.SCHED_FIFO | getattr(os, "SCHED_RESET_ON_FORK", 0)
    try:
        os.sched_setscheduler(0, policy, os.sched_param(priority))
    except (PermissionError, OSError) as error:
        return f"real-time scheduling not permitted ({error}); running with the default scheduler"
    reserved = loop_cpu()
    if reserved is not None:
        os.sched_setaffinity(0, {reserved})
    return f"SCHED_FIFO priority {priority}" + (f" on cpu {reserved}" if reserved is not None else "")


@contextmanager
def realtime_loop(priority: int = 50) -> Iterator[str]:
    """SCHED_FIFO for this process inside the block (yields what was granted, or why not); the scheduler and the
    cores it may use are restored after it, so what runs next in the process is not real-time by accident."""
    if not hasattr(os, "sched_setscheduler"):
        yield request_realtime(priority)
        return
    policy, param, cpus = os.sched_getscheduler(0), os.sched_getparam(0), os.sched_getaffinity(0)
    try:
        yield request_realtime(priority)
    finally:
        os.sched_setscheduler(0, policy, param)
        os.sched_setaffinity(0, cpus)
