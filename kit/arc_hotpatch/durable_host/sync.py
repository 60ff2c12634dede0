"""The one lock the durable host's components share, and how they tell the driver that something changed.

The store, the episode runner, the activity workers, the management API and the driver all
guard their shared state with ``HostSync.lock`` (re-entrant: a public call may nest helpers that
take it again). ``signal()`` wakes the driver, whether it waits on ``changed`` (real time) or on
the VirtualClock (virtual time).
"""

from __future__ import annotations

import contextlib
import threading

from arc_hotpatch.clocks import Clock, VirtualClock


class HostSync:
    """The host's lock, the ``changed`` condition on it, and the clock that signals reach."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.virtual = isinstance(clock, VirtualClock)
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)

    def signal(self) -> None:
        """Wake everything waiting for a change (the driver, ``run_until_*`` callers, a sleeping clock)."""
        with self.changed:
            self.changed.notify_all()
        if self.virtual:
            self.clock.notify()  # type: ignore[attr-defined]

    def wait_signal(self, seconds: float) -> None:
        """Wait up to ``seconds`` for a ``signal()`` (a VirtualClock also wakes on its own changes)."""
        if self.virtual:
            self.clock.wait_change(seconds)  # type: ignore[attr-defined]
        else:
            with self.changed:
                self.changed.wait(seconds)

    def runnable(self) -> contextlib.AbstractContextManager[None]:
        """Mark the enclosed work runnable: a VirtualClock does not jump while it runs."""
        running = getattr(self.clock, "running", None)
        return running() if running is not None else contextlib.nullcontext()
