"""The fleet rollout in process (SPEC §3): the canary is a machine that changes, the guardrail halts the rest
after it escalates, a window keeps its slots full and never over-full, and the fleet-level orchestrations'
histories stay the same size whatever the fleet size."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

from arc_hotpatch.clocks import VirtualClock
from arc_hotpatch.durable_host import DurableHost
from arc_hotpatch.runner import execute_rollout, simulation_policy, twin_environment
from arc_hotpatch.twin import FleetTwin
from arc_hotpatch.twin.fleet import load_scenario
from core.policy import Policy

OLD = "10.0.26100.4000"  # enable only: no reboot, so a quick machine
ROLLOUT_ID = "rollout-e2e"


@contextlib.contextmanager
def rolled_out(groups: list[dict[str, Any]], **policy: Any) -> Iterator[tuple[dict, dict, FleetTwin]]:
    """Roll a policy out over a scenario's fleet on the twin; gives (report, host metrics, twin)."""
    clock = VirtualClock()
    fleet = load_scenario({"seed": 3, "subscriptions": 1, "groups": groups})
    # Pages of 25 against start batches of 20: a window's listing cursor stops mid-page and straddles pages.
    twin = FleetTwin(fleet, clock, page_size=25)
    try:
        twin.start()
        with twin_environment(twin):
            settings = simulation_policy(replace(Policy(), reboot_policy="auto").with_overrides(policy), twin)
            report, metrics = execute_rollout(clock, settings, expected_machines=len(fleet.machines),
                                              rollout_id=ROLLOUT_ID, timeout_real_s=180)
        yield report, metrics, twin
    finally:
        twin.stop()


def test_a_canary_that_escalates_halts_the_rest_which_stay_unchanged() -> None:
    # Five machines that each need a change (enabling only) and all fail; one more that needs none.
    groups = [{"count": 5, "machine": {"name": "m", "os_version": OLD, "enable_outcome": "fail"}},
              {"machine": {"name": "enrolled", "os_version": OLD, "hotpatch": "Enabled"}}]
    with rolled_out(groups, waves="1,100%", guardrail=0.3) as (report, _, twin):
        snapshots = {m.name: m for m in twin.machines()}
    rows = {row["name"]: row for row in report["machines"]}
    assert report["rollout"]["phase"] == "halted"
    escalated = [name for name, row in rows.items() if row["state"] == "escalated"]
    assert len(escalated) == 1 and rows[escalated[0]]["reason"] == "enable_failed", "the canary: one machine"
    # The machine that needed no change is settled outside the waves, with its own state.
    assert (rows["enrolled"]["state"], rows["enrolled"]["reason"]) == ("hotpatch_enabled", "already_enabled")
    halted = [name for name, row in rows.items() if row["state"] == "halted"]
    assert sorted(halted) == sorted(f"m-{n}" for n in range(1, 6) if f"m-{n}" not in escalated)
    for name in halted:
        row, snapshot = rows[name], snapshots[name]
        assert (row["reason"], row["actions"], row["reboots"]) == ("guardrail", [], 0)
        # Assessed (the read-only readiness script) and nothing else: no change, no reboot, no license write.
        assert {r.script for r in snapshot.runs} == {"readiness"}, name
        assert snapshot.reboots == 0 and not snapshot.license_writes and snapshot.hotpatch_status != "Enabled"
    assert report["summary"]["by_state"] == {"escalated": 1, "halted": 4, "hotpatch_enabled": 1}
    assert all(row["reason"] != "awaiting_wave" for row in report["machines"]), "no row is left provisional"


def test_one_escalation_in_a_final_wave_under_the_guardrail_halts_nothing() -> None:
    groups = [{"count": 4, "machine": {"name": "m", "os_version": OLD}},
              {"machine": {"name": "fails", "os_version": OLD, "enable_outcome": "fail"}}]
    with rolled_out(groups, waves="100%", guardrail=0.3) as (report, metrics, twin):
        snapshots = {m.name: m for m in twin.machines()}
    rows = {row["name"]: row for row in report["machines"]}
    assert report["rollout"]["phase"] == "completed"
    # The bench's history sizes by orchestrator: every instance counted once, under its function's name.
    grouped = metrics["history_by_orchestrator"]
    assert grouped["machine_orchestrator"]["instances"] == 5 and grouped["rollout_orchestrator"]["instances"] == 1
    assert sum(entry["instances"] for entry in grouped.values()) == len(metrics["history_events"])
    assert (rows["fails"]["state"], rows["fails"]["reason"]) == ("escalated", "enable_failed")  # 1 of 5 < 30%
    assert all(rows[f"m-{n}"]["state"] == "hotpatch_enabled" for n in range(1, 5))
    assert all(snapshots[f"m-{n}"].hotpatch_status == "Enabled" for n in range(1, 5))


def test_machines_settled_without_a_change_do_not_dilute_the_guardrail_of_a_wave() -> None:
    # One machine at a time, in listing order: three excluded, then one that fails, then two that would enable.
    # The wave is the machines it changes: 1 escalated of at most 3 (> 30%) halts it; counting the excluded
    # machines too (1 of 6) would not.
    groups = [{"count": 3, "machine": {"name": "a-skip", "tags": {"hotpatch": "exclude"}}},
              {"machine": {"name": "b-fails", "os_version": OLD, "enable_outcome": "fail"}},
              {"count": 2, "machine": {"name": "c-ok", "os_version": OLD}}]
    with rolled_out(groups, waves="100%", guardrail=0.3, concurrency=1) as (report, _, _twin):
        pass
    rows = {row["name"]: row for row in report["machines"]}
    assert [row["name"] for row in report["machines"]][:4] == ["a-skip-1", "a-skip-2", "a-skip-3", "b-fails"]
    assert all(rows[f"a-skip-{n}"]["state"] == "excluded" for n in range(1, 4))
    assert (rows["b-fails"]["state"], rows["b-fails"]["reason"]) == ("escalated", "enable_failed")
    assert report["rollout"]["phase"] == "halted"
    assert (rows["c-ok-2"]["state"], rows["c-ok-2"]["reason"]) == ("halted", "guardrail")
    assert rows["c-ok-1"]["state"] in ("hotpatch_enabled", "halted")  # running or not yet started at the halt


def fleet_level(metrics: dict[str, Any]) -> tuple[int, int]:
    """The largest history of the rollout's own orchestrations (rollout and windows, any execution), and how
    many of their executions continued as new."""
    stats = [s for instance_id, s in metrics["history_events"].items()
             if instance_id.startswith(ROLLOUT_ID) and instance_id.count(":") <= 2]  # not the records
    assert stats, "no fleet-level orchestration ran"
    return max(s["max"] for s in stats), sum(s["continued"] for s in stats)


def test_fleet_level_history_does_not_grow_with_the_fleet() -> None:
    measured: dict[int, tuple[int, int]] = {}
    for size in (100, 2000):
        # A cheap fleet: almost every machine is excluded by tag (one ARM read each), two are enrolled.
        groups = [{"count": 2, "machine": {"name": "enroll", "os_version": OLD}},
                  {"count": size - 2, "machine": {"name": "skip", "tags": {"hotpatch": "exclude"}}}]
        with rolled_out(groups) as (report, metrics, twin):
            listed = [m.resource_id for m in twin.machines()]
        assert [row["id"] for row in report["machines"]] == listed, "every machine once, in listing order"
        assert report["summary"]["machines"] == size
        assert report["summary"]["by_state"] == {"excluded": size - 2, "hotpatch_enabled": 2}
        measured[size] = fleet_level(metrics)

    (small, continued_small), (large, continued_large) = measured[100], measured[2000]
    # The target: the largest history flat within 20 % as the fleet grows.
    assert large <= 1.2 * small, f"largest fleet-level history: {small} events at 100, {large} at 2,000"
    assert continued_large > 3 * max(1, continued_small), "a larger fleet means more executions, not longer histories"


def test_a_window_never_has_more_than_concurrency_machines_in_flight() -> None:
    groups = [{"count": 30, "machine": {"name": "m", "os_version": OLD}}]
    clock = VirtualClock()
    twin = FleetTwin(load_scenario({"seed": 4, "subscriptions": 1, "groups": groups}), clock)
    peak = 0
    try:
        twin.start()
        with twin_environment(twin):
            import function_app
            from core.contracts import ROLLOUT_ORCHESTRATOR, RolloutState

            settings = simulation_policy(replace(Policy(), reboot_policy="auto").with_overrides(
                {"concurrency": 7, "waves": "100%"}), twin)
            with DurableHost(function_app.app, clock, activity_workers=8) as host:
                rollout = host.start_new(ROLLOUT_ORCHESTRATOR, ROLLOUT_ID, RolloutState(settings).to_json())
                while host.find_status(rollout)["runtimeStatus"] != "Completed":
                    host.run_until(clock.now() + timedelta(minutes=1), timeout_real_s=60)
                    running = [s for s in host.list_instances(instance_id_prefix="hotpatch-", show_input=False)
                               if s["runtimeStatus"] in ("Running", "Pending")]
                    peak = max(peak, len(running))
                    assert len(running) <= 7, f"{len(running)} machines in flight at {clock.now()}"
    finally:
        twin.stop()
    assert peak == 7, "the window keeps its slots full"
