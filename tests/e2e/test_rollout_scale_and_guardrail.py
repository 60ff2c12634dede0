"""The fleet rollout in process (SPEC §3): the guardrail halts a rollout after a bad canary wave, and the
fleet-level orchestrations' histories stay the same size whatever the fleet size."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from arc_hotpatch.clocks import VirtualClock
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
    # Pages of 25 against chunks of 20 (the default concurrency): chunks start mid-page and straddle pages.
    twin = FleetTwin(fleet, clock, page_size=25)
    try:
        with twin_environment(twin.start()):
            settings = simulation_policy(replace(Policy(), reboot_policy="auto").with_overrides(policy), twin)
            report, metrics = execute_rollout(clock, settings, expected_machines=len(fleet.machines),
                                              rollout_id=ROLLOUT_ID, timeout_real_s=180)
        yield report, metrics, twin
    finally:
        twin.stop()


@pytest.mark.parametrize(("escalating", "halts"), [("a-fails", True), ("z-fails", False)],
                         ids=["canary_escalates", "last_machine_escalates"])
def test_a_canary_wave_with_too_many_escalations_halts_the_rest(escalating: str, halts: bool) -> None:
    ready = [f"m-{n}" for n in range(1, 5)]
    groups = [{"count": 4, "machine": {"name": "m", "os_version": OLD}},
              {"machine": {"name": escalating, "os_version": OLD, "enable_outcome": "fail"}}]
    # Guardrail 30%: the canary alone escalating is 100% of its wave; the last of five is 25% of the second.
    with rolled_out(groups, waves="1,100%", guardrail=0.3) as (report, _, twin):
        snapshots = {m.name: m for m in twin.machines()}
    order = list(snapshots)  # ARM lists machines by resource id: same group, so by name
    assert order == sorted([*ready, escalating])
    assert (order[0] == escalating) == halts, "the canary (first wave of one) is the first machine listed"
    rows = {row["name"]: row for row in report["machines"]}
    assert [row["name"] for row in report["machines"]] == order
    assert (rows[escalating]["state"], rows[escalating]["reason"]) == ("escalated", "enable_failed")

    if halts:  # 1 of 1 escalated in the canary wave: nothing else is touched
        assert report["rollout"]["phase"] == "halted"
        for name in ready:
            row = rows[name]
            assert (row["state"], row["reason"], row["actions"], row["reboots"]) == ("halted", "guardrail", [], 0)
            snapshot = snapshots[name]
            assert not snapshot.runs and snapshot.reboots == 0 and not snapshot.license_writes, name
            assert snapshot.hotpatch_status != "Enabled"
        assert report["summary"]["by_state"] == {"escalated": 1, "halted": 4}
    else:  # a fine canary, then 1 of 4 in the last wave is under the guardrail: all the others enrolled
        assert report["rollout"]["phase"] == "completed"
        assert all(rows[name]["state"] == "hotpatch_enabled" for name in ready)
        assert all(snapshots[name].hotpatch_status == "Enabled" for name in ready)


def fleet_level_history(metrics: dict[str, Any]) -> int:
    """The largest history of the rollout's own orchestrations (rollout, slices, chunks), any execution."""
    sizes = [stats["max"] for instance_id, stats in metrics["history_events"].items()
             if instance_id.startswith(ROLLOUT_ID)]
    assert sizes, "no fleet-level orchestration ran"
    return max(sizes)


def test_fleet_level_history_does_not_grow_with_the_fleet() -> None:
    measured: dict[int, tuple[int, int]] = {}
    for size in (100, 2000):
        # A cheap fleet: almost every machine is excluded by tag (one ARM read each), two are enrolled.
        groups = [{"count": 2, "machine": {"name": "enroll", "os_version": OLD}},
                  {"count": size - 2, "machine": {"name": "skip", "tags": {"hotpatch": "exclude"}}}]
        with rolled_out(groups) as (report, metrics, twin):
            listed = [m.resource_id for m in twin.machines()]
        assert [row["id"] for row in report["machines"]] == listed, "the cursors visit every machine once, in order"
        assert report["summary"]["machines"] == size
        assert report["summary"]["by_state"] == {"excluded": size - 2, "hotpatch_enabled": 2}
        continued = metrics["executions"] - metrics["orchestrations"]  # executions that continued as new
        measured[size] = (fleet_level_history(metrics), continued)

    (small, continued_small), (large, continued_large) = measured[100], measured[2000]
    assert large <= 1.5 * small + 20, f"largest fleet-level history: {small} events at 100, {large} at 2,000"
    assert continued_small > 0, "the rollout continues as new between waves and chunks"
    assert continued_large > 5 * continued_small, "a larger fleet means more executions, not longer histories"
