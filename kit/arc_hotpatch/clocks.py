"""The rehearsal kit's clocks, shared by the fleet twin, the local durable host and the SDK transport.

- ``ScaledClock``: simulated time running ``speed`` times faster than wall time
  (``serve`` and ``twin``, so a person can watch a rollout).
- ``VirtualClock``: simulated time that only moves when the driver (the local
  durable host in ``simulate`` and in tests) calls ``advance_to``; a thread that
  sleeps on it is parked until the clock reaches its deadline. The driver jumps
  to the next wake-up when nothing is runnable, so hours cost nothing and a run
  is reproducible.

The app sees them only through ``core.clock.current_clock()``.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from core.clock import Clock, SystemClock, current_clock, install_clock

__all__ = ["DEFAULT_START", "Clock", "MirroredClock", "ScaledClock", "SharedTime", "SystemClock", "VirtualClock",
           "current_clock", "install_clock"]

DEFAULT_START = datetime(2026, 1, 5, 8, 0, 0, tzinfo=UTC)


class ScaledClock:
    """Simulated time = start + wall time elapsed x speed."""

    def __init__(self, speed: float = 60.0, start: datetime = DEFAULT_START) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.speed = speed
        self._start = start
        self._wall0 = time.monotonic()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=(time.monotonic() - self._wall0) * self.speed)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds / self.speed)


class _Sleeper:
    """A thread parked in ``VirtualClock.sleep``: its deadline and the condition only it waits on."""

    __slots__ = ("deadline", "released", "wakeup")

    def __init__(self, deadline: datetime, lock: threading.Lock) -> None:
        self.deadline = deadline
        self.released = False  # set by ``advance_to`` when the clock reaches the deadline
        self.wakeup = threading.Condition(lock)


class VirtualClock:
    """Discrete-event clock: time moves only through ``advance_to``.

    ``busy`` counts work units that can make progress without time moving
    (a running activity, an orchestrator episode). A thread in ``sleep`` is
    not busy. The driver waits for ``idle()`` and then jumps to
    ``min(next_wakeup(), its own next timer)``.

    Each sleeper waits on a condition of its own, and ``advance_to`` wakes only the
    sleepers whose deadline it reached: with hundreds of parked threads, a change of the
    clock's state costs nothing for the threads that still have to wait. ``_changed`` is
    for the few threads that watch the clock (``wait_idle``, ``wait_change``).
    """

    def __init__(self, start: datetime = DEFAULT_START, on_advance: Callable[[datetime], None] | None = None) -> None:
        """``on_advance(now)`` is called (under the clock's lock) each time time moves, before any sleeper wakes:
        a clock in another process (``MirroredClock``) follows this one through it."""
        self._now = start
        self._on_advance = on_advance
        if on_advance is not None:
            on_advance(start)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._busy = 0
        self._sleepers: list[tuple[datetime, int, _Sleeper]] = []  # heap of the sleepers still before their deadline
        self._released = 0  # sleepers past their deadline whose thread has not resumed yet
        self._seq = itertools.count()  # ties of equal deadlines wake in the order they went to sleep
        self._local = threading.local()  # per-thread depth of ``running``

    def now(self) -> datetime:
        with self._lock:
            return self._now

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Mark the enclosed work as runnable: the clock will not jump meanwhile."""
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        if depth == 0:
            with self._lock:
                self._busy += 1
        try:
            yield
        finally:
            self._local.depth = depth
            if depth == 0:
                with self._lock:
                    self._busy -= 1
                    self._changed.notify_all()

    def sleep(self, seconds: float) -> None:
        with self._lock:
            deadline = self._now + timedelta(seconds=max(seconds, 0.0))
            if deadline <= self._now:
                return
            sleeper = _Sleeper(deadline, self._lock)
            entry = (deadline, next(self._seq), sleeper)
            heapq.heappush(self._sleepers, entry)
            counted = getattr(self._local, "depth", 0) > 0
            if counted:  # a sleeping thread is not runnable
                self._busy -= 1
            self._changed.notify_all()
            try:
                while not sleeper.released:
                    sleeper.wakeup.wait()
            finally:
                if counted:
                    self._busy += 1
                if sleeper.released:
                    self._released -= 1
                else:  # interrupted before its deadline (an exception in wait): no longer a sleeper
                    self._sleepers.remove(entry)
                    heapq.heapify(self._sleepers)
                if self._settled():  # an uncounted sleeper resuming can be what makes the clock idle
                    self._changed.notify_all()

    def _settled(self) -> bool:
        # A sleeper whose deadline has passed is runnable even before its thread wakes up and
        # counts itself busy again: without this the driver could jump the clock twice.
        return self._busy <= 0 and self._released == 0

    def idle(self) -> bool:
        """Nothing can make progress until the clock moves."""
        with self._lock:
            return self._settled()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is runnable (or ``timeout`` real seconds pass)."""
        with self._lock:
            return self._changed.wait_for(self._settled, timeout)

    def notify(self) -> None:
        """Wake ``wait_idle`` / ``wait_change`` callers (new work was queued)."""
        with self._lock:
            self._changed.notify_all()

    def wait_change(self, timeout: float) -> None:
        with self._lock:
            self._changed.wait(timeout)

    def next_wakeup(self) -> datetime | None:
        """The earliest deadline of a sleeper still waiting for the clock (the heap holds only those)."""
        with self._lock:
            return self._sleepers[0][0] if self._sleepers else None

    def advance_to(self, when: datetime) -> None:
        with self._lock:
            if when > self._now:
                self._now = when
                if self._on_advance is not None:
                    self._on_advance(when)
            # Release exactly the sleepers whose deadline has come; the others stay parked.
            while self._sleepers and self._sleepers[0][0] <= self._now:
                _, _, sleeper = heapq.heappop(self._sleepers)
                sleeper.released = True
                self._released += 1
                sleeper.wakeup.notify()
            self._changed.notify_all()

    def advance(self, seconds: float) -> None:
        self.advance_to(self.now() + timedelta(seconds=seconds))


class SharedTime:
    """A moment in shared memory (microseconds since the epoch, one 64-bit word): a ``VirtualClock`` in one process
    publishes its time here (``on_advance=shared.set``) and a ``MirroredClock`` in another reads it."""

    def __init__(self, context: Any) -> None:
        self._micros = context.RawValue("q", 0)  # aligned 64-bit word: a read never sees half a write

    def set(self, when: datetime) -> None:
        self._micros.value = (when - _EPOCH) // _MICROSECOND

    def get(self) -> datetime:
        return _EPOCH + timedelta(microseconds=self._micros.value)


class MirroredClock:
    """The time of a ``VirtualClock`` in another process, read from ``SharedTime`` (the fleet twin's clock when it
    runs in a process of its own under ``simulate``). It cannot sleep: only the driver's clock moves time."""

    def __init__(self, shared: SharedTime) -> None:
        self._shared = shared

    def now(self) -> datetime:
        return self._shared.get()

    def sleep(self, seconds: float) -> None:
        raise RuntimeError("a mirrored clock cannot sleep: the virtual clock it follows is in another process")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
