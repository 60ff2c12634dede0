"""The workflow in 2026, end to end through the real SDK against the twin: the Run Command preflight, the two-level
enablement status, the 2026 baselines and the next-update forecast (with Update Manager's patch assessment)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from arc_hotpatch.cli import app
from core.schedule import parse_utc

FEBRUARY = datetime(2026, 2, 2, 8, tzinfo=UTC)  # the next update, 2026-02-10, is a hotpatch month's
JANUARY_BASELINE = {"os_version": "10.0.26100.32230"}


def run_commands_sent(rig) -> int:
    return rig.twin.metrics()["arm_requests_by_operation"].get("runCommands.put", 0)


@pytest.mark.parametrize(
    ("attributes", "reason", "named"),
    [
        ({"agent_version": "1.31.02724.1004"}, "agent_too_old", "1.31.02724.1004"),
        ({"extensions_blocklist": ["Microsoft.CPlat.Core/RunCommandHandlerWindows"]}, "run_command_blocked",
         "azcmagent config clear extensions.blocklist"),
        ({"extensions_allowlist": ["Microsoft.Azure.Monitor/AzureMonitorWindowsAgent"]}, "run_command_blocked",
         "azcmagent config set extensions.allowlist"),
        ({"extensions_enabled": False}, "run_command_blocked", "azcmagent config set extensions.enabled true"),
        ({"agent_config_mode": "monitor"}, "run_command_blocked", "azcmagent config set config.mode full"),
    ],
    ids=["agent-too-old", "blocklist", "allowlist", "extensions-disabled", "monitor-mode"],
)
def test_a_machine_run_command_would_refuse_is_escalated_and_sent_no_run_command(rig_for, attributes, reason, named):
    rig = rig_for({"m": attributes})
    row = rig.run_machine("m")
    assert (row["state"], row["reason"], row["actions"]) == ("escalated", reason, [])
    assert named in row["detail"]
    assert run_commands_sent(rig) == 0 and not rig.machine("m").runs


def test_action_required_escalates_at_once_with_the_machines_error_text(rig_for):
    rig = rig_for({"m": {"enable_outcome": "action_required", "workaround_applied": True}})
    row = rig.run_machine("m")
    assert (row["state"], row["reason"], row["actions"]) == ("escalated", "enable_action_required", ["enable_hotpatch"])
    assert "HotpatchActionRequired" in row["detail"] and "restart" in row["detail"]
    # Seen at the first look after the write (about 10 minutes), not after the 30-minute enable timeout.
    took = (parse_utc(row["finished_at"]) - parse_utc(row["started_at"])).total_seconds()
    assert took < 20 * 60, took


def test_enable_failed_carries_the_features_error_text(rig_for):
    rig = rig_for({"m": {"enable_outcome": "fail", "workaround_applied": True}})
    row = rig.run_machine("m")
    assert (row["state"], row["reason"]) == ("escalated", "enable_failed")
    assert "HotpatchEnablementFailed" in row["detail"]


def test_the_next_update_forecast_in_a_hotpatch_month(rig_for):
    rig = rig_for({
        "current": {**JANUARY_BASELINE, "workaround_applied": True},
        "october": {"workaround_applied": True},  # 26100.6899: no longer the latest baseline in February 2026
        "pending": {**JANUARY_BASELINE, "workaround_applied": True, "reboot_pending": True},
        "server-2022": {"os_sku": "Windows Server 2022 Datacenter", "os_version": "10.0.20348.4294"},
    }, start=FEBRUARY)
    rows = {name: rig.run_machine(name) for name in ("current", "october", "pending", "server-2022")}
    current = rows["current"]
    assert (current["state"], current["baseline"], current["next_update"]) == ("hotpatch_enabled", "on", "hotpatch")
    assert current["next_update_detail"].startswith("2026-02-10 update: a hotpatch")
    assert "KB5073379" in current["next_update_detail"]
    october = rows["october"]
    assert (october["state"], october["baseline"], october["next_update"]) == ("hotpatch_enabled", "off", "reboot")
    assert "not the latest baseline 26100.32230 (KB5073379" in october["next_update_detail"]
    # Our own reboot (VSM is running: none) leaves Windows' servicing reboot pending: it will reboot.
    assert rows["pending"]["next_update"] == "reboot"
    assert "a reboot is pending (component_servicing)" in rows["pending"]["next_update_detail"]
    assert rows["server-2022"]["next_update"] == "unknown"


def test_a_baseline_month_is_a_planned_reboot_and_the_default_start_is_in_january(rig_for):
    rig = rig_for({"m": {"workaround_applied": True}})
    row = rig.run_machine("m")
    assert row["baseline"] == "on"  # on 2026-01-05 October 2025's is still the latest released baseline
    assert row["next_update"] == "reboot"
    assert row["next_update_detail"].startswith("2026-01-13 update: January brings a baseline (a planned reboot)")


def test_the_out_of_band_same_build_update_takes_a_machine_off_the_hotpatch_path(rig_for):
    rig = rig_for({f"m-{i}": {"os_version": "10.0.26100.6905", "workaround_applied": True} for i in range(8)},
                  start=datetime(2025, 11, 20, 8, tzinfo=UTC))
    rows = {f"m-{i}": rig.run_machine(f"m-{i}", dry_run=True) for i in range(8)}
    by_kb = {name: rig.machine(name).hotfixes for name in rows}
    off = {name for name, kbs in by_kb.items() if "KB5070881" in kbs}
    assert off and len(off) < len(rows), by_kb  # the twin's mix has both
    for name, row in rows.items():
        if name in off:
            assert (row["baseline"], row["next_update"]) == ("off", "reboot")
            assert "KB5070881" in row["next_update_detail"]
        else:
            assert row["baseline"] == "on"


def test_a_dry_run_asks_update_manager_and_a_rollout_does_not(rig_for):
    rig = rig_for({"m": {**JANUARY_BASELINE, "workaround_applied": True, "hotpatch": "Enabled",
                         "reboot_pending": True}}, start=FEBRUARY)
    planned = rig.run_machine("m", dry_run=True)
    operations = rig.twin.metrics()["arm_requests_by_operation"]
    assert operations.get("machines.assessPatches") == 1 and operations.get("operationResults.get", 0) >= 1
    assert planned["next_update"] == "reboot"
    assert "Update Manager's patch assessment reports a reboot pending" in planned["next_update_detail"]
    rig.run_machine("m")
    assert rig.twin.metrics()["arm_requests_by_operation"].get("machines.assessPatches") == 1  # not again


def test_simulate_takes_a_start_date_and_reports_the_forecast(tmp_path: Path) -> None:
    scenario = tmp_path / "s.json"
    scenario.write_text(json.dumps({"seed": 3, "groups": [
        {"count": 2, "machine": {"name": "jan", **JANUARY_BASELINE, "workaround_applied": True}}]}))
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["simulate", "--scenario", str(scenario), "--start", "2026-02-02", "--report",
                                      str(report_path), "--waves", "100%"])
    assert result.exit_code == 0, result.output
    assert "from 2026-02-02 08:00 UTC" in result.output
    assert "next update (2026-02-10): hotpatch 2, reboot 0 (0 of them enrolled), unknown 0" in result.output
    rows = json.loads(report_path.read_text())["machines"]
    assert [(r["next_update"], r["started_at"][:10]) for r in rows] == [("hotpatch", "2026-02-02")] * 2
    bad = CliRunner().invoke(app, ["simulate", "--start", "February"])
    assert bad.exit_code == 2 and "--start 'February'" in bad.output
