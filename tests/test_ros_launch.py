"""The launch file and the parameter file, checked without the `launch` package (it is not installable here).

The launch file is parsed with `ast`: its arguments, the nodes it starts and the parameters it passes them (the
config YAML plus literal overrides). The nodes are then instantiated with exactly those parameters (real rclpy:
a value of the wrong type fails there), and every passed parameter must be one the node declares, and every
required one must be passed.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ros_graph import BUNDLE, domain_id

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ros2_ws" / "src" / "eva_runtime"
LAUNCH = REPO / "launch" / "bimanual.launch.py"  # the one source; the package's launch/ links to it
CONFIG = PACKAGE / "config" / "bimanual.yaml"
ROS_BUILTIN_PARAMETERS = {"use_sim_time", "start_type_description_service"}


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name
    ]


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """ROS parameter files nest by dots: {"topics": {"command": {"left": x}}} is `topics.command.left`."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= _flatten(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def launch_nodes() -> dict[str, dict]:
    """node name -> {"executable", "kind", "parameters": {name: value or an ast node for a substitution}}."""
    tree = ast.parse(LAUNCH.read_text(encoding="utf-8"))
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    nodes = {}
    for kind in ("Node", "LifecycleNode"):
        for call in _calls(tree, kind):
            name = ast.literal_eval(_keyword(call, "name"))
            parameters: dict[str, Any] = {}
            for item in _keyword(call, "parameters").elts:
                if isinstance(item, ast.Name):  # the `config` launch argument: the parameter file's section
                    assert item.id == "config"
                    parameters |= _flatten(config[name]["ros__parameters"])
                else:
                    assert isinstance(item, ast.Dict)
                    parameters |= {
                        ast.literal_eval(key): value for key, value in zip(item.keys, item.values, strict=True)
                    }
            executable = ast.literal_eval(_keyword(call, "executable"))
            nodes[name] = {"executable": executable, "kind": kind, "parameters": parameters}
    return nodes


def test_the_launch_file_parses_and_uses_only_the_arguments_it_declares() -> None:
    source = LAUNCH.read_text(encoding="utf-8")
    tree = ast.parse(source)
    compile(tree, str(LAUNCH), "exec")
    declared = {ast.literal_eval(call.args[0]) for call in _calls(tree, "DeclareLaunchArgument")}
    assert declared == {"bundle", "config", "use_sim", "topic_convention", "autostart"}
    used = {ast.literal_eval(call.args[0]) for call in _calls(tree, "LaunchConfiguration")}
    assert used == declared
    for call in _calls(tree, "DeclareLaunchArgument"):
        assert _keyword(call, "default_value") is not None  # `ros2 launch ... use_sim:=true` needs nothing else
    # The documented default: autostart follows use_sim (the simulation activates itself, the robot never does).
    autostart = next(c for c in _calls(tree, "DeclareLaunchArgument") if ast.literal_eval(c.args[0]) == "autostart")
    assert ast.unparse(_keyword(autostart, "default_value")) == "use_sim"
    assert 'use_sim = LaunchConfiguration("use_sim")' in source
    assert "generate_launch_description" in {f.name for f in tree.body if isinstance(f, ast.FunctionDef)}
    nodes = launch_nodes()
    assert nodes["policy_node"]["kind"] == "LifecycleNode" and nodes["sim_robot_node"]["kind"] == "Node"


def test_the_launch_executables_are_the_packages_entry_points() -> None:
    setup = ast.parse((PACKAGE / "setup.py").read_text(encoding="utf-8"))
    entry_points = ast.literal_eval(_keyword(_calls(setup, "setup")[0], "entry_points"))
    scripts = {line.split("=")[0].strip() for line in entry_points["console_scripts"]}
    assert {node["executable"] for node in launch_nodes().values()} == {"policy_node", "sim_robot_node"}
    assert scripts == {"policy_node", "sim_robot_node", "record_node"}  # the recorder is started with `ros2 run`
    assert (PACKAGE / "resource" / "eva_runtime").is_file()
    assert "<build_type>ament_python</build_type>" in (PACKAGE / "package.xml").read_text(encoding="utf-8")


def test_the_package_launch_directory_links_to_the_one_launch_file() -> None:
    link = PACKAGE / "launch"
    # Relative, so a checkout anywhere (and colcon's build-directory mirror of it) resolves to the same file.
    assert link.is_symlink() and not Path(os.readlink(link)).is_absolute()
    assert link.resolve() == LAUNCH.parent.resolve()
    assert (link / LAUNCH.name).is_file()


# What the launch file's variables stand for at launch time (the LaunchConfiguration of the same name).
SUBSTITUTIONS = {"bundle": str(BUNDLE), "topic_convention": "classic"}


def _value(value: Any) -> Any:
    """A literal from the YAML or the launch file, or the real value a launch substitution takes."""
    if not isinstance(value, ast.AST):
        return value
    if isinstance(value, ast.Constant):
        return value.value
    if isinstance(value, ast.Name):
        return SUBSTITUTIONS[value.id]
    if ast.unparse(value) == "PathJoinSubstitution([bundle, 'embodiment.yaml'])":
        return str(BUNDLE / "embodiment.yaml")
    raise AssertionError(f"a parameter value this check does not know: {ast.unparse(value)}")


@pytest.mark.parametrize("node_name", ["policy_node", "sim_robot_node"])
def test_every_passed_parameter_is_declared_and_every_required_one_is_passed(node_name: str, tmp_path: Path) -> None:
    import rclpy
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    from eva_runtime.ros.parameters import POLICY_PARAMETERS, SIM_ROBOT_PARAMETERS
    from eva_runtime.ros.policy_node import PolicyNode
    from eva_runtime.ros.sim_robot_node import SimRobotNode

    passed = {name: _value(value) for name, value in launch_nodes()[node_name]["parameters"].items()}
    if node_name == "policy_node":
        passed["log_path"] = str(tmp_path / "outcomes.db")
    node_class, table = {
        "policy_node": (PolicyNode, POLICY_PARAMETERS),
        "sim_robot_node": (SimRobotNode, SIM_ROBOT_PARAMETERS),
    }[node_name]
    os.environ.setdefault("MUJOCO_GL", "egl")
    context = Context()
    rclpy.init(context=context, domain_id=domain_id(4))
    try:
        overrides = [Parameter(name, value=value) for name, value in passed.items()]
        node = node_class(context=context, parameter_overrides=overrides)  # a wrong type raises here
        try:
            declared = set(node._parameters) - ROS_BUILTIN_PARAMETERS
            for name, value in passed.items():
                assert node.get_parameter(name).value == value  # the override took
        finally:
            if hasattr(node, "close"):
                node.close()
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
    assert declared == {spec.name for spec in table}  # the node declares exactly its documented table
    assert set(passed) <= declared, set(passed) - declared
    required = {spec.name for spec in table if spec.required}
    assert required and required <= set(passed), required - set(passed)


def test_docs_name_every_parameter_of_every_node() -> None:
    from eva_runtime.ros.parameters import POLICY_PARAMETERS, RECORD_PARAMETERS, SIM_ROBOT_PARAMETERS

    text = (REPO / "docs" / "ros.md").read_text(encoding="utf-8")
    for spec in (*POLICY_PARAMETERS, *SIM_ROBOT_PARAMETERS, *RECORD_PARAMETERS):
        group, _, leaf = spec.name.rpartition(".")
        # Topic groups are listed compactly (`topics.command.left|right`): the group and the leaf must appear.
        assert spec.name in text or (group and group in text and leaf in text), spec.name
