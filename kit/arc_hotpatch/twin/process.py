"""The fleet twin in a process of its own, following the simulation's virtual clock (``simulate``).

In one process the twin's request handling and the app's SDK clients share one interpreter lock; in a
process of its own the twin answers on the machine's other core. The twin only reads the clock (it never
sleeps on it), so a ``MirroredClock`` over ``SharedTime`` is all it needs: the driver's ``VirtualClock``
publishes every move before any work resumes, so each request sees the time it would see in-process.

``TwinProcess`` offers what a simulation uses of ``FleetTwin``: ``start``/``stop``, ``base_url``,
``ca_file``, ``subscription_ids`` and ``metrics()``. It is stopped by its process id.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from multiprocessing.connection import Connection
from typing import Any

from ..clocks import MirroredClock, SharedTime
from ..heap import HEAP_TRIM_INTERVAL_S, HeapTrimmer, widen_collector
from ..procname import TWIN_PROCESS, name_this_process
from .faults import Faults
from .fleet import Fleet

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
_SPAWN = multiprocessing.get_context("spawn")  # the parent has threads: never fork


def _serve(fleet: Fleet, faults: Faults | str | None, throttling: bool, shared: SharedTime,
           commands: Connection) -> None:
    """The child: serve the twin until told to stop; answer ``metrics`` on the way."""
    from .fleet_twin import FleetTwin

    name_this_process(TWIN_PROCESS)
    try:
        twin = FleetTwin(fleet, MirroredClock(shared), faults, throttling=throttling)
        commands.send(("started", twin.start(), twin.ca_file))
    except BaseException as exc:
        commands.send(("failed", f"{type(exc).__name__}: {exc}", None))
        return
    heap = HeapTrimmer(HEAP_TRIM_INTERVAL_S)  # the server thread frees every request's objects: give them back
    widen_collector()
    try:
        while True:
            if not commands.poll(HEAP_TRIM_INTERVAL_S):
                heap.maybe_trim()
                continue
            command = commands.recv()
            if command == "metrics":
                commands.send(twin.metrics())
            else:
                return
    except EOFError:
        return  # the parent is gone
    finally:
        twin.stop()


class TwinProcess:
    """``FleetTwin(fleet, clock, faults, throttling=...)`` served from a child process on a mirrored clock."""

    def __init__(self, fleet: Fleet, shared_time: SharedTime, faults: Faults | str | None = None, *,
                 throttling: bool = True) -> None:
        self._fleet = fleet
        self._faults = faults
        self._throttling = throttling
        self._shared = shared_time
        self._process: Any = None
        self._commands: Connection | None = None
        self.base_url: str | None = None
        self.ca_file: str | None = None

    @staticmethod
    def shared_time() -> SharedTime:
        """The shared moment to give both the driver's ``VirtualClock`` (``on_advance``) and this twin."""
        return SharedTime(_SPAWN)

    @property
    def subscription_ids(self) -> tuple[str, ...]:
        return self._fleet.subscription_ids

    def start(self) -> str:
        """Start the child and wait until it serves; returns the base URL (RuntimeError names why it failed)."""
        ours, theirs = _SPAWN.Pipe()
        process = _SPAWN.Process(target=_serve, name="fleet-twin",
                                        args=(self._fleet, self._faults, self._throttling, self._shared, theirs),
                                        daemon=True)
        process.start()
        theirs.close()
        self._process, self._commands = process, ours
        if not ours.poll(START_TIMEOUT_S):
            self.stop()
            raise RuntimeError(f"the fleet twin process did not start within {START_TIMEOUT_S:.0f} s")
        try:
            outcome, url_or_error, ca_file = ours.recv()
        except EOFError:
            outcome, url_or_error, ca_file = "failed", f"exit code {process.exitcode}", None
        if outcome != "started":
            self.stop()
            raise RuntimeError(f"the fleet twin process failed to start: {url_or_error}")
        self.base_url, self.ca_file = url_or_error, ca_file
        return url_or_error

    def metrics(self) -> dict[str, Any]:
        """The twin's request counts (``FleetTwin.metrics``), asked of the child."""
        if self._commands is None:
            raise RuntimeError("the fleet twin process is not running")
        self._commands.send("metrics")
        return self._commands.recv()

    def stop(self) -> None:
        """Ask the child to stop, then end it by its process id if it has not (idempotent)."""
        process, commands = self._process, self._commands
        self._process = self._commands = None
        self.base_url = None
        if commands is not None:
            with contextlib.suppress(OSError):  # the child is gone already (BrokenPipeError is an OSError)
                commands.send("stop")
            commands.close()
        if process is not None:
            process.join(STOP_TIMEOUT_S)
            if process.is_alive():
                process.terminate()  # SIGTERM to its pid
                process.join(STOP_TIMEOUT_S)
