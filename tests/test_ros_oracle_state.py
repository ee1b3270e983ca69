"""The policy node's view of the simulator for the oracle (a test instrument): never a state from before the
episode began (the sim's ~/reset comes just before `start_episode`, and the newest state on the topic may still
show the last episode's scene), and a malformed or unstamped state is refused and counted."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from std_msgs.msg import UInt8MultiArray

from eva_runtime.embodiment import load_embodiment
from eva_runtime.ros.policy_node import PolicyNode
from eva_runtime.safety import SafetyLimits, reset_state
from eva_runtime.sim.bimanual_sim import START_POSE
from eva_runtime.wire import pack
from tests.conftest import CALIBRATION

LIMITS = SafetyLimits.from_embodiment(load_embodiment(CALIBRATION / "aloha_sim.yaml"))


def _node(**fields) -> SimpleNamespace:
    """The attributes the two methods read and write (no ROS context needed for their logic)."""
    return SimpleNamespace(**{"_privileged": None, "_privileged_rejected": 0, "episode_began": -np.inf, **fields})


def _message(**data) -> UInt8MultiArray:
    message = UInt8MultiArray()
    message.data = pack(data)
    return message


def test_a_state_from_before_the_episode_began_is_not_used() -> None:
    filter_state = reset_state(LIMITS, 5.0, START_POSE)
    node = _node(episode_began=100.5)
    PolicyNode._on_privileged_state(node, _message(sim_state=np.zeros(4), sim_time=12.0, stamp=100.48))
    assert node._privileged is not None and PolicyNode._oracle_state(node, 0, filter_state) is None
    PolicyNode._on_privileged_state(node, _message(sim_state=np.ones(4), sim_time=0.02, stamp=100.52))
    oracle = PolicyNode._oracle_state(node, 7, filter_state)
    assert oracle.step == 7 and oracle.snapshot.time == 0.02 and np.array_equal(oracle.snapshot.state, np.ones(4))
    assert oracle.filter_state.time == 0.02  # the oracle re-simulates on the simulator's time line


def test_unstamped_or_malformed_states_are_refused_and_counted() -> None:
    node = _node()
    PolicyNode._on_privileged_state(node, _message(sim_state=np.zeros(4), sim_time=1.0))  # no stamp
    PolicyNode._on_privileged_state(node, _message(sim_state=np.zeros(4), sim_time="soon", stamp=1.0))
    bad = UInt8MultiArray()
    bad.data = b"\x00not msgpack"
    PolicyNode._on_privileged_state(node, bad)
    assert node._privileged is None and node._privileged_rejected == 3
    assert PolicyNode._oracle_state(node, 0, reset_state(LIMITS, 0.0, START_POSE)) is None
