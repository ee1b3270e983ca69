"""`colcon build` of ros2_ws: the ament_python package installs where `ros2 launch` and `ros2 run` look (with the
`setup.bash` the docs source and the repository's one launch file), its executables start, and the installed
executables with the installed parameter file run the graph the way `ros2 launch eva_runtime bimanual.launch.py
use_sim:=true` starts it (the `launch` package is not installable here, so the test starts the two processes
itself)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def build_workspace(directory: Path) -> Path:
    """colcon build of ros2_ws into `directory`; returns the package's install prefix."""
    colcon = shutil.which("colcon", path=PATH)
    if colcon is None:
        pytest.fail("colcon is not installed: the `ros` extra (make installs it) provides it")
    install = directory / "install"
    command = [colcon, "--log-base", str(directory / "log"), "build", "--base-paths", str(REPO / "ros2_ws" / "src")]
    command += ["--build-base", str(directory / "build"), "--install-base", str(install)]
    build = subprocess.run(
        command, cwd=directory, env={**os.environ, "PATH": PATH}, capture_output=True, text=True, timeout=300
    )
    assert build.returncode == 0, build.stdout + build.stderr
    return install / "eva_runtime"


def node_environment(prefix: Path) -> dict[str, str]:
    # What sourcing the install's setup script does for Python: its site-packages on PYTHONPATH. The core package
    # comes from this environment's own install, as on a robot where it is pip-installed into the ROS Python.
    site_packages = next(prefix.glob("lib/python3*/site-packages"))
    return {**os.environ, "PATH": PATH, "PYTHONPATH": str(site_packages)}


def test_colcon_build_installs_launch_file_config_and_executables(tmp_path: Path) -> None:
    prefix = build_workspace(tmp_path)
    for relative in (
        "share/eva_runtime/launch/bimanual.launch.py",
        "share/eva_runtime/config/bimanual.yaml",
        "share/eva_runtime/package.xml",
        "share/ament_index/resource_index/packages/eva_runtime",
    ):
        assert (prefix / relative).is_file(), relative
    # The documented `source install/setup.bash` (colcon-bash, in the `ros` extra, writes it).
    assert (prefix.parent / "setup.bash").is_file() and (prefix / "share/eva_runtime/package.bash").is_file()
    # The installed launch file is the repository's one source, not a copy that could drift.
    installed = (prefix / "share/eva_runtime/launch/bimanual.launch.py").read_bytes()
    assert installed == (REPO / "launch" / "bimanual.launch.py").read_bytes()
    for executable, parameter in (
        ("policy_node", "bundle"),
        ("sim_robot_node", "embodiment_file"),
        ("record_node", "out_dir"),
    ):
        program = prefix / "lib" / "eva_runtime" / executable
        assert program.is_file() and os.access(program, os.X_OK), program
        started = subprocess.run(
            [str(program), "--help"], env=node_environment(prefix), capture_output=True, text=True, timeout=120
        )
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"ros2 run eva_runtime {executable}" in started.stdout and parameter in started.stdout


def test_the_installed_executables_run_the_graph_as_the_launch_file_starts_it(tmp_path: Path) -> None:
    """Both installed executables as processes with the installed parameter file and the launch file's overrides;
    the test drives the lifecycle as autostart would and receives commands; Ctrl-C ends both cleanly."""
    import rclpy
    from lifecycle_msgs.msg import Transition
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    from eva_runtime.ros.spinning import BackgroundSpin
    from tests.ros_graph import BUNDLE, Probe, domain_id, wait_for

    prefix = build_workspace(tmp_path)
    domain = domain_id(5)
    env = node_environment(prefix) | {
        "ROS_DOMAIN_ID": str(domain),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
    }
    config = prefix / "share" / "eva_runtime" / "config" / "bimanual.yaml"
    common = ["--ros-args", "--params-file", str(config), "-p", "topic_convention:=classic"]
    small = ["-p", "camera_width:=64", "-p", "camera_height:=64"]  # cheap renders; the IDM reads 64 x 64
    arguments = {
        "sim_robot_node": [*common, "-p", f"embodiment_file:={BUNDLE / 'embodiment.yaml'}", *small],
        "policy_node": [*common, "-p", f"bundle:={BUNDLE}", "-p", f"log_path:={tmp_path / 'outcomes.db'}"],
    }
    processes = [
        subprocess.Popen([str(prefix / "lib" / "eva_runtime" / name), *args], env=env, cwd=tmp_path)
        for name, args in arguments.items()
    ]
    context = Context()
    rclpy.init(context=context, domain_id=domain)
    probe = Probe(context, ["/master/joint_left"])
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(probe)
    spin = BackgroundSpin(executor).start()
    codes: list[int | str] = []
    try:
        assert probe.transition("policy_node", Transition.TRANSITION_CONFIGURE)
        assert probe.transition("policy_node", Transition.TRANSITION_ACTIVATE)
        wait_for(lambda: len(probe.recorded("/master/joint_left")) >= 25, 20.0, "commands from the policy process")
        wait_for(lambda: probe.mode == "hold", 5.0, "hold (mode_after_homing) on ~/mode")
        assert probe.trigger("/policy_node/mode/autonomous") == (True, "hold -> autonomous")
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGINT)  # Ctrl-C, as `ros2 launch` passes it on
        deadline = time.monotonic() + 20.0
        for process in processes:
            try:
                codes.append(process.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append("killed")
        spin.stop()
        probe.destroy_node()
        rclpy.try_shutdown(context=context)
    assert codes == [0, 0]
