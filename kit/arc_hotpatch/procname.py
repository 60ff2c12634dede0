"""Names for the rehearsal's helper processes, as ``ps``, ``top`` and ``/proc/<pid>/comm`` show them.

``simulate`` and ``serve`` start Python children (the fleet twin, the orchestrator worker) whose command lines
are all ``python -c from multiprocessing.spawn import spawn_main ...``. Named ``arc-twin`` and ``arc-replays``,
an operator watching ``top`` (and the fleet benchmark, which reports CPU time per process) can tell them apart.
Linux only (``prctl(PR_SET_NAME)``, at most 15 bytes); elsewhere a no-op.
"""

from __future__ import annotations

import ctypes
import sys

from .libc import libc_function

TWIN_PROCESS = "arc-twin"
ORCHESTRATOR_WORKER_PROCESS = "arc-replays"
_PR_SET_NAME = 15
_MAX_NAME_BYTES = 15


def name_this_process(name: str) -> bool:
    """Give the calling process (its main thread: call it there) ``name``; whether it took."""
    encoded = name.encode()
    if not encoded or len(encoded) > _MAX_NAME_BYTES:
        raise ValueError(f"a process name takes 1 to {_MAX_NAME_BYTES} bytes, got {name!r}")
    prctl = libc_function("prctl") if sys.platform.startswith("linux") else None
    return prctl is not None and prctl(_PR_SET_NAME, ctypes.c_char_p(encoded), 0, 0, 0) == 0
