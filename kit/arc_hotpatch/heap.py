"""Handing the C heap's free pages back to the OS while a long run goes on (glibc's ``malloc_trim``), and a
simulation's garbage collector (``widen_collector``).

A simulation's processes free most of what they allocate (replayed histories, HTTP exchanges, parsed
results), yet resident memory keeps the high-water mark of every glibc arena (the host's activity threads
each have their own). ``malloc_trim(0)`` returns those free pages. ``HeapTrimmer`` does it at most once per
interval of real time: the durable host's driver loop (simulate, serve), the orchestrator worker after a
chunk of replays, the twin's process between commands. A trim costs milliseconds. Measured on 10,000 mixed
machines over 10 subscriptions (the host alone): the host's peak RSS fell from 416 to 366 MB. A C library
without it (musl, macOS) makes this a no-op.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator

from .libc import libc_function

HEAP_TRIM_INTERVAL_S = 1.0  # what simulate and serve use: a trim costs milliseconds, a second apart
# The collector's young generation for a simulation's processes (Python's default: 700 allocations). Measured at
# 3,000 machines over 10 subscriptions, the host's collections took 15.8 s, 10.2 of them full ones that walk every
# object the SDKs and the app created at import; with the imports frozen and 10,000: 7.2 s, 0.5 s full, the same
# peak RSS (see bench/results.md).
SIMULATION_YOUNG_GENERATION = 10_000


class HeapTrimmer:
    """``maybe_trim()`` trims the C heap when ``interval_s`` of real time has passed since the last trim."""

    def __init__(
        self,
        interval_s: float,
        *,
        trim: Callable[[int], int] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s = interval_s
        self._trim = trim if trim is not None else libc_function("malloc_trim")
        self._monotonic = monotonic
        self._last = monotonic()
        self.trims = 0

    @property
    def available(self) -> bool:
        """Whether the C library can trim (glibc)."""
        return self._trim is not None

    def maybe_trim(self) -> bool:
        """Trim if due; whether it did."""
        if self._trim is None:
            return False
        now = self._monotonic()
        if now - self._last < self.interval_s:
            return False
        self._trim(0)
        self._last = now
        self.trims += 1
        return True


def widen_collector() -> None:
    """For a process that only simulates (the twin's, an orchestrator worker): its imports leave the collector's
    walks (``gc.freeze``) and a young collection waits for ``SIMULATION_YOUNG_GENERATION`` allocations."""
    gc.freeze()
    gc.set_threshold(SIMULATION_YOUNG_GENERATION, *gc.get_threshold()[1:])


@contextlib.contextmanager
def widened_collector() -> Iterator[None]:
    """``widen_collector`` for a simulation in a process that goes on afterwards (the CLI's, a test's): the
    thresholds and the frozen objects are given back at the end."""
    thresholds = gc.get_threshold()
    widen_collector()
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
