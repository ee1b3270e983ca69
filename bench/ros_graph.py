"""Benchmark: the simulated ROS 2 graph as launch runs it, one nominal autonomous episode: topic rates and holds.

Starts `sim_robot_node` and `policy_node` as separate processes (`python -m eva_runtime.ros.<node>`, with the
parameters `ros2 launch eva_runtime bimanual.launch.py use_sim:=true` passes: config/bimanual.yaml, the bundle,
the classic topic convention) on a private ROS domain (loopback discovery), configures and activates the policy
node through its lifecycle services, opens an episode and switches to AUTONOMOUS through its Trigger services,
and for `--seconds` records in its own probe node every topic of the graph. Prints one JSON document:
- per topic: messages, mean rate, inter-arrival gap p50 / p99 / max (the window's end counts as an arrival, so a
  topic that stops shows it), and for stamped messages the largest header-stamp gap and receive - stamp latency
  (commands are stamped with the time they are for: about -1 control period);
- mode changes (each accepted change the policy node logs, with its trigger), the share of time and of control
  ticks (the node's ~/status step counter) in each mode and in HOLD by cause, ticks without a target;
- task success (the task's own check on the privileged state, once a second); CPU per node; load average
  before and after, the nodes' exit codes, their argv and the log files of their output.

    MUJOCO_GL=egl .venv/bin/python bench/ros_graph.py [--seconds 30] [--bundle DIR] [--sim-param NAME:=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.context import Context
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String, UInt8MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from eva_runtime.embodiment import load_embodiment
from eva_runtime.ros.conventions import CONVENTIONS
from eva_runtime.ros.spinning import spinning
from eva_runtime.sim.bimanual_sim import BimanualSim, SimSnapshot
from eva_runtime.sim.tasks import TASKS
from eva_runtime.wire import unpack

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "ros2_ws" / "src" / "eva_runtime" / "config" / "bimanual.yaml"
CONVENTION = "classic"  # the launch file's default
PRIVILEGED = "/eva_sim/privileged_state"
LOG_FORMAT = "[{severity}] [{time}] [{name}]: {message}"
MODE_CHANGE = re.compile(r"^\[\w+\] \[(\d+\.\d+)\] \[policy_node\]: mode (\w+) -> (\w+) \((\w+): (.*)\)$")  # each one
Arrival = tuple[float, float | None]  # (receive time, header stamp), epoch seconds


def topic_specs(bundle: Path) -> dict[str, tuple[type, QoSProfile]]:
    """Every topic of the graph: type and the QoS the graph's own subscribers use (best effort for sensors)."""
    convention = CONVENTIONS[CONVENTION]
    sensor, reliable = qos_profile_sensor_data, QoSProfile(depth=100)
    specs: dict[str, tuple[type, QoSProfile]] = {t: (JointState, sensor) for t in convention.follower_state.values()}
    specs |= {camera.topic: (Image, sensor) for camera in load_embodiment(str(bundle / "embodiment.yaml")).cameras}
    specs |= {topic: (JointState, reliable) for topic in convention.command.values()}
    return specs | {
        "/policy_node/mode": (String, QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL)),
        "/policy_node/status": (String, reliable),
        "/policy_node/plan": (JointTrajectory, reliable),
        "/policy_node/rollout": (Image, sensor),
        "/diagnostics": (DiagnosticArray, reliable),
        PRIVILEGED: (UInt8MultiArray, sensor),
    }


class Probe(Node):
    """Records each message's arrival and header stamp; keeps ~/status samples, the newest diagnostics and the
    newest privileged state; calls the policy node's services. Callbacks only append."""

    def __init__(self, context: Context, specs: dict[str, tuple[type, QoSProfile]]) -> None:
        super().__init__("ros_graph_bench_probe", context=context)
        # Every topic listed, silent ones too; /diagnostics splits per publishing node as messages arrive.
        self.arrivals: dict[str, list[Arrival]] = defaultdict(list, {t: [] for t in specs if t != "/diagnostics"})
        self.status: list[tuple[float, dict[str, Any]]] = []
        self.diagnostics: dict[str, dict[str, Any]] = {}
        self.privileged: UInt8MultiArray | None = None
        self._service_clients: dict[str, Any] = {}
        for topic, (kind, qos) in specs.items():
            self.create_subscription(kind, topic, self._receiver(topic), qos)

    def _receiver(self, topic: str) -> Callable[[Any], None]:
        def receive(message: Any) -> None:
            now = time.time()
            header = getattr(message, "header", None)
            stamp = header.stamp.sec + header.stamp.nanosec * 1e-9 if header is not None else None
            key = topic
            if topic == "/diagnostics":  # two publishers: one series per node
                key = f"/diagnostics ({message.status[0].name.split(':')[0] if message.status else '?'})"
                for status in message.status:
                    values = {item.key: item.value for item in status.values}
                    self.diagnostics[status.name] = {"level": int(status.level[0]), "message": status.message, **values}
            elif topic == "/policy_node/status":
                self.status.append((now, json.loads(message.data)))
            elif topic == PRIVILEGED:
                self.privileged = message
            self.arrivals[key].append((now, stamp))

        return receive

    def call(self, service: str, kind: Any, request: Any, timeout: float) -> Any:
        if service not in self._service_clients:  # one client per service, kept
            self._service_clients[service] = self.create_client(kind, service)
        client = self._service_clients[service]
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {service} not available within {timeout} s")
        response = client.call(request, timeout_sec=timeout)
        if response is None:
            raise TimeoutError(f"{service} did not answer within {timeout} s")
        return response

    def trigger(self, service: str, timeout: float = 30.0) -> str:
        response = self.call(service, Trigger, Trigger.Request(), timeout)
        if not response.success:
            raise RuntimeError(f"{service} refused: {response.message}")
        return response.message

    def transition(self, transition: int, timeout: float) -> None:
        request = ChangeState.Request(transition=Transition(id=transition))
        if not self.call("/policy_node/change_state", ChangeState, request, timeout).success:
            raise RuntimeError(f"policy_node refused lifecycle transition {transition} (see its log)")

    def latest_status(self) -> dict[str, Any]:
        return self.status[-1][1] if self.status else {}  # (a list append is atomic: no lock needed)


def success_check(task: str, control_rate_hz: float) -> Callable[[UInt8MultiArray | None], bool | None]:
    """The task's own success check on the simulator's privileged state, restored into a local scene."""
    sim = BimanualSim(task, control_rate_hz)

    def check(message: UInt8MultiArray | None) -> bool | None:
        if message is not None:
            data = unpack(bytes(message.data))
            sim.restore(SimSnapshot(np.asarray(data["sim_state"], dtype=np.float64), float(data["sim_time"])))
            return TASKS[task].success(sim)
        return None

    return check


def node_commands(bundle: Path, run_dir: Path, task: str, sim_params=(), policy_params=()) -> dict[str, list[str]]:
    """argv of both nodes: what the launch file passes with use_sim:=true, plus a private outcome log and the
    episode's task and instruction (what an operator sets with `ros2 param set`), then any `NAME:=VALUE` given."""
    common = ["--ros-args", "--params-file", str(CONFIG), "-p", f"topic_convention:={CONVENTION}"]
    sim = [*common, "-p", f"embodiment_file:={bundle / 'embodiment.yaml'}", "-p", f"task:={task}"]
    policy = [*common, "-p", f"bundle:={bundle}", "-p", f"log_path:={run_dir / 'outcomes.db'}"]
    policy += ["-p", f"episode.task:={task}", "-p", f"episode.instruction:={TASKS[task].instruction}"]
    sim += [item for value in sim_params for item in ("-p", value)]
    policy += [item for value in policy_params for item in ("-p", value)]
    return {
        "sim_robot_node": [sys.executable, "-m", "eva_runtime.ros.sim_robot_node", *sim],
        "policy_node": [sys.executable, "-m", "eva_runtime.ros.policy_node", *policy],
    }


def start_nodes(commands: dict[str, list[str]], domain: int, run_dir: Path, into: dict) -> None:
    """Start each node with its output in `<run_dir>/<node>.log`; `into` gets each process as soon as it exists."""
    env = os.environ | {"ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    env |= {"ROS_LOG_DIR": str(run_dir / "ros_log"), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    env |= {"RCUTILS_CONSOLE_OUTPUT_FORMAT": LOG_FORMAT, "RCUTILS_LOGGING_BUFFERED_STREAM": "0"}
    for name, argv in commands.items():
        with open(run_dir / f"{name}.log", "wb") as log:
            into[name] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=run_dir
            )


def stop_nodes(processes: dict[str, subprocess.Popen], timeout: float = 30.0) -> dict[str, int | None]:
    """SIGTERM (the node ends its episode and stops its planner), then SIGKILL whatever still runs."""
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    codes: dict[str, int | None] = {}
    for name, process in processes.items():
        try:
            codes[name] = process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            codes[name] = process.wait(10.0)
    return codes


def wait_for(predicate: Callable[[], object], timeout: float, what: str, processes: dict) -> None:
    """Poll `predicate` until true; raise on the deadline or when a node process has ended."""
    deadline = time.monotonic() + timeout
    while not predicate():
        dead = [f"{name} (exit {p.returncode})" for name, p in processes.items() if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{', '.join(dead)} ended during {what} (see the logs)")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def cpu_seconds(processes: dict[str, subprocess.Popen]) -> dict[str, float]:
    """CPU seconds (user + system) so far: this process (the probe), and each node with its live descendants."""
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, CPU seconds)
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()  # the name may hold spaces
        except OSError:
            continue
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    used = {"bench_probe": time.process_time()}
    for name, process in processes.items():
        tree = frontier = {process.pid}
        while frontier:
            frontier = {pid for pid, (parent, _) in stats.items() if parent in frontier} - tree
            tree = tree | frontier
        used[name] = sum(stats[pid][1] for pid in tree if pid in stats)
    return used


def drive_episode(probe: Probe, processes: dict, seconds: float, check: Callable[[Any], bool | None]) -> dict[str, Any]:
    """Configure, activate, open an episode, AUTONOMOUS; measure for `seconds`; label the episode by the check."""
    probe.transition(Transition.TRANSITION_CONFIGURE, 240.0)  # verifies the bundle, starts the planner
    probe.transition(Transition.TRANSITION_ACTIVATE, 60.0)
    status = probe.latest_status
    wait_for(lambda: status().get("active") and not status().get("homing"), 60.0, "activation", processes)
    episode = int(probe.trigger("/policy_node/start_episode").split()[1])  # "episode <id> started"
    probe.trigger("/policy_node/mode/autonomous")
    t0, cpu0 = time.time(), cpu_seconds(processes)
    checks: list[tuple[float, bool | None]] = []
    while (left := t0 + seconds - time.time()) > 0:
        until = time.time() + min(1.0, left)
        wait_for(lambda until=until: time.time() >= until, 2.0, "the episode", processes)
        checks.append((time.time() - t0, check(probe.privileged)))
    t1, cpu1, diagnostics = time.time(), cpu_seconds(processes), dict(probe.diagnostics)
    cpu_share = {name: round((cpu1[name] - cpu0[name]) / (t1 - t0), 3) for name in cpu0}
    final = checks[-1][1] if checks else None
    probe.trigger(f"/policy_node/end_episode/{'success' if final else 'failure'}")  # then HOLD, after the window
    first = next((round(at, 2) for at, ok in checks if ok), None)
    window = {"t0": t0, "t1": t1, "episode_id": episode, "cpu_share": cpu_share, "diagnostics": diagnostics}
    return window | {"success_final": final, "first_success_s": first}


def quantiles(values: np.ndarray) -> dict[str, float | None]:
    points = np.percentile(values, [50, 99, 100]) if values.size else [None] * 3
    return {
        key: None if x is None else round(float(x), 4) for key, x in zip(("p50", "p99", "max"), points, strict=True)
    }


def topic_stats(arrivals: list[Arrival], t0: float, t1: float) -> dict[str, Any]:
    """Messages, rate and gaps in [t0, t1]; the first gap runs from the last arrival before t0 (else t0)."""
    received = np.array([at for at, _ in arrivals], dtype=np.float64)
    stamps = np.array([np.nan if stamp is None else stamp for _, stamp in arrivals], dtype=np.float64)
    inside = (received >= t0) & (received <= t1)
    before = received[received < t0][-1:]
    times = np.concatenate([before if before.size else [t0], received[inside], [t1]])
    result: dict[str, Any] = {
        "messages": int(inside.sum()),
        "rate_hz": round(float(inside.sum()) / (t1 - t0), 2),
        "gap_s": quantiles(np.diff(times)),
    }
    stamped = stamps[inside]
    if stamped.size and np.all(np.isfinite(stamped)):
        result["stamp_gap_s_max"] = round(float(np.diff(stamped).max()), 4) if stamped.size > 1 else None
        result["latency_s"] = quantiles(received[inside] - stamped)
    return result


def mode_changes(log: Path, t0: float, t1: float) -> list[dict[str, Any]] | None:
    """Accepted mode changes logged in the window, after the switch to AUTONOMOUS that opened it (logged at the
    next tick, around t0). None when the log does not show that switch."""
    events = []
    for line in log.read_text(errors="replace").splitlines():
        match = MODE_CHANGE.match(line)
        if match:
            at, before, after, trigger, detail = match.groups()
            events.append({"t_s": float(at) - t0, "from": before, "to": after, "trigger": trigger, "detail": detail})
    opening = [i for i, e in enumerate(events) if e["trigger"] == "operator_autonomous" and e["t_s"] <= 2.0]
    return [e for e in events[opening[-1] + 1 :] if e["t_s"] <= t1 - t0] if opening else None


def mode_shares(changes: list[dict], status: list[tuple[float, dict]], episode: int, t0: float, t1: float) -> dict:
    """Time and control ticks per mode and per HOLD cause (the trigger that entered the HOLD); ticks from the
    node's step counter in ~/status (reset when the episode opened), interpolated at each change."""
    samples = np.array([(at, s["step"]) for at, s in status if s.get("episode_id") == episode], dtype=np.float64)
    tick = (lambda at: float(np.interp(at, samples[:, 0], samples[:, 1]))) if len(samples) >= 2 else None
    bounds = [t0, *(min(max(t0 + c["t_s"], t0), t1) for c in changes), t1]
    states = [("autonomous", "operator_autonomous"), *((c["to"], c["trigger"]) for c in changes)]
    seconds, ticks = defaultdict(float), defaultdict(float)  # mode (and hold/<cause>) -> seconds, ticks
    for (mode, cause), start, end in zip(states, bounds[:-1], bounds[1:], strict=True):
        for key in (mode, f"hold/{cause}") if mode == "hold" else (mode,):
            seconds[key] += end - start
            if tick is not None:
                ticks[key] += tick(end) - tick(start)
    total_ticks = tick(t1) - tick(t0) if tick is not None else 0.0

    def share(values: dict[str, float], total: float) -> dict[str, float]:
        return {key: round(value / total, 4) for key, value in sorted(values.items())} if total > 0 else {}

    return {"time": share(seconds, t1 - t0), "ticks": share(ticks, total_ticks)}


def tick_counters(status: list[tuple[float, dict]], episode: int, t0: float, t1: float) -> dict[str, Any]:
    """The node's own counters over the window: ticks (rate) and ticks without a target (holds, waiting)."""
    inside = [(at, s) for at, s in status if t0 <= at <= t1 and s.get("episode_id") == episode]
    if len(inside) < 2:
        return {}
    (first_at, first), (last_at, last) = inside[0], inside[-1]
    ticks = last["step"] - first["step"]
    idle = last["hold_ticks"] - first["hold_ticks"]
    return {
        "ticks": ticks,
        "tick_rate_hz": round(ticks / (last_at - first_at), 2),
        "ticks_without_target_share": round(idle / ticks, 4) if ticks else None,
        "plans": last["plans"],
        "rejected_plans": last["rejected"],
    }


def report(probe: Probe, window: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    t0, t1 = window["t0"], window["t1"]
    changes = mode_changes(run_dir / "policy_node.log", t0, t1)
    holds = Counter(c["trigger"] for c in changes or [] if c["to"] == "hold")
    return {
        "window_s": round(t1 - t0, 2),
        "episode": {k: window[k] for k in ("episode_id", "success_final", "first_success_s")},
        "cpu_share_of_one_core": window["cpu_share"],  # each node with its child processes (the planner)
        "topics": {topic: topic_stats(probe.arrivals[topic], t0, t1) for topic in sorted(probe.arrivals)},
        "mode_changes": None if changes is None else len(changes),
        "mode_messages_in_window": sum(t0 < at <= t1 for at, _ in probe.arrivals["/policy_node/mode"]),
        "holds_by_cause": dict(sorted(holds.items())),
        "share": mode_shares(changes, probe.status, window["episode_id"], t0, t1) if changes is not None else None,
        "control_ticks": tick_counters(probe.status, window["episode_id"], t0, t1),
        "transitions": [{**c, "t_s": round(c["t_s"], 3)} for c in (changes or [])[:40]],
        "diagnostics_at_end": window["diagnostics"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the measured autonomous window")
    parser.add_argument("--bundle", type=Path, default=ROOT / "models" / "bundle_transfer_cube")
    parser.add_argument("--task", default="transfer_cube", choices=sorted(TASKS))
    parser.add_argument("--domain-id", type=int, default=None, help="ROS domain (default: from the pid, 1-100)")
    parser.add_argument("--sim-param", action="append", default=[], help="NAME:=VALUE for the sim node (repeat)")
    parser.add_argument("--policy-param", action="append", default=[], help="NAME:=VALUE for the policy node")
    args = parser.parse_args()
    bundle = args.bundle.resolve()
    run_dir = Path(tempfile.mkdtemp(prefix="eva_bench_ros_graph_"))
    domain = args.domain_id if args.domain_id is not None else 1 + (os.getpid() * 7 + 97) % 100
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # read when the probe's context starts
    commands = node_commands(bundle, run_dir, args.task, args.sim_param, args.policy_param)
    check = success_check(args.task, load_embodiment(str(bundle / "embodiment.yaml")).control_rate_hz)
    load_before = [round(x, 2) for x in os.getloadavg()]
    processes: dict[str, subprocess.Popen] = {}
    result: dict[str, Any] = {"benchmark": "ros_graph"}
    window = None
    with spinning(domain, lambda context: Probe(context, topic_specs(bundle))) as probe:
        try:
            start_nodes(commands, domain, run_dir, processes)
            window = drive_episode(probe, processes, args.seconds, check)
        except Exception as error:  # still a JSON document, with the logs to read
            result["error"] = f"{type(error).__name__}: {error}"
        finally:
            exit_codes = stop_nodes(processes)
    if window is not None:  # the recordings and the node's log are complete and no longer written
        result |= report(probe, window, run_dir)
    result |= {
        "load_average": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
        "cpu_count": os.cpu_count(),
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "parameters": {**vars(args), "bundle": str(bundle), "domain_id": domain, "config": str(CONFIG)}
        | {"topic_convention": CONVENTION, "argv": commands},
        "node_exit_codes": exit_codes,
        "logs": {name: str(run_dir / f"{name}.log") for name in commands},
    }
    print(json.dumps(result, indent=1))
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
