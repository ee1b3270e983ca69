"""The planner in its own process, so the control loop never waits on a world model.

The parent sends requests and receives outcomes as msgpack bytes over a pipe (no pickle); it never blocks:
`submit` writes, `poll` reads only when an answer is there, `alive` says whether the process still runs. If
the process dies or stops answering, the control loop sees no plan and holds; `restart` brings a planner back.
The child builds its world model and IDM decoder from a JSON spec (paths and numbers only).
"""

from __future__ import annotations

import json
import multiprocessing
from typing import Any

import numpy as np

from eva_runtime.control.executor import Plan
from eva_runtime.control.planner import PlanOutcome, PlanRequest
from eva_runtime.wire import pack, unpack

__all__ = ["PlannerProcess", "build_planner", "decode_state", "encode_state"]


def encode_state(state: object | None) -> dict | None:
    """Privileged simulator state (OracleState) as plain arrays and numbers."""
    if state is None:
        return None
    snapshot, filter_state = state.snapshot, state.filter_state
    return {
        "sim_state": snapshot.state,
        "sim_time": snapshot.time,
        "step": state.step,
        "filter": {
            "time": filter_state.time,
            "command": filter_state.command,
            "velocity": filter_state.velocity,
            "target": filter_state.target,
            "fault": filter_state.fault,
        },
    }


def decode_state(data: dict | None) -> object | None:
    if data is None:
        return None
    from eva_runtime.safety import FilterState
    from eva_runtime.sim.bimanual_sim import SimSnapshot
    from eva_runtime.world_model.oracle import OracleState

    f = data["filter"]
    filter_state = FilterState(f["time"], f["command"], f["velocity"], f["target"], f["fault"])
    return OracleState(SimSnapshot(data["sim_state"], data["sim_time"]), int(data["step"]), filter_state)


def build_planner(spec: dict[str, Any]):
    """Planner from a spec: {"idm", "embodiment", "world_model": {...}, "settings": {...}}."""
    from eva_runtime.control.planner import Planner, PlannerSettings
    from eva_runtime.embodiment import load_embodiment
    from eva_runtime.idm.decoder import IdmDecoder
    from eva_runtime.reward import RewardConfig

    embodiment = load_embodiment(spec["embodiment"])
    decoder = IdmDecoder(spec["idm"], spec.get("idm_sha256"))
    from eva_runtime.world_model.factory import build_world_model

    world_model = build_world_model(
        spec["world_model"],
        embodiment=embodiment,
        fps=decoder.fps,
        cameras=decoder.config.cameras,
        image_size=decoder.config.image_size,
    )
    reward = RewardConfig.from_embodiment(embodiment, decoder.fps, **spec.get("reward", {}))
    planner = Planner(world_model, decoder, reward, PlannerSettings(**spec.get("settings", {})))
    faults = spec.get("fault_injection")
    return _FaultInjectingPlanner(planner, **faults) if faults else planner


class _FaultInjectingPlanner:
    """Test instrument: a planner that is slow (`delay_s`) or returns rollouts that decode to NaN (`nan`)."""

    def __init__(self, planner, delay_s: float = 0.0, nan: bool = False) -> None:
        self.planner, self.delay_s, self.nan = planner, delay_s, nan
        self.world_model = planner.world_model

    def plan(self, request: PlanRequest) -> PlanOutcome:
        import time

        time.sleep(self.delay_s)
        if self.nan:
            return PlanOutcome(None, (float("nan"),), self.delay_s, "no finite rollout (injected NaN)")
        return self.planner.plan(request)


def _serve(connection, spec_json: str) -> None:
    import time

    planner = build_planner(json.loads(spec_json))
    warm_up = getattr(planner.world_model, "warm_up", None)
    if warm_up is not None:
        warm_up()  # build simulators and renderers now, not inside the first plan's latency
    connection.send_bytes(pack({"ready": True, "model_id": planner.world_model.model_id}))
    while True:
        try:
            message = unpack(connection.recv_bytes())
            while connection.poll(0):  # only the newest request matters; older ones are stale
                message = unpack(connection.recv_bytes())
        except EOFError:
            return
        request = PlanRequest(
            time=message["time"],
            frames=message["frames"],
            instruction=message["instruction"],
            seed=message["seed"],
            privileged_state=decode_state(message["state"]),
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
        plan = outcome.plan
        connection.send_bytes(
            pack(
                {
                    "id": message["id"],
                    "scores": list(outcome.scores),
                    "seconds": outcome.seconds,
                    "reason": outcome.reason,
                    "plan": None
                    if plan is None
                    else {
                        "start_time": plan.start_time,
                        "fps": plan.fps,
                        "actions": plan.actions,
                        "model_id": plan.model_id,
                        "score": plan.score,
                        "attempts": plan.attempts,
                        "rollout": plan.metadata.get("rollout", {}),
                    },
                }
            )
        )


class PlannerProcess:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec_json = json.dumps(spec)
        self._process = None
        self._connection = None
        self.ready = False
        self.model_id = ""

    def start(self, wait_s: float | None = 120.0) -> None:
        """Start the process; with `wait_s` block until it is ready (raise if not), with None return at once
        (the control loop keeps holding until `ready`; this is how a planner is brought back mid-episode)."""
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe(duplex=True)
        self._process = context.Process(target=_serve, args=(child, self.spec_json), daemon=True)
        self._process.start()
        child.close()
        self._connection = parent
        self.ready = False
        if wait_s is None:
            return
        if not parent.poll(wait_s):
            self.kill()
            raise RuntimeError(f"the planner process did not start within {wait_s} s")
        self._read_hello(unpack(parent.recv_bytes()))

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
                    "state": encode_state(request.privileged_state),
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
                metadata={"rollout": data["rollout"]} if data.get("rollout") else {},
            )
        return message["id"], PlanOutcome(plan, tuple(message["scores"]), message["seconds"], message["reason"])

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.join(5)
        if self._connection is not None:
            self._connection.close()
        self._process = None
        self._connection = None
        self.ready = False

    close = kill
