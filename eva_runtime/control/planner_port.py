"""The planner as the control loop sees it: submit a request, poll for an answer, never block.

`PlannerPort` is that contract. `PlannerProcess` (a world model in its own process, msgpack over a pipe) is the
deployed implementation; `InProcessPlanner` runs a plan function in the caller's process and delivers its answer
once an injected clock says the answer's latency has passed, so the loop's behaviour around slow, rejected, lost
or dead planners is tested on simulated time, without a process or a sleep.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from eva_runtime.control.planner import PlanOutcome, PlanRequest

__all__ = ["InProcessPlanner", "PlannerPort"]


@runtime_checkable
class PlannerPort(Protocol):
    @property
    def ready(self) -> bool:
        """Accepting requests (a starting or restarting planner is not)."""

    @property
    def alive(self) -> bool:
        """False once the planner is gone (a dead process): the loop holds and may restart it."""

    def submit(self, request_id: int, request: PlanRequest) -> bool:
        """Send a request without waiting; False when it cannot be sent."""

    def poll(self) -> tuple[int, PlanOutcome] | None:
        """(request id, outcome) when an answer is there, else None; never blocks."""


class InProcessPlanner:
    """A planner port over `plan(request) -> PlanOutcome`, answering after `latency_s(request)` on `clock`.

    Like the process, only the newest request is answered (a request submitted while another is pending
    replaces it). `die()` makes it a dead planner; `restart()` brings it back, ready at once."""

    def __init__(
        self,
        plan: Callable[[PlanRequest], PlanOutcome],
        clock: Callable[[], float],
        latency_s: float | Callable[[PlanRequest], float] = 0.0,
    ) -> None:
        self._plan = plan
        self._clock = clock
        self._latency = latency_s if callable(latency_s) else (lambda _request, value=latency_s: value)
        self._pending: tuple[float, int, PlanOutcome] | None = None
        self._alive = True
        self.requests: list[PlanRequest] = []  # every request received, for the tests' assertions

    @property
    def ready(self) -> bool:
        return self._alive

    @property
    def alive(self) -> bool:
        return self._alive

    def submit(self, request_id: int, request: PlanRequest) -> bool:
        if not self._alive:
            return False
        self.requests.append(request)
        self._pending = (self._clock() + self._latency(request), request_id, self._plan(request))
        return True

    def poll(self) -> tuple[int, PlanOutcome] | None:
        if not self._alive or self._pending is None or self._clock() < self._pending[0]:
            return None
        _, request_id, outcome = self._pending
        self._pending = None
        return request_id, outcome

    def die(self) -> None:
        self._alive = False
        self._pending = None

    def restart(self) -> None:
        self._alive = True
