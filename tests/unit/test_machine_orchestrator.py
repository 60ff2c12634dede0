"""``machine_orchestrator`` (SPEC §2) replayed from hand-built histories: which activities and timers it
schedules next, and the report row it finishes with."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from core.contracts import ESCALATE, ScriptResult
from core.readiness import Readiness

from .history_builder import T0, Step
from .machine_history import (
    ARM,
    MACHINE_ID,
    NEEDS_BOTH,
    NEEDS_VSM,
    SUBSCRIPTION,
    MachineHistory,
    arm_facts,
    outcome,
    policy,
    readiness,
)

SECONDS = timedelta(seconds=1)
HOURS = timedelta(hours=1)


def escalation(h: MachineHistory) -> dict:
    """The orchestrator's last decision must be the ``escalate`` call (and not finishing yet): its input."""
    state = h.replay()
    assert not state.is_done
    (step,) = state.new_steps
    assert step.label == "escalate"
    return step.input


# --- checks 1-8 --------------------------------------------------------------------------------------


def test_exclusion_tag_settles_from_the_arm_resource_alone_before_any_other_check():
    h = MachineHistory().read_machine(arm_facts(tags={"HotPatch": "EXCLUDE"}, status="Disconnected"))
    state = h.replay()
    assert state.labels == ["get_machine"]
    assert outcome(state) == ("excluded", "tagged_exclude", [], 0)
    assert state.custom_status["step"] == "done"


@pytest.mark.parametrize(
    ("changes", "final_state", "reason"),
    [
        pytest.param({"os_sku": "Windows Server 2022 Datacenter", "os_version_text": "10.0.20348.2700"},
                     "ineligible", "unsupported_os", id="2-older-build"),
        pytest.param({"os_type": "linux", "os_sku": "Ubuntu 24.04 LTS"}, "ineligible", "unsupported_os",
                     id="2-not-windows-server"),
        pytest.param({"os_version_text": "10.0.26200.1000"}, "ineligible", "preview_build", id="3-preview"),
        pytest.param({"os_sku": "Windows Server 2025 Essentials"}, "ineligible", "unsupported_edition",
                     id="4-edition"),
        pytest.param({"os_sku": "Windows Server 2025 Datacenter: Azure Edition"}, "native_azure_edition",
                     "hotpatch_built_in", id="5-azure-edition"),
        pytest.param({"os_version_text": "10.0.26100.1741"}, "ineligible", "build_too_old", id="6-revision"),
        pytest.param({"status": "Disconnected"}, "skipped_disconnected", "agent_disconnected", id="7-disconnected"),
        pytest.param({"status": "Error"}, "skipped_disconnected", "agent_error", id="7-error"),
    ],
)
def test_arm_fact_checks_decide_without_a_run_command(changes, final_state, reason):
    state = MachineHistory().read_machine(arm_facts(**changes)).replay()
    assert state.labels == ["get_machine"]
    assert outcome(state) == (final_state, reason, [], 0)


def test_a_deleted_machine_is_skipped_without_a_run_command():
    state = MachineHistory().read_machine(None).replay()
    assert state.labels == ["get_machine"]
    assert outcome(state) == ("skipped_disconnected", "machine_not_found", [], 0)


def test_readiness_runs_after_the_arm_checks_on_the_machine_read_from_arm():
    h = MachineHistory().read_machine()
    state = h.replay()
    (step,) = state.new_steps
    assert step.label == "run_script:readiness"
    assert step.input["machine"] == {
        "machine_id": MACHINE_ID, "arm_endpoint": ARM, "rollout_id": "rollout-1", "location": "westeurope",
        "baselines_file": "",
    }
    assert step.input["run_name"] == "hotpatch-readiness-20251103090030-1"
    assert step.input["parameters"] == {"RequestId": step.input["run_name"]}
    assert step.input["timeout_s"] == 600
    assert state.custom_status["step"] == "checking_readiness"


@pytest.mark.parametrize("changes", [{"firmware": "Legacy", "secure_boot": False}, {"secure_boot": False}],
                         ids=["legacy-bios", "secure-boot-off"])
def test_readiness_without_uefi_secure_boot_is_ineligible_vbs_hardware(changes):
    state = MachineHistory().read_machine().run_readiness(readiness(**changes)).replay()
    assert state.labels == ["get_machine", "run_script:readiness"]
    assert outcome(state) == ("ineligible", "vbs_hardware", [], 0)


# --- dry run and machines needing nothing ------------------------------------------------------------


def test_dry_run_plans_every_action_and_changes_nothing():
    state = MachineHistory(policy(dry_run=True)).read_machine().run_readiness(NEEDS_BOTH).replay()
    assert state.labels == ["get_machine", "run_script:readiness"]
    assert outcome(state) == ("planned", "dry_run", ["enable_vsm", "licensing_workaround", "reboot",
                                                      "enable_hotpatch"], 0)
    assert state.output["detail"] == ""


def test_dry_run_under_reboot_policy_never_says_the_machine_would_escalate():
    h = MachineHistory(policy(dry_run=True, reboot_policy="never")).read_machine().run_readiness(NEEDS_VSM)
    state = h.replay()
    assert outcome(state) == ("planned", "dry_run", ["enable_vsm", "reboot", "enable_hotpatch"], 0)
    assert "reboot_required" in state.output["detail"]


def test_already_enabled_machine_is_reported_without_any_change():
    state = MachineHistory().read_machine(arm_facts(hotpatch_feature_status="Enabled")).run_readiness().replay()
    assert state.labels == ["get_machine", "run_script:readiness"]
    assert outcome(state) == ("hotpatch_enabled", "already_enabled", [], 0)
    assert state.output == {
        "id": MACHINE_ID, "subscription_id": SUBSCRIPTION, "name": "srv-01", "state": "hotpatch_enabled",
        "reason": "already_enabled", "actions": [], "reboots": 0, "os_version": "10.0.26100.6899",
        "baseline": "on", "detail": "",
    }


# --- enabling ------------------------------------------------------------------------------------------


def test_a_ready_machine_is_enabled_then_polled_first_at_8_minutes_then_every_poll_interval():
    h = MachineHistory().read_machine().run_readiness()
    assert h.replay().new_labels == ["enable_hotpatch"]
    h.enable_hotpatch()
    first_look = h.now + 480 * SECONDS
    state = h.replay()
    assert state.new_steps == [Step("timer", fire_at=first_look)]
    assert state.custom_status["step"] == "waiting_for_enablement"
    h.timer(first_look).hotpatch_status("Enabling")
    second_look = h.now + 120 * SECONDS
    assert h.replay().new_steps == [Step("timer", fire_at=second_look)]
    state = h.timer(second_look).hotpatch_status("Enabled").replay()
    assert state.labels == ["get_machine", "run_script:readiness", "enable_hotpatch", "timer", "get_hotpatch_status",
                            "timer", "get_hotpatch_status"]
    assert outcome(state) == ("hotpatch_enabled", "enabled", ["enable_hotpatch"], 0)


def test_enablement_failed_escalates_enable_failed_through_the_escalate_activity():
    h = MachineHistory().read_machine().run_readiness().enable_hotpatch()
    h.timer(h.now + 480 * SECONDS).hotpatch_status("Failed")
    sent = escalation(h)
    assert (sent["reason"], sent["actions"], sent["name"]) == ("enable_failed", ["enable_hotpatch"], "srv-01")
    assert sent["machine"]["machine_id"] == MACHINE_ID
    assert outcome(h.escalate().replay()) == ("escalated", "enable_failed", ["enable_hotpatch"], 0)


def test_enablement_still_enabling_at_the_enable_timeout_escalates_enable_stuck():
    h = MachineHistory(policy(enable_timeout=900)).read_machine().run_readiness().enable_hotpatch()
    deadline = h.now + 900 * SECONDS
    looks = [h.now + 480 * SECONDS]
    h.timer(looks[-1]).hotpatch_status("Enabling")
    while h.now < deadline:
        looks.append(min(h.now + 120 * SECONDS, deadline))
        h.timer(looks[-1]).hotpatch_status("Enabling")
    assert looks[-1] == deadline and len(looks) == 4  # the last timer stops at the deadline
    assert h.replay().timers == looks
    assert escalation(h)["reason"] == "enable_stuck"
    assert outcome(h.escalate().replay()) == ("escalated", "enable_stuck", ["enable_hotpatch"], 0)


# --- the reboot path -----------------------------------------------------------------------------------


def booted(h: MachineHistory, **changes) -> Readiness:
    """Readiness as the machine reports it once it has rebooted (boot time after now)."""
    return readiness(last_boot=(h.now + 10 * SECONDS).strftime("%Y-%m-%dT%H:%M:%SZ"), **changes)


def rebooted(h: MachineHistory, **changes) -> MachineHistory:
    """The change script, the reboot script (its result lost), the first reboot check: the machine is back."""
    h.run_script().run_script(ScriptResult.LOST)
    return h.timer(h.now + 240 * SECONDS).read_machine().run_readiness(booted(h, **changes))


def test_reboot_path_changes_then_reboots_once_then_verifies_before_enabling():
    h = MachineHistory().read_machine().run_readiness(NEEDS_BOTH)
    assert h.replay().new_labels == ["run_script:enable_vsm"]
    h.run_script()
    requested_at = h.now
    (workaround,) = h.replay().new_steps
    assert workaround.label == "run_script:licensing_workaround"
    assert workaround.input["parameters"]["RebootDelaySeconds"] == 60
    assert workaround.input["timeout_s"] == 150  # it stops himds: its result may never come back

    h.run_script(ScriptResult.LOST)
    first_look = h.now + 240 * SECONDS
    state = h.replay()
    assert state.new_steps == [Step("timer", fire_at=first_look)]
    assert state.custom_status["step"] == "waiting_for_reboot"
    assert state.custom_status["requested_at"] == requested_at.isoformat()
    assert state.custom_status["actions"] == ["enable_vsm", "licensing_workaround", "reboot"]

    h.timer(first_look)
    assert h.replay().new_labels == ["get_machine"]  # verified from fresh facts, not from the lost result
    h.read_machine()
    (check,) = h.replay().new_steps
    assert check.label == "run_script:readiness"
    h.run_readiness(booted(h))
    assert h.replay().new_labels == ["enable_hotpatch"]

    h.enable_hotpatch()
    h.timer(h.now + 480 * SECONDS).hotpatch_status("Enabled")
    state = h.replay()
    assert state.labels == [
        "get_machine", "run_script:readiness", "run_script:enable_vsm", "run_script:licensing_workaround", "timer",
        "get_machine", "run_script:readiness", "enable_hotpatch", "timer", "get_hotpatch_status",
    ]
    assert outcome(state) == ("hotpatch_enabled", "enabled",
                              ["enable_vsm", "licensing_workaround", "reboot", "enable_hotpatch"], 1)


def test_reboot_wait_keeps_polling_while_the_boot_time_is_from_before_the_request():
    h = MachineHistory().read_machine().run_readiness(NEEDS_BOTH).run_script().run_script(ScriptResult.LOST)
    h.timer(h.now + 240 * SECONDS).read_machine().run_readiness(readiness(last_boot="2025-11-01T04:00:00Z"))
    poll = h.now + 60 * SECONDS
    assert h.replay().new_steps == [Step("timer", fire_at=poll)]
    h.timer(poll).read_machine(arm_facts(status="Disconnected"))
    assert h.replay().new_steps == [Step("timer", fire_at=h.now + 60 * SECONDS)]


def test_machine_not_back_by_the_reboot_timeout_escalates_reboot_timeout():
    h = MachineHistory(policy(reboot_timeout=600)).read_machine().run_readiness(NEEDS_BOTH).run_script()
    deadline = h.now + 600 * SECONDS
    h.run_script(ScriptResult.LOST)
    looks = [h.now + 240 * SECONDS]
    h.timer(looks[-1]).read_machine(arm_facts(status="Disconnected"))
    while h.now < deadline:
        looks.append(min(h.now + 60 * SECONDS, deadline))
        h.timer(looks[-1]).read_machine(arm_facts(status="Disconnected"))
    assert h.replay().timers == looks
    assert escalation(h)["reason"] == "reboot_timeout"
    assert outcome(h.escalate().replay()) == ("escalated", "reboot_timeout",
                                              ["enable_vsm", "licensing_workaround", "reboot"], 1)


def test_vsm_still_off_after_the_reboot_escalates_vsm_not_running_without_enabling():
    h = rebooted(MachineHistory().read_machine().run_readiness(NEEDS_VSM), vbs_status=0)
    assert escalation(h)["reason"] == "vsm_not_running"
    state = h.escalate().replay()
    assert state.labels == ["get_machine", "run_script:readiness", "run_script:enable_vsm", "run_script:reboot",
                            "timer", "get_machine", "run_script:readiness", "escalate"]
    assert outcome(state) == ("escalated", "vsm_not_running", ["enable_vsm", "reboot"], 1)


def test_reboot_policy_never_escalates_reboot_required_before_any_script():
    h = MachineHistory(policy(reboot_policy="never")).read_machine().run_readiness(NEEDS_VSM)
    assert escalation(h)["reason"] == "reboot_required"
    state = h.escalate().replay()
    assert state.labels == ["get_machine", "run_script:readiness", "escalate"]
    assert outcome(state) == ("escalated", "reboot_required", [], 0)


def test_window_policy_waits_for_the_next_maintenance_window_before_any_change():
    h = MachineHistory(policy(reboot_policy="window")).read_machine().run_readiness(NEEDS_VSM)
    sunday_2am = T0.replace(day=9, hour=2, minute=0)  # the default window: Sun 02:00-06:00 UTC
    state = h.replay()
    assert state.new_steps == [Step("timer", fire_at=sunday_2am)]
    assert state.custom_status["step"] == "waiting_for_window"
    assert h.timer(sunday_2am).replay().new_labels == ["run_script:enable_vsm"]


# --- reboot approval -------------------------------------------------------------------------------------


def awaiting_approval() -> tuple[MachineHistory, int]:
    """A machine needing VSM under reboot policy ``approval``, waiting; and the approval timeout's timer id."""
    h = MachineHistory(policy(reboot_policy="approval")).read_machine().run_readiness(NEEDS_VSM)
    return h, h.timer_created(h.now + 24 * HOURS)


def test_approval_policy_waits_for_the_reboot_approved_event_or_a_timeout():
    h = MachineHistory(policy(reboot_policy="approval")).read_machine().run_readiness(NEEDS_VSM)
    state = h.replay()
    assert state.new_steps == [Step("wait:RebootApproved"), Step("timer", fire_at=h.now + 24 * HOURS)]
    assert state.custom_status["step"] == "awaiting_approval"
    assert not state.is_done


def test_an_approval_cancels_the_timeout_and_starts_the_changes():
    h, _ = awaiting_approval()
    state = h.raised("RebootApproved", {"approved": True, "by": "ops"}).replay()
    assert state.new_labels == ["run_script:enable_vsm"]
    assert [step.canceled for step in state.steps if step.label == "timer"] == [True]


def test_no_approval_before_the_timeout_escalates_approval_timeout():
    h, timer_id = awaiting_approval()
    h.fired(timer_id, h.now + 24 * HOURS)
    assert escalation(h)["reason"] == "approval_timeout"
    state = h.escalate().replay()
    assert state.labels == ["get_machine", "run_script:readiness", "wait:RebootApproved", "timer", "escalate"]
    assert outcome(state) == ("escalated", "approval_timeout", [], 0)


@pytest.mark.parametrize(
    "payload",
    [{"approved": False, "by": "alice"}, json.dumps({"approved": False, "by": "alice"})],
    ids=["object", "double-encoded"],
)
def test_a_rejection_escalates_reboot_required_without_any_change(payload):
    h, _ = awaiting_approval()
    h.raised("RebootApproved", payload)
    assert escalation(h)["detail"] == "reboot rejected by alice: no change was made"
    state = h.escalate().replay()
    assert "run_script:enable_vsm" not in state.labels
    assert outcome(state) == ("escalated", "reboot_required", [], 0)


# --- Run Command failures ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("attempts", "delays"), [(3, (30, 60)), (4, (30, 60, 120))])
def test_run_command_failing_every_attempt_escalates_run_command_failed_after_doubling_backoff(attempts, delays):
    h = MachineHistory(policy(run_command_attempts=attempts)).read_machine()
    backoff = []
    for delay in delays:
        h.run_script(ScriptResult.FAILED, error="Conflict")
        backoff.append(h.now + delay * SECONDS)
        h.timer(backoff[-1])
    h.run_script(ScriptResult.FAILED, error="Run Command timed out")
    sent = escalation(h)
    assert (sent["reason"], sent["detail"]) == ("run_command_failed", "readiness: Run Command timed out")
    state = h.escalate().replay()
    assert state.labels == ["get_machine", *["run_script:readiness", "timer"] * len(delays), "run_script:readiness",
                            "escalate"]
    assert state.timers == backoff
    run_names = [step.input["run_name"] for step in state.steps if step.label == "run_script:readiness"]
    assert len(set(run_names)) == attempts  # a reused run name while running is a 409
    assert outcome(state) == ("escalated", "run_command_failed", [], 0)


def test_a_failed_run_script_activity_counts_as_a_failed_attempt_and_is_retried():
    h = MachineHistory().read_machine()
    h.activity_fails("run_script", "HttpResponseError: (ResourceNotFound) gone")
    assert h.replay().new_steps == [Step("timer", fire_at=h.now + 30 * SECONDS)]
    h.timer(h.now + 30 * SECONDS)
    assert h.replay().new_labels == ["run_script:readiness"]


def test_an_action_script_failing_three_times_escalates_before_the_reboot():
    h = MachineHistory().read_machine().run_readiness(NEEDS_VSM).run_script(ScriptResult.FAILED, error="boom")
    h.timer(h.now + 30 * SECONDS).run_script(ScriptResult.FAILED, error="boom")
    h.timer(h.now + 60 * SECONDS).run_script(ScriptResult.FAILED, error="boom")
    assert escalation(h)["detail"] == "enable_vsm failed 3 times: boom"
    assert outcome(h.escalate().replay()) == ("escalated", "run_command_failed", [], 0)


@pytest.mark.parametrize("payload", [False, "false", {"approved": "no"}, 0, [True]],
                         ids=["false", "false-text", "approved-text", "zero", "list"])
def test_an_unreadable_approval_is_a_rejection_never_a_reboot(payload):
    h, _ = awaiting_approval()
    h.raised("RebootApproved", payload)
    sent = escalation(h)
    assert sent["reason"] == "reboot_required" and sent["detail"].endswith("no change was made")
    state = h.escalate().replay()
    assert "run_script:enable_vsm" not in state.labels
    assert outcome(state) == ("escalated", "reboot_required", [], 0)


def test_a_failing_escalation_still_reports_the_machine():
    h = MachineHistory().read_machine().run_readiness().enable_hotpatch()
    h.timer(h.now + 480 * SECONDS).hotpatch_status("Failed")
    for _ in range(4):  # ARM_RETRY: four attempts, a retry timer after each failure
        task_id = h.scheduled(ESCALATE)
        h.failed(task_id, "escalate failed: webhook store down")
        h.timer(h.now + 10 * SECONDS)
    state = h.replay()
    assert outcome(state) == ("escalated", "enable_failed", ["enable_hotpatch"], 0)
    assert "escalation failed" in state.output["detail"]
