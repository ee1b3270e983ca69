"""The steadier loop's OS requests: the garbage collector is off inside an episode and restored after it, the
planner process is niced and kept off the loop's core, and real-time scheduling is granted or its refusal reported
(in a subprocess each, since they change the process they run in)."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap

import pytest

from eva_runtime.control.realtime import PLANNER_NICE, gc_paused
from tests.conftest import REPO


def run_python(code: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_no_collection_runs_inside_the_block_and_the_collector_comes_back_after() -> None:
    collections: list[str] = []

    def watch(phase: str, info: dict) -> None:
        if phase == "start":
            collections.append(phase)

    assert gc.isenabled()
    with gc_paused():
        gc.callbacks.append(watch)
        try:
            assert not gc.isenabled() and gc.get_freeze_count() > 0
            garbage = []
            for _ in range(200_000):  # far past the threshold that would trigger a generation-0 collection
                cycle: list = []
                cycle.append(cycle)
                garbage.append(cycle)
            del garbage
            assert collections == []
        finally:
            gc.callbacks.remove(watch)
    assert gc.isenabled() and gc.get_freeze_count() == 0


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="affinity is Linux-only")
def test_the_planner_placement_lowers_priority_and_leaves_the_loops_core() -> None:
    result = run_python(
        """
        import json, os
        from eva_runtime.control.realtime import loop_cpu, planner_cpu_placement
        before, reserved = os.nice(0), loop_cpu()
        done = planner_cpu_placement()
        print(json.dumps({"before": before, "after": os.nice(0), "reserved": reserved,
                          "cpus": sorted(os.sched_getaffinity(0)), "done": done}))
        """
    )
    assert result["after"] == min(result["before"] + PLANNER_NICE, 19) and f"nice +{PLANNER_NICE}" in result["done"]
    if result["reserved"] is not None:  # enough cores: the loop keeps its own
        assert result["reserved"] not in result["cpus"] and result["cpus"]


def test_real_time_scheduling_is_granted_or_its_refusal_reported() -> None:
    result = run_python(
        """
        import json, os
        from eva_runtime.control.realtime import request_realtime
        answer = request_realtime(10)
        flag = getattr(os, "SCHED_RESET_ON_FORK", 0)
        policy = os.sched_getscheduler(0) & ~flag if hasattr(os, "sched_getscheduler") else None
        fifo = getattr(os, "SCHED_FIFO", -1)
        print(json.dumps({"answer": answer, "fifo": policy == fifo}))
        """
    )
    if result["fifo"]:
        assert result["answer"].startswith("SCHED_FIFO priority 10")
    else:
        assert "not permitted" in result["answer"] or "not available" in result["answer"]


def test_a_real_time_run_restores_the_scheduler_after_it() -> None:
    result = run_python(
        """
        import json, os, subprocess, sys
        from eva_runtime.control.realtime import realtime_loop
        before = (os.sched_getscheduler(0), sorted(os.sched_getaffinity(0)))
        with realtime_loop(10) as granted:
            inside = os.sched_getscheduler(0) & ~getattr(os, "SCHED_RESET_ON_FORK", 0)
            child = subprocess.run([sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"],
                                   capture_output=True, text=True, check=True).stdout.strip()
        after = (os.sched_getscheduler(0), sorted(os.sched_getaffinity(0)))
        print(json.dumps({"granted": granted, "inside": inside, "fifo": os.SCHED_FIFO, "child": int(child),
                          "other": os.SCHED_OTHER, "before": before, "after": after}))
        """
    )
    assert result["after"] == result["before"]
    assert result["child"] == result["other"]  # a process started from the loop (the planner) is never real-time
    if result["granted"].startswith("SCHED_FIFO"):
        assert result["inside"] == result["fifo"] != result["before"][0]
    else:
        assert "not permitted" in result["granted"] or "not available" in result["granted"]
