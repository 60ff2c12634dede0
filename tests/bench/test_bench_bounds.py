"""The fleet benchmark's bounds (bench/bench_fleet.py): what its table compares every rollout against."""

from __future__ import annotations

import importlib.util
import itertools
import random
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
