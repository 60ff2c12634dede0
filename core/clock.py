"""The process clock production code uses.

Production code never reads a clock directly: activities use ``current_clock()``
(the system clock in Azure), the SDK transport sleeps on it (429
retries), and orchestrators use ``context.current_utc_datetime`` only. The
rehearsal kit installs its own clocks here (``core.clock``: scaled and
virtual time), which is how simulated hours cost seconds without the app knowing.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds`` of this clock's time."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


_current: Clock = SystemClock()


def current_clock() -> Clock:
    """The clock production code must use (the system clock unless a host installed another)."""
    return _current


def install_clock(clock: Clock) -> Clock:
    """Install ``clock`` process-wide; returns the previous one so callers can restore it."""
    global _current
    previous, _current = _current, clock
    return previous
