"""BimanualSim: physics stepping, joint state, object poses, contacts and camera rendering of one MuJoCo scene.

This is the only module that touches `MjData` (the physics one, and `SnapshotCameras`' own copy for rendering
on another thread). Joint vectors use the embodiment layout (14 values, grippers
normalised 0 = closed .. 1 = open, as the gym-aloha action); the two finger slides of each gripper are driven
from the one normalised value. Control runs at 50 Hz by default: each `apply` holds the targets for 10 physics
steps of 2 ms (other rates, e.g. 200 Hz for timing benchmarks, use whole physics steps of at most 2 ms).

A camera asked for a frame that is not square keeps its horizontal field of view and sees less vertically: the
frame is the centre of a square render as wide as the frame (MuJoCo's `fovy` is vertical, so a plain wide
render would see more table at the sides instead). This is how a shorter `cam_high` drops the rows above and
below the table that the top camera sees as black, without a second camera in the scene.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from eva_runtime.sim.scene import CAMERA_MAP, build_model, import_mujoco

__all__ = [
    "ARM_JOINTS",
    "BimanualSim",
    "SimSnapshot",
    "SnapshotCameras",
    "centre_crop",
    "finger_from_gripper",
    "gripper_from_finger",
    "steps_per_frame",
]

ARM_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
FINGER_CLOSED, FINGER_OPEN = 0.01844, 0.05800  # finger slide (m) at normalised 0 and 1 (gym-aloha constants)
SCENE_TIMESTEP = 0.002  # the scenes' physics step (MuJoCo default); 10 of them make gym-aloha's 50 Hz control
# gym-aloha's start pose, grippers open inside the usable range (0.065 .. 0.975).
START_POSE = np.array([0.0, -0.96, 1.16, 0.0, -0.3, 0.0, 0.95] * 2)


def steps_per_frame(control_rate_hz: float, fps: float, what: str = "fps") -> int:
    """Control ticks between two frames at `fps`; ValueError unless `fps` divides the control rate, since every
    frame of a recording, a rendered future or a played plan falls on a control tick (never interpolated)."""
    stride = control_rate_hz / fps
    if abs(stride - round(stride)) > 1e-9 or round(stride) < 1:
        raise ValueError(f"{what} {fps} must divide the control rate {control_rate_hz} Hz (frames fall on its ticks)")
    return round(stride)


def centre_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """The centred (height, width) part of an (H, W, ...) image at least that large (a copy)."""
    top, left = (image.shape[0] - height) // 2, (image.shape[1] - width) // 2
    if top < 0 or left < 0:
        raise ValueError(f"cannot crop {height}x{width} from a {image.shape[0]}x{image.shape[1]} image")
    return image[top : top + height, left : left + width].copy()


def _square(height: int, width: int) -> tuple[int, int]:
    side = max(height, width)
    return side, side


def finger_from_gripper(value: np.ndarray | float) -> np.ndarray:
    return np.asarray(value) * (FINGER_OPEN - FINGER_CLOSED) + FINGER_CLOSED


def gripper_from_finger(value: np.ndarray | float) -> np.ndarray:
    return (np.asarray(value) - FINGER_CLOSED) / (FINGER_OPEN - FINGER_CLOSED)


def _make_renderer(mujoco, model, height: int, width: int):
    """An off-screen renderer without shadows and reflections, or an error saying which GL backend failed."""
    try:
        renderer = mujoco.Renderer(model, height, width)
    except Exception as error:  # GL context creation fails in many ways, all meaning "no GL here"
        backend = os.environ.get("MUJOCO_GL")
        raise RuntimeError(
            f"cannot create an off-screen MuJoCo renderer with MUJOCO_GL={backend} ({error}). "
            "Use MUJOCO_GL=egl (the default here) or MUJOCO_GL=osmesa with libosmesa6 installed."
        ) from error
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
    return renderer


@dataclass(frozen=True)
class SimSnapshot:
    """Full integration state, enough to restore the simulation exactly (used by the oracle world model)."""

    state: np.ndarray
    time: float


class BimanualSim:
    def __init__(self, task: str, control_rate_hz: float = 50.0) -> None:
        self._mujoco = import_mujoco()
        self.task = task
        self.model = build_model(task)
        # Whole physics steps per control period; where 1/rate is not a multiple of the scene's step (200 Hz),
        # the physics step shrinks to fit rather than the control period drifting.
        period = 1.0 / control_rate_hz
        self.substeps = max(1, int(np.ceil(period / SCENE_TIMESTEP - 1e-9)))
        if abs(self.substeps * SCENE_TIMESTEP - period) > 1e-12:
            self.model.opt.timestep = period / self.substeps
        self.data = self._mujoco.MjData(self.model)
        model = self.model
        self._arm_qpos: list[int] = []
        self._arm_dof: list[int] = []
        self._finger_qpos: list[int] = []
        self._finger_dof: list[int] = []
        self._ctrl_index: list[int] = []  # actuator per arm joint, in embodiment order (grippers excluded)
        self._finger_ctrl: list[tuple[int, int]] = []
        for side in ("left", "right"):
            for joint in ARM_JOINTS:
                jid = model.joint(f"vx300s_{side}/{joint}").id
                self._arm_qpos.append(int(model.jnt_qposadr[jid]))
                self._arm_dof.append(int(model.jnt_dofadr[jid]))
                self._ctrl_index.append(self._actuator_for(jid))
            left_finger = model.joint(f"vx300s_{side}/left_finger").id
            right_finger = model.joint(f"vx300s_{side}/right_finger").id
            self._finger_qpos.append(int(model.jnt_qposadr[left_finger]))
            self._finger_dof.append(int(model.jnt_dofadr[left_finger]))
            self._finger_ctrl.append((self._actuator_for(left_finger), self._actuator_for(right_finger)))
        self._renderers: dict[tuple[int, int], object] = {}
        self.reset(START_POSE, {})

    def _actuator_for(self, joint_id: int) -> int:
        matches = np.flatnonzero(self.model.actuator_trnid[:, 0] == joint_id)
        if matches.size != 1:
            raise RuntimeError(f"scene {self.task!r}: expected one actuator on joint {self.model.joint(joint_id).name}")
        return int(matches[0])

    # --- state ------------------------------------------------------------------------------------------------
    def reset(self, pose: np.ndarray, objects: dict[str, np.ndarray]) -> None:
        """Put the arms at `pose` (14) at rest, place free bodies (name -> [x y z qw qx qy qz]), time 0."""
        mujoco = self._mujoco
        mujoco.mj_resetData(self.model, self.data)
        self._write_joints(self.data.qpos, pose)
        for body, placement in objects.items():
            joint = self.model.body(body).jntadr[0]
            address = self.model.jnt_qposadr[joint]
            self.data.qpos[address : address + 7] = placement
        self._set_ctrl(pose)
        mujoco.mj_forward(self.model, self.data)

    def _write_joints(self, qpos: np.ndarray, pose: np.ndarray) -> None:
        arm = np.r_[pose[0:6], pose[7:13]]
        qpos[self._arm_qpos] = arm
        for side, address in enumerate(self._finger_qpos):
            finger = finger_from_gripper(pose[6 + 7 * side])
            qpos[address] = finger
            qpos[address + 1] = -finger

    def _set_ctrl(self, command: np.ndarray) -> None:
        self.data.ctrl[self._ctrl_index] = np.r_[command[0:6], command[7:13]]
        for side, (left, right) in enumerate(self._finger_ctrl):
            finger = finger_from_gripper(command[6 + 7 * side])
            self.data.ctrl[left] = finger
            self.data.ctrl[right] = -finger

    def apply(self, command: np.ndarray) -> None:
        """Hold `command` (14 joint targets) for one 20 ms control period."""
        self._set_ctrl(command)
        for _ in range(self.substeps):
            self._mujoco.mj_step(self.model, self.data)
        # mj_step leaves positions, contacts and sensors one substep behind qpos; recompute them so cameras,
        # contacts and a restored snapshot all describe the same instant.
        self._mujoco.mj_forward(self.model, self.data)

    @property
    def time(self) -> float:
        return float(self.data.time)

    @property
    def control_period_s(self) -> float:
        return self.substeps * float(self.model.opt.timestep)

    def joint_positions(self) -> np.ndarray:
        qpos = self.data.qpos
        out = np.empty(14)
        out[0:6] = qpos[self._arm_qpos[:6]]
        out[7:13] = qpos[self._arm_qpos[6:]]
        out[[6, 13]] = gripper_from_finger(qpos[self._finger_qpos])
        return out

    def joint_velocities(self) -> np.ndarray:
        qvel = self.data.qvel
        out = np.empty(14)
        out[0:6] = qvel[self._arm_dof[:6]]
        out[7:13] = qvel[self._arm_dof[6:]]
        out[[6, 13]] = qvel[self._finger_dof] / (FINGER_OPEN - FINGER_CLOSED)
        return out

    def joint_efforts(self) -> np.ndarray:
        """Actuator output in the embodiment layout: arm joints in N m, each gripper its left finger's force in N.

        Valid right after `apply`/`reset`: both end in mj_forward, which recomputes the forces for the held command.
        """
        force = self.data.actuator_force
        arm = force[self._ctrl_index]
        out = np.empty(14)
        out[0:6] = arm[:6]
        out[7:13] = arm[6:]
        out[[6, 13]] = force[[left for left, _ in self._finger_ctrl]]
        return out

    def body_pose(self, body: str) -> np.ndarray:
        """[x y z qw qx qy qz] of a body in the world."""
        return np.r_[self.data.body(body).xpos, self.data.body(body).xquat]

    def contacts(self) -> set[tuple[str, str]]:
        """Names of geom pairs in contact, both orders."""
        pairs: set[tuple[str, str]] = set()
        for index in range(self.data.ncon):
            contact = self.data.contact[index]
            first, second = self.model.geom(contact.geom1).name, self.model.geom(contact.geom2).name
            pairs.add((first, second))
            pairs.add((second, first))
        return pairs

    def snapshot(self) -> SimSnapshot:
        mujoco = self._mujoco
        spec = mujoco.mjtState.mjSTATE_INTEGRATION  # includes the solver warm start: restores bit-exactly
        state = np.empty(mujoco.mj_stateSize(self.model, spec))
        mujoco.mj_getState(self.model, self.data, state, spec)
        return SimSnapshot(state, self.time)

    def restore(self, snapshot: SimSnapshot) -> None:
        mujoco = self._mujoco
        spec = mujoco.mjtState.mjSTATE_INTEGRATION  # includes the solver warm start: restores bit-exactly
        mujoco.mj_setState(self.model, self.data, snapshot.state, spec)
        mujoco.mj_forward(self.model, self.data)

    # --- cameras ----------------------------------------------------------------------------------------------
    def render(self, cameras: tuple[str, ...], height: int, width: int) -> dict[str, np.ndarray]:
        """RGB uint8 (height, width, 3) per robot camera name (cam_high, cam_left_wrist, cam_right_wrist)."""
        renderer = self._renderer(*_square(height, width))
        frames = {}
        for name in cameras:
            if name not in CAMERA_MAP:
                raise KeyError(f"unknown camera {name!r}; the simulated robot has {sorted(CAMERA_MAP)}")
            renderer.update_scene(self.data, camera=CAMERA_MAP[name])
            frames[name] = centre_crop(renderer.render(), height, width)
        return frames

    def _renderer(self, height: int, width: int):
        key = (height, width)
        if key not in self._renderers:
            self._renderers[key] = _make_renderer(self._mujoco, self.model, height, width)
        return self._renderers[key]

    def snapshot_cameras(self, height: int, width: int) -> SnapshotCameras:
        """A renderer of snapshots with its own `MjData`: build, use and close it on one thread (its GL context's),
        which need not be the physics thread."""
        return SnapshotCameras(self, height, width)

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()


class SnapshotCameras:
    """Renders the robot's cameras from a :class:`SimSnapshot` on another thread than the physics: it restores
    the snapshot into its own `MjData`, so physics can step on while it renders. MuJoCo releases the GIL while
    it renders, so the physics thread keeps its period (the sim ROS node: follower states at 50 Hz)."""

    def __init__(self, sim: BimanualSim, height: int, width: int) -> None:
        mujoco = sim._mujoco
        self._mujoco = mujoco
        self._model = sim.model
        self._data = mujoco.MjData(sim.model)
        self._size = (height, width)
        self._renderer = None

    def render(self, snapshot: SimSnapshot, cameras: tuple[str, ...]) -> dict[str, np.ndarray]:
        """RGB uint8 (height, width, 3) per camera name, of the scene as it was at the snapshot."""
        mujoco = self._mujoco
        mujoco.mj_setState(self._model, self._data, snapshot.state, mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(self._model, self._data)
        if self._renderer is None:  # made here: its GL context belongs to the thread that renders
            self._renderer = _make_renderer(mujoco, self._model, *_square(*self._size))
        frames = {}
        for name in cameras:
            if name not in CAMERA_MAP:
                raise KeyError(f"unknown camera {name!r}; the simulated robot has {sorted(CAMERA_MAP)}")
            self._renderer.update_scene(self._data, camera=CAMERA_MAP[name])
            frames[name] = centre_crop(self._renderer.render(), *self._size)
        return frames

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
