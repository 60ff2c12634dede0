from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.policy import parse_waves, parse_window
from core.rollout import allocate, guardrail_tripped, merge_counts, summarize, wave_quotas
from core.schedule import next_window_start
from orchestrators.instances import machine_instance_id


@pytest.mark.parametrize(
    ("fleet", "waves", "quotas"),
    [
        (200, "1,10%,100%", [1, 19, 180]),
        (5, "1,10%,100%", [1, 4]),  # 10% of 5 rounds up to 1 machine, already covered by the canary
        (10, "2,50%", [2, 3, 5]),  # what the listed waves leave goes in a last wave
        (3, "5", [3]),
        (0, "1,100%", []),
    ],
)
def test_wave_quotas(fleet: int, waves: str, quotas: list[int]) -> None:
    assert wave_quotas(fleet, parse_waves(waves)) == quotas
    assert sum(quotas) == fleet


def test_allocate_spreads_a_wave_over_subscriptions() -> None:
    assert allocate(1, [3, 5]) == [0, 1]  # the canary from the largest subscription
    assert allocate(1, [4, 4]) == [1, 0]  # ties: the first
    assert allocate(4, [300, 100]) == [3, 1]
    assert allocate(5, [3, 5]) == [2, 3]
    assert allocate(20, [3, 5]) == [3, 5]
    for quota in range(0, 12):
        takes = allocate(quota, [7, 0, 3])
        assert sum(takes) == min(quota, 10) and takes[1] == 0
        assert all(t <= r for t, r in zip(takes, [7, 0, 3], strict=True))


@pytest.mark.parametrize(("escalated", "machines", "threshold", "tripped"),
                         [(1, 1, 0.2, True), (0, 1, 0.2, False), (2, 10, 0.2, False), (3, 10, 0.2, True),
                          (0, 0, 0.0, False), (1, 10, 0.0, True)])
def test_guardrail(escalated: int, machines: int, threshold: float, tripped: bool) -> None:
    assert guardrail_tripped(escalated, machines, threshold) is tripped


def test_summary_adds_up() -> None:
    rows = [{"state": "escalated", "reboots": 1}, {"state": "hotpatch_enabled", "reboots": 1},
            {"state": "escalated", "reboots": 0}]
    summary = summarize(rows)
    assert summary == {"machines": 3, "by_state": {"escalated": 2, "hotpatch_enabled": 1}, "reboots": 2,
                       "escalations": 2}
    assert merge_counts(summary, summarize(rows[:1]))["by_state"] == {"escalated": 3, "hotpatch_enabled": 1}


MONDAY = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)  # a Monday


@pytest.mark.parametrize(
    ("window", "now", "expected"),
    [
        ("Sun 02:00-06:00", MONDAY, datetime(2026, 1, 11, 2, 0, tzinfo=UTC)),
        ("Mon 07:00-09:00", MONDAY, MONDAY),  # inside: go now
        ("Mon 09:00-10:00", MONDAY, MONDAY.replace(hour=9)),
        ("Sun 22:00-09:00", MONDAY, MONDAY),  # Sunday's window runs past midnight into Monday
        ("Mon-Fri 00:00-01:00", MONDAY, MONDAY + timedelta(hours=16)),
    ],
)
def test_next_window_start(window: str, now: datetime, expected: datetime) -> None:
    assert next_window_start(parse_window(window), now) == expected


def test_machine_instance_id_is_stable_and_case_insensitive() -> None:
    a = machine_instance_id("/subscriptions/S/resourceGroups/RG/providers/Microsoft.HybridCompute/machines/Web 01")
    b = machine_instance_id("/subscriptions/s/resourcegroups/rg/providers/microsoft.hybridcompute/machines/web 01")
    c = machine_instance_id("/subscriptions/s/resourcegroups/rg2/providers/microsoft.hybridcompute/machines/web 01")
    assert a == b != c
    assert a.startswith("hotpatch-web-01-") and all(ch not in a for ch in "/\\#? ")
