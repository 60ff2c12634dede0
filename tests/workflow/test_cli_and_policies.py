"""The CLI's simulate end to end, the baseline flag in reports, and bounded concurrency per subscription."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from arc_hotpatch.cli import app


def test_simulate_cli_writes_the_report(tmp_path: Path) -> None:
    report_path = tmp_path / "out" / "report.json"
    result = CliRunner().invoke(
        app, ["simulate", "--machines", "6", "--seed", "2", "--report", str(report_path), "--workaround-mode", "off"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["summary"]["machines"] == 6 == len(report["machines"])
    assert set(report["metrics"]) >= {"virtual_makespan_s", "wall_s", "arm_requests", "arm_requests_by_operation",
                                      "throttled_responses", "orchestrations", "max_history_events"}
    assert "licensing_workaround" not in {a for row in report["machines"] for a in row["actions"]}
    assert "Rollout summary" in result.output


def test_simulate_cli_rejects_bad_input_naming_it(tmp_path: Path) -> None:
    scenario = tmp_path / "s.json"
    scenario.write_text(json.dumps({"seed": 1, "groups": [{"count": 1, "machine": {"vbs_status": 7}}]}))
    result = CliRunner().invoke(app, ["simulate", "--scenario", str(scenario)])
    assert result.exit_code == 2 and "vbs_status" in result.output
    result = CliRunner().invoke(app, ["simulate", "--waves", "0%"])
    assert result.exit_code == 2 and "--waves" in result.output


def test_report_baseline_flag(rig_for) -> None:
    rig = rig_for({"on": {}, "off": {"os_version": "10.0.26100.4000"}, "newer": {"os_version": "10.0.26100.32230"}})
    flags = {name: rig.run_machine(name, dry_run=True)["baseline"] for name in ("on", "off", "newer")}
    assert flags == {"on": "on", "off": "off", "newer": "unknown"}


def test_concurrency_bounds_machines_in_flight_per_subscription(rig_for) -> None:
    rig = rig_for({f"m-{i}": {} for i in range(6)})
    policy = rig.policy(reboot_policy="approval", concurrency=2, waves="100%")
    rollout = rig.host.start_new("rollout_orchestrator", "rollout-test", {"policy": policy.to_json()})
    rig.host.run_until(rig.clock.now() + timedelta(hours=2))
    machines = rig.host.list_instances(instance_id_prefix="hotpatch-")
    waiting = [s for s in machines if (s.get("customStatus") or {}).get("step") == "awaiting_approval"]
    assert len(machines) == 2 and len(waiting) == 2, "only `concurrency` machines are started at once"
    for status in waiting:
        rig.host.raise_event(status["instanceId"], "RebootApproved", {"by": "test"})
    rig.host.run_until(rig.clock.now() + timedelta(hours=2))
    assert len(rig.host.list_instances(instance_id_prefix="hotpatch-")) == 4, "the window refills as machines finish"
    rig.host.terminate(rollout, "test over")


@pytest.mark.parametrize("setting", ["enable_poll_interval", "reboot_poll_interval"])
def test_poll_intervals_set_how_often_status_is_read(rig_for, setting: str) -> None:
    reads = {}
    for interval in ("1m", "5m"):
        rig = rig_for({"m": {"os_version": "10.0.26100.4000", "enable_minutes": 30, "vbs_status": 0,
                             "reboot_minutes": 20}})
        row = rig.run_machine("m", enable_timeout="1h", reboot_timeout="1h", **{setting: interval})
        assert row["state"] == "hotpatch_enabled", row
        reads[interval] = rig.twin.metrics()["arm_requests_by_operation"]["machines.get"]
    assert reads["1m"] > reads["5m"] + 5, reads


def test_a_machine_whose_orchestration_dies_is_reported_not_lost(rig_for) -> None:
    import azure.durable_functions as df

    from orchestrators.triggers import rollout_report

    rig = rig_for({"a": {}, "b": {}})
    policy = rig.policy(reboot_policy="approval", waves="100%")
    rollout = rig.host.start_new("rollout_orchestrator", "rollout-test", {"policy": policy.to_json()})
    rig.host.run_until(rig.clock.now() + timedelta(hours=1))
    waiting = {s["customStatus"]["machine"]: s["instanceId"] for s in rig.host.list_instances(
        instance_id_prefix="hotpatch-")}
    rig.host.terminate(waiting[rig.twin.resource_id("a")], "operator stopped it")
    rig.host.raise_event(waiting[rig.twin.resource_id("b")], "RebootApproved", {"by": "test"})
    assert rig.host.run_until_complete([rollout])[rollout]["runtimeStatus"] == "Completed"
    client = df.DurableOrchestrationClient(rig.host.client_binding_json())
    report = rig.host.run_client_coroutine(rollout_report(client, rollout))
    rows = {row["name"]: row for row in report["machines"]}
    assert (rows["a"]["state"], rows["a"]["reason"]) == ("escalated", "orchestration_failed")
    assert "Terminated" in rows["a"]["detail"]
    assert rows["b"]["state"] == "hotpatch_enabled" and report["summary"]["machines"] == 2
