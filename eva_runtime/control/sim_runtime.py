"""Wiring of the runtime to the simulated robot: the planner spec from a verified bundle, and the oracle's view.

Shared by `eva run` and the control-loop benchmark so both run exactly the same configuration.
"""

from __future__ import annotations

from eva_runtime.bundle import Bundle
from eva_runtime.robots.mujoco_robot import MujocoRobot

__all__ = ["oracle_state_source", "planner_spec"]


def planner_spec(bundle: Bundle, task: str, attempts: int = 2, threshold: float = 0.0) -> dict:
    """The planner process's spec: IDM (with its verified hash), embodiment, world model, reward from the bundle."""
    reward = bundle.manifest.reward
    return {
        "idm": str(bundle.idm_path),
        "idm_sha256": bundle.hashes()["idm"],
        "embodiment": str(bundle.files["embodiment"]),
        "world_model": {"kind": bundle.manifest.world_model.kind, "task": task},
        "reward": {"p0": reward.p0, "form": reward.form, "gamma": reward.gamma},
        "settings": {"horizon": bundle.manifest.world_model.horizon, "attempts": attempts, "threshold": threshold},
    }


def oracle_state_source(robot: MujocoRobot):
    """What the oracle world model reads from the live simulation at each plan request (a test instrument)."""
    from eva_runtime.world_model.oracle import OracleState

    def state(progress: int, filter_state: object) -> OracleState:
        return OracleState(robot.sim.snapshot(), progress, filter_state)

    return state
