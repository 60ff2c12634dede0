"""SPEC §2 and §4 end to end: the real machine orchestration on the local durable host, against twin machines,
through the real Azure SDK. Each case asserts state, reason, actions in order and reboots."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

OLD = "10.0.26100.4000"  # before KB5066835: no licensing issue

CASES: list[tuple[str, dict[str, Any], dict[str, Any], tuple[str, str, list[str], int]]] = [
    # id, machine attributes, policy overrides, (state, reason, actions, reboots)
    ("ready_on_6899_needs_workaround", {}, {},
     ("hotpatch_enabled", "enabled", ["licensing_workaround", "reboot", "enable_hotpatch"], 1)),
    ("vsm_and_workaround_share_one_reboot", {"vbs_status": 0}, {},
     ("hotpatch_enabled", "enabled", ["enable_vsm", "licensing_workaround", "reboot", "enable_hotpatch"], 1)),
    ("vsm_only", {"vbs_status": 0, "os_version": OLD}, {},
     ("hotpatch_enabled", "enabled", ["enable_vsm", "reboot", "enable_hotpatch"], 1)),
    ("configured_but_not_running_vsm", {"vbs_status": 1, "os_version": OLD}, {},
     ("hotpatch_enabled", "enabled", ["enable_vsm", "reboot", "enable_hotpatch"], 1)),
    ("enable_only", {"os_version": OLD}, {}, ("hotpatch_enabled", "enabled", ["enable_hotpatch"], 0)),
    ("workaround_already_applied", {"workaround_applied": True}, {},
     ("hotpatch_enabled", "enabled", ["enable_hotpatch"], 0)),
    ("already_enabled", {"hotpatch": "Enabled", "os_version": OLD}, {},
     ("hotpatch_enabled", "already_enabled", [], 0)),
    ("already_enabled_but_license_at_risk", {"hotpatch": "Enabled"}, {},
     ("hotpatch_enabled", "enabled", ["licensing_workaround", "reboot"], 1)),
    ("excluded", {"tags": {"hotpatch": "exclude"}, "status": "Disconnected"}, {},
     ("excluded", "tagged_exclude", [], 0)),
    ("excluded_case_insensitive", {"tags": {"HotPatch": "Exclude"}}, {}, ("excluded", "tagged_exclude", [], 0)),
    ("custom_exclude_tag", {"tags": {"patching": "exclude"}}, {"exclude_tag": "patching"},
     ("excluded", "tagged_exclude", [], 0)),
    ("server_2022", {"os_sku": "Windows Server 2022 Datacenter", "os_version": "10.0.20348.2700"}, {},
     ("ineligible", "unsupported_os", [], 0)),
    ("linux", {"os_sku": "Ubuntu 22.04.4 LTS", "os_version": "22.04"}, {}, ("ineligible", "unsupported_os", [], 0)),
    ("insider_build", {"os_version": "10.0.26200.5000"}, {}, ("ineligible", "preview_build", [], 0)),
    ("essentials_edition", {"os_sku": "Windows Server 2025 Essentials"}, {},
     ("ineligible", "unsupported_edition", [], 0)),
    ("azure_edition", {"os_sku": "Windows Server 2025 Datacenter: Azure Edition"}, {},
     ("native_azure_edition", "hotpatch_built_in", [], 0)),
    ("build_too_old", {"os_version": "10.0.26100.1741"}, {}, ("ineligible", "build_too_old", [], 0)),
    ("oldest_supported", {"os_version": "10.0.26100.1742"}, {},
     ("hotpatch_enabled", "enabled", ["enable_hotpatch"], 0)),
    ("disconnected", {"status": "Disconnected"}, {}, ("skipped_disconnected", "agent_disconnected", [], 0)),
    ("agent_error", {"status": "Error"}, {}, ("skipped_disconnected", "agent_error", [], 0)),
    ("bios", {"uefi": False}, {}, ("ineligible", "vbs_hardware", [], 0)),
    ("secure_boot_off", {"secure_boot": False}, {}, ("ineligible", "vbs_hardware", [], 0)),
    ("reboot_hangs", {"reboot_hangs": True}, {"reboot_timeout": "20m"},
     ("escalated", "reboot_timeout", ["licensing_workaround", "reboot"], 1)),
    ("vsm_does_not_start", {"vbs_status": 0, "vsm_starts": False, "os_version": OLD}, {},
     ("escalated", "vsm_not_running", ["enable_vsm", "reboot"], 1)),
    ("enable_fails", {"enable_outcome": "fail", "os_version": OLD}, {},
     ("escalated", "enable_failed", ["enable_hotpatch"], 0)),
    ("enable_stuck", {"enable_outcome": "stuck", "os_version": OLD}, {"enable_timeout": "30m"},
     ("escalated", "enable_stuck", ["enable_hotpatch"], 0)),
    ("run_command_blocked", {"run_command_fails": True}, {}, ("escalated", "run_command_failed", [], 0)),
    ("never_reboot", {}, {"reboot_policy": "never"}, ("escalated", "reboot_required", [], 0)),
    ("never_reboot_is_fine_without_one", {"os_version": OLD}, {"reboot_policy": "never"},
     ("hotpatch_enabled", "enabled", ["enable_hotpatch"], 0)),
    ("approval_times_out", {}, {"reboot_policy": "approval", "approval_timeout": "2h"},
     ("escalated", "approval_timeout", [], 0)),
    ("workaround_off_leaves_licensing_bug_stuck", {}, {"workaround_mode": "off"},
     ("escalated", "enable_stuck", ["enable_hotpatch"], 0)),
    ("reactive_applies_workaround_when_stuck", {}, {"workaround_mode": "reactive"},
     ("hotpatch_enabled", "enabled", ["enable_hotpatch", "licensing_workaround", "reboot"], 1)),
    ("reactive_without_licensing_bug_is_stuck", {"enable_outcome": "stuck", "os_version": OLD},
     {"workaround_mode": "reactive"}, ("escalated", "enable_stuck", ["enable_hotpatch"], 0)),
    ("dry_run", {"vbs_status": 0}, {"dry_run": True},
     ("planned", "dry_run", ["enable_vsm", "licensing_workaround", "reboot", "enable_hotpatch"], 0)),
    ("dry_run_nothing_to_do", {"hotpatch": "Enabled", "os_version": OLD}, {"dry_run": True},
     ("planned", "dry_run", [], 0)),
    # SPEC §6: Run Command blockers found from the ARM resource, the machine level of enablement.
    ("agent_too_old", {"agent_version": "1.32.02759.1012"}, {}, ("escalated", "agent_too_old", [], 0)),
    ("run_command_blocked", {"extensions_blocklist": ["Microsoft.CPlat.Core/RunCommandHandlerWindows"]}, {},
     ("escalated", "run_command_blocked", [], 0)),
    ("enable_action_required", {"enable_outcome": "action_required", "os_version": OLD}, {},
     ("escalated", "enable_action_required", ["enable_hotpatch"], 0)),
]


@pytest.mark.parametrize(("attributes", "policy", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_final_state(rig_for, attributes: dict, policy: dict, expected: tuple) -> None:
    rig = rig_for({"m": attributes})
    row = rig.run_machine("m", **policy)
    state, reason, actions, reboots = expected
    assert (row["state"], row["reason"], row["actions"], row["reboots"]) == (state, reason, actions, reboots), row
    snapshot = rig.machine("m")
    assert snapshot.reboots == reboots, "the machine rebooted as many times as the report says"
    if state == "hotpatch_enabled":
        assert snapshot.hotpatch_status == "Enabled"
    assert not snapshot.payg_enrolled


def test_every_spec_state_and_reason_is_covered() -> None:
    from core.vocabulary import FinalState, Reason

    covered = {c[3][0] for c in CASES} | {"halted"}  # halted: tests/workflow/test_rollout.py
    assert covered == {s.value for s in FinalState}
    # guardrail: test_rollout_simulation; orchestration_failed: test_cli_and_policies; machine_not_found: below;
    # awaiting_wave and awaiting_recheck are no final reasons (tests/e2e/test_rollout_scale_and_guardrail.py and
    # tests/unit: never in a report)
    reasons = {c[3][1] for c in CASES} | {"guardrail", "orchestration_failed", "machine_not_found", "awaiting_wave",
                                          "awaiting_recheck"}
    assert {r.value for r in Reason} <= reasons | {"agent_disconnected"}


def test_a_machine_deleted_before_its_turn_is_reported_not_found(rig_for) -> None:
    rig = rig_for({"m": {}})
    gone = rig.twin.resource_id("m").replace("/machines/m", "/machines/deleted-meanwhile")
    instance_id = rig.host.start_new(
        "machine_orchestrator", "hotpatch-deleted", {"machine_id": gone, "policy": rig.policy().to_json()}
    )
    row = rig.host.run_until_complete([instance_id], timeout_real_s=60)[instance_id]["output"]
    assert (row["state"], row["reason"], row["actions"], row["reboots"]) == (
        "skipped_disconnected", "machine_not_found", [], 0)
    assert row["name"] == "deleted-meanwhile" and row["baseline"] == "unknown"


def test_one_reboot_when_both_vsm_and_workaround_are_needed(rig_for) -> None:
    rig = rig_for({"m": {"vbs_status": 0}})
    before = rig.machine("m").boot_count
    row = rig.run_machine("m")
    after = rig.machine("m")
    assert row["reboots"] == 1 and after.boot_count == before + 1
    assert after.vbs_status == 2 and after.licensing_override == 1 and not after.license_mutex
    scripts = [r.script for r in after.runs]
    assert scripts == ["readiness", "apply_changes", "readiness"], "one script run for both changes and the reboot"
    (apply,) = [r for r in after.runs if r.script == "apply_changes"]
    assert (apply.parameters["EnableVsm"], apply.parameters["ApplyWorkaround"]) == ("1", "1")


def test_lost_workaround_result_is_recovered_by_rereading_facts(rig_for) -> None:
    rig = rig_for({"m": {}})
    row = rig.run_machine("m")
    runs = rig.machine("m").runs
    workaround = next(r for r in runs if r.script == "apply_changes")
    assert workaround.result_lost, "stopping himds means the run never reports"
    readiness_after = [r for r in runs if r.script == "readiness" and r.created_at > workaround.created_at]
    assert readiness_after and not readiness_after[-1].result_lost
    assert row["state"] == "hotpatch_enabled"
    # One run command resource per script, re-run by PUT: nothing piles up on the machine.
    assert sorted({r.name for r in runs}) == ["hotpatch-apply-changes", "hotpatch-readiness"]


def test_license_writes_keep_esu_and_features_and_never_enroll_payg(rig_for) -> None:
    rig = rig_for({"m": {"esu_profile": True, "workaround_applied": True}})
    before = rig.machine("m").license_profile
    row = rig.run_machine("m")
    after = rig.machine("m")
    assert row["state"] == "hotpatch_enabled"
    assert after.license_writes, "enablement wrote the license profile"
    for write in after.license_writes:
        assert not write.dropped_features and not write.dropped_esu_license and not write.dropped_software_assurance
        product = ((write.body or {}).get("properties") or {}).get("productProfile") or {}
        assert "subscriptionStatus" not in product
    assert not after.payg_enrolled
    kept = after.license_profile["properties"]
    assert kept["esuProfile"]["assignedLicense"] == before["properties"]["esuProfile"]["assignedLicense"]
    names = {f["name"] for f in kept["productProfile"]["productFeatures"]}
    assert {f["name"] for f in before["properties"]["productProfile"]["productFeatures"]} <= names


def test_never_policy_changes_nothing(rig_for) -> None:
    rig = rig_for({"m": {"vbs_status": 0}})
    before = rig.machine("m")
    rig.run_machine("m", reboot_policy="never")
    after = rig.machine("m")
    assert after.registry == before.registry and after.boot_times == before.boot_times
    assert not after.license_writes
    assert {r.script for r in after.runs} == {"readiness"}


def test_dry_run_changes_nothing(rig_for) -> None:
    rig = rig_for({"m": {"vbs_status": 0}, "n": {"os_version": OLD}})
    before = {name: rig.machine(name) for name in ("m", "n")}
    rows = [rig.run_machine(name, dry_run=True) for name in ("m", "n")]
    assert [r["state"] for r in rows] == ["planned", "planned"]
    for name, snapshot in before.items():
        after = rig.machine(name)
        assert after.registry == snapshot.registry and after.boot_times == snapshot.boot_times
        assert after.license_profile == snapshot.license_profile and not after.license_writes
        assert {r.script for r in after.runs} == {"readiness"}


@pytest.mark.parametrize("payload", [{"approved": True, "by": "alice"}, json.dumps({"by": "alice"}), None])
def test_approval_releases_the_reboot(rig_for, payload: Any) -> None:
    rig = rig_for({"m": {}})
    instance_id = rig.start_machine("m", reboot_policy="approval", approval_timeout="4h")
    rig.host.run_until(rig.clock.now() + timedelta(hours=1))
    status = rig.host.get_status(instance_id)
    assert status["customStatus"]["step"] == "awaiting_approval"
    assert rig.machine("m").reboots == 0 and not rig.machine("m").license_writes, "nothing changed while waiting"
    rig.host.raise_event(instance_id, "RebootApproved", payload)
    row = rig.host.run_until_complete([instance_id])[instance_id]["output"]
    assert (row["state"], row["reboots"]) == ("hotpatch_enabled", 1)


def test_rejected_approval_changes_nothing(rig_for) -> None:
    rig = rig_for({"m": {}})
    instance_id = rig.start_machine("m", reboot_policy="approval")
    rig.host.run_until(rig.clock.now() + timedelta(minutes=30))
    rig.host.raise_event(instance_id, "RebootApproved", {"approved": False, "by": "bob"})
    row = rig.host.run_until_complete([instance_id])[instance_id]["output"]
    assert (row["state"], row["reason"], row["actions"]) == ("escalated", "reboot_required", [])
    assert "bob" in row["detail"] and rig.machine("m").reboots == 0


def test_window_policy_reboots_inside_the_maintenance_window(rig_for) -> None:
    rig = rig_for({"m": {}})
    start = rig.clock.now()  # Monday 2026-01-05 08:00 UTC
    row = rig.run_machine("m", reboot_policy="window", maintenance_window="Wed 01:00-03:00")
    assert (row["state"], row["reboots"]) == ("hotpatch_enabled", 1)
    boot = rig.machine("m").last_boot
    opens = start.replace(hour=1, minute=0) + timedelta(days=2)
    assert opens <= boot <= opens + timedelta(hours=2), boot


def test_run_command_failure_is_retried_before_escalating(rig_for) -> None:
    rig = rig_for({"m": {"run_command_fails": True}})
    row = rig.run_machine("m")
    assert row["reason"] == "run_command_failed"
    assert len([r for r in rig.machine("m").runs if r.script == "readiness"]) >= 3
    assert "failed to start" in row["detail"]  # the run's own error (the agent's configuration allowed it)


def test_escalation_posts_to_the_webhook_without_logging_its_url(rig_for, caplog, monkeypatch) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    secret_url = f"http://127.0.0.1:{server.server_port}/hook?sig=s3cr3t"
    try:
        caplog.set_level("INFO")
        rig = rig_for({"m": {"enable_outcome": "fail", "os_version": OLD}})
        # The activity reads the URL from the app setting: it never travels in an orchestration's input.
        monkeypatch.setenv("HOTPATCH_ESCALATION_WEBHOOK", secret_url)
        row = rig.run_machine("m")
    finally:
        server.shutdown()
    assert row["reason"] == "enable_failed"
    assert [(e["reason"], e["kind"]) for e in received] == [("enable_failed", "arc_hotpatch.escalation")]
    assert received[0]["machine_id"] == rig.twin.resource_id("m")
    assert "s3cr3t" not in caplog.text
    assert any("escalation" in r.message and "enable_failed" in r.message for r in caplog.records)


def test_every_change_is_in_the_audit_trail(rig_for, caplog) -> None:
    caplog.set_level("INFO", logger="arc_hotpatch.audit")
    rig = rig_for({"m": {"vbs_status": 0}, "d": {"vbs_status": 0}})
    row = rig.run_machine("m")
    records = [json.loads(r.getMessage().split(" ", 1)[1]) for r in caplog.records if r.name == "arc_hotpatch.audit"]
    machine_id = rig.twin.resource_id("m")
    assert [(r["change"], r["machine_id"], r["rollout_id"]) for r in records] == [
        (change, machine_id, "test") for change in ("apply_changes", "enable_hotpatch")
    ]
    assert records[0]["phase"] == "started"
    assert {k: records[0]["parameters"][k] for k in ("EnableVsm", "ApplyWorkaround", "RebootDelaySeconds")} == {
        "EnableVsm": 1, "ApplyWorkaround": 1, "RebootDelaySeconds": 60}
    patch = records[1]["body"]["properties"]["productProfile"]
    assert "subscriptionStatus" not in patch and {"name": "Hotpatch", "subscriptionStatus": "Enable"} in patch[
        "productFeatures"]
    assert row["actions"] == ["enable_vsm", "licensing_workaround", "reboot", "enable_hotpatch"]
    caplog.clear()
    rig.run_machine("d", dry_run=True)
    assert not [r for r in caplog.records if r.name == "arc_hotpatch.audit"], "a dry run changes nothing"
