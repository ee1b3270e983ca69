"""The CobotMagic vendor topic conventions as data, and how a node's topic parameters resolve against them.

Two conventions exist in vendor code (docs/references.md §1):
- ``classic``: follower feedback on ``/puppet/joint_left|right``; the leader (teach) arms publish on
  ``/master/joint_left|right``, and in control mode the follower driver takes its commands from the same
  ``/master/...`` topics. Commands and leader readings therefore share a topic: a node cannot read the leader
  arms there while it commands the followers (it would read its own commands, and two publishers would fight
  over the arms). On this convention teleop needs the leader driver remapped to other topics (see docs/ros.md);
  :func:`resolve_topics` reports a leader topic equal to a command topic as unusable.
- ``joint_states``: the newer vendor ROS 2 variant: feedback ``/joint_states_single_l|r``, commands
  ``/joint_states_l|r``. Its leader-arm topics are not fixed by the vendor; the default here is the teach arms'
  ``/master/joint_left|right`` and, like every topic, is a parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["ARMS", "CONVENTIONS", "ResolvedTopics", "TopicConvention", "resolve_topics"]

ARMS = ("left", "right")
JOINT_TOPIC_ROLES = ("follower_state", "leader_state", "command")


@dataclass(frozen=True)
class TopicConvention:
    name: str
    follower_state: Mapping[str, str]
    leader_state: Mapping[str, str]
    command: Mapping[str, str]


def _per_arm(left: str, right: str) -> Mapping[str, str]:
    return MappingProxyType({"left": left, "right": right})


CONVENTIONS: Mapping[str, TopicConvention] = MappingProxyType(
    {
        "classic": TopicConvention(
            "classic",
            follower_state=_per_arm("/puppet/joint_left", "/puppet/joint_right"),
            leader_state=_per_arm("/master/joint_left", "/master/joint_right"),
            command=_per_arm("/master/joint_left", "/master/joint_right"),
        ),
        "joint_states": TopicConvention(
            "joint_states",
            follower_state=_per_arm("/joint_states_single_l", "/joint_states_single_r"),
            leader_state=_per_arm("/master/joint_left", "/master/joint_right"),
            command=_per_arm("/joint_states_l", "/joint_states_r"),
        ),
    }
)


@dataclass(frozen=True)
class ResolvedTopics:
    """Every joint topic a node uses, per arm; `leader_state` holds only the usable ones."""

    convention: str
    follower_state: Mapping[str, str]
    leader_state: Mapping[str, str]
    command: Mapping[str, str]
    leader_unavailable: str | None  # why teleop cannot read the leader arms (None: it can)


def resolve_topics(convention: str, overrides: Mapping[str, str]) -> ResolvedTopics:
    """Topics from a convention name and per-topic overrides keyed ``<role>.<arm>`` (empty: the convention's).

    Raises ValueError for an unknown convention, a relative topic name, or follower and command topics that
    coincide (the runtime would read its own commands as the robot's state).
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"topic_convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
    base = CONVENTIONS[convention]
    resolved: dict[str, dict[str, str]] = {}
    for role in JOINT_TOPIC_ROLES:
        resolved[role] = {}
        for arm in ARMS:
            topic = overrides.get(f"{role}.{arm}") or getattr(base, role)[arm]
            if not topic.startswith("/"):
                raise ValueError(f"topics.{role}.{arm} must be an absolute topic name, got {topic!r}")
            resolved[role][arm] = topic
    shared = sorted(set(resolved["follower_state"].values()) & set(resolved["command"].values()))
    if shared:
        raise ValueError(f"follower state and command topics coincide on {shared}")
    leader_clash = sorted(set(resolved["leader_state"].values()) & set(resolved["command"].values()))
    reason = None
    if leader_clash:
        reason = (
            f"the leader-arm topics {leader_clash} are also the command topics ({convention} convention): remap the "
            "leader arms' driver and set topics.leader_state.left/right to read them"
        )
        resolved["leader_state"] = {}
    return ResolvedTopics(
        convention,
        MappingProxyType(resolved["follower_state"]),
        MappingProxyType(resolved["leader_state"]),
        MappingProxyType(resolved["command"]),
        reason,
    )
