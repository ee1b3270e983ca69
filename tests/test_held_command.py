"""The held command: a restarted runtime's grippers continue the last command when it is the same hold.

The file's rules (format, embodiment, age, atomic replacement, write failures counted) and the seed's rules (arms
always from the reading; grippers from the held command only when neither the arms nor the grippers moved since,
reading compared with reading; always inside the hard range), then the policy node: it keeps the file while it
streams, and a node configured and activated again starts its grippers from it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lifecycle_msgs.msg import Transition

from eva_runtime.control.held_command import FORMAT, HeldCommand, HeldCommandFile, seed_grippers
from eva_runtime.embodiment import load_embodiment
from eva_runtime.safety import SafetyLimits
from eva_runtime.sim.bimanual_sim import START_POSE
from tests.ros_graph import BUNDLE, Graph, domain_id, wait_for

LIMITS = SafetyLimits.from_embodiment(load_embodiment(BUNDLE / "embodiment.yaml"))
GRIPPERS = LIMITS.is_gripper
SQUEEZING = np.where(GRIPPERS, 0.07, START_POSE)  # both grippers commanded shut on an object
HELD_APART = np.where(GRIPPERS, 0.9, START_POSE + 0.05)  # what they read: the object's width, an arm pressing


def _held_json(**fields) -> str:
    data = {"format": FORMAT, "embodiment": "aloha_sim", "wall_time": 100.0, "command": [0.0] * 14}
    data["measured"] = [0.0] * 14
    data.update(fields)
    return json.dumps({key: value for key, value in data.items() if value is not None})


def _seed(measured, held, **tolerances):
    return seed_grippers(measured, held, GRIPPERS, LIMITS.hard_low, LIMITS.hard_high, **tolerances)


def test_the_file_round_trips_and_writes_at_most_every_interval(tmp_path: Path) -> None:
    kept = HeldCommandFile(tmp_path / "held.json", "aloha_sim", 14, min_interval_s=0.1)
    assert kept.write(START_POSE, START_POSE, now=100.0)
    assert not kept.write(SQUEEZING, HELD_APART, now=100.05)  # too soon
    assert not kept.write(START_POSE, START_POSE, now=100.5)  # unchanged
    assert kept.write(START_POSE, HELD_APART, now=100.6)  # the same command, a new reading
    assert kept.write(SQUEEZING, HELD_APART, now=100.8)
    held, problem = kept.read(max_age_s=10.0, now=101.0)
    assert problem == "" and held is not None
    assert np.array_equal(held.command, SQUEEZING) and np.array_equal(held.measured, HELD_APART)
    assert held.wall_time == 100.8 and held.embodiment == "aloha_sim"
    assert [p.name for p in tmp_path.iterdir()] == ["held.json"]  # the temporary file was renamed, not left


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no held command"),
        ("{not json", "unreadable held command"),
        (json.dumps({"format": "other"}), "not a eva-runtime/held-command-v1 file"),
        (json.dumps({"format": FORMAT, "embodiment": "aloha_sim", "wall_time": 100.0}), "malformed held command"),
        (_held_json(embodiment="piper"), "'piper'"),
        (_held_json(command=[0.0] * 7), "14"),
        (_held_json(command=[1e999] * 14), "14"),
        (_held_json(measured=[0.0] * 13), "14"),
        (_held_json(measured=None), "malformed held command"),
        (_held_json(wall_time=10.0), "old"),
        (_held_json(wall_time=200.0), "old"),
    ],
)
def test_a_bad_held_file_is_not_used_and_says_why(tmp_path: Path, content, message) -> None:
    path = tmp_path / "held.json"
    if content is not None:
        path.write_text(content)
    held, problem = HeldCommandFile(path, "aloha_sim", 14).read(max_age_s=60.0, now=101.0)
    assert held is None and message in problem


def test_a_failed_write_is_counted_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("")
    kept = HeldCommandFile(blocker / "held.json", "aloha_sim", 14)
    assert not kept.write(START_POSE, START_POSE, now=1.0)
    assert kept.failures == 1 and "not_a_directory" in kept.last_error
    kept = HeldCommandFile(tmp_path / "held.json", "aloha_sim", 14)
    assert kept.write(START_POSE, START_POSE, now=1.0)
    assert not kept.write(np.full(14, np.nan), START_POSE, now=2.0)  # not kept: the last good command stays
    assert kept.failures == 1 and "14 finite values" in kept.last_error
    assert np.array_equal(kept.read(max_age_s=10.0, now=3.0)[0].command, START_POSE)


def test_the_grippers_continue_a_squeeze_and_the_arms_come_from_the_reading() -> None:
    reading = HELD_APART + 0.005  # as when the command was sent: the arm pressing 0.05 rad off, the fingers apart
    seed, why = _seed(reading, HeldCommand(0.0, SQUEEZING, "aloha_sim", HELD_APART))
    assert np.allclose(seed[GRIPPERS], 0.07) and np.array_equal(seed[~GRIPPERS], reading[~GRIPPERS])
    assert "continue the held command" in why


def test_the_reading_is_used_when_the_held_command_is_not_this_holds() -> None:
    held = HeldCommand(0.0, SQUEEZING, "aloha_sim", HELD_APART)
    moved = HELD_APART.copy()
    moved[2] += 0.1
    seed, why = _seed(moved, held)
    assert np.array_equal(seed, moved) and "arms moved 0.100 rad" in why
    closed_since = np.where(GRIPPERS, 0.07, HELD_APART)  # the fingers shut on nothing since: the object is gone
    seed, why = _seed(closed_since, held)
    assert np.array_equal(seed, closed_since) and "a gripper moved 0.830" in why
    seed, why = _seed(moved, None)
    assert np.array_equal(seed, moved) and "no held command" in why


@settings(max_examples=200, deadline=None)
@given(
    reading=st.lists(st.floats(-4.0, 4.0), min_size=14, max_size=14),
    command=st.lists(st.floats(-4.0, 4.0), min_size=14, max_size=14),
)
def test_a_seed_keeps_the_arms_read_and_the_grippers_in_range(reading, command) -> None:
    reading, command = np.array(reading), np.array(command)
    then = reading.copy()
    then[GRIPPERS] = command[GRIPPERS] + 0.5 * (reading[GRIPPERS] - command[GRIPPERS])  # the grippers decide
    seed, _ = _seed(reading, HeldCommand(0.0, command, "aloha_sim", then))
    assert np.array_equal(seed[~GRIPPERS], reading[~GRIPPERS])
    used = not np.array_equal(seed[GRIPPERS], reading[GRIPPERS])
    if used:
        low, high = LIMITS.hard_low[GRIPPERS], LIMITS.hard_high[GRIPPERS]
        assert np.all(seed[GRIPPERS] >= low) and np.all(seed[GRIPPERS] <= high)
        assert np.all(np.abs(reading[GRIPPERS] - then[GRIPPERS]) <= 0.05)


def test_a_node_configured_again_starts_its_grippers_from_the_held_command(tmp_path: Path) -> None:
    graph = Graph(tmp_path / "outcomes.db", domain_id(11))
    held_file = tmp_path / "outcomes.held_command.json"
    try:
        probe, topics = graph.probe, graph.convention.command
        graph.activate()
        wait_for(held_file.exists, 10.0, "the held command written beside the outcome log")

        def file_follows_the_commands() -> bool:
            kept = np.array(json.loads(held_file.read_text())["command"])
            recent = [np.r_[left, right] for (_, left), (_, right) in zip(
                probe.recorded(topics["left"], time.time() - 1.0), probe.recorded(topics["right"], time.time() - 1.0),
                strict=False,
            )]  # fmt: skip
            return any(np.abs(kept - sent).max() < 1e-6 for sent in recent)

        wait_for(file_follows_the_commands, 10.0, "the held command to be one the node sent")
        assert probe.transition("policy_node", Transition.TRANSITION_DEACTIVATE)
        assert probe.transition("policy_node", Transition.TRANSITION_CLEANUP)
        # The node that wrote it is gone, the grippers were squeezing an object (commanded shut, reading open).
        data = json.loads(held_file.read_text())
        data["command"] = np.where(GRIPPERS, 0.3, data["command"]).tolist()
        data["wall_time"] = time.time()
        held_file.write_text(json.dumps(data))
        os.utime(held_file)
        began = time.time()
        assert probe.transition("policy_node", Transition.TRANSITION_CONFIGURE)
        assert probe.transition("policy_node", Transition.TRANSITION_ACTIVATE)

        def first_command():
            left, right = probe.recorded(topics["left"], began), probe.recorded(topics["right"], began)
            return (left[0][1], right[0][1]) if left and right else None

        left, right = wait_for(first_command, 20.0, "a command from the node configured again")
        first = np.r_[left, right]
        # The seed is the held 0.3, the homing slide then opens toward 0.95 at its limited speed: the first command
        # is one tick from the seed, not the 0.95 the grippers read.
        step = LIMITS.velocity_max[GRIPPERS] * LIMITS.control_period_s
        assert np.all(np.abs(first[GRIPPERS] - 0.3) <= step + 1e-6), first[GRIPPERS]
    finally:
        graph.close()
