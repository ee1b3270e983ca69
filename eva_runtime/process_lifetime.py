"""How the runtime's processes end with the process that started them, so that nothing keeps commanding a robot
after its supervisor is gone.

Two mechanisms, each where it is sound:
- `signal_on_parent_death`: the kernel's parent-death signal (Linux `prctl(PR_SET_PDEATHSIG)`), for the ROS node
  executables. Their parent is `ros2 launch` or `ros2 run`, which start them from their main thread; the kernel
  sends the signal when that thread exits, however the parent dies (SIGKILL included).
- `exit_with_parent`: a watchdog thread that polls the parent's pid, for the planner process. The planner is
  started from whichever thread configures or restarts it (an executor worker, the control tick); the kernel's
  signal follows the *thread* that forked, so a worker thread ending would kill a healthy planner.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time

__all__ = ["EXIT_PARENT_GONE", "exit_with_parent", "signal_on_parent_death"]

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
EXIT_PARENT_GONE = 3  # the exit status of a process the watchdog ended


def signal_on_parent_death(signum: int, parent_pid: int) -> bool:
    """Have the kernel send `signum` to this process when its parent dies; False where the OS cannot (not Linux).

    `parent_pid` is the parent as read at start: if it already died before the request took effect (the process
    was re-parented), the signal is sent at once.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(signum), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl(PR_SET_PDEATHSIG): {os.strerror(error)}")
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signum)
    return True


def exit_with_parent(parent_pid: int, period_s: float = 0.1) -> threading.Thread:
    """End this process (`os._exit`, status EXIT_PARENT_GONE) within `period_s` of its parent `parent_pid` dying.

    A re-parented process sees another parent pid (init or a subreaper), so the check needs no signal and no help
    from the parent. `os._exit`: the parent's resources (pipes, the robot) are gone; there is nothing to flush.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(period_s)
        os._exit(EXIT_PARENT_GONE)

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread
