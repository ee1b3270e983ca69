"""The bimanual EVA graph: the policy lifecycle node and, with use_sim:=true, the simulated robot behind the vendor
topics (MuJoCo), so the whole graph runs without arms.

    ros2 launch eva_runtime bimanual.launch.py use_sim:=true
    ros2 launch eva_runtime bimanual.launch.py bundle:=/path/to/bundle topic_convention:=joint_states

The one source of this file is the repository's top-level launch/; the ament package (ros2_ws/src/eva_runtime)
installs it into share/eva_runtime/launch through a symlink.

Arguments:
    bundle            deployment bundle directory (default: $EVA_BUNDLE, else the source checkout's shipped bundle)
    config            parameter file for both nodes (default: this package's config/bimanual.yaml)
    use_sim           start the simulated robot (true/false, default false)
    topic_convention  classic (/puppet feedback, commands on /master) or joint_states (/joint_states_*)
    autostart         configure and activate the policy node at launch (default: the value of use_sim). On the
                      real robot the default is false: activation moves the arms (homing), so the operator does it:
                      ros2 lifecycle set /policy_node configure; ros2 lifecycle set /policy_node activate
                      With autostart:=true those two transitions are already done: `ros2 lifecycle set` of either
                      is refused (the node is active). use_sim:=true autostart:=false leaves them to the operator.

The nodes are children of the `ros2 launch` process and exit when it dies, however it dies (SIGKILL included):
each asks the kernel for SIGTERM on its parent's death (parameter exit_with_parent, docs/ros.md).
"""

from __future__ import annotations

import os
from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition


def _default_bundle() -> str:
    """$EVA_BUNDLE, else models/bundle_transfer_cube of an editable (source) install of eva_runtime, else ''."""
    if os.environ.get("EVA_BUNDLE"):
        return os.environ["EVA_BUNDLE"]
    try:
        import eva_runtime
    except ImportError:
        return ""
    shipped = Path(eva_runtime.__file__).resolve().parents[1] / "models" / "bundle_transfer_cube"
    return str(shipped) if (shipped / "manifest.yaml").is_file() else ""


def _arguments(use_sim: LaunchConfiguration) -> list[DeclareLaunchArgument]:
    """Every launch argument, each with a default: `ros2 launch ... use_sim:=true` needs nothing else."""
    return [
        DeclareLaunchArgument("bundle", default_value=_default_bundle(), description="deployment bundle directory"),
        DeclareLaunchArgument(
            "config",
            default_value=PathJoinSubstitution([FindPackageShare("eva_runtime"), "config", "bimanual.yaml"]),
            description="parameter file (policy_node and sim_robot_node sections)",
        ),
        DeclareLaunchArgument(
            "use_sim", default_value="false", choices=["true", "false"], description="start the simulated robot"
        ),
        DeclareLaunchArgument(
            "topic_convention",
            default_value="classic",
            choices=["classic", "joint_states"],
            description="vendor topic names: classic (/puppet, /master) or joint_states (/joint_states_*)",
        ),
        DeclareLaunchArgument(
            "autostart",
            default_value=use_sim,
            choices=["true", "false"],
            description="configure and activate policy_node at launch (default: the value of use_sim)",
        ),
    ]


def _nodes(
    bundle: LaunchConfiguration,
    config: LaunchConfiguration,
    use_sim: LaunchConfiguration,
    topic_convention: LaunchConfiguration,
) -> tuple[LifecycleNode, Node]:
    """The policy lifecycle node and the simulated robot (started only with use_sim:=true)."""
    policy = LifecycleNode(
        package="eva_runtime",
        executable="policy_node",
        name="policy_node",
        namespace="",
        output="screen",
        parameters=[config, {"bundle": bundle, "topic_convention": topic_convention}],
    )
    sim = Node(
        package="eva_runtime",
        executable="sim_robot_node",
        name="sim_robot_node",
        output="screen",
        parameters=[
            config,
            # The simulated robot embodies the bundle's own embodiment (joint layout, cameras, control rate).
            {
                "embodiment_file": PathJoinSubstitution([bundle, "embodiment.yaml"]),
                "topic_convention": topic_convention,
            },
        ],
        condition=IfCondition(use_sim),
    )
    return policy, sim


def _autostart(policy: LifecycleNode, autostart: LaunchConfiguration) -> tuple[EmitEvent, RegisterEventHandler]:
    """With autostart:=true, configure the policy node at launch and activate it once it is configured."""
    configure = EmitEvent(
        event=ChangeState(lifecycle_node_matcher=matches_action(policy), transition_id=Transition.TRANSITION_CONFIGURE),
        condition=IfCondition(autostart),
    )
    activate_when_configured = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=policy,
            goal_state="inactive",
            entities=[
                EmitEvent(
                    event=ChangeState(
                        lifecycle_node_matcher=matches_action(policy), transition_id=Transition.TRANSITION_ACTIVATE
                    )
                )
            ],
        ),
        condition=IfCondition(autostart),
    )
    return configure, activate_when_configured


def generate_launch_description() -> LaunchDescription:
    bundle = LaunchConfiguration("bundle")
    config = LaunchConfiguration("config")
    use_sim = LaunchConfiguration("use_sim")
    topic_convention = LaunchConfiguration("topic_convention")
    autostart = LaunchConfiguration("autostart")

    arguments = _arguments(use_sim)
    policy, sim = _nodes(bundle, config, use_sim, topic_convention)
    configure, activate_when_configured = _autostart(policy, autostart)
    return LaunchDescription([*arguments, sim, policy, activate_when_configured, configure])
