"""ROS 2 adapter: rclpy nodes around the ROS-free runtime (policy node, simulated robot node, topic robot).

Every decision (modes, safety filter, planning, outcome log) lives in the core packages; this package only
converts messages, keeps subscription caches and exposes services, parameters and diagnostics. Importing it
needs rclpy (the ROS 2 install on a robot, or the `ros` extra's wheels in development and CI).
"""
