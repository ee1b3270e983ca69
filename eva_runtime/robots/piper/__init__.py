"""Agilex Piper backend: the bimanual CobotMagic over two CAN buses through piper-sdk (see docs/piper.md).

Importing this package needs neither piper-sdk nor python-can; opening a bus needs both (the ``piper`` extra).
The simulated arm for tests lives in :mod:`eva_runtime.robots.piper.virtual_arm` (python-can's virtual bus).
"""

from eva_runtime.robots.piper.firmware_limits import FirmwareLimitError, FirmwareLimitPolicy, JointLimits
from eva_runtime.robots.piper.piper_arm import PiperArmConfig, PiperTimeoutError
from eva_runtime.robots.piper.piper_robot import CameraSource, PiperRobot, PiperRobotConfig

__all__ = [
    "CameraSource",
    "FirmwareLimitError",
    "FirmwareLimitPolicy",
    "JointLimits",
    "PiperArmConfig",
    "PiperRobot",
    "PiperRobotConfig",
    "PiperTimeoutError",
]
