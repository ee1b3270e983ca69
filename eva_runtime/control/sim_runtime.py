"""Wiring of the runtime to the simulated robot: the planner spec from a verified bundle, and the oracle's view.

Shared by `eva run` and the control-loop benchmark so both run exactly the same configuration.
"""

from __future__ import annotations

from eva_runtime.bundle import Bundle
from eva_runtime.control.planner import PlannerSettings
from eva_runtime.control.planner_process import PlannerSpec
from eva_runtime.robots.mujoco_robot import MujocoRobot

__all__ = ["oracle_state_source", "planner_spec", "world_model_spec"]


def planner_spec(bundle: Bundle, task: str, attempts: int = 2, threshold: float = 0.0) -> PlannerSpec:
    """The planner process's spec: IDM (with its verified hash), embodiment, world model, reward from the bundle."""
    reward = bundle.manifest.reward
    return PlannerSpec(
        idm=str(bundle.idm_path),
        idm_sha256=bundle.hashes()["idm"],
        embodiment=str(bundle.files["embodiment"]),
        world_model=world_model_spec(bundle, task),
        reward={"p0": reward.p0, "form": reward.form, "gamma": reward.gamma},
        settings=PlannerSettings(horizon=bundle.manifest.world_model.horizon, attempts=attempts, threshold=threshold),
    )


def world_model_spec(bundle: Bundle, task: str, threads: int | None = 1) -> dict:
    """The factory's spec for the bundle's world model (paths resolved, adapters as verified bundle files).

    `threads`: torch CPU threads for a learned model; 1 when it shares the cores with the control loop.
    """
    entry = bundle.manifest.world_model
    if entry.kind == "oracle":
        return {"kind": "oracle", "task": task}
    sampling = entry.sampling.model_dump() if entry.sampling is not None else {}
    return {
        "kind": entry.kind,
        "base": str(bundle.world_model_base),
        "base_sha256": entry.base_sha256,
        "adapters": [{"name": role, "path": str(bundle.files[role]), "weight": 1.0} for role in entry.adapters],
        "fps": entry.fps,
        "model_id": entry.id,
        "threads": threads,
        **sampling,
    }


def oracle_state_source(robot: MujocoRobot):
    """What the oracle world model reads from the live simulation at each plan request (a test instrument)."""
    from eva_runtime.world_model.oracle import OracleState

    def state(progress: int, filter_state: object) -> OracleState:
        return OracleState(robot.sim.snapshot(), progress, filter_state)

    return state
