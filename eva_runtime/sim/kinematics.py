"""Arm kinematics on the MuJoCo model: tool-centre-point pose and damped-least-squares inverse kinematics.

Works on its own `MjData` so solving never disturbs the simulation being stepped. Poses are a position (3) and
a rotation matrix (3x3) of the `<side>_tcp` site (between the fingertip pads; x = approach, y = finger axis).
"""

from __future__ import annotations

import numpy as np

from eva_runtime.sim.bimanual_sim import ARM_JOINTS

__all__ = ["ArmKinematics", "rotation_error"]


def rotation_error(current: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Small-angle rotation vector taking `current` to `target` (both 3x3, world frame)."""
    return 0.5 * sum(np.cross(current[:, i], target[:, i]) for i in range(3))


class ArmKinematics:
    def __init__(self, model, side: str) -> None:
        import mujoco

        self._mujoco = mujoco
        self.model = model
        self.data = mujoco.MjData(model)
        joint_ids = [model.joint(f"vx300s_{side}/{name}").id for name in ARM_JOINTS]
        self.qpos_index = np.array([model.jnt_qposadr[j] for j in joint_ids])
        self.dof_index = np.array([model.jnt_dofadr[j] for j in joint_ids])
        self.low = np.array([model.jnt_range[j][0] for j in joint_ids])
        self.high = np.array([model.jnt_range[j][1] for j in joint_ids])
        self.site = model.site(f"{side}_tcp").id
        self.posture_weight = np.array([0.0, 0.0, 0.0, 1e-2, 0.0, 1e-2])
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def tcp_pose(self, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.data.qpos[self.qpos_index] = joints
        self._mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.site].copy(), self.data.site_xmat[self.site].reshape(3, 3).copy()

    def solve(
        self,
        position: np.ndarray,
        rotation: np.ndarray,
        start: np.ndarray,
        iterations: int = 60,
        damping: float = 1e-3,
        tolerance: float = 1e-5,
        posture_iterations: int = 0,
    ) -> tuple[np.ndarray, float]:
        """Joint angles reaching the pose, warm-started at `start`; returns (joints, final error norm).

        During the first `posture_iterations` a weak pull keeps the two roll joints near zero: at the start pose
        forearm_roll and wrist_rotate are almost the same axis, and without it a solution can drift along that
        near-null direction into a 180-degree roll-and-unroll. The remaining iterations solve without the pull,
        so the result is exact.
        """
        mujoco = self._mujoco
        joints = np.clip(np.array(start, dtype=float), self.low, self.high)
        error_norm = np.inf
        for iteration in range(iterations):
            current_position, current_rotation = self.tcp_pose(joints)
            error = np.r_[position - current_position, rotation_error(current_rotation, rotation)]
            error_norm = float(np.linalg.norm(error))
            pull = self.posture_weight if iteration < posture_iterations else np.zeros(6)
            if error_norm < tolerance and not pull.any():
                break
            mujoco.mj_comPos(self.model, self.data)
            mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.site)
            jacobian = np.r_[self._jacp[:, self.dof_index], self._jacr[:, self.dof_index]]
            normal = jacobian.T @ jacobian + np.diag(damping + pull)
            step = np.linalg.solve(normal, jacobian.T @ error - pull * joints)
            joints = np.clip(joints + step, self.low, self.high)
        return joints, error_norm
