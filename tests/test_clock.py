"""The virtual clock: time moves only when told, sleepers wake at their deadline, idle means idle."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

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
