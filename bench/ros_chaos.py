"""Chaos soak through the simulated ROS 2 graph: random operator actions, malformed messages, node kills, restarts.

The nodes run as processes as in bench/ros_graph.py (leader arms on /teach/joint_left|right for teleop). For
`--minutes`, at random times (mean `--action-period-s`, seeded): mode services, teleop (the probe plays the leader
arms), estop, release, reset_fault, episodes started and ended, malformed follower states and commands, the sim's
~/reset, SIGKILL of the sim node (restarted where its arms were), SIGTERM or SIGKILL of the policy node (restarted).
Checked at every command message: finite, within the position limits, each arm's step within velocity_max *
min(stamp gap, max_tick_interval_s) (the filter's contract), except an arm joint's command landing on that joint's
own reading (a re-seed: the arm is already there; counted apart, not a violation, with the node's seed and reading
from ~/status beside the bench's); HOLD, ESTOP or FAULT while the sim is down. At the end:
every episode in the outcome log with the expected outcome, integrity_check, each node's RSS per incarnation.

    MUJOCO_GL=egl .venv/bin/python bench/ros_chaos.py [--minutes 3] [--seed 0] [--action-period-s 2]
        [--bundle models/bundle_transfer_cube] [--no-kills]
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
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import GetState
from rcl_interfaces.srv import ListParameters
from rclpy.context import Context
from rclpy.qos import QoSProfile
from sensor_msgs.msg import JointState
from std_msgs.msg import Header
from std_srvs.srv import Trigger

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ros_graph import CONVENTION, ROOT, Probe, node_commands, start_nodes, stop_nodes, topic_specs, wait_for

from eva_runtime.embodiment import load_embodiment
from eva_runtime.records.episode_session import ABORTED_BY_SHUTDOWN
from eva_runtime.records.outcome_log import ABORTED_BY_CRASH, OutcomeLog
from eva_runtime.ros.conventions import CONVENTIONS
from eva_runtime.ros.spinning import spinning
from eva_runtime.ros.topic_robot import NO_PUBLISHER_EVENTS as NO_EVENTS  # destroyed safely while spinning
from eva_runtime.safety import SafetyLimits

TOPICS = CONVENTIONS[CONVENTION]
LEADER = {"left": "/teach/joint_left", "right": "/teach/joint_right"}
NAMES = [f"joint{i}" for i in range(7)]
CHAOS = "chaos"  # frame_id of the probe's own malformed messages (not checked as the policy's commands)
ACTIONS = {  # action -> relative weight
    "autonomous": 4.0, "hold": 1.0, "teleop": 2.0, "estop": 1.5, "release": 1.5, "reset_fault": 1.0,
    "start_episode": 2.0, "end_success": 0.7, "end_failure": 0.7, "end_aborted": 0.7, "malformed_states": 1.0,
    "malformed_commands": 1.0, "sim_reset": 0.7, "sim_kill": 0.35, "policy_term": 0.3, "policy_kill": 0.3,
}  # fmt: skip


class ChaosProbe(Probe):
    """ros_graph's probe, plus the checks at every command message, the newest follower pose and the mode topic."""

    def __init__(self, context: Context, specs: dict[str, Any], limits: SafetyLimits) -> None:
        self.limits, self.measured, self.modes = limits, np.full(14, np.nan), []
        self.measured_at = np.full(2, np.nan)  # wall time each arm's newest follower state arrived here
        self._awaiting: list[tuple[dict, slice, float, np.ndarray]] = []  # steps waiting for the node's re-seed
        roles = (TOPICS.command, TOPICS.follower_state)
        self.arm_of, self.follower_arm = ({topic: i for i, topic in enumerate(role.values())} for role in roles)
        self.checked, self.violations, self.examples, self.last_action = Counter(), Counter(), [], (time.time(), "")
        self.reseeds: Counter = Counter()  # arm commands stepping onto the arm's own reading: not a motion
        self._previous: dict[str, tuple[int, np.ndarray]] = {}  # topic -> (stamp in integer ns, position)
        super().__init__(context, specs)

    def _receiver(self, topic: str) -> Callable[[Any], None]:
        receive = super()._receiver(topic)

        def extended(message: Any) -> None:
            receive(message)
            if topic in self.arm_of and message.header.frame_id != CHAOS:
                self.check(topic, message)
            elif topic in self.follower_arm and message.header.frame_id != CHAOS and len(message.position) == 7:
                self.measured[7 * self.follower_arm[topic] :][:7] = message.position
                self.measured_at[self.follower_arm[topic]] = time.time()
            elif topic == "/policy_node/mode":
                self.modes.append((time.time(), message.data))
            elif topic == "/policy_node/status" and self._awaiting:
                self.fill_seeds()

        return extended

    def check(self, topic: str, message: JointState) -> None:
        """Finite, within the position limits, and a step within the velocity cap from the arm's previous command."""
        part, limits = slice(7 * self.arm_of[topic], 7 * self.arm_of[topic] + 7), self.limits
        stamp = message.header.stamp.sec * 1_000_000_000 + message.header.stamp.nanosec  # float s would lose 0.2 us
        position, found = np.asarray(message.position, dtype=np.float64), {}
        self.checked[topic] += 1
        if list(message.name) != NAMES or position.shape != (7,) or not np.all(np.isfinite(position)):
            found["malformed"] = {"names": list(message.name), "position": [float(x) for x in position]}
        else:
            beyond = np.maximum(limits.hard_low[part] - position, position - limits.hard_high[part])
            if beyond.max() > 1e-9:
                found["position"] = {"joint": int(np.argmax(beyond)), "beyond": float(beyond.max())}
            if (previous := self._previous.get(topic)) is not None:
                dt, step = (stamp - previous[0]) * 1e-9, position - previous[1]
                allowed = limits.velocity_max[part] * min(max(dt, 0.0), limits.max_tick_interval_s) * (1 + 1e-6) + 1e-9
                joint = int(np.argmax(np.abs(step) - allowed))
                if abs(step[joint]) > allowed[joint]:
                    # The joint's command landing on the joint's own reading is a re-seed (release, reset_fault):
                    # an arm joint is already there, so the arm does not move; a gripper is never seeded so (it
                    # keeps its command: a step onto its reading opens a grip). Anything else is a jump.
                    gap = float(abs(position[joint] - self.measured[part][joint]))
                    gripper = bool(limits.is_gripper[part][joint])
                    kind = "step" if gap >= 0.02 else "step_onto_measured_gripper" if gripper else "reseed_onto_arm"
                    detail = {"joint": joint, "step": float(step[joint]), "allowed": float(allowed[joint]), "dt_s": dt}
                    detail.update(command=position.round(4).tolist(), previous=previous[1].round(4).tolist())
                    found[kind] = {**detail, "to_measured": gap, **self.reading_age(part)}
            self._previous[topic] = (stamp, position)
        for kind, detail in found.items():
            (self.reseeds if kind == "reseed_onto_arm" else self.violations)[kind] += 1
            if sum(example["kind"] == kind for example in self.examples) < 10:  # the first ten of each kind
                context = {"last_action": self.last_action[1], "since_s": round(time.time() - self.last_action[0], 2)}
                self.examples.append({"kind": kind, "topic": topic, "stamp_s": stamp * 1e-9, **detail, **context})
                if "to_measured" in detail:  # a step or a re-seed: the node's side comes with a later ~/status
                    self._awaiting.append((self.examples[-1], part, time.time(), self.measured[part].copy()))

    def reading_age(self, part: slice) -> dict:
        """Beside a step: how old the bench's reading of the arm is. The node's re-seed (the reading it started from
        and the seed) comes later on ~/status, published at its own rate: `fill_seeds` adds it when it arrives."""
        return {"bench_reading_age_s": round(time.time() - float(self.measured_at[part.start // 7]), 3)}

    def fill_seeds(self) -> None:
        """Complete the steps waiting for the node's re-seed: the first ~/status whose `last_reseed` is no older
        than the step (plus 0.5 s), with the distances from its reading and seed to the bench's reading then."""
        reseed = self.latest_status().get("last_reseed")
        waiting, self._awaiting = self._awaiting, []
        for found, part, at, bench_reading in waiting:
            if not reseed or reseed["age_s"] > time.time() - at + 0.5:
                self._awaiting.append((found, part, at, bench_reading))
                continue
            node_reading, node_seed = np.array(reseed["measured"])[part], np.array(reseed["seed"])[part]
            found["node_reseed_before_step_s"] = round(reseed["age_s"] - (time.time() - at), 3)
            found["node_reading_to_bench_reading"] = float(np.abs(node_reading - bench_reading).max())
            found["node_seed_to_bench_reading"] = float(np.abs(node_seed - bench_reading).max())
            found["node_reading"], found["node_seed"] = node_reading.round(4).tolist(), node_seed.round(4).tolist()
            found["bench_reading"] = bench_reading.round(4).tolist()


def proc(pid: int, name: str) -> str:
    try:
        return Path(f"/proc/{pid}/{name}").read_text()
    except OSError:
        return ""  # the process is gone


def rss_mb(pid: int) -> float:
    match = re.search(r"^VmRSS:\s+(\d+)", proc(pid, "status"), re.MULTILINE)
    return int(match[1]) / 1024 if match else 0.0


def descendants(pid: int) -> set[int]:
    stats = {int(entry.name): proc(int(entry.name), "stat") for entry in Path("/proc").glob("[0-9]*")}
    parents = {child: int(stat.rpartition(")")[2].split()[1]) for child, stat in stats.items() if stat}
    found, frontier = set(), {pid}
    while frontier := {child for child, parent in parents.items() if parent in frontier} - found:
        found |= frontier
    return found


class Chaos:
    """The node processes and the random actions on them; every action is logged with its time and answer."""

    def __init__(self, probe: ChaosProbe, argv: dict[str, list[str]], run_dir: Path, domain: int, seed: int) -> None:
        self.probe, self.argv, self.run_dir, self.domain = probe, argv, run_dir, domain
        self.rng, self.stop, self.t0 = np.random.default_rng(seed), threading.Event(), time.time()
        self.processes: dict[str, subprocess.Popen] = {}  # the current incarnation of each node
        self.incarnations: dict[str, subprocess.Popen] = {}  # node.incarnation -> process (every one)
        self.keys: dict[int, str] = {}  # pid -> node.incarnation
        self.log, self.episodes = [], {}  # actions; episode id -> the outcome (and reason) the log should hold
        self.rss: dict[str, list[tuple[float, float, float]]] = {}  # node.incarnation -> (t, node MB, children MB)
        self.open_episode, self.children, self.leader_pose, self.leader_until = None, set(), None, 0.0

    def spawn(self, name: str, extra: tuple[str, ...] = ()) -> None:
        key = f"{name}.{1 + sum(key.startswith(name) for key in self.incarnations)}"
        start_nodes({key: [*self.argv[name], *extra]}, self.domain, self.run_dir, self.incarnations)
        self.keys[self.incarnations[key].pid], self.processes[name] = key, self.incarnations[key]

    def answers(self, call: Callable[[], object]) -> bool:
        """Whether `call` succeeded: a request sent while only a SIGKILLed node's stale endpoint is matched is lost
        (a plain call would wait out its whole timeout), and activate is refused without fresh joint states."""
        try:
            call()
        except (TimeoutError, RuntimeError):
            time.sleep(0.5)
            return False
        return True

    def bring_up_policy(self) -> str:
        began = time.time()
        get_state = partial(self.probe.call, "/policy_node/get_state", GetState, GetState.Request(), 2.0)
        wait_for(lambda: self.answers(get_state), 120.0, "policy_node's services", self.processes)
        self.probe.transition(Transition.TRANSITION_CONFIGURE, 240.0)  # verifies the bundle, starts the planner
        activate = partial(self.probe.transition, Transition.TRANSITION_ACTIVATE, 60.0)
        wait_for(lambda: self.answers(activate), 60.0, "an accepted activate", self.processes)
        return f"configured and active in {time.time() - began:.1f} s"  # no home_pose: HOLD at once

    def act(self, name: str) -> None:
        """Run one action and log it: when, whether it was accepted, the answer, how long, the mode after it."""
        began = time.time()
        self.probe.last_action = (began, name)
        try:
            ok, detail = self.run_action(name)
        except Exception as error:  # a failed call or restart is a finding: logged, and the soak goes on
            ok, detail = False, f"{type(error).__name__}: {error}"
        entry = {"t_s": round(began - self.t0, 2), "action": name, "ok": ok, "detail": detail[:240]}
        mode = self.probe.modes[-1][1] if self.probe.modes else None
        self.log.append(entry | {"took_s": round(time.time() - began, 2), "mode_after": mode})

    def run_action(self, name: str) -> tuple[bool, str]:
        special = {"revive": self.revive, "sim_kill": self.restart_sim,
                   "policy_term": lambda: self.restart_policy(signal.SIGTERM),
                   "policy_kill": lambda: self.restart_policy(signal.SIGKILL),
                   "malformed_states": lambda: self.malformed(TOPICS.follower_state),
                   "malformed_commands": lambda: self.malformed(TOPICS.command)}  # fmt: skip
        if name in special:
            return special[name]()
        if name == "teleop":  # an operator takes the leader arms near the followers' pose and holds them for 2-8 s
            pose, limits = self.probe.measured + self.rng.uniform(-0.15, 0.15, 14), self.probe.limits
            self.leader_pose = np.clip(pose, limits.soft_low, limits.soft_high) if np.all(np.isfinite(pose)) else None
            self.leader_until = time.time() + float(self.rng.uniform(2.0, 8.0))
            time.sleep(0.1)  # fresh leader states before the request
        mode = "mode/" if name in ("autonomous", "hold", "teleop") else ""
        service = f"/policy_node/{mode}{name.replace('end_', 'end_episode/')}"
        service = "/sim_robot_node/reset" if name == "sim_reset" else service
        response = self.probe.call(service, Trigger, Trigger.Request(), 20.0)
        if response.success and (match := re.match(r"episode (\d+) (started|ended)", response.message)):
            ended = match[2] == "ended"
            self.open_episode = None if ended else int(match[1])
            self.episodes.setdefault(int(match[1]), {})["expected"] = name[4:] if ended else None
        return bool(response.success), str(response.message)

    def operate_leaders(self) -> None:
        publishers = [self.probe.create_publisher(JointState, topic, 10) for topic in LEADER.values()]
        while not self.stop.wait(0.02):
            if (pose := self.leader_pose) is None or time.time() > self.leader_until:
                continue  # the operator let go: the node's leader timeout makes it HOLD
            header = Header(stamp=self.probe.get_clock().now().to_msg())
            for publisher, arm in zip(publishers, (pose[:7], pose[7:]), strict=True):
                publisher.publish(JointState(header=header, name=NAMES, position=[float(x) for x in arm]))

    def malformed(self, topics: dict[str, str]) -> tuple[bool, str]:
        """Malformed JointStates from publishers that live for the burst (a lasting one would block activation)."""
        wanted, kinds = list(topics.values()), Counter()
        publishers = [self.probe.create_publisher(JointState, t, 10, event_callbacks=NO_EVENTS) for t in wanted]
        wait_for(lambda: min(p.get_subscription_count() for p in publishers), 5.0, "subscribers", self.processes)
        for _ in range(int(self.rng.integers(3, 15))):  # a non-finite value, the wrong count, the wrong names, nothing
            kinds[kind := str(self.rng.choice(["nan", "inf", "short", "long", "names", "empty"]))] += 1
            position = self.rng.uniform(-0.5, 0.5, 7)
            position[self.rng.integers(7)] = float(kind) if kind in ("nan", "inf") else position[0]
            wrong = {"short": (NAMES[:6], position[:6]), "long": ([*NAMES, "j7"], [*position, 0]), "empty": ([], [])}
            names, values = wrong.get(kind, ([f"j{i}" for i in range(7)] if kind == "names" else NAMES, position))
            message = JointState(header=Header(frame_id=CHAOS), name=list(names), position=[float(x) for x in values])
            publishers[int(self.rng.integers(2))].publish(message)
            time.sleep(0.01)
        time.sleep(0.3)  # delivered before the publishers go
        for publisher in publishers:
            self.probe.destroy_publisher(publisher)
        return True, json.dumps(dict(sorted(kinds.items())))

    def restart_sim(self) -> tuple[bool, str]:
        """SIGKILL the sim node; while it is down the policy node must hold; restart it where the arms were."""
        pose = self.probe.measured.copy()
        self.processes["sim_robot_node"].kill()
        code = self.processes["sim_robot_node"].wait(10.0)
        time.sleep(float(self.rng.uniform(0.5, 3.0)))
        down = {key: self.probe.latest_status().get(key) for key in ("mode", "mode_reason")}
        began, pose_argument = time.time(), "start_pose:=[" + ",".join(f"{x:.6f}" for x in pose) + "]"
        self.spawn("sim_robot_node", ("-p", pose_argument) if np.all(np.isfinite(pose)) else ())
        ask = partial(self.probe.call, "/sim_robot_node/list_parameters", ListParameters, ListParameters.Request(), 2)
        wait_for(lambda: self.answers(ask), 120.0, "the new sim node", self.processes)
        safe = down["mode"] in ("hold", "estop", "fault")
        return safe, f"exit {code}; while down: {json.dumps(down)}; back after {time.time() - began:.1f} s"

    def restart_policy(self, sig: int) -> tuple[bool, str]:
        """SIGTERM (it ends its episode) or SIGKILL (the next writer aborts it); then start, configure, activate."""
        process, children = self.processes["policy_node"], descendants(self.processes["policy_node"].pid)
        if sig == signal.SIGKILL:
            process.kill()
        code = stop_nodes({"policy_node": process})["policy_node"]  # SIGTERM, SIGKILL after 30 s
        self.close_expected(ABORTED_BY_SHUTDOWN if sig == signal.SIGTERM else ABORTED_BY_CRASH)
        time.sleep(1.0)
        left = sorted(pid for pid in children if proc(pid, "stat").rpartition(")")[2][1:2] not in ("", "Z"))
        self.spawn("policy_node")
        return not left, f"exit {code}; children alive 1 s later: {left}; {self.bring_up_policy()}"

    def revive(self) -> tuple[bool, str]:
        """A node that ended by itself is a finding (not ok): started again."""
        ended = {name: process.returncode for name, process in self.processes.items() if process.poll() is not None}
        if "policy_node" in ended:
            self.close_expected(ABORTED_BY_CRASH)
        for name in ended:
            self.spawn(name)
        return False, f"ended by themselves: {ended}; " + (self.bring_up_policy() if "policy_node" in ended else "")

    def close_expected(self, reason: str) -> None:  # the open episode ends aborted, by shutdown or by recovery
        if self.open_episode is not None:
            self.episodes[self.open_episode] |= {"expected": "aborted", "reason": reason}
            self.open_episode = None

    def sample_memory(self) -> None:
        while not self.stop.wait(2.0):
            for process in list(self.processes.values()):
                node, children = rss_mb(process.pid), descendants(process.pid)
                if node and process.poll() is None:
                    self.children |= children
                    sample = (time.time() - self.t0, node, sum(rss_mb(pid) for pid in children))
                    self.rss.setdefault(self.keys[process.pid], []).append(sample)

    def soak(self, seconds: float, period: float) -> None:
        for target in (self.sample_memory, self.operate_leaders):
            threading.Thread(target=target, daemon=True).start()
        self.spawn("sim_robot_node")
        self.spawn("policy_node")
        self.bring_up_policy()
        names, weights = list(ACTIONS), np.array(list(ACTIONS.values()))
        end = time.time() + seconds
        while (left := end - time.time()) > 0:
            time.sleep(min(left, float(self.rng.exponential(period))))
            if any(process.poll() is not None for process in self.processes.values()):
                self.act("revive")
            if time.time() < end:
                self.act(str(self.rng.choice(names, p=weights / weights.sum())))
        time.sleep(1.0)  # the last commands reach the probe

    def finish(self) -> dict[str, Any]:
        """SIGTERM both nodes (an open episode ends aborted), SIGKILL what remains; exit codes and leftovers."""
        self.stop.set()
        self.close_expected(ABORTED_BY_SHUTDOWN)
        codes = stop_nodes(self.incarnations)
        time.sleep(1.0)
        ours = {process.pid for process in self.incarnations.values()} | self.children
        pgrep = subprocess.run(["pgrep", "-f", "eva_runtime.ros"], capture_output=True, text=True).stdout.split()
        left = [pid for pid in ours if proc(pid, "stat").rpartition(")")[2][1:2] not in ("", "Z") or str(pid) in pgrep]
        return {"exit_codes": codes, "processes_left": sorted(left)}


def memory_report(samples: list[tuple[float, float, float]], warmup_s: float = 30.0) -> dict[str, Any]:
    """RSS of the node process and of its children (the planner): first, last, max, slope after the warm-up."""
    array = np.array(samples)
    settled = array[array[:, 0] >= array[0, 0] + warmup_s]
    result: dict[str, Any] = {"samples": len(array), "span_s": round(float(array[-1, 0] - array[0, 0]), 1)}
    for column, key in ((1, "rss_mb"), (2, "children_rss_mb")):
        slope = np.polyfit(settled[:, 0] / 60.0, settled[:, column], 1)[0] if len(settled) >= 5 else None
        first, last, most = (round(float(x), 1) for x in (array[0, column], array[-1, column], array[:, column].max()))
        result[key] = {"first": first, "last": last, "max": most, "slope_per_min": slope and round(float(slope), 3)}
    return result


def outcome_report(path: Path, expected: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Every episode started is in the log with an outcome (the expected one and reason where the bench knows)."""
    if not path.is_file():
        return {"error": f"no outcome log at {path}", "problems": [{"problem": "no log"}]}
    with OutcomeLog(path, read_only=True) as log:
        integrity, records = log.pragma("integrity_check"), {record.id: record for record in log.episodes()}
    problems = []
    for episode, want in sorted(expected.items()):
        record = records.get(episode)
        found = None if record is None else [record.outcome, record.labelled_by, record.failure_reason]
        wrong = want.get("expected") and (found is None or found[0] != want["expected"])
        if found is None or found[0] is None or wrong or (want.get("reason") and found[2] != want["reason"]):
            problems.append({"episode": episode, "expected": want, "found": found})
    return {
        "integrity_check": integrity, "episodes_started": len(expected), "episodes_in_log": len(records),
        "problems": problems, "not_started_by_bench": [i for i in records if i not in expected],
        "by_outcome": Counter(f"{record.outcome}/{record.labelled_by}" for record in records.values()),
        "aborted_reasons": Counter(str(r.failure_reason) for r in records.values() if r.outcome == "aborted"),
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="length of the soak after the first bring-up")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random actions and their times")
    parser.add_argument("--bundle", type=Path, default=ROOT / "models" / "bundle_transfer_cube")
    parser.add_argument("--action-period-s", type=float, default=2.0, help="mean seconds between random actions")
    parser.add_argument("--no-kills", action="store_true", help="no node kills: one incarnation each (memory)")
    args = parser.parse_args()
    if args.no_kills:  # every other action stays; the nodes then live the whole soak, so their memory has a trend
        ACTIONS.update(sim_kill=0.0, policy_term=0.0, policy_kill=0.0)
    bundle, run_dir = args.bundle.resolve(), Path(tempfile.mkdtemp(prefix="eva_bench_ros_chaos_"))
    domain = 1 + (os.getpid() * 7 + 97) % 100
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # read when the probe's context starts
    leaders = [f"topics.leader_state.{arm}:={topic}" for arm, topic in LEADER.items()]
    argv = node_commands(bundle, run_dir, "transfer_cube", (), leaders)
    limits = SafetyLimits.from_embodiment(load_embodiment(str(bundle / "embodiment.yaml")))
    specs = topic_specs(bundle) | {topic: (JointState, QoSProfile(depth=1000)) for topic in TOPICS.command.values()}
    with spinning(domain, lambda context: ChaosProbe(context, specs, limits)) as probe:
        chaos, result = Chaos(probe, argv, run_dir, domain, args.seed), {"benchmark": "ros_chaos"}
        try:
            chaos.soak(args.minutes * 60.0, args.action_period_s)
        except Exception as error:  # still a JSON document, with the logs to read
            result["error"] = f"{type(error).__name__}: {error}"
        finally:
            ending = chaos.finish()
    done, accepted = Counter(item["action"] for item in chaos.log), Counter(i["action"] for i in chaos.log if i["ok"])
    watched = ("policy_node: inputs", "policy_node: safety filter", "sim_robot_node: commands")
    result |= {
        "wall_s": round(time.time() - chaos.t0, 1),
        "commands": {
            "checked": dict(probe.checked),
            "violations": dict(probe.violations),
            "reseeds_onto_the_arms_reading": sum(probe.reseeds.values()),
            "examples": probe.examples,
        },
        "actions_done_accepted": {name: [done[name], accepted[name]] for name in sorted(done)},
        "mode_messages": Counter(mode for _, mode in probe.modes),
        "outcome_log": outcome_report(run_dir / "outcomes.db", chaos.episodes),
        "memory": {key: memory_report(samples) for key, samples in chaos.rss.items()},
        "diagnostics_at_end": {name: value for name, value in probe.diagnostics.items() if name in watched},
        "logs": {key: str(run_dir / f"{key}.log") for key in chaos.incarnations},
        "action_log": chaos.log,
    } | ending
    result |= {"parameters": {**vars(args), "bundle": str(bundle), "domain_id": domain, "argv": argv}}
    print(json.dumps(result, indent=1, default=str))
    bad = probe.violations or result["outcome_log"]["problems"] or ending["processes_left"]
    return 1 if "error" in result or bad else 0


if __name__ == "__main__":
    sys.exit(main())
