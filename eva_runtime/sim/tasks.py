"""Simulated tasks: seeded initial object placement, the instruction text, episode length and the success check.

Success is judged on the final state, stricter than gym-aloha's reward (which counts the first instant of a
touch; docs/references.md §5):
- transfer_cube: the cube is in the air, touched by the left (receiving) gripper and not by the right one;
- insertion: the peg's end is at least 1.5 cm inside the socket's opening, centred in its hollow and aligned
  with it, and neither object touches the table. This is geometric, not the peg-pin contact of gym-aloha: a peg
  pressed onto the pin bounces on and off it, so a contact test on one instant flickers.

Stages say how far a failed episode got, as gym-aloha's staged reward does, so that 0 successes from a weak
policy still shows whether it reaches, grasps or hands over. `stage(sim)` is the highest stage true at this instant;
the robot keeps the furthest one of the episode (`MujocoRobot.furthest_stage`). `reach_distance` is the continuous
measure before the first stage: how close the right gripper came to the object, which separates a policy that
stops short from one that arrives and fails to close.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eva_runtime.sim.bimanual_sim import BimanualSim

__all__ = ["OBJECT_GEOMS", "TASKS", "TaskSpec", "objects_inside_arms", "task_spec"]

LEFT_FINGERS = ("vx300s_left/10_left_gripper_finger", "vx300s_left/10_right_gripper_finger")
RIGHT_FINGERS = ("vx300s_right/10_left_gripper_finger", "vx300s_right/10_right_gripper_finger")
SOCKET_WALLS = ("socket-1", "socket-2", "socket-3", "socket-4")
OBJECT_GEOMS = ("red_box", "red_peg", *SOCKET_WALLS)  # what a task places; the arms' geoms are "vx300s_*"
UPRIGHT = np.array([1.0, 0.0, 0.0, 0.0])


@dataclass(frozen=True)
class TaskSpec:
    name: str
    instruction: str
    episode_steps: int  # at 50 Hz
    stages: tuple[str, ...]  # in task order; the last one is the success check at that instant

    def sample_objects(self, seed: int) -> dict[str, np.ndarray]:
        """Object placements for a seed (same ranges as gym-aloha, resting on the table)."""
        rng = np.random.default_rng(seed)
        if self.name == "transfer_cube":
            return {"box": np.r_[rng.uniform([0.0, 0.4], [0.2, 0.6]), 0.02, UPRIGHT]}
        peg = np.r_[rng.uniform([0.1, 0.4], [0.2, 0.6]), 0.01, UPRIGHT]
        socket = np.r_[rng.uniform([-0.2, 0.4], [-0.1, 0.6]), 0.022, UPRIGHT]
        return {"peg": peg, "socket": socket}

    def success(self, sim: BimanualSim) -> bool:
        """The last of `stages`, judged on the state now (the episode's final state when called at its end)."""
        return self.stage(sim) == len(self.stages)

    def reach_distance(self, sim: BimanualSim) -> float:
        """Metres from the midpoint of the right gripper's finger geoms to the object it must take (the cube, the
        peg). A finger geom's centre sits above its tip, so a centred grasp reads about 4 cm, not 0."""
        fingers = [sim.data.geom_xpos[sim.model.geom(name).id] for name in RIGHT_FINGERS]
        target = sim.body_pose("box" if self.name == "transfer_cube" else "peg")[:3]
        return float(np.linalg.norm(0.5 * (fingers[0] + fingers[1]) - target))

    def stage(self, sim: BimanualSim) -> int:
        """The highest of `stages` true now, counted from 1 (0: none); the last one is `success` at this instant."""
        stage_of = _transfer_cube_stage if self.name == "transfer_cube" else _insertion_stage
        return stage_of(sim, sim.contacts())


def _transfer_cube_stage(sim: BimanualSim, contacts: set[tuple[str, str]]) -> int:
    right = any(("red_box", finger) in contacts for finger in RIGHT_FINGERS)
    left = any(("red_box", finger) in contacts for finger in LEFT_FINGERS)
    in_air = sim.body_pose("box")[2] > 0.05 and ("red_box", "table") not in contacts
    if in_air and left and not right:
        return 4  # handed over
    if in_air and left and right:
        return 3  # both grippers hold it
    return 2 if in_air and right else int(right)  # lifted by the right gripper / touched by it


def _insertion_stage(sim: BimanualSim, contacts: set[tuple[str, str]]) -> int:
    peg_held = any(("red_peg", finger) in contacts for finger in RIGHT_FINGERS)
    socket_held = any((wall, finger) in contacts for wall in SOCKET_WALLS for finger in LEFT_FINGERS)
    on_table = ("red_peg", "table") in contacts or any((wall, "table") in contacts for wall in SOCKET_WALLS)
    if peg_inserted(sim.body_pose("peg"), sim.body_pose("socket")) and not on_table:
        return 3
    return 2 if peg_held and socket_held and not on_table else int(peg_held and socket_held)


PEG_HALF_LENGTH, SOCKET_HALF_LENGTH, SOCKET_HOLLOW_HALF = 0.06, 0.06, 0.018
MIN_DEPTH, MAX_OFFSET, MAX_TILT_DEG = 0.015, 0.012, 15.0


def _rotation(quaternion: np.ndarray) -> np.ndarray:
    w, x, y, z = quaternion / np.linalg.norm(quaternion)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def peg_inserted(peg: np.ndarray, socket: np.ndarray) -> bool:
    """peg, socket: [x y z qw qx qy qz]. The peg enters the socket's +x opening along the socket's x axis."""
    to_socket = _rotation(socket[3:]).T
    offset = to_socket @ (peg[:3] - socket[:3])
    peg_axis = to_socket @ _rotation(peg[3:])[:, 0]
    aligned = abs(peg_axis[0]) >= np.cos(np.radians(MAX_TILT_DEG))
    peg_end = offset[0] - PEG_HALF_LENGTH * abs(peg_axis[0])  # the end nearer the socket (toward -x)
    deep = peg_end <= SOCKET_HALF_LENGTH - MIN_DEPTH and offset[0] > 0
    centred = abs(offset[1]) <= MAX_OFFSET and abs(offset[2]) <= MAX_OFFSET
    return bool(aligned and deep and centred)


TASKS = {
    "transfer_cube": TaskSpec(
        "transfer_cube",
        "pick up the red cube with the right arm and hand it over to the left arm",
        400,
        ("touched", "lifted", "both holding", "handed over"),
    ),
    "insertion": TaskSpec(
        "insertion",
        "pick up the peg and the socket and insert the peg into the socket",
        400,
        ("both grasped", "both lifted", "inserted"),
    ),
}


def objects_inside_arms(sim: BimanualSim, depth_m: float = 0.002) -> list[str]:
    """Pairs "object-geom" where a placed object is more than `depth_m` inside an arm's geom. A grip is a contact
    too, but a shallow one (solver softness, well under a millimetre); an object teleported into a finger by a
    reset is centimetres deep, and the solver throws the two apart."""
    pairs = set()
    for index in range(sim.data.ncon):
        contact = sim.data.contact[index]
        if contact.dist < -depth_m:
            names = (sim.model.geom(contact.geom1).name, sim.model.geom(contact.geom2).name)
            placed = [n for n in names if n in OBJECT_GEOMS]
            arm = [n for n in names if n.startswith("vx300s")]
            if placed and arm:
                pairs.add(f"{placed[0]}-{arm[0]}")
    return sorted(pairs)


def task_spec(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown simulated task {name!r}; known: {sorted(TASKS)}") from None
