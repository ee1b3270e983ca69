"""The planner process's pipe: a large request and a large reply in flight at once must both arrive.

A reply bigger than the socket's buffer (a plan carrying its imagined frames) blocks the planner's write until the
runtime reads it; a runtime writing a large request at that moment (a new episode's first, while an old request's
answer is still being sent) waited on a planner that was itself waiting, and the closed-loop run hung. The planner
now reads requests on a thread of its own (`_NewestRequest`).
"""

from __future__ import annotations

import multiprocessing
import threading

import numpy as np

from eva_runtime.control.planner_process import _NewestRequest
from eva_runtime.wire import pack, unpack

BIG = np.zeros(4_000_000, np.uint8)  # far above a socket buffer (~200 KB)


def test_a_large_request_is_read_while_a_large_reply_waits_for_its_reader() -> None:
    runtime, planner = multiprocessing.Pipe(duplex=True)
    requests = _NewestRequest(planner)
    replying = threading.Thread(target=lambda: planner.send_bytes(pack({"id": 0, "plan": BIG})), daemon=True)
    replying.start()  # the planner writes an answer nobody reads yet
    sending = threading.Thread(target=lambda: runtime.send_bytes(pack({"id": 1, "frames": BIG})), daemon=True)
    sending.start()
    sending.join(20)
    assert not sending.is_alive(), "the runtime's request was never read: the pipe deadlocked"
    assert requests.take()["id"] == 1
    assert unpack(runtime.recv_bytes())["plan"].nbytes == BIG.nbytes  # the reply arrives whole once read
    replying.join(20)
    assert not replying.is_alive()
    runtime.close()
    assert requests.take() is None  # a closed pipe ends the planner's loop
