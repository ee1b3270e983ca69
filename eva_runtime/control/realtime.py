"""What the operating system can do for a steady control loop, asked for and reported, never assumed.

- Garbage collection: a full collection of a large heap stalls Python for tens of milliseconds, longer than a
  control period. During an episode the loop's process collects nothing (`gc_paused`): everything alive at the
  start is frozen out of the collector's reach, automatic collection is off, and one collection runs between
  episodes, where a pause costs nothing.
- The planner process runs at a lower priority (`nice`) and, on a machine with at least four cores, away from the
  core the loop keeps (`planner_cpu_placement`): the world model may use every other core. On two cores a core
  reserved for a loop that needs a few percent of one would halve the planner's compute: there only the priority
  separates them.
- Real-time scheduling (SCHED_FIFO) for the loop's process where the system permits it (`request_realtime`);
  where it does not (an unprivileged user, a container without CAP_SYS_NICE, not Linux), the reason is
  reported, and the loop runs as before. It is opt-in: a real-time process that spins would starve the machine.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["PLANNER_NICE", "gc_paused", "loop_cpu", "planner_cpu_placement", "request_realtime"]

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


def planner_cpu_placement(nice: int = PLANNER_NICE) -> str:
    """Lower this (planner) process's priority and keep it off the loop's core; returns what was done."""
    done = []
    if hasattr(os, "sched_setscheduler") and os.sched_getscheduler(0) != os.SCHED_OTHER:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))  # started from a real-time loop: not inherited
        done.append("default scheduler")
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
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (PermissionError, OSError) as error:
        return f"real-time scheduling not permitted ({error}); running with the default scheduler"
    reserved = loop_cpu()
    if reserved is not None:
        os.sched_setaffinity(0, {reserved})
    return f"SCHED_FIFO priority {priority}" + (f" on cpu {reserved}" if reserved is not None else "")
