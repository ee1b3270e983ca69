"""Control: the plan executor, the mode manager and control-loop timing (no ROS, no MuJoCo, no torch)."""
