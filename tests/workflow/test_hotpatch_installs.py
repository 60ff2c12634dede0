"""Patch Tuesday without reboots: this month's hotpatches through Update Manager's installPatches, end to end
through the real SDK against the twin, the machine's boot time read before and after."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from arc_hotpatch.cli import app
from core.contracts import INSTALL, INSTALL_ORCHESTRATOR, MachineInput
from orchestrators.instances import machine_instance_id
from tests.rig import wait_until

FEBRUARY_PATCH_TUESDAY = datetime(2026, 2, 10, 9, tzinfo=UTC)  # a hotpatch month (January's baseline)
ENROLLED = {"os_version": "10.0.26100.32230", "hotpatch": "Enabled", "workaround_applied": True}
INSTALL_STATES = {"hotpatch_installed", "nothing_to_install", "not_enrolled", "reboot_required", "escalated"}


def install(rig, name: str, **policy) -> dict:
    machine_id = rig.twin.resource_id(name)
    instance_id = rig.host.start_new(INSTALL_ORCHESTRATOR, machine_instance_id(machine_id, INSTALL),
                                     MachineInput(machine_id, rig.policy(**policy), "test", kind=INSTALL).to_json())
    status = rig.host.run_until_complete([instance_id], timeout_real_s=120)[instance_id]
    assert status["runtimeStatus"] == "Completed", status
    return status["output"]


def installs_requested(rig) -> int:
    return rig.twin.metrics()["arm_requests_by_operation"].get("machines.installPatches", 0)


def test_an_enrolled_machine_on_the_baseline_gets_its_hotpatches_without_a_reboot_and_only_once(rig_for) -> None:
    rig = rig_for({"m": ENROLLED}, start=FEBRUARY_PATCH_TUESDAY)
    boots = rig.machine("m").boot_times
    row = install(rig, "m")
    assert (row["state"], row["reason"], row["actions"], row["reboots"]) == (
        "hotpatch_installed", "installed", ["install_hotpatches"], 0)
    assert "2 hotpatch(es) installed without a reboot" in row["detail"]
    assert rig.machine("m").boot_times == boots, "the machine did not reboot"
    again = install(rig, "m")
    assert (again["state"], again["reason"]) == ("nothing_to_install", "up_to_date")
    assert installs_requested(rig) == 2


@pytest.mark.parametrize(
    ("attributes", "state", "reason"),
    [
        ({}, "not_enrolled", "license_not_enabled"),
        ({"hotpatch": "Enabled", "workaround_applied": True}, "reboot_required", "forecast_reboot"),  # 6899 in Feb
        ({**ENROLLED, "reboot_pending": True}, "reboot_required", "forecast_reboot"),
        ({**ENROLLED, "tags": {"hotpatch": "exclude"}}, "not_enrolled", "tagged_exclude"),
        ({**ENROLLED, "status": "Disconnected"}, "escalated", "agent_disconnected"),
        ({**ENROLLED, "os_sku": "Windows Server 2022 Datacenter", "os_version": "10.0.20348.4294"}, "not_enrolled",
         "unsupported_os"),
    ],
    ids=["not-enrolled", "off-baseline", "reboot-pending", "excluded", "disconnected", "server-2022"],
)
def test_machines_that_would_reboot_or_are_not_enrolled_are_reported_not_touched(rig_for, attributes, state,
                                                                                 reason) -> None:
    rig = rig_for({"m": attributes}, start=FEBRUARY_PATCH_TUESDAY)
    row = install(rig, "m", disconnected_grace="1m")
    assert (row["state"], row["reason"], row["actions"]) == (state, reason, []), row
    assert installs_requested(rig) == 0 and rig.machine("m").reboots == 0


def test_a_baseline_month_installs_nothing(rig_for) -> None:
    rig = rig_for({"m": ENROLLED}, start=datetime(2026, 4, 14, 9, tzinfo=UTC))  # April: a baseline month
    row = install(rig, "m")
    assert (row["state"], row["reason"]) == ("reboot_required", "forecast_reboot")
    assert "April brings a baseline" in row["detail"] and installs_requested(rig) == 0


def test_the_http_start_of_an_installation_run_follows_the_rollout_rules(serve_fleet) -> None:
    served = serve_fleet({"a-enrolled": ENROLLED, "b-new": {}}, start=FEBRUARY_PATCH_TUESDAY)
    url = f"/api/subscriptions/{served.subscription_id}/hotpatch-installs"
    started = served.call("POST", url, json={"waves": "100%"})
    assert started.status_code == 202, started.text
    again = served.call("POST", url)  # one running per subscription: the running one is returned
    assert (again.status_code, again.json()["id"], again.json()["already_running"]) == (
        202, started.json()["id"], True)
    assert served.call("POST", url, json={"reboot_policy": "sometimes"}).status_code == 400
    outside = "00000000-0000-0000-0000-00000000beef"
    assert served.call("POST", f"/api/subscriptions/{outside}/hotpatch-installs").status_code == 403
    final = served.wait_for_status_url(started.json()["statusQueryGetUri"])
    assert final["runtimeStatus"] == "Completed", final
    report = served.report(started.json()["id"])
    rows = {row["name"]: (row["state"], row["reason"]) for row in report["machines"]}
    assert rows == {"a-enrolled": ("hotpatch_installed", "installed"), "b-new": ("not_enrolled", "license_not_enabled")}
    # An enrollment rollout is a different run: it may start meanwhile.
    assert served.start_rollout({"dry_run": True}).status_code == 202


def test_simulate_enrolls_then_installs_the_months_hotpatches(tmp_path: Path) -> None:
    report_path = tmp_path / "installs.json"
    result = CliRunner().invoke(app, ["simulate", "--install-hotpatches", "--machines", "30", "--seed", "3",
                                      "--start", "2026-02-10", "--report", str(report_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["enrollment"]["summary"]["machines"] == 30
    assert {row["state"] for row in report["machines"]} <= INSTALL_STATES
    assert sum(row["reboots"] for row in report["machines"]) == 0
    assert "enrollment:" in result.output


def test_the_installation_timer_is_off_by_default_and_starts_a_fleet_run_once_scheduled(serve_fleet) -> None:
    # (That the host leaves an empty or disabled timer unscheduled: tests/durable_host/test_http.py.)
    served = serve_fleet({"a-enrolled": ENROLLED}, start=FEBRUARY_PATCH_TUESDAY)
    master = {"x-functions-key": served.host.keys.master_key}
    admin = f"{served.base_url}/admin/functions/scheduled_hotpatch_install"
    assert served.http.post(admin, headers=master, json={}, timeout=30).status_code == 202  # run by hand: it is off
    time.sleep(1.0)
    assert not [i for i in served.host.instance_ids() if i.startswith("installs-fleet")]

    served.set_policy(install_schedule="0 0 10 * * Tue")
    assert served.http.post(admin, headers=master, json={}, timeout=30).status_code == 202
    runs = wait_until(lambda: [i for i in served.host.instance_ids() if i.startswith("installs-fleet-")] or None,
                      "the scheduled installation run to start")
    status = served.host.run_until_complete(runs, timeout_real_s=120)[runs[0]]
    assert status["runtimeStatus"] == "Completed", status
