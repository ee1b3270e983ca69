"""The operator's services of the policy node (std_srvs/Trigger): mode switches, e-stop and release, episodes.

A mixin of :class:`~eva_runtime.ros.policy_node.PolicyNode` (it uses the node's lock, runtime and parameters).
Every mode command goes through the loop's mode table (`AutonomousLoop.command`); a refused one answers
`success=false` with the reason. Episodes take their arguments from parameters (`episode.task`,
`episode.instruction`, `episode.split`, `episode.note`), because a custom .srv would need rosidl code generation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from rclpy.parameter import Parameter
from std_srvs.srv import Trigger

from eva_runtime.control.episode_runner import episode_counters
from eva_runtime.control.modes import Mode
from eva_runtime.control.modes import Trigger as ModeTrigger
from eva_runtime.robots.interface import RobotError
from eva_runtime.ros.parameters import read

if TYPE_CHECKING:
    from eva_runtime.ros.policy_setup import PolicyRuntime

__all__ = ["MODE_SERVICES", "OUTCOME_SERVICES", "OperatorServices"]

MODE_SERVICES = {
    "mode/autonomous": ModeTrigger.OPERATOR_AUTONOMOUS,
    "mode/teleop": ModeTrigger.OPERATOR_TELEOP,
    "mode/hold": ModeTrigger.OPERATOR_HOLD,
    "estop": ModeTrigger.OPERATOR_ESTOP,
    "release": ModeTrigger.OPERATOR_RELEASE,
    "reset_fault": ModeTrigger.OPERATOR_RESET,
}
OUTCOME_SERVICES = {
    "end_episode/success": "success",
    "end_episode/failure": "failure",
    "end_episode/aborted": "aborted",
}


class OperatorServices:
    """Service handlers of the policy node (mixed into it)."""

    def _create_services(self, runtime: PolicyRuntime) -> None:
        actions: dict[str, Callable[[], tuple[bool, str]]] = {
            name: partial(self.operator, trigger) for name, trigger in MODE_SERVICES.items()
        }
        actions["start_episode"] = self.start_episode
        actions |= {name: partial(self.end_episode, outcome) for name, outcome in OUTCOME_SERVICES.items()}
        for name, action in actions.items():
            service = self.create_service(
                Trigger, f"~/{name}", self._handler(action), callback_group=self._service_group
            )
            runtime.handles.append((self.destroy_service, service))

    def _handler(self, action: Callable[[], tuple[bool, str]]):
        def handle(request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
            try:
                response.success, response.message = action()
            except Exception as error:  # escaping a callback, it would end the executor (and the hold commands)
                self.get_logger().error(f"service failed: {type(error).__name__}: {error}")
                response.success, response.message = False, f"internal error: {type(error).__name__}: {error}"
            return response

        return handle

    def operator(self, trigger: ModeTrigger) -> tuple[bool, str]:
        """An operator's mode command through the mode table; (accepted, what happened or why not)."""
        with self._lock:
            runtime = self._runtime
            if runtime is None:
                return False, "the node is not configured"
            loop = runtime.loop
            if trigger in (ModeTrigger.OPERATOR_AUTONOMOUS, ModeTrigger.OPERATOR_TELEOP):
                if not self._active:
                    return False, "the node is not active: activate it first (ros2 lifecycle set ... activate)"
                if loop.homing:
                    return False, "homing is in progress"
            if trigger is ModeTrigger.OPERATOR_TELEOP and runtime.topics.leader_unavailable:
                return False, f"teleop unavailable: {runtime.topics.leader_unavailable}"
            try:
                event = loop.command(trigger)
            except RobotError as error:
                return False, str(error)
            if not event.accepted:
                return False, f"{trigger.value} refused in {event.before.value}: {event.detail}"
            if event.after is not event.before:
                self._mode_reason = f"{trigger.value}: operator"
            self._publish_mode()
            return True, f"{event.before.value} -> {event.after.value}"

    def start_episode(self) -> tuple[bool, str]:
        """Open an episode in the outcome log from the `episode.*` parameters; (accepted, what or why not)."""
        with self._lock:
            runtime = self._runtime
            if runtime is None:
                return False, "the node is not configured"
            instruction = self._instruction(runtime)
            problem = runtime.loop.input_problem()
            if problem is not None:
                return False, f"refused: {problem}"  # an episode that could only hold would log a false failure
            try:
                if not instruction:
                    raise ValueError("no instruction: set episode.instruction or publish one on the instruction topic")
                episode_id = runtime.session.start(
                    str(read(self, "episode.task")), instruction, str(read(self, "episode.split"))
                )
            except ValueError as error:
                return False, str(error)
            runtime.loop.new_episode(int(read(self, "episode.seed")))
            self.episode_began = self.get_clock().now().nanoseconds * 1e-9
            if runtime.recording is not None:
                runtime.recording.begin(runtime.log.run_id, episode_id)
            self._last_log_update = time.monotonic()
        return True, f"episode {episode_id} started"

    def end_episode(self, outcome: str) -> tuple[bool, str]:
        """Label and close the open episode (the note comes from `episode.note`, then cleared); then HOLD."""

        with self._lock:
            runtime = self._runtime
            if runtime is None:
                return False, "the node is not configured"
            loop = runtime.loop
            note = str(read(self, "episode.note"))
            try:
                episode_id = runtime.session.end(outcome, episode_counters(loop.stats, loop.period), note)
            except ValueError as error:
                return False, str(error)
            if runtime.recording is not None:
                runtime.recording.end(runtime.log, episode_id)
            if note:
                self.set_parameters([Parameter("episode.note", Parameter.Type.STRING, "")])
            if loop.modes.mode in (Mode.AUTONOMOUS, Mode.TELEOP):
                loop.command(ModeTrigger.OPERATOR_HOLD, "episode ended")  # a finished episode does not keep moving
                self._publish_mode()
        return True, f"episode {episode_id} ended: {outcome}"
