"""Heap trimming (arc_hotpatch.heap): at most once per interval of real time, a no-op without glibc's malloc_trim;
the durable host's driver and the orchestrator worker call it. The collector of a simulation: imports frozen, a
wider young generation, given back afterwards."""

from __future__ import annotations

import gc
import platform

import pytest

from arc_hotpatch.heap import SIMULATION_YOUNG_GENERATION, HeapTrimmer, widened_collector


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_trim_comes_once_an_interval_has_passed_and_not_before() -> None:
    calls: list[int] = []
    clock = _Clock()
    trimmer = HeapTrimmer(1.0, trim=lambda pad: calls.append(pad) or 1, monotonic=clock)
    assert not trimmer.maybe_trim()  # no time has passed since it was made
    clock.now += 0.99
    assert not trimmer.maybe_trim()
    clock.now += 0.01
    assert trimmer.maybe_trim() and calls == [0]  # malloc_trim(0): keep no padding
    assert not trimmer.maybe_trim()  # the interval starts again
    clock.now += 5.0
    assert trimmer.maybe_trim()
    assert trimmer.trims == 2 and calls == [0, 0]


def test_without_malloc_trim_it_does_nothing() -> None:
    trimmer = HeapTrimmer(1.0, monotonic=_Clock())
    trimmer._trim = None  # a C library without it (musl, macOS)
    assert not trimmer.available and not trimmer.maybe_trim() and trimmer.trims == 0


def test_glibc_trims_for_real() -> None:
    if platform.libc_ver()[0] != "glibc":
        pytest.fail("this project's machines run glibc; on another C library the trimmer is a no-op by design")
    clock = _Clock()
    trimmer = HeapTrimmer(1.0, monotonic=clock)
    clock.now += 1.0
    assert trimmer.available and trimmer.maybe_trim()


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_s must be > 0, got 0"):
        HeapTrimmer(0)


def test_the_driver_trims_while_the_virtual_clock_advances(make_host, monkeypatch) -> None:
    made: list[HeapTrimmer] = []
    seconds = iter(range(10**6))  # its real-time clock moves a second each time the driver asks it

    class Recording(HeapTrimmer):
        def __init__(self, interval_s: float) -> None:
            super().__init__(interval_s, trim=lambda _pad: 1, monotonic=lambda: float(next(seconds)))
            made.append(self)

    monkeypatch.setattr("arc_hotpatch.durable_host.host.HeapTrimmer", Recording)
    host = make_host(heap_trim_interval_s=0.5)
    instance_id = host.start_new("thirty_days", "trimmed")
    assert host.run_until_complete([instance_id])[instance_id]["runtimeStatus"] == "Completed"
    assert len(made) == 1 and made[0].interval_s == 0.5
    assert made[0].trims >= 30  # one before each of the thirty days' advances of the virtual clock


def test_a_host_trims_nothing_unless_told(make_host, monkeypatch) -> None:
    monkeypatch.setattr("arc_hotpatch.durable_host.host.HeapTrimmer", lambda *_: pytest.fail("made a trimmer"))
    host = make_host()
    instance_id = host.start_new("thirty_days", "untrimmed")
    assert host.run_until_complete([instance_id])[instance_id]["runtimeStatus"] == "Completed"


def test_a_worker_process_trims_after_a_chunk_of_replays_once_due(monkeypatch) -> None:
    from arc_hotpatch.durable_host import handle

    calls: list[int] = []
    clock = _Clock()
    monkeypatch.setattr(handle, "_worker_heap", HeapTrimmer(1.0, trim=lambda pad: calls.append(pad) or 1,
                                                            monotonic=clock))
    assert handle._call_chunk_in_worker([]) == [] and calls == []  # not due yet
    clock.now += 1.0
    handle._call_chunk_in_worker([])
    assert calls == [0]


def test_a_simulation_widens_the_collector_and_gives_it_back_even_when_it_fails() -> None:
    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError, match="the run broke"), widened_collector():
        assert gc.get_threshold() == (SIMULATION_YOUNG_GENERATION, *before[1:])
        assert gc.get_freeze_count() > 0  # what was imported no longer costs a full collection its walk
        raise RuntimeError("the run broke")
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_a_simulated_rollout_runs_with_the_widened_collector() -> None:
    from arc_hotpatch.cli import SIMULATE_BASE
    from arc_hotpatch.runner import run_simulation
    from arc_hotpatch.twin.fleet import generate_fleet

    before = gc.get_threshold()
    seen: list[int] = []
    report = run_simulation(generate_fleet(machines=2, seed=1, mix="ready"), SIMULATE_BASE,
                            progress=lambda done, total: seen.append(gc.get_threshold()[0]))
    assert report["summary"]["machines"] == 2
    assert seen and set(seen) == {SIMULATION_YOUNG_GENERATION}
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
