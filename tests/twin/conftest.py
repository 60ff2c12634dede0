"""Fixtures for the fleet twin tests: a virtual clock with a driver, twins started on port 0
whose every response is checked against the 2025-01-13 contract at teardown."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from arc_hotpatch.clocks import VirtualClock, install_clock
from arc_hotpatch.twin import Fleet, FleetTwin, load_scenario
from core.azure_clients import close_clients

from .helpers import TwinHarness
from .spec_contract import SpecContract


class ClockDriver:
    """Moves a VirtualClock to the next sleeper's deadline whenever a thread sleeps on it.

    This is what the local durable host does when nothing is runnable; in these tests the
    only sleepers are SDK calls (LRO polling, Retry-After) and the test's own waits.
    """

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clock-driver", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            wakeup = self.clock.next_wakeup()
            if wakeup is not None:
                self.clock.advance_to(wakeup)
            else:
                self.clock.wait_change(0.005)

    def stop(self) -> None:
        self._stop.set()
        self.clock.notify()
        self._thread.join(timeout=5)


@pytest.fixture(scope="session")
def contract() -> SpecContract:
    return SpecContract()


@pytest.fixture
def virtual_clock() -> Iterator[VirtualClock]:
    clock = VirtualClock()
    previous = install_clock(clock)
    driver = ClockDriver(clock)
    try:
        yield clock
    finally:
        driver.stop()
        install_clock(previous)


@pytest.fixture
def make_twin(virtual_clock: VirtualClock, contract: SpecContract) -> Iterator[Callable[..., TwinHarness]]:
    """``make_twin(fleet or scenario dict, faults=None, **FleetTwin options)`` → a started harness."""
    harnesses: list[TwinHarness] = []

    def make(fleet: Fleet | dict[str, Any], faults: Any = None, **options: Any) -> TwinHarness:
        if not isinstance(fleet, Fleet):
            fleet = load_scenario(fleet)
        records: list[Any] = []
        twin = FleetTwin(fleet, virtual_clock, faults, response_observer=records.append, **options)
        twin.start()
        harness = TwinHarness(twin, virtual_clock, records)
        harnesses.append(harness)
        return harness

    yield make
    for harness in harnesses:
        harness.twin.stop()
    close_clients()
    problems = [p for h in harnesses for p in contract.all_problems(h.records)]
    if problems:
        pytest.fail("responses that break the 2025-01-13 contract:\n" + "\n".join(problems[:40]), pytrace=False)


@pytest.fixture(autouse=True)
def trust_the_twins_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain ``requests`` calls in these tests trust the twin's CA, as ``curl --cacert`` would (the twin serves
    HTTPS; its CA file is the process's). The app's own clients are given the CA explicitly, never this way."""
    from arc_hotpatch.twin.tls import default_ca_file

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(default_ca_file()))
