"""The whole product on a generated fleet: the report adds up, and ARM faults are survived."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from arc_hotpatch.runner import run_simulation
from arc_hotpatch.twin.fleet import generate_fleet
from core.policy import Policy
from core.rollout import MAX_POLL_S, QUIET_POLL_S
from core.vocabulary import FinalState

FINAL_STATES = {s.value for s in FinalState}


def check_report_adds_up(report: dict, machines: int) -> None:
    rows = report["machines"]
    summary = report["summary"]
    assert summary["machines"] == machines == len(rows)
    assert sum(summary["by_state"].values()) == machines
    assert summary["reboots"] == sum(r["reboots"] for r in rows)
    assert summary["escalations"] == sum(r["state"] == "escalated" for r in rows)
    assert {r["state"] for r in rows} <= FINAL_STATES
    assert len({r["id"] for r in rows}) == machines, "every machine exactly once"
    for row in rows:
        assert set(row) >= {"id", "subscription_id", "name", "state", "reason", "actions", "reboots", "os_version",
                            "baseline"}
        assert row["baseline"] in ("on", "off", "unknown")
        assert row["actions"].count("reboot") == row["reboots"]


def test_generated_fleet_report_adds_up() -> None:
    fleet = generate_fleet(machines=60, subscriptions=2, seed=11)
    report = run_simulation(fleet, replace(Policy(), reboot_policy="auto"))
    check_report_adds_up(report, 60)
    metrics = report["metrics"]
    assert metrics["orchestrations"] >= 60 and metrics["arm_requests"] > 0
    assert metrics["virtual_makespan_s"] > 600, "reboots and enablement took simulated time"
    assert {r["subscription_id"] for r in report["machines"]} == set(fleet.subscription_ids)


def test_chaos_faults_are_survived_with_retries() -> None:
    fleet = generate_fleet(machines=40, subscriptions=1, seed=5)
    report = run_simulation(fleet, replace(Policy(), reboot_policy="auto"), faults="chaos")
    check_report_adds_up(report, 40)
    assert report["metrics"]["throttled_responses"] > 0, "chaos injects 429s, which the SDK retried"
    assert report["metrics"]["injected_faults"]
    assert not [r for r in report["machines"] if r["reason"] == "orchestration_failed"]
    # Waiting belongs to the orchestrators: under 429 Retry-After and lost results, no activity holds
    # a worker for more than 30 s of (virtual) time.
    longest = report["metrics"]["activity_longest_s"]
    assert longest and max(longest.values()) <= 30, longest


def test_same_seed_same_outcome() -> None:
    runs = [
        run_simulation(generate_fleet(machines=25, subscriptions=1, seed=3), replace(Policy(), reboot_policy="auto"))
        for _ in range(2)
    ]
    assert [(r["id"], r["state"], r["reason"], r["actions"]) for r in runs[0]["machines"]] == [
        (r["id"], r["state"], r["reason"], r["actions"]) for r in runs[1]["machines"]
    ]


def test_a_rollout_waiting_days_for_its_maintenance_window_reads_rarely_and_still_ends_promptly() -> None:
    fleet = generate_fleet(machines=3, subscriptions=1, seed=4, mix="ready")
    report = run_simulation(fleet, replace(Policy(), reboot_policy="window"))  # Sun 02:00-06:00, from a Monday
    check_report_adds_up(report, 3)
    rows = report["machines"]
    assert {(r["state"], r["reboots"]) for r in rows} == {("hotpatch_enabled", 1)}, rows
    sunday = "2026-01-11T0"
    assert all(r["finished_at"].startswith(sunday) for r in rows), [r["finished_at"] for r in rows]
    makespan = report["metrics"]["virtual_makespan_s"]
    last_finish = max(datetime.fromisoformat(r["finished_at"]) for r in rows)
    first_start = min(datetime.fromisoformat(r["started_at"]) for r in rows)
    assert makespan - (last_finish - first_start).total_seconds() <= QUIET_POLL_S + 2 * MAX_POLL_S
    # Six days of waiting: reading every MAX_POLL_S would take that many episodes for the window alone.
    assert report["metrics"]["episodes"] < makespan / MAX_POLL_S, report["metrics"]["episodes"]
