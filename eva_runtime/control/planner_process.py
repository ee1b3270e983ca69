"""The planner in its own process, so the control loop never waits on a world model.

The parent sends requests and receives outcomes as msgpack bytes over a pipe (no pickle); it never blocks:
`submit` writes, `poll` reads only when an answer is there, `alive` says whether the process still runs. If
the process dies or stops answering, the control loop sees no plan and holds; `restart` brings a planner back.
The child builds its world model and IDM decoder from a JSON spec (paths and numbers only).

The child never outlives its parent: it exits within 0.1 s of the parent's death, however the parent died
(`process_lifetime.exit_with_parent`), besides on the pipe's end-of-file while it waits for a request.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eva_runtime.control.executor import Plan
from eva_runtime.control.planner import Planner, PlannerSettings, PlanOutcome, PlanRequest
from eva_runtime.wire import pack, unpack

__all__ = ["PlannerProcess", "PlannerSpec", "build_planner"]


@dataclass(frozen=True)
class PlannerSpec:
    """Everything the planner process builds its planner from: paths, hashes and numbers, no live objects.

    Crosses the process boundary as JSON and is validated on both sides (unknown keys and bad settings are
    errors that name them)."""

    idm: str
    embodiment: str
    world_model: Mapping[str, Any]  # the world-model factory's spec (world_model/factory.py)
    settings: PlannerSettings = field(default_factory=PlannerSettings)
    idm_sha256: str | None = None
    reward: Mapping[str, Any] = field(default_factory=dict)  # RewardConfig.from_embodiment keywords
    # Niced (and off the loop's core on 4+ cores): the loop over the planner. Off by default: a niced planner also
    # loses to every other busy process (drivers, a training job) and its plans come late; `eva run` raises the
    # loop to SCHED_FIFO instead (control/realtime.py). The planner itself is never real-time.
    low_priority: bool = False

    def to_json(self) -> str:
        values = dataclasses.asdict(self)
        values["world_model"], values["reward"] = dict(self.world_model), dict(self.reward)
        return json.dumps(values)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PlannerSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"planner spec: unknown keys {unknown} (known: {sorted(known)})")
        values = dict(values)
        settings = values.get("settings", {})
        if not isinstance(settings, PlannerSettings):
            fields = {f.name for f in dataclasses.fields(PlannerSettings)}
            if sorted(set(settings) - fields):
                raise ValueError(f"planner spec: settings: unknown keys {sorted(set(settings) - fields)}")
            values["settings"] = PlannerSettings(**settings)
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> PlannerSpec:
        return cls.from_dict(json.loads(text))

    def merged(self, world_model: Mapping[str, Any] | None = None, settings: Mapping[str, Any] | None = None):
        """A copy with keys merged into the world-model spec and replaced in the planner settings."""
        return dataclasses.replace(
            self,
            world_model={**self.world_model, **dict(world_model or {})},
            settings=dataclasses.replace(self.settings, **dict(settings or {})),
        )


def build_planner(spec: PlannerSpec):
    """The planner a spec describes: verified IDM, embodiment, world model (from the factory), reward."""
    from eva_runtime.embodiment import load_embodiment
    from eva_runtime.idm.decoder import IdmDecoder
    from eva_runtime.reward import RewardConfig
    from eva_runtime.world_model.factory import build_world_model

    embodiment = load_embodiment(spec.embodiment)
    decoder = IdmDecoder(spec.idm, spec.idm_sha256)
    world_model = build_world_model(
        dict(spec.world_model),
        embodiment=embodiment,
        fps=decoder.fps,
        cameras=decoder.config.cameras,
        image_size=decoder.config.image_size,
    )
    reward = RewardConfig.from_embodiment(embodiment, decoder.fps, **spec.reward)
    return Planner(world_model, decoder, reward, spec.settings)


def _serve(connection, spec_json: str, parent_pid: int) -> None:
    import time

    from eva_runtime.process_lifetime import exit_with_parent

    exit_with_parent(parent_pid)  # first: building the world model can take minutes
    spec = PlannerSpec.from_json(spec_json)
    from eva_runtime.control.realtime import leave_realtime

    leave_realtime()  # never real-time, whatever started it: it computes flat out
    if spec.low_priority:
        from eva_runtime.control.realtime import planner_cpu_placement

        planner_cpu_placement()  # what it could do is not reported back: the bench measures the effect
    planner = build_planner(spec)
    warm_up = getattr(planner.world_model, "warm_up", None)
    if warm_up is not None:
        warm_up()  # build simulators and renderers now, not inside the first plan's latency
    requests = _NewestRequest(connection)
    connection.send_bytes(pack({"ready": True, "model_id": planner.world_model.model_id}))
    while True:
        message = requests.take()
        if message is None:  # the runtime closed the pipe: its run is over, not a fault
            return
        request = PlanRequest(
            time=message["time"],
            frames=message["frames"],
            instruction=message["instruction"],
            seed=message["seed"],
            privileged_state=message["state"],  # the world model that reads it decodes it
            committed=message.get("committed"),
        )
        began = time.perf_counter()
        try:
            outcome = planner.plan(request)
        except Exception as error:  # a rejection makes the loop hold; a dead planner would hold it without a reason
            from eva_runtime.world_model.serving.client import WorldModelUnavailable

            reason = f"planner failed: {type(error).__name__}: {error}"
            if isinstance(error, WorldModelUnavailable):
                reason = f"world model unavailable: {error}"
            outcome = PlanOutcome(None, (), time.perf_counter() - began, reason)
        try:
            connection.send_bytes(pack(_reply(message["id"], outcome)))
        except OSError:  # BrokenPipeError: the runtime closed the pipe (PlannerProcess.close) while we planned
            return


class _NewestRequest:
    """Requests read on a thread of their own, the newest kept (older ones are stale). The planner's thread then
    never has to read while it writes: a reply larger than the pipe's buffer (a plan's imagined frames) blocks its
    writer until the runtime reads it, and a runtime writing a large request at the same moment (a new episode's)
    would wait on a reader that is itself waiting; with this thread the request is always read."""

    def __init__(self, connection) -> None:
        import threading

        self._connection = connection
        self._newest: dict | None = None
        self._closed = False
        self._ready = threading.Condition()
        threading.Thread(target=self._read, name="planner-requests", daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                message = unpack(self._connection.recv_bytes())
            except (EOFError, ConnectionResetError, OSError):
                message = None
            with self._ready:
                if message is None:
                    self._closed = True
                else:
                    self._newest = message
                self._ready.notify()
            if message is None:
                return

    def take(self) -> dict | None:
        """The newest unanswered request, waiting for one; None once the pipe is closed."""
        with self._ready:
            self._ready.wait_for(lambda: self._newest is not None or self._closed)
            message, self._newest = self._newest, None
            return message


def _reply(request_id: int, outcome: PlanOutcome) -> dict:
    """An outcome as the wire carries it (typed numpy buffers, no pickle)."""
    plan = outcome.plan
    wired = None
    if plan is not None:
        wired = {
            "start_time": plan.start_time,
            "fps": plan.fps,
            "actions": plan.actions,
            "model_id": plan.model_id,
            "score": plan.score,
            "attempts": plan.attempts,
            "rollout": plan.metadata.get("rollout", {}),
            "imagined": plan.metadata.get("imagined", {}),
        }
    return {
        "id": request_id,
        "scores": list(outcome.scores),
        "seconds": outcome.seconds,
        "reason": outcome.reason,
        "plan": wired,
    }


class PlannerProcess:
    def __init__(self, spec: PlannerSpec | Mapping[str, Any]) -> None:
        self.spec = spec if isinstance(spec, PlannerSpec) else PlannerSpec.from_dict(spec)
        self.spec_json = self.spec.to_json()
        self._process = None
        self._connection = None
        self.ready = False
        self.model_id = ""

    def start(self, wait_s: float | None = 120.0) -> None:
        """Start the process; with `wait_s` block until it is ready (raise if not), with None return at once
        (the control loop keeps holding until `ready`; this is how a planner is brought back mid-episode)."""
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe(duplex=True)
        self._process = context.Process(target=_serve, args=(child, self.spec_json, os.getpid()), daemon=True)
        self._process.start()
        child.close()
        self._connection = parent
        self.ready = False
        if wait_s is None:
            return
        try:
            if not parent.poll(wait_s):
                self.kill()
                raise RuntimeError(f"the planner process did not start within {wait_s} s")
            hello = unpack(parent.recv_bytes())
        except (EOFError, OSError):  # it died while starting, or `kill` (another thread) stopped the start
            self.kill()
            raise RuntimeError(
                "the planner process ended before it was ready (stopped, or it failed: its error is in the log)"
            ) from None
        self._read_hello(hello)

    def _read_hello(self, message: dict) -> None:
        self.ready = True
        self.model_id = message.get("model_id", "")

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def submit(self, request_id: int, request: PlanRequest) -> bool:
        """Send a request; False when the planner is gone (the caller holds and may restart it)."""
        if self._connection is None or not self.alive or not self.ready:
            return False
        try:
            self._send(request_id, request)
        except (BrokenPipeError, EOFError, OSError):
            return False
        return True

    def _send(self, request_id: int, request: PlanRequest) -> None:
        self._connection.send_bytes(
            pack(
                {
                    "id": request_id,
                    "time": request.time,
                    "frames": dict(request.frames),
                    "instruction": request.instruction,
                    "seed": request.seed,
                    "state": _to_wire(request.privileged_state),
                    "committed": dict(request.committed) if request.committed else None,
                }
            )
        )

    def poll(self) -> tuple[int, PlanOutcome] | None:
        """A finished outcome if one is waiting, else None; never blocks. A dead planner also gives None."""
        if self._connection is None:
            return None
        try:
            if not self._connection.poll(0):
                return None
            message = unpack(self._connection.recv_bytes())
        except (EOFError, OSError):
            return None
        if message.get("ready"):
            self._read_hello(message)
            return None
        data = message["plan"]
        plan = None
        if data is not None:
            plan = Plan(
                start_time=data["start_time"],
                fps=data["fps"],
                actions=np.asarray(data["actions"], dtype=np.float64),
                model_id=data["model_id"],
                score=data["score"],
                latency_s=message["seconds"],
                attempts=data["attempts"],
                metadata={key: data[key] for key in ("rollout", "imagined") if data.get(key)},
            )
        return message["id"], PlanOutcome(plan, tuple(message["scores"]), message["seconds"], message["reason"])

    def kill(self) -> None:
        """Kill the process and close the pipe; safe from another thread while `start` waits (start then fails)."""
        process, connection = self._process, self._connection
        self._process = self._connection = None
        self.ready = False
        if process is not None and process.pid is not None:  # (pid None: not started yet, nothing to kill)
            process.kill()
            process.join(5)  # reaped; its end of the pipe closes, which wakes a `start` waiting on it
        if connection is not None:
            connection.close()

    def close(self, grace_s: float = 3.0) -> None:
        """End the process: close the pipe, which ends its loop (a clean exit that releases what it made, e.g.
        the semaphores of its progress bars, which a kill leaks), then kill it if it is still busy after
        `grace_s` (in the middle of a rollout)."""
        process, connection = self._process, self._connection
        if connection is not None:
            connection.close()
            self._connection = None
        if process is not None and process.pid is not None:
            process.join(grace_s)
        self.kill()


def _to_wire(context: object | None) -> dict | None:
    if context is None:
        return None
    if not callable(getattr(context, "to_wire", None)):
        raise TypeError(
            f"privileged context {type(context).__name__} cannot cross into the planner process (no to_wire)"
        )
    return context.to_wire()
