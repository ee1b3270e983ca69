"""No orphan commanders: the node processes and their planner processes end with whoever supervises them.

Real processes throughout: the node modules run as `python -m eva_runtime.ros.<node>` (what the installed
executables call), started either by a small launcher process (started from its main thread, as `ros2 launch`
starts them) that the test then SIGKILLs, or by the test itself. The test talks to the graph through ROS only
(lifecycle, Trigger and parameter services) and reads the outcome log read-only, so that no recovery by a later
writer can stand in for the node's own shutdown. Every wait polls a condition with a deadline.

Also here: the process_lifetime mechanisms on their own (a parent that is SIGKILLed takes its child with it),
and the `ros2 param set` quoting docs/ros.md gives for a value with ": " in it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from eva_runtime.ros.spinning import spinning
from tests.ros_graph import BUNDLE, REPO, Probe, domain_id, wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG: Linux")

CONFIG = REPO / "ros2_ws" / "src" / "eva_runtime" / "config" / "bimanual.yaml"
INSTRUCTION = "pick up the cube: red one"
# Starts each command (a JSON list of argv lists) from its main thread, prints their pids, and waits. The
# children write to stderr: the stdout pipe carries only the pids, and nobody reads it afterwards.
LAUNCHER = """
import json, subprocess, sys
children = [subprocess.Popen(argv, stdout=sys.stderr) for argv in json.loads(sys.argv[1])]
print(json.dumps([child.pid for child in children]), flush=True)
for child in children:
    child.wait()
"""


def _state(pid: int) -> str | None:
    """The process's state letter from /proc (None: no such process)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rpartition(")")[2].split()[0]  # the command name may hold spaces and parentheses


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie (exited, not yet reaped by whoever adopted it)."""
    return _state(pid) in (None, "Z", "X")


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (the planner process and multiprocessing's resource tracker)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return {p for p in found if not gone(p)}


def node_environment(domain: int) -> dict[str, str]:
    return os.environ | {
        "ROS_DOMAIN_ID": str(domain),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
    }


def node_commands(log_path: Path) -> dict[str, list[str]]:
    """argv of both nodes with the installed parameter file, as the launch file starts them."""
    common = ["--ros-args", "--params-file", str(CONFIG), "-p", "topic_convention:=classic"]
    small = ["-p", "camera_width:=64", "-p", "camera_height:=64"]  # cheap renders; the IDM reads 64 x 64
    sim = [*common, "-p", f"embodiment_file:={BUNDLE / 'embodiment.yaml'}", *small]
    policy = [*common, "-p", f"bundle:={BUNDLE}", "-p", f"log_path:={log_path}"]
    return {
        "sim_robot_node": [sys.executable, "-m", "eva_runtime.ros.sim_robot_node", *sim],
        "policy_node": [sys.executable, "-m", "eva_runtime.ros.policy_node", *policy],
    }


@contextmanager
def probe_on(domain: int) -> Iterator[Probe]:
    with spinning(domain, lambda context: Probe(context, ["/master/joint_left"])) as probe:
        yield probe


def set_as_ros2_param_set_does(probe: Probe, node: str, name: str, text: str) -> None:
    """`ros2 param set <node> <name> <text>`: the CLI parses `text` with rclpy's get_parameter_value (YAML)."""
    from rcl_interfaces.msg import Parameter
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import get_parameter_value

    request = SetParameters.Request(parameters=[Parameter(name=name, value=get_parameter_value(string_value=text))])
    # Setting a parameter to a value is safe to repeat: a response dropped by the rmw (Probe.call) gets another.
    results = probe.call(f"/{node}/set_parameters", SetParameters, request, timeout=10.0, attempts=3).results
    assert all(result.successful for result in results), results


def get_string_parameter(probe: Probe, node: str, name: str) -> str:
    from rcl_interfaces.srv import GetParameters

    request = GetParameters.Request(names=[name])
    response = probe.call(f"/{node}/get_parameters", GetParameters, request, timeout=10.0, attempts=3)
    return response.values[0].string_value


def load_as_ros2_param_load_does(probe: Probe, node: str, parameter_file: Path) -> None:
    """`ros2 param load <node> <file>`: rclpy's parameter_dict_from_yaml_file, then set_parameters."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import parameter_dict_from_yaml_file

    parameters = list(parameter_dict_from_yaml_file(str(parameter_file), target_nodes=[f"/{node}"]).values())
    request = SetParameters.Request(parameters=parameters)
    results = probe.call(f"/{node}/set_parameters", SetParameters, request, timeout=10.0, attempts=3)
    assert all(result.successful for result in results.results), results


def check_the_documented_quoting(probe: Probe, tmp_path: Path) -> None:
    """docs/ros.md: a text with ": " survives `ros2 param set` and `ros2 param load` with YAML quotes inside the
    shell's (or the file's), and a parameter file given at start (--params-file) with ordinary YAML quotes."""
    from rclpy.parameter import get_parameter_value

    assert get_string_parameter(probe, "policy_node", "episode.note") == "slipped: at the start"  # --params-file
    # Unquoted, `ros2 param set` reads "a: b" as a YAML mapping, not the text.
    assert get_parameter_value(string_value=INSTRUCTION).string_value != INSTRUCTION
    set_as_ros2_param_set_does(probe, "policy_node", "episode.instruction", f"'{INSTRUCTION}'")
    assert get_string_parameter(probe, "policy_node", "episode.instruction") == INSTRUCTION
    loaded = tmp_path / "episode.yaml"
    loaded.write_text("""/policy_node:\n  ros__parameters:\n    episode:\n      note: "'slipped: at the handover'"\n""")
    load_as_ros2_param_load_does(probe, "policy_node", loaded)
    assert get_string_parameter(probe, "policy_node", "episode.note") == "slipped: at the handover"


def activate_and_start_episode(probe: Probe) -> int:
    from lifecycle_msgs.msg import Transition

    assert probe.transition("policy_node", Transition.TRANSITION_CONFIGURE)
    assert probe.transition("policy_node", Transition.TRANSITION_ACTIVATE)
    wait_for(lambda: len(probe.recorded("/master/joint_left")) >= 5, 30.0, "commands from the policy process")
    accepted, message = probe.trigger("/policy_node/start_episode")
    assert accepted, message
    return int(message.split()[1])  # "episode <id> started"


def assert_aborted_by_the_node(log_path: Path, episode_id: int, instruction: str) -> None:
    from eva_runtime.records.episode_session import ABORTED_BY_SHUTDOWN
    from eva_runtime.records.outcome_log import OutcomeLog

    with OutcomeLog(log_path, read_only=True) as log:  # read-only: no crash recovery of a left-open episode
        record = log.episode(episode_id)
    assert (record.outcome, record.labelled_by) == ("aborted", "automatic")
    assert record.failure_reason == ABORTED_BY_SHUTDOWN  # closed by the node's own shutdown, not recovered later
    assert record.instruction == instruction


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(10.0)


def test_a_killed_launcher_takes_both_nodes_and_the_planner_with_it_and_the_episode_is_aborted(
    tmp_path: Path,
) -> None:
    """`ros2 launch` SIGKILLed (nothing forwards a signal): the nodes get SIGTERM from the kernel and shut down."""
    domain = domain_id(7)
    log_path = tmp_path / "outcomes.db"
    commands = node_commands(log_path)
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, json.dumps(list(commands.values()))],
        env=node_environment(domain),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    nodes = dict(zip(commands, json.loads(launcher.stdout.readline()), strict=True))
    try:
        with probe_on(domain) as probe:
            set_as_ros2_param_set_does(probe, "policy_node", "episode.instruction", "hand the cube over")
            episode_id = activate_and_start_episode(probe)
            planner = descendants(nodes["policy_node"])
            assert planner, "the policy node started no planner process"
            launcher.kill()
            launcher.wait(10.0)
            everything = {*nodes.values(), *planner}
            wait_for(lambda: all(gone(pid) for pid in everything), 60.0, "the nodes and the planner to exit")
            assert_aborted_by_the_node(log_path, episode_id, "hand the cube over")
    finally:
        stop([launcher])
        for pid in nodes.values():
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_sigterm_ends_the_policy_node_and_its_planner_and_aborts_the_episode(tmp_path: Path) -> None:
    """SIGTERM to the node (what `kill` and systemd send); on the way, texts with ": " in them set the ways
    docs/ros.md documents arrive intact (the instruction reaches the outcome log)."""
    domain = domain_id(8)
    log_path = tmp_path / "outcomes.db"
    at_start = tmp_path / "at_start.yaml"
    at_start.write_text("""policy_node:\n  ros__parameters:\n    episode:\n      note: "slipped: at the start"\n""")
    commands = node_commands(log_path)
    commands["policy_node"] += ["--params-file", str(at_start)]
    env = node_environment(domain)
    processes = [subprocess.Popen(argv, env=env, cwd=tmp_path) for argv in commands.values()]
    sim, policy = processes
    try:
        with probe_on(domain) as probe:
            check_the_documented_quoting(probe, tmp_path)
            episode_id = activate_and_start_episode(probe)
            planner = descendants(policy.pid)
            assert planner, "the policy node started no planner process"
            policy.send_signal(signal.SIGTERM)
            wait_for(lambda: policy.poll() is not None, 60.0, "the policy node to exit")
            assert policy.returncode == 0
            wait_for(lambda: all(gone(pid) for pid in planner), 30.0, "the planner processes to exit")
            assert_aborted_by_the_node(log_path, episode_id, INSTRUCTION)
            assert sim.poll() is None  # only the node that was asked to stop stopped
    finally:
        stop(processes)


def test_a_killed_policy_node_leaves_no_planner_behind(tmp_path: Path) -> None:
    """SIGKILL gives the node no chance to clean up: its planner processes notice their parent is gone."""
    from lifecycle_msgs.msg import Transition

    domain = domain_id(9)
    policy = subprocess.Popen(
        node_commands(tmp_path / "outcomes.db")["policy_node"], env=node_environment(domain), cwd=tmp_path
    )
    try:
        with probe_on(domain) as probe:
            assert probe.transition("policy_node", Transition.TRANSITION_CONFIGURE)  # starts the planner
            planner = descendants(policy.pid)
            assert planner, "the policy node started no planner process"
            policy.kill()
            policy.wait(10.0)
            wait_for(lambda: all(gone(pid) for pid in planner), 30.0, "the planner processes to exit")
    finally:
        stop([policy])


def test_a_policy_node_started_after_a_killed_one_continues_its_held_command(tmp_path: Path) -> None:
    """The killed node's last command survives it (beside the outcome log); its successor seeds from it."""
    from lifecycle_msgs.msg import Transition

    domain, log_path = domain_id(12), tmp_path / "outcomes.db"
    commands, environment = node_commands(log_path), node_environment(domain)
    sim = subprocess.Popen(commands["sim_robot_node"], env=environment, cwd=tmp_path)
    first = subprocess.Popen(commands["policy_node"], env=environment, cwd=tmp_path)
    second = None
    try:
        with probe_on(domain) as probe:
            assert probe.transition("policy_node", Transition.TRANSITION_CONFIGURE)
            assert probe.transition("policy_node", Transition.TRANSITION_ACTIVATE)
            held = log_path.with_suffix(".held_command.json")
            wait_for(held.exists, 10.0, "the held command beside the outcome log")
        first.kill()
        first.wait(10.0)
        # A new probe: one that knew the killed node may keep sending its requests to the dead endpoint.
        output = tmp_path / "second.log"
        with output.open("w") as log:
            unbuffered = environment | {"RCUTILS_LOGGING_BUFFERED_STREAM": "0"}
            second = subprocess.Popen(
                commands["policy_node"], env=unbuffered, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
            )
        with probe_on(domain) as probe:
            assert probe.transition("policy_node", Transition.TRANSITION_CONFIGURE)
            assert probe.transition("policy_node", Transition.TRANSITION_ACTIVATE)
            wait_for(
                lambda: "grippers continue the held command" in output.read_text(),
                30.0,
                "the new node to seed its grippers from the held command",
            )
    finally:
        stop([p for p in (first, second, sim) if p is not None])


# A child that would run forever; it ends only through the mechanism under test.
CHILD = """
import os, sys, time
sys.path.insert(0, {repo!r})
from eva_runtime.process_lifetime import exit_with_parent, signal_on_parent_death
parent = os.getppid()
{arm}
print("armed", flush=True)
while True:
    time.sleep(0.05)
"""
PARENT = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE, text=True)
assert child.stdout.readline().strip() == "armed"
print(child.pid, flush=True)
child.wait()
"""


@pytest.mark.parametrize(
    "arm",
    ["signal_on_parent_death(15, parent)", "exit_with_parent(parent)"],
    ids=["kernel parent-death signal", "watchdog thread"],
)
def test_a_child_dies_with_its_sigkilled_parent(arm: str) -> None:
    child_code = CHILD.format(repo=str(REPO), arm=arm)
    parent = subprocess.Popen([sys.executable, "-c", PARENT, child_code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        assert not gone(child)
        parent.kill()
        parent.wait(10.0)
        wait_for(lambda: gone(child), 10.0, "the child to exit after its parent")
    finally:
        if not gone(child):
            os.kill(child, signal.SIGKILL)
