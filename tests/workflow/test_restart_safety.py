"""A machine orchestration terminated at any step, then started again: no unplanned or second reboot, a complete
ledger, true report rows (the real app on the local durable host, against the twin, with Azurite's table)."""

from __future__ import annotations

from datetime import timedelta

import azure.durable_functions as df
import pytest
import requests

from activities.ledger_calls import read_entries
from core.contracts import ROLLOUT_ORCHESTRATOR, RolloutState
from core.ledger import DONE, FAILED, REQUESTED, changes_made, run_of
from orchestrators.instances import machine_instance_id
from orchestrators.triggers import rollout_report
from tests.rig import Rig, wait_until

# VSM off and the October 2025 licensing issue: one apply_changes (VSM + workaround), one reboot, then enablement.
NEEDS_BOTH = {"vbs_status": 0}
# VSM off on a later build: the agent stays up while the restart is pending (the workaround stops himds).
NEEDS_VSM = {"vbs_status": 0, "os_version": "10.0.26100.7000"}


def _step(rig: Rig, instance_id: str) -> str:
    status = rig.host.find_status(instance_id) or {}
    custom = status.get("customStatus")
    return custom.get("step", "") if isinstance(custom, dict) else ""


def _at(rig: Rig, instance_id: str, step: str) -> bool:
    """At ``step``; for applying_changes, once the script has run (the restart is scheduled, not yet made)."""
    if _step(rig, instance_id) != step:
        return False
    return step != "applying_changes" or rig.machine("m").scheduled_reboot_at is not None


@pytest.mark.parametrize("machine", [NEEDS_BOTH, NEEDS_VSM], ids=["vsm-and-workaround", "vsm"])
@pytest.mark.parametrize("step", ["checking_readiness", "applying_changes", "waiting_for_reboot",
                                  "waiting_for_enablement"])
def test_terminated_at_any_step_then_started_again_reboots_once_and_reports_what_happened(
        serve_fleet, step, machine) -> None:
    rig = serve_fleet({"m": machine})
    machine_id = rig.twin.resource_id("m")
    hold = rig.hold_clock()
    first = rig.start_machine("m")
    for _ in range(400):  # 10 s of virtual time at a time until the orchestration is at that step
        if _at(rig, first, step):
            break
        hold.run_for(timedelta(seconds=10))
    assert _at(rig, first, step), f"never reached {step}"
    rig.host.terminate(first, f"test: terminated while {step}")
    hold.run_for(timedelta(seconds=1))  # the host processes the termination
    wait_until(lambda: (rig.host.find_status(first) or {}).get("runtimeStatus") == "Terminated", "the termination")
    first_entries = read_entries(machine_id)
    first_run = {run_of(e) for e in first_entries}
    hold.release()

    row = rig.run_machine("m")

    snapshot = rig.machine("m")
    entries = read_entries(machine_id)
    second = [e for e in entries if run_of(e) not in first_run]
    done_before, reboots_before = changes_made(first_entries, first)
    # The machine rebooted exactly as often as its workflow needs: once, whoever asked for it.
    assert snapshot.reboots == 1, (step, snapshot.boot_times, [(e.change, e.phase) for e in entries])
    # As anyone can check it (curl --cacert).
    truth = requests.get(f"{rig.twin.base_url}/_twin/machines/m", timeout=10, verify=rig.twin.ca_file).json()
    assert truth["boot_count"] == 1 and len(truth["boots"]) == 1, truth
    assert row["state"] == "hotpatch_enabled" and snapshot.hotpatch_status == "Enabled", row
    # Its report rows are true: the second run's own changes, plus what the terminated run had made.
    assert row["reboots"] + reboots_before == snapshot.reboots, (row, done_before)
    assert row["actions"].count("reboot") == row["reboots"]
    # Its ledger is complete: every change the second run requested has its outcome.
    requested = {(e.change, e.parameters.get("request_id")) for e in second if e.phase == REQUESTED}
    settled = {(e.change, e.parameters.get("request_id")) for e in second if e.phase in (DONE, FAILED)}
    assert requested and requested <= settled, [(e.change, e.phase) for e in second]
    assert {e.change for e in second if e.phase == REQUESTED} >= set(row["actions"])


def test_a_terminated_machine_is_reported_by_its_window_with_the_actions_and_reboots_it_made(serve_fleet) -> None:
    rig = serve_fleet({"m": NEEDS_BOTH})
    machine_id = rig.twin.resource_id("m")
    hold = rig.hold_clock()
    policy = rig.policy(waves="100%")
    rollout = rig.host.start_new(ROLLOUT_ORCHESTRATOR, "rollout-restart", RolloutState(policy).to_json())
    machine = machine_instance_id(machine_id)
    for _ in range(600):
        if _step(rig, machine) == "waiting_for_reboot":
            break
        hold.run_for(timedelta(seconds=10))
    rig.host.terminate(machine, "test: terminated in the reboot wait")
    hold.run_for(timedelta(seconds=1))
    hold.release()
    final = rig.host.run_until_complete([rollout], timeout_real_s=300)[rollout]
    assert final["runtimeStatus"] == "Completed", final
    client = df.DurableOrchestrationClient(rig.host.client_binding_json())
    report = rig.host.run_client_coroutine(rollout_report(client, rollout))
    (row,) = report["machines"]
    assert (row["state"], row["reason"]) == ("escalated", "orchestration_failed")
    # Not "[] and 0": the ledger says what it did before it was stopped.
    assert (row["actions"], row["reboots"]) == (["enable_vsm", "licensing_workaround", "reboot"], 1)
    assert rig.machine("m").reboots == 1
