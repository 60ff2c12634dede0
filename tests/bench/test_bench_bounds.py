"""The fleet benchmark's bounds (bench/bench_fleet.py): what its table compares every rollout against."""

from __future__ import annotations

import importlib.util
import itertools
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_fleet.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_fleet", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _bench()


def _best_makespan(paths: list[float], slots: int) -> float:
    """The true optimum by brute force: every assignment of whole paths to slots."""
    best = float("inf")
    for assignment in itertools.product(range(slots), repeat=len(paths)):
        loads = [0.0] * slots
        for path, slot in zip(paths, assignment, strict=True):
            loads[slot] += path
        best = min(best, max(loads))
    return best


def test_one_round_is_the_longest_path() -> None:
    assert bench.slot_bound([10.0, 30.0, 20.0], 5) == 30.0


def test_one_machine_past_the_slots_puts_two_paths_end_to_end() -> None:
    # 3 slots, 4 paths: the sum bound says 115 / 3 = 38.3, but some slot runs two of the four: at least 25 + 20.
    assert bench.slot_bound([40.0, 30.0, 25.0, 20.0], 3) == 45.0


def test_three_rounds_take_the_three_shortest_of_the_seven_longest() -> None:
    paths = [9.0, 9.0, 8.0, 8.0, 7.0, 7.0, 6.0, 1.0]
    assert bench.slot_bound(paths, 3) == pytest.approx(max(55 / 3, 8 + 8, 7 + 7 + 6))


@pytest.mark.parametrize("seed", range(12))
def test_no_schedule_beats_it_and_it_is_never_weaker_than_the_sum_bound(seed: int) -> None:
    rng = random.Random(seed)
    slots = rng.randint(1, 3)
    paths = [float(rng.randint(1, 20)) for _ in range(rng.randint(1, 7))]
    bound = bench.slot_bound(paths, slots)
    assert max(max(paths), sum(paths) / slots) <= bound <= _best_makespan(paths, slots) + 1e-9


# --- the targets the benchmark checks beyond the bound, and where its CPU time goes -------------------------


def test_ten_thousand_machines_must_take_at_most_four_minutes_of_wall_time() -> None:
    row = {"machines": 10_000, "subscriptions": 10, "fleet": "ready", "wall_s": 241.0}
    assert bench.target_misses(row) == ["10,000 machines in 241 s of wall time (target <= 240 s)"]
    assert bench.target_misses({**row, "wall_s": 240.0}) == []
    assert bench.target_misses({**row, "machines": 5_000, "wall_s": 900.0}) == []  # the target names 10,000


def test_the_largest_history_must_stay_within_a_fifth_of_the_smallest_fleets() -> None:
    rows = [
        {"machines": 1_000, "subscriptions": 10, "fleet": "ready", "max_history_events": 134},
        {"machines": 10_000, "subscriptions": 10, "fleet": "ready", "max_history_events": 160},  # +19 %
        {"machines": 1_000, "subscriptions": 1, "fleet": "ready", "max_history_events": 146},
        {"machines": 10_000, "subscriptions": 1, "fleet": "ready", "max_history_events": 176},  # +21 %
        {"machines": 10_000, "subscriptions": 1, "fleet": "mixed", "max_history_events": 900},  # alone: no base
        {"machines": 5_000, "subscriptions": 1, "fleet": "ready", "problems": ["failed"]},  # no history: skipped
    ]
    assert bench.history_misses(rows) == {
        3: ["largest history 176 events, more than 20% over 146 at 1,000 machines (target: flat)"]}


def test_cpu_time_is_read_per_process_and_children_are_told_apart_by_their_names() -> None:
    assert bench.proc_cpu_s() > 0  # this interpreter has run for a while
    assert bench.proc_cpu_s(2**22 + 1) == 0.0  # no such process
    code = ("import sys, time; sys.path[:0] = ['kit']; from arc_hotpatch.procname import name_this_process; "
            "name_this_process('arc-twin'); print('named', flush=True); end = time.process_time() + 0.3\n"
            "while time.process_time() < end: pass\nsys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", code], cwd=BENCH.parents[1], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "named"
        with bench.TreeSampler(interval_s=0.05) as sampler:
            deadline = time.monotonic() + 10
            while sampler.cpu_s_by_role().get("twin", 0.0) < 0.2 and time.monotonic() < deadline:
                time.sleep(0.05)
        assert bench.process_role(child.pid, os.getpid()) == "twin"
        assert bench.process_role(os.getpid(), os.getpid()) == "host"
        by_role = sampler.cpu_s_by_role()
        assert by_role["twin"] >= 0.2 and by_role["host"] > 0
        assert set(by_role) <= set(bench.PROCESS_ROLES)
    finally:
        child.communicate("")
