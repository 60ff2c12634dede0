from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from core.contracts import Counts, ReportRow
from core.policy import Policy, parse_waves, parse_window
from core.rollout import (
    MAX_POLL_S,
    POLL_S,
    QUIET_AFTER_S,
    QUIET_POLL_S,
    WindowProgress,
    allocate,
    cumulative_target,
    decide_waves,
    guardrail_tripped,
    maintenance_window_open,
    next_poll_s,
    next_read,
    read_cadence,
    summarize,
    wave_bounds,
    wave_count,
)
from core.schedule import next_window_start
from orchestrators.instances import machine_instance_id


@pytest.mark.parametrize(
    ("waves", "total", "ends"),
    [
        ("1,10%,100%", 200, [1, 20, 200]),  # cumulative ends, counted over the machines that change
        ("1,10%,100%", 5, [1, 1, 5]),  # 10% of 5 rounds up to 1 machine, already covered by the canary
        ("2,50%", 10, [2, 5, 10]),  # what the listed waves leave goes in a last wave
        ("5", 3, [3, 3]),
        ("1,100%", 0, [0, 0]),
    ],
)
def test_wave_ends_once_the_total_is_known(waves: str, total: int, ends: list[int]) -> None:
    parsed = parse_waves(waves)
    assert wave_count(parsed) == len(ends)
    bounds = [wave_bounds(parsed, i, total, total) for i in range(len(ends))]
    assert [b.end_lo for b in bounds] == ends and all(b.known for b in bounds)
    assert bounds[-1].final and not any(b.final for b in bounds[:-1])


def test_a_count_wave_is_known_before_the_total_a_percentage_is_not() -> None:
    waves = parse_waves("1,10%,100%")
    canary = wave_bounds(waves, 0, 3, 500)  # 3 found so far, up to 500 in the end
    assert canary.known and canary.end_lo == 1
    second = wave_bounds(waves, 1, 30, 500)
    assert (second.start, second.end_lo, second.end_hi, second.known) == (1, 3, 50, False)
    final = wave_bounds(waves, 2, 30, 500)
    assert final.final and not final.known and final.size_hi == 500 - 3


@pytest.mark.parametrize("waves", ["50%,10%", "5,3", "10%,5", "1,,100%"])
def test_waves_must_be_cumulative(waves: str) -> None:
    with pytest.raises(ValueError, match="cumulative"):
        parse_waves(waves)


W = WindowProgress


def test_the_canary_is_granted_as_soon_as_one_machine_needs_a_change() -> None:
    waves = parse_waves("1,10%,100%")
    nothing_yet = decide_waves(waves, 0.2, 0, [0, 0], [W(unassessed=50, unstarted=40), W(unassessed=50)])
    assert (nothing_yet.wave, nothing_yet.budgets, nothing_yet.final) == (0, (0, 0), False)
    found = decide_waves(waves, 0.2, 0, [0, 0], [W(changeable=1, unassessed=49, queued_waiting=1),
                                                   W(changeable=2, unassessed=48, queued_waiting=2)])
    assert (found.wave, found.budgets) == (0, (0, 1)), "one machine, from where most are waiting"


def test_a_percentage_wave_waits_for_every_assessment_then_opens() -> None:
    waves = parse_waves("1,10%,100%")
    canary_done = W(changeable=40, unassessed=60, queued_waiting=39, granted=(1,), members_done=(1,))
    waiting = decide_waves(waves, 0.2, 0, [1], [canary_done])
    # 10% of at least 40 is at least 4: three more are certainly in the second wave already
    assert (waiting.wave, waiting.budgets) == (1, (4,))
    assessed = decide_waves(waves, 0.2, 1, [4], [replace(canary_done, unassessed=0, queued_waiting=36,
                                                        granted=(1, 3), members_done=(1, 3))])
    assert (assessed.wave, assessed.final) == (2, True), "10% of 40 reached and done: the final wave"


def test_the_next_wave_opens_only_once_every_machine_of_the_current_one_has_finished() -> None:
    waves = parse_waves("1,10%,100%")
    canary_running = W(changeable=40, unassessed=0, queued_waiting=39, granted=(1,), members_done=(0,))
    running = decide_waves(waves, 0.2, 0, [1], [canary_running])
    assert (running.wave, running.budgets) == (0, (1,)), "no second-wave machine while the canary runs"
    finished = decide_waves(waves, 0.2, 0, [1], [replace(canary_running, members_done=(1,))])
    assert (finished.wave, finished.budgets) == (1, (4,))


def test_the_guardrail_halts_as_results_arrive_not_at_the_end_of_the_wave() -> None:
    waves = parse_waves("1,10%,100%")
    bad_canary = W(changeable=5, unassessed=95, unstarted=90, queued_waiting=4, granted=(1,), members_done=(1,),
                   escalated=(1,))
    halted = decide_waves(waves, 0.2, 0, [1], [bad_canary])
    assert halted.halted and "wave 1" in halted.detail
    # 3 of a final wave of at most 10 already escalated (> 20%) while 6 are still running: halt now
    running = W(changeable=10, unassessed=0, queued_waiting=2, granted=(1, 1, 8), members_done=(1, 1, 2),
                escalated=(0, 0, 3))
    assert decide_waves(waves, 0.2, 2, [10], [running]).halted
    # ... but not while the largest the wave can still be keeps them under the threshold
    early = W(changeable=10, unassessed=90, unstarted=80, granted=(1, 1, 8), members_done=(1, 1, 2),
              escalated=(0, 0, 3))
    assert not decide_waves(waves, 0.2, 2, [10], [early]).halted


def test_nothing_is_halted_when_nothing_is_left_to_start() -> None:
    waves = parse_waves("100%")
    all_started = W(changeable=4, unassessed=0, granted=(4,), members_done=(3,), escalated=(3,))
    assert not decide_waves(waves, 0.2, 0, [0], [all_started]).halted


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
    counted = Counts().plus([ReportRow.from_json({"id": "x", "subscription_id": "s", "name": "x", "reason": "r",
                                                   **row}) for row in rows])
    assert (counted + counted).to_json() == {"machines": 6, "by_state": {"escalated": 4, "hotpatch_enabled": 2},
                                             "reboots": 4, "escalations": 4}


def test_summary_reboots_count_every_reboot_not_the_machines_that_rebooted() -> None:
    # SPEC §5's summary "reboots" is the sum of the rows' reboots (a reactive machine may reboot twice).
    rows = [{"state": "hotpatch_enabled", "reboots": 2}, {"state": "hotpatch_enabled", "reboots": 1},
            {"state": "hotpatch_enabled", "reboots": 0}]
    assert summarize(rows)["reboots"] == 3


def test_halted_and_other_machines_are_no_escalations_in_the_summary() -> None:
    rows = [ReportRow.halted(f"/subscriptions/{'1' * 8}-1111-1111-1111-{'1' * 12}/resourceGroups/rg/providers/"
                             f"Microsoft.HybridCompute/machines/m{i}") for i in range(2)]
    rows.append(replace(rows[0], state="escalated", reason="enable_stuck", reboots=1))
    rows.append(replace(rows[0], state="skipped_disconnected", reason="agent_disconnected"))
    assert Counts().plus(rows).to_json() == {
        "machines": 4, "by_state": {"escalated": 1, "halted": 2, "skipped_disconnected": 1}, "reboots": 1,
        "escalations": 1}
    assert summarize(row.to_json() for row in rows)["escalations"] == 1


MONDAY = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)  # a Monday


@pytest.mark.parametrize(
    ("window", "now", "expected"),
    [
        ("Sun 02:00-06:00", MONDAY, datetime(2026, 1, 11, 2, 0, tzinfo=UTC)),
        ("Mon 07:00-09:00", MONDAY, MONDAY),  # inside: go now
        ("Mon 09:00-10:00", MONDAY, MONDAY.replace(hour=9)),
        ("Sun 22:00-09:00", MONDAY, MONDAY),  # Sunday's window runs past midnight into Monday
        ("Mon-Fri 00:00-01:00", MONDAY, MONDAY + timedelta(hours=16)),
        ("Mon 07:00-08:00", MONDAY, MONDAY + timedelta(days=7, hours=-1)),  # closed at its end minute: next week
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


def test_reads_back_off_after_news_and_much_further_once_quiet_but_not_while_the_window_is_open() -> None:
    assert next_poll_s(MAX_POLL_S, True, 10_000) == POLL_S
    assert next_poll_s(0, False, 0) == 2 * POLL_S <= MAX_POLL_S
    assert next_poll_s(MAX_POLL_S, False, QUIET_AFTER_S - 1) == MAX_POLL_S
    doubling = [MAX_POLL_S]
    while doubling[-1] < QUIET_POLL_S:
        doubling.append(next_poll_s(doubling[-1], False, QUIET_AFTER_S))
    assert doubling == [60, 120, 240, 480, QUIET_POLL_S]
    assert next_poll_s(QUIET_POLL_S, False, QUIET_AFTER_S, window_open=True) == MAX_POLL_S


def test_a_window_policy_rollout_reads_when_its_maintenance_window_opens() -> None:
    policy = replace(Policy(), reboot_policy="window", maintenance_window=parse_window("Sun 02:00-06:00"))
    monday = datetime(2026, 1, 5, 8, tzinfo=UTC)
    opens = datetime(2026, 1, 11, 2, tzinfo=UTC)
    assert next_read(policy, monday, QUIET_POLL_S) == monday + timedelta(seconds=QUIET_POLL_S)
    assert next_read(policy, opens - timedelta(minutes=3), QUIET_POLL_S) == opens + timedelta(seconds=POLL_S)
    inside = opens + timedelta(hours=1)
    assert next_read(policy, inside, MAX_POLL_S) == inside + timedelta(seconds=MAX_POLL_S)
    assert maintenance_window_open(policy, inside) and not maintenance_window_open(policy, monday)
    auto = replace(policy, reboot_policy="auto")
    assert not maintenance_window_open(auto, inside)
    assert next_read(auto, opens - timedelta(minutes=3), QUIET_POLL_S) == opens + timedelta(minutes=7)


def test_a_percentage_wave_rounds_up_and_reaches_at_least_one_machine() -> None:
    ten, half = parse_waves("10%,50%")
    assert [cumulative_target(ten, n) for n in (1, 9, 10, 11, 15)] == [1, 1, 1, 2, 2]
    assert [cumulative_target(half, n) for n in (1, 3, 5)] == [1, 2, 3]
    (count,) = parse_waves("5")
    assert [cumulative_target(count, n) for n in (3, 5, 8)] == [3, 5, 5]


def test_a_read_with_news_resets_the_cadence_and_a_quiet_one_backs_off_from_the_last_news() -> None:
    policy = Policy()
    now = datetime(2026, 1, 5, 8, tzinfo=UTC)
    assert read_cadence(policy, now, MAX_POLL_S, "", False) == (POLL_S, now.isoformat()), "no news yet on record"
    assert read_cadence(policy, now, MAX_POLL_S, "2026-01-05T07:00:00+00:00", True) == (POLL_S, now.isoformat())
    recent, quiet = now - timedelta(minutes=5), now - timedelta(seconds=QUIET_AFTER_S)
    assert read_cadence(policy, now, MAX_POLL_S, recent.isoformat(), False) == (MAX_POLL_S, recent.isoformat())
    assert read_cadence(policy, now, MAX_POLL_S, quiet.isoformat(), False) == (2 * MAX_POLL_S, quiet.isoformat())
