"""calibration/aloha_sim_band.yaml: the simulated robot with a cam_high cropped to the table band. Everything but
that camera's height must stay the simulated robot's, or models trained on it would deploy on another robot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eva_runtime.embodiment import load_embodiment
from eva_runtime.robots.mujoco_robot import MujocoRobot

CALIBRATION = Path(__file__).resolve().parents[1] / "calibration"


def test_the_band_robot_is_the_simulated_robot_but_for_cam_high_height() -> None:
    plain = load_embodiment(CALIBRATION / "aloha_sim.yaml").model_dump(warnings=False)
    band = load_embodiment(CALIBRATION / "aloha_sim_band.yaml").model_dump(warnings=False)
    assert band["cameras"][0]["name"] == "cam_high"
    assert (band["cameras"][0]["height"], band["cameras"][0]["width"]) == (76, 128)
    band["cameras"][0]["height"] = plain["cameras"][0]["height"]
    band["description"] = plain["description"]
    assert band == plain


def test_the_band_robot_sees_the_table_rows_of_the_top_camera() -> None:
    frames = {}
    for name in ("aloha_sim", "aloha_sim_band"):
        robot = MujocoRobot(load_embodiment(CALIBRATION / f"{name}.yaml"), "transfer_cube")
        robot.connect()
        try:
            robot.reset_episode(11)
            frames[name] = robot.observe(cameras=("cam_high",)).frames["cam_high"].image
        finally:
            robot.disconnect()
    assert frames["aloha_sim_band"].shape == (76, 128, 3)
    assert np.array_equal(frames["aloha_sim_band"], frames["aloha_sim"][26:102])
