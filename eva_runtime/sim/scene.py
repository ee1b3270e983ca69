"""MuJoCo scene construction: the gym-aloha bimanual ViperX scenes, adapted for a CobotMagic-like camera set.

The scenes (Apache-2.0, package `gym-aloha`) are loaded from the installed package's assets and edited through
`mujoco.MjSpec`, never copied:
- the wrist cameras are widened (as shipped, fovy 20 sees mostly the gripper; docs/references.md §5);
- a `tcp` site is added between the fingertip pads of each gripper (the point the experts steer);
- shadows and reflections are switched off before any renderer exists (they dominate render time).
Camera names map to the real robot's: cam_high = `top`, cam_left_wrist = `left_wrist`, cam_right_wrist =
`right_wrist`.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CAMERA_MAP", "SCENE_FILES", "WRIST_FOVY", "build_model", "ensure_headless_gl", "import_mujoco"]

SCENE_FILES = {
    "transfer_cube": "bimanual_viperx_transfer_cube.xml",
    "insertion": "bimanual_viperx_insertion.xml",
}
CAMERA_MAP = {"cam_high": "top", "cam_left_wrist": "left_wrist", "cam_right_wrist": "right_wrist"}
WRIST_FOVY = 75.0
# Between the fingertip pads, along the gripper_link x axis (finger meshes span x 0.064..0.154 m).
TCP_OFFSET = (0.13, 0.0, 0.0)


def ensure_headless_gl() -> None:
    """Pick EGL for off-screen rendering unless the user chose a backend; must run before importing mujoco.

    Without a GPU, EGL is Mesa's llvmpipe, which starts one rasteriser thread per core for every context. For
    our 64-128 pixel frames the hand-off costs more than it saves: three cameras took 23-26 ms of CPU with the
    threads and 15 ms without (`LP_NUM_THREADS=0`: render on the calling thread), and the threads of the sim
    node, the oracle planner and the IDM-size renders competed for the same two cores. A user's own setting
    wins."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("LP_NUM_THREADS", "0")


def import_mujoco():
    """Import mujoco for headless use; a GL backend that cannot load becomes one clear error, not a traceback
    from deep inside PyOpenGL."""
    ensure_headless_gl()
    try:
        import mujoco
    except Exception as error:  # PyOpenGL fails with AttributeError, OSError or ImportError depending on backend
        backend = os.environ.get("MUJOCO_GL")
        raise RuntimeError(
            f"cannot load MuJoCo with MUJOCO_GL={backend} ({type(error).__name__}: {error}). "
            "Use MUJOCO_GL=egl (the default here) or MUJOCO_GL=osmesa with libosmesa6 installed."
        ) from error
    return mujoco


def _assets_dir() -> Path:
    try:
        import gym_aloha
    except ImportError as error:
        raise RuntimeError(
            "the MuJoCo scenes come from the gym-aloha package: pip install 'eva-runtime[sim]'"
        ) from error
    return Path(gym_aloha.__file__).resolve().parent / "assets"


def build_model(task: str):
    """Compile the scene of `task` with the edits above; returns a `mujoco.MjModel`."""
    mujoco = import_mujoco()

    if task not in SCENE_FILES:
        raise ValueError(f"unknown simulated task {task!r}; known: {sorted(SCENE_FILES)}")
    spec = mujoco.MjSpec.from_file(str(_assets_dir() / SCENE_FILES[task]))
    for camera in spec.cameras:
        if camera.name in ("left_wrist", "right_wrist"):
            camera.fovy = WRIST_FOVY
    for side in ("left", "right"):
        gripper = spec.body(f"vx300s_{side}/gripper_link")
        gripper.add_site(name=f"{side}_tcp", pos=list(TCP_OFFSET), size=[0.005, 0.005, 0.005], rgba=[0, 0, 0, 0])
    spec.visual.quality.shadowsize = 0
    spec.visual.quality.offsamples = 0
    return spec.compile()
