"""Scripted experts for the simulated tasks, written for the joint-position robot the runtime actually drives.

Each arm follows a list of Cartesian waypoints for its tool centre point (between the fingertip pads), with
minimum-jerk interpolation of position, rotation and gripper, turned into joint targets by inverse kinematics
every control step. A waypoint's target may be a function of the simulation state, evaluated when the arm
starts moving toward it, so the expert reacts to where the objects really are (e.g. the cube in the other
gripper). Handover order follows docs/references.md §5: the receiving gripper closes before the giving one opens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from eva_runtime.sim.bimanual_sim import BimanualSim
from eva_runtime.sim.expert_variation import ExpertVariation
from eva_runtime.sim.kinematics import ArmKinematics

__all__ = ["ScriptedExpert", "join_candidates", "join_step", "make_expert"]

Pose = tuple[np.ndarray, np.ndarray]
# Inside the simulated robot's usable gripper range (calibration/aloha_sim.yaml: 0.065 .. 0.975); closing to
# 0.07 still drives the fingers against the object. Open/close segments last >= 40 steps (0.8 s) so the
# minimum-jerk peak speed, 1.875 x 0.88 / 0.8 s ~ 2.0 /s, stays near the gripper's rate cap.
OPEN, CLOSED = 0.95, 0.07
Target = Callable[[BimanualSim], Pose]


@dataclass(frozen=True)
class Waypoint:
    step: int  # control step at which the arm arrives
    target: Target | None  # None: stay at the previous target
    gripper: float  # normalised opening at arrival


def min_jerk(fraction: float) -> float:
    f = min(max(fraction, 0.0), 1.0)
    return f * f * f * (10.0 - 15.0 * f + 6.0 * f * f)


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def _exp(omega: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(omega))
    if angle < 1e-12:
        return np.eye(3)
    k = _skew(omega / angle)
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * k @ k


def _log(rotation: np.ndarray) -> np.ndarray:
    cos = np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0)
    angle = np.arccos(cos)
    if angle < 1e-9:
        return np.zeros(3)
    axis = np.array([rotation[2, 1] - rotation[1, 2], rotation[0, 2] - rotation[2, 0], rotation[1, 0] - rotation[0, 1]])
    return axis / (2.0 * np.sin(angle)) * angle


def frame(approach: np.ndarray, finger: np.ndarray) -> np.ndarray:
    """Rotation whose x axis is `approach` and y axis is `finger` made orthogonal to it."""
    x = approach / np.linalg.norm(approach)
    y = finger - (finger @ x) * x
    y /= np.linalg.norm(y)
    return np.column_stack([x, y, np.cross(x, y)])


class _ArmScript:
    """One arm's waypoints. Each waypoint is solved by IK once (with a posture preference that picks the
    branch); between waypoints the joint-space interpolation seeds a per-step Cartesian IK refinement, so the
    tool follows a straight line without ever switching branch."""

    def __init__(self, kinematics: ArmKinematics, start_joints: np.ndarray, start_gripper: float) -> None:
        self.kinematics = kinematics
        position, rotation = kinematics.tcp_pose(start_joints)
        self.goal = (position, rotation, start_gripper, start_joints.copy())
        self.start = self.goal
        self.segment = -1
        self.segment_start_step = 0
        self.waypoints: list[Waypoint] = []

    def command(self, sim: BimanualSim, step: int) -> tuple[np.ndarray, float]:
        while self.segment + 1 < len(self.waypoints) and (
            self.segment < 0 or step >= self.waypoints[self.segment].step
        ):
            self.segment += 1
            self.start = self.goal
            waypoint = self.waypoints[self.segment]
            position, rotation = waypoint.target(sim) if waypoint.target else self.goal[:2]
            joints, _ = self.kinematics.solve(position, rotation, self.goal[3], iterations=200, posture_iterations=100)
            self.goal = (position, rotation, waypoint.gripper, joints)
            self.segment_start_step = step
        waypoint = self.waypoints[self.segment]
        span = max(waypoint.step - self.segment_start_step, 1)
        s = min_jerk((step - self.segment_start_step) / span)
        (p0, r0, g0, q0), (p1, r1, g1, q1) = self.start, self.goal
        position = p0 + s * (p1 - p0)
        rotation = r0 @ _exp(s * _log(r0.T @ r1))
        # Strong damping: only a small correction of the interpolated guess, never a move along a null space.
        joints, _ = self.kinematics.solve(position, rotation, q0 + s * (q1 - q0), iterations=20, damping=5e-2)
        return joints, g0 + s * (g1 - g0)


class ScriptedExpert:
    """Callable (sim, step) -> 14 joint targets; build with :func:`make_expert` after `sim.reset`."""

    def __init__(self, sim: BimanualSim, start_command: np.ndarray | None = None) -> None:
        joints = sim.joint_positions() if start_command is None else np.asarray(start_command, dtype=float)
        self.left = _ArmScript(ArmKinematics(sim.model, "left"), joints[0:6], float(joints[6]))
        self.right = _ArmScript(ArmKinematics(sim.model, "right"), joints[7:13], float(joints[13]))

    def skip_to(self, step: int) -> None:
        """Join the script at `step` from wherever the arms are (waypoints already due are dropped)."""
        for arm in (self.left, self.right):
            arm.segment = max((i for i, w in enumerate(arm.waypoints) if w.step <= step), default=-1)
            arm.segment_start_step = step

    def __call__(self, sim: BimanualSim, step: int) -> np.ndarray:
        left, left_gripper = self.left.command(sim, step)
        right, right_gripper = self.right.command(sim, step)
        return np.r_[left, left_gripper, right, right_gripper]


def _pitched(side_sign: float, pitch_deg: float, finger_sign: float) -> np.ndarray:
    """Approach pointing toward the middle (side_sign -1 for the right arm) and down by `pitch_deg`."""
    pitch = np.radians(pitch_deg)
    return frame(np.array([side_sign * np.cos(pitch), 0.0, -np.sin(pitch)]), np.array([0.0, finger_sign, 0.0]))


def _position_of(body: str, offset: tuple[float, float, float], rotation: np.ndarray) -> Target:
    return lambda sim: (sim.body_pose(body)[:3] + np.asarray(offset), rotation)


def _fixed(position: tuple[float, float, float], rotation: np.ndarray) -> Target:
    return lambda sim: (np.asarray(position, dtype=float), rotation)


def _transfer_cube(expert: ScriptedExpert) -> None:
    meet = (0.0, 0.5, 0.25)
    right_pick = _pitched(-1.0, 60.0, np.sign(expert.right.start[1][1, 1]) or 1.0)
    # The receiving gripper comes in level from the left with its fingers vertical (closing on top and bottom).
    left_meet = frame(np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0]))
    expert.right.waypoints = [
        Waypoint(80, _position_of("box", (0.0, 0.0, 0.08), right_pick), OPEN),
        Waypoint(110, _position_of("box", (0.0, 0.0, 0.0), right_pick), OPEN),
        Waypoint(150, None, CLOSED),
        Waypoint(200, _fixed(meet, right_pick), CLOSED),
        Waypoint(290, None, CLOSED),
        Waypoint(330, None, OPEN),  # release only after the left gripper has closed (step 285)
        Waypoint(370, _fixed((0.12, 0.5, 0.3), right_pick), OPEN),
        Waypoint(400, None, OPEN),
    ]
    expert.left.waypoints = [
        Waypoint(170, _fixed((meet[0] - 0.12, meet[1], meet[2]), left_meet), OPEN),
        Waypoint(205, None, OPEN),  # wait until the cube has arrived: the next target is read from where it is
        Waypoint(240, _position_of("box", (0.0, 0.0, 0.0), left_meet), OPEN),
        Waypoint(285, None, CLOSED),
        Waypoint(330, None, CLOSED),
        Waypoint(370, _fixed((meet[0] - 0.1, meet[1], meet[2]), left_meet), CLOSED),
        Waypoint(400, None, CLOSED),
    ]


def _insertion(expert: ScriptedExpert) -> None:
    meet_z = 0.15
    right_pick = _pitched(-1.0, 60.0, np.sign(expert.right.start[1][1, 1]) or 1.0)
    left_pick = _pitched(1.0, 60.0, np.sign(expert.left.start[1][1, 1]) or 1.0)

    def beside(body: str, other: str, gap: float, rotation: np.ndarray) -> Target:
        """Move so that `body` ends `gap` (x) away from where `other` is now, aligned in y and z."""

        def target(sim: BimanualSim) -> Pose:
            held, partner = sim.body_pose(body)[:3], sim.body_pose(other)[:3]
            tcp = sim.data.site_xpos[sim.model.site(("right" if body == "peg" else "left") + "_tcp").id]
            goal_body = np.array([partner[0] + gap, partner[1], partner[2]])
            return tcp + (goal_body - held), rotation

        return target

    expert.right.waypoints = [
        Waypoint(90, _position_of("peg", (0.0, 0.0, 0.08), right_pick), OPEN),
        # Fingertips reach ~2 cm below the TCP at this pitch: stay clear of the table or they cannot close.
        Waypoint(120, _position_of("peg", (0.0, 0.0, 0.015), right_pick), OPEN),
        Waypoint(160, None, CLOSED),
        Waypoint(220, _fixed((0.12, 0.5, meet_z), right_pick), CLOSED),
        Waypoint(245, None, CLOSED),
        Waypoint(295, beside("peg", "socket", 0.14, right_pick), CLOSED),
        Waypoint(355, beside("peg", "socket", 0.085, right_pick), CLOSED),
        Waypoint(400, None, CLOSED),
    ]
    expert.left.waypoints = [
        Waypoint(90, _position_of("socket", (0.0, 0.0, 0.08), left_pick), OPEN),
        Waypoint(120, _position_of("socket", (0.0, 0.0, 0.01), left_pick), OPEN),
        Waypoint(160, None, CLOSED),
        Waypoint(220, _fixed((-0.08, 0.5, meet_z), left_pick), CLOSED),
        Waypoint(400, None, CLOSED),
    ]


_SCRIPTS = {"transfer_cube": _transfer_cube, "insertion": _insertion}

# Transfer cube, in the script's 50 Hz ticks: where a state that is behind the script rejoins it.
_REAPPROACH = 30  # 50 ticks before the pre-grasp waypoint (80): open, up above the cube, down, close
_DESCEND = 80  # the pre-grasp waypoint: straight onto the cube's centre (30 ticks), then close
_CLOSE = 110  # at the cube: close (40 ticks), then lift toward the meeting point
_HANDOVER = 205  # the left gripper goes for the cube held at the meeting point
_RELEASE = 290  # both hold it: the right lets go
_CENTRED_XY = 0.015  # m: the right TCP this close to the cube's axis closes on its centre
_AT_CUBE_Z = 0.02  # m: and this close in height is at the grasp
_ABOVE_Z = 0.03  # m: an off-axis TCP lower than this above the cube's centre is beside it, not above it


def join_step(task: str, sim: BimanualSim, step: int) -> int:
    """The script step an expert should join at from the simulation's state, which a policy, not the script,
    produced: `step` where the state is where the script expects it then; otherwise the start of the phase the
    state is in. Joining a grasp phase with the hand off the cube would close it on nothing (the very mistake to
    correct), and joining after the grasp with the cube still on the table would open the hand and leave, so a
    hand above the cube comes down onto its centre, a hand beside it goes up and over first, a hand at the cube
    late closes and lifts, and a cube dropped later is picked up again. Tasks without a rule join at `step`."""
    return join_candidates(task, sim, step)[0]


def join_candidates(task: str, sim: BimanualSim, step: int) -> list[int]:
    """Where the expert may join, best guess first (`join_step`), then the safe fallback: for a transfer-cube grasp
    not yet made, up and over the cube (a straight descent from off its axis can knock the cube away). The
    labeller plays them in order and keeps the first whose future gets further in the task."""
    if task != "transfer_cube":
        return [step]
    from eva_runtime.sim.tasks import task_spec

    scale = _script_scale(sim)
    script_step = step / scale
    stage = task_spec(task).stage(sim)
    box = sim.body_pose("box")[:3]
    tcp = sim.data.site_xpos[sim.model.site("right_tcp").id]
    off_axis = float(np.linalg.norm(tcp[:2] - box[:2])) > _CENTRED_XY
    above = float(tcp[2] - box[2])
    late_grasp = stage < 2 and script_step >= 80
    joined = script_step
    if late_grasp:
        if off_axis and above < _ABOVE_Z:
            joined = _REAPPROACH
        elif (off_axis or above > _AT_CUBE_Z) and script_step >= 110:  # before 110 the script is descending
            joined = _DESCEND
        elif script_step >= 150:
            joined = _CLOSE
    elif stage == 2 and script_step > 240:
        joined = _HANDOVER
    elif stage == 3 and script_step > 330:
        joined = _RELEASE
    first = step if joined == script_step else round(joined * scale)
    fallback = round(_REAPPROACH * scale)
    return [first, fallback] if late_grasp and first != fallback else [first]


def _script_scale(sim: BimanualSim) -> float:
    """Control ticks per script tick: scripts count 50 Hz ticks; at another control rate the same seconds are more
    (or fewer) ticks."""
    return round(1.0 / (50.0 * sim.control_period_s), 6)


def make_expert(
    task: str,
    sim: BimanualSim,
    start_step: int = 0,
    start_command: np.ndarray | None = None,
    variation: ExpertVariation | None = None,
    seed: int = 0,
) -> ScriptedExpert:
    """An expert for `task` from the simulation's current state.

    At `start_step` 0 (just after reset) it runs the whole script. A later `start_step` joins the script there,
    starting from `start_command` (the last command sent; the measured gripper of a grasp is wider than the
    command that squeezes it), which is how the oracle world model imagines the rest of an episode.
    """
    if task not in _SCRIPTS:
        raise ValueError(f"no scripted expert for task {task!r}; known: {sorted(_SCRIPTS)}")
    expert = ScriptedExpert(sim, start_command)
    _SCRIPTS[task](expert)
    if variation is not None and variation.active:
        variation.apply(expert, task, ExpertVariation.rng(seed))
    scale = _script_scale(sim)
    if scale != 1.0:
        for arm in (expert.left, expert.right):
            arm.waypoints = [Waypoint(round(w.step * scale), w.target, w.gripper) for w in arm.waypoints]
    if start_step > 0:
        expert.skip_to(start_step)
    return expert
