"""Robot backends behind one small interface: MuJoCo simulation now; ROS topics and Piper CAN later."""
