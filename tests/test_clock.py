"""The virtual clock: time moves only when told, sleepers wake at their deadline, idle means idle."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import ClassVar

from arc_hotpatch import clocks
from arc_hotpatch.clocks import ScaledClock, VirtualClock, current_clock, install_clock


def test_sleeper_parks_until_the_clock_reaches_its_deadline() -> None:
    clock = VirtualClock()
    start = clock.now()
    woke: list[object] = []

    def worker() -> None:
        with clock.running():
            clock.sleep(300)
            woke.append(clock.now())

    thread = threading.Thread(target=worker)
    thread.start()
    assert clock.wait_idle(timeout=5), "a sleeping worker is not runnable"
    assert clock.next_wakeup() == start + timedelta(seconds=300)
    clock.advance(299)
    time.sleep(0.05)
    assert not woke
    clock.advance_to(clock.next_wakeup())  # type: ignore[arg-type]
    thread.join(timeout=5)
    assert woke == [start + timedelta(seconds=300)]


def test_a_released_sleeper_is_not_idle_before_it_wakes() -> None:
    clock = VirtualClock()
    release = threading.Event()

    def worker() -> None:
        with clock.running():
            clock.sleep(10)
            release.wait(5)  # still running: the clock must not count it idle

    thread = threading.Thread(target=worker)
    thread.start()
    assert clock.wait_idle(timeout=5)
    clock.advance(10)
    assert not clock.idle()
    release.set()
    thread.join(timeout=5)
    assert clock.idle()


def test_busy_work_blocks_idle_and_nested_running_counts_once() -> None:
    clock = VirtualClock()
    with clock.running(), clock.running():
        assert not clock.idle()
    assert clock.idle()


def test_scaled_clock_and_installation() -> None:
    clock = ScaledClock(speed=3600)
    before = clock.now()
    clock.sleep(3600)  # one simulated hour is a real second
    assert clock.now() - before >= timedelta(minutes=59)
    previous = install_clock(clock)
    try:
        assert current_clock() is clock
    finally:
        install_clock(previous)


class _CountingSleeper(clocks._Sleeper):
    """A sleeper that counts how often its thread woke up (``wakeups`` per deadline in seconds)."""

    wakeups: ClassVar[Counter[float]] = Counter()
    start: ClassVar[datetime] = clocks.DEFAULT_START

    def __init__(self, deadline: datetime, lock: threading.Lock) -> None:
        super().__init__(deadline, lock)
        seconds = (deadline - self.start).total_seconds()
        wait = self.wakeup.wait

        def counting_wait(timeout: float | None = None) -> bool:
            woke = wait(timeout)
            _CountingSleeper.wakeups[seconds] += 1
            return woke

        self.wakeup.wait = counting_wait  # type: ignore[method-assign]


def test_only_the_sleepers_whose_deadline_came_wake_up(monkeypatch) -> None:
    monkeypatch.setattr(clocks, "_Sleeper", _CountingSleeper)
    _CountingSleeper.wakeups.clear()
    clock = VirtualClock()
    deadlines = [10, 20, 20, 30, 40]
    woke: list[tuple[int, datetime]] = []

    def worker(seconds: int) -> None:
        with clock.running():
            clock.sleep(seconds)
            woke.append((seconds, clock.now()))

    threads = [threading.Thread(target=worker, args=(s,)) for s in deadlines]
    for thread in threads:
        thread.start()
    assert clock.wait_idle(timeout=5)
    for _ in range(20):  # other changes of the clock wake no sleeper
        clock.notify()
        with clock.running():
            pass
    clock.advance(5)
    for expected in (10, 20, 30, 40):
        assert clock.next_wakeup() == clocks.DEFAULT_START + timedelta(seconds=expected)
        clock.advance_to(clock.next_wakeup())  # type: ignore[arg-type]
        assert clock.wait_idle(timeout=5)
        assert sorted({s for s, _ in woke}) == [d for d in (10, 20, 30, 40) if d <= expected]
    for thread in threads:
        thread.join(timeout=5)
    assert clock.next_wakeup() is None
    assert woke == sorted(woke) and all(now == clocks.DEFAULT_START + timedelta(seconds=s) for s, now in woke)
    assert _CountingSleeper.wakeups == {10: 1, 20: 2, 30: 1, 40: 1}  # each sleeper woke exactly once


def test_an_uncounted_sleeper_is_runnable_until_it_resumes() -> None:
    clock = VirtualClock()
    resumed = threading.Event()
    proceed = threading.Event()

    def sleeper() -> None:  # not inside running(): never busy, but runnable once released
        clock.sleep(60)
        resumed.set()
        proceed.wait(5)

    thread = threading.Thread(target=sleeper)
    thread.start()
    assert clock.wait_idle(timeout=5)
    assert clock.next_wakeup() == clocks.DEFAULT_START + timedelta(seconds=60)
    clock.advance(120)  # past the deadline: released, idle again only once the thread resumed
    assert clock.wait_idle(timeout=5) and resumed.is_set()
    assert clock.next_wakeup() is None and clock.now() == clocks.DEFAULT_START + timedelta(seconds=120)
    proceed.set()
    thread.join(timeout=5)


def test_a_sleep_that_does_not_reach_past_now_returns_at_once() -> None:
    clock = VirtualClock()
    with clock.running():
        clock.sleep(0)
        clock.sleep(-5)
    assert clock.idle() and clock.next_wakeup() is None
