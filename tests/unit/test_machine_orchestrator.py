"""``machine_orchestrator`` (SPEC §2) replayed from hand-built histories: which activities and timers it
schedules next, what it carries from one phase to the next (assess, change, enable: one execution each), and
the report row it finishes with. Every replay also checks that the orchestrator took the history's own steps."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from core.contracts import ESCALATE, MachineCarry, ScriptResult
from core.facts import MachineFacts
from core.policy import Policy, parse_window
from core.readiness import Readiness
from core.schedule import format_utc
from orchestrators.machine import READ_AGAIN_S, READINESS_RETRY_AFTER_REBOOT_S

from .history_builder import T0, Step
from .machine_history import (
    ARM,
    MACHINE_ID,
    NEEDS_BOTH,
    NEEDS_VSM,
    NEEDS_WORKAROUND,
    READY,
    READY_FACTS,
    REBOOT_FIRST_CHECK,
    RUNNING,
    SECONDS,
    SUBSCRIPTION,
    MachineHistory,
    arm_facts,
    booted,
    continued,
    failed,
    machine_input,
    outcome,
    policy,
    readiness,
)

HOURS = timedelta(hours=1)
ENABLE_FIRST_LOOK, ENABLE_POLL, REBOOT_POLL = 630 * SECONDS, 120 * SECONDS, 60 * SECONDS
ASSESSED = ["get_machine", "ledger_read", "start_script:readiness", "timer", "read_script:readiness"]
# No ledger read; Update Manager's assessment for the forecast (assess_patches: auto, on in a dry run).
DRY_RUN_ASSESSED = ["get_machine", "start_script:readiness", "timer", "read_script:readiness",
                    "start_patch_assessment", "timer", "read_patch_operation"]
CALL = {"machine_id": MACHINE_ID, "arm_endpoint": ARM, "rollout_id": "rollout-1", "location": "westeurope",
        "baselines_file": ""}
ALL_ACTIONS = ["enable_vsm", "licensing_workaround", "reboot", "enable_hotpatch"]
WINDOW = "run-1:w0"  # a rollout window's instance id: its records are under it
ARM_RETRY = {"firstRetryIntervalInMilliseconds": 10_000, "maxNumberOfAttempts": 4}


def after_assess(report: Readiness = READY, machine_policy: Policy | None = None, facts: MachineFacts = READY_FACTS,
                 **fields) -> MachineHistory:
    """The phase after the assessment that found ``facts`` and ``report``: change when it needs a reboot, else
    enable."""
    return MachineHistory(machine_policy, **fields).read_machine(facts).run_readiness(report).next_phase()


def escalation(h: MachineHistory) -> dict:
    """The orchestrator's last decision must be the ``escalate`` call (and not finishing yet): its input."""
    state = h.replay()
    assert not state.is_done
    (step,) = state.new_steps
    assert (step.label, step.retry) == ("escalate", ARM_RETRY)
    return step.input


def looks_until(h: MachineHistory, deadline: datetime, first: datetime, every: timedelta,
                look: Callable[[], object]) -> list[datetime]:
    """Poll timers (``first``, then ``every`` after each read, none past ``deadline``) each followed by ``look``,
    until the deadline; their fire times."""
    looks = [first]
    h.timer(first)
    look()
    while h.now < deadline:
        looks.append(min(h.now + every, deadline))
        h.timer(looks[-1])
        look()
    return looks


# --- checks 1-8 --------------------------------------------------------------------------------------


def test_exclusion_tag_settles_from_the_arm_resource_alone_before_any_other_check():
    h = MachineHistory().read_machine(arm_facts(tags={"HotPatch": "EXCLUDE"}, status="Disconnected"), baseline="off")
    state = h.replay()
    assert state.labels == ["get_machine"]
    assert outcome(state) == ("excluded", "tagged_exclude", [], 0)
    assert state.output["baseline"] == "off"  # the flag of the ARM read: there is no readiness
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
    # recheck: a machine read again after a Disconnected read; that second read decides (next tests).
    state = MachineHistory(recheck=True).read_machine(arm_facts(**changes)).replay()
    assert state.labels == ["get_machine"]
    assert outcome(state) == (final_state, reason, [], 0)


def test_a_machine_a_window_waits_for_that_reads_disconnected_is_handed_back_to_be_read_again_later():
    h = MachineHistory(record_under=WINDOW).read_machine(arm_facts(status="Disconnected"))
    (record,) = h.replay().new_steps
    assert (record.label, record.instance_id) == ("rollout_record", f"{WINDOW}:r:unit")
    assert record.input["deferred"] is True and record.input["row"]["reason"] == "awaiting_recheck"
    assert record.input["row"]["state"] == "planned" and not record.input["member"]


def test_a_machine_no_window_waits_for_reads_disconnected_again_after_the_grace_period():
    h = MachineHistory(policy(disconnected_grace=7 * 60)).read_machine(arm_facts(status="Disconnected"))
    state = h.replay()
    assert state.new_steps == [Step("timer", fire_at=h.now + 7 * 60 * SECONDS)]
    h.timer(h.now + 7 * 60 * SECONDS).read_machine()  # the agent flapped: Connected again
    (read,) = h.replay().new_steps
    assert read.label == "ledger_read", "it goes on to assess the machine"


def test_a_machine_still_disconnected_after_the_grace_period_is_skipped():
    h = MachineHistory().read_machine(arm_facts(status="Disconnected"))
    h.timer(h.now + 600 * SECONDS).read_machine(arm_facts(status="Disconnected"))
    assert outcome(h.replay()) == ("skipped_disconnected", "agent_disconnected", [], 0)


def test_a_dry_run_reports_a_disconnected_machine_without_waiting():
    state = MachineHistory(policy(dry_run=True)).read_machine(arm_facts(status="Disconnected")).replay()
    assert outcome(state) == ("skipped_disconnected", "agent_disconnected", [], 0)


def test_a_deleted_machine_is_skipped_without_a_run_command():
    state = MachineHistory().read_machine(None).replay()
    assert state.labels == ["get_machine"]
    assert outcome(state) == ("skipped_disconnected", "machine_not_found", [], 0)


def test_readiness_is_started_then_read_40_s_after_the_start_then_every_20_s():
    h = MachineHistory().read_machine()
    (read,) = h.replay().new_steps
    assert read == Step("ledger_read", MACHINE_ID), "first: did an earlier run leave a change unsettled?"
    state = h.ledger_read().replay()
    (start,) = state.new_steps
    assert start == Step("start_script:readiness", {
        "machine": CALL, "script": "readiness", "run_name": "hotpatch-readiness",
        "request_id": "hotpatch-readiness-20251103090030-1",
        "parameters": {"RequestId": "hotpatch-readiness-20251103090030-1"}, "timeout_s": 600,
    })
    assert state.custom_status["step"] == "checking_readiness"
    state = h.script("readiness", RUNNING, RUNNING).replay()  # started at 09:01:00; each read takes 30 s
    assert state.timers == [T0 + 100 * SECONDS, T0 + 150 * SECONDS, T0 + 200 * SECONDS]
    assert [step.input for step in state.steps if step.label == "read_script:readiness"] == [start.input] * 2


@pytest.mark.parametrize("changes", [{"firmware": "Legacy", "secure_boot": False}, {"secure_boot": False}],
                         ids=["legacy-bios", "secure-boot-off"])
def test_readiness_without_uefi_secure_boot_is_ineligible_vbs_hardware(changes):
    state = MachineHistory().read_machine().run_readiness(readiness(**changes)).replay()
    assert state.labels == ASSESSED
    assert outcome(state) == ("ineligible", "vbs_hardware", [], 0)


def test_a_script_still_running_at_its_run_timeout_is_lost_and_tried_again_under_its_one_run_name():
    h = MachineHistory(policy(run_command_timeout=90)).read_machine()
    h.script("readiness", RUNNING, RUNNING, timeout_s=90)  # started at 09:01:00: its deadline is 09:02:30
    state = h.replay()
    assert state.timers == [T0 + 100 * SECONDS, T0 + 150 * SECONDS, T0 + 210 * SECONDS]  # the look capped at 150
    assert state.new_steps == [Step("timer", fire_at=h.now + 30 * SECONDS)]  # lost at 180: the backoff
    (again,) = h.backoff(30).replay().new_steps
    assert (again.label, again.input["run_name"]) == ("start_script:readiness", "hotpatch-readiness")
    assert again.input["request_id"] == again.input["parameters"]["RequestId"] == "hotpatch-readiness-20251103090330-2"


def test_an_unexpected_payload_is_reported_escalated_orchestration_failed():
    h = MachineHistory().read_machine().script("readiness", ScriptResult(ScriptResult.SUCCEEDED, result={"build": 1}))
    sent = escalation(h)
    assert sent["reason"] == "orchestration_failed" and sent["detail"].startswith("unexpected error: ")
    assert outcome(h.escalate().replay()) == ("escalated", "orchestration_failed", [], 0)


# --- dry run, assess only, machines needing nothing ----------------------------------------------------


def test_dry_run_plans_every_action_and_changes_nothing():
    state = MachineHistory(policy(dry_run=True)).read_machine().run_readiness(NEEDS_BOTH).assess_patches().replay()
    assert state.labels == DRY_RUN_ASSESSED
    assert outcome(state) == ("planned", "dry_run", ALL_ACTIONS, 0)
    assert state.output["detail"] == ""


def test_dry_run_under_reboot_policy_never_says_the_machine_would_escalate():
    h = MachineHistory(policy(dry_run=True, reboot_policy="never")).read_machine().run_readiness(NEEDS_VSM)
    state = h.assess_patches().replay()
    assert outcome(state) == ("planned", "dry_run", ["enable_vsm", "reboot", "enable_hotpatch"], 0)
    assert state.output["detail"] == "reboot policy 'never' would escalate this machine (reboot_required)"


def test_already_enabled_machine_is_reported_without_any_change():
    state = MachineHistory().read_machine(arm_facts(hotpatch_feature_status="Enabled")).run_readiness().replay()
    assert state.labels == ASSESSED
    assert outcome(state) == ("hotpatch_enabled", "already_enabled", [], 0)
    assert state.output == {
        "id": MACHINE_ID, "subscription_id": SUBSCRIPTION, "name": "srv-01", "state": "hotpatch_enabled",
        "reason": "already_enabled", "actions": [], "reboots": 0, "os_version": "10.0.26100.6899",
        "baseline": "on", "detail": "", "started_at": "2025-11-03T09:00:00Z", "finished_at": "2025-11-03T09:02:10Z",
        # November 2025 is a hotpatch month; on the baseline, enrolled, no reboot pending: no reboot.
        "next_update": "hotpatch", "next_update_detail": "2025-11-11 update: a hotpatch", "wave": 0,
    }


@pytest.mark.parametrize(
    ("facts", "report", "expected"),
    [
        (READY_FACTS, NEEDS_BOTH, ("planned", "awaiting_wave", ALL_ACTIONS, 0)),
        (READY_FACTS, READY, ("planned", "awaiting_wave", ["enable_hotpatch"], 0)),
        (arm_facts(hotpatch_feature_status="Enabled"), READY, ("hotpatch_enabled", "already_enabled", [], 0)),
    ],
    ids=["needs-reboot", "needs-enable", "needs-nothing"],
)
def test_assess_only_ends_after_the_assessment_without_any_change(facts, report, expected):
    state = MachineHistory(assess_only=True).read_machine(facts).run_readiness(report).replay()
    assert state.labels == ASSESSED
    assert outcome(state) == expected
    assert state.output["detail"] == ("assessed: waits for its wave" if expected[0] == "planned" else "")


# --- the phases -----------------------------------------------------------------------------------------


def test_a_machine_needing_a_reboot_continues_into_change_with_its_facts_readiness_and_plan():
    carried = continued(MachineHistory(record_under=WINDOW).read_machine().run_readiness(NEEDS_BOTH).replay())
    assert replace(carried, carry=None) == machine_input(record_under=WINDOW)  # no record at a phase's end
    assert carried.carry == MachineCarry(
        phase="change", plan={"enable_vsm": True, "licensing_workaround": True, "enable_hotpatch": True},
        facts=READY_FACTS.to_json(), readiness=NEEDS_BOTH.to_json(), baseline="on", actions=[], reboots=0,
        member=True, workaround_done=False, run_seq=1, started_at="2025-11-03T09:00:00Z", licensing_issue=True,
    )


def test_a_ready_machine_continues_into_enable_without_a_change_phase():
    carried = continued(MachineHistory().read_machine().run_readiness(baseline="off").replay())
    assert carried.carry == MachineCarry(
        phase="enable", plan={"enable_vsm": False, "licensing_workaround": False, "enable_hotpatch": True},
        facts=READY_FACTS.to_json(), readiness=READY.to_json(), baseline="off", member=True, run_seq=1,
        started_at="2025-11-03T09:00:00Z", licensing_issue=True,
    )


def test_change_continues_into_enable_with_the_facts_and_readiness_read_after_the_reboot_and_its_actions():
    h = after_assess(NEEDS_BOTH)
    fresh = arm_facts(license_features=(), license_in_use=False)  # e.g. the license profile is gone
    h.apply_changes().rebooted(facts=fresh)
    carried = continued(h.replay())
    # The ledger entries it wrote travel with it: the report's actions and reboots come from them.
    assert [(e["change"], e["phase"]) for e in carried.carry.ledger] == [
        (change, phase) for phase in ("requested", "done")
        for change in ("apply_changes", "enable_vsm", "licensing_workaround", "reboot")]
    assert replace(carried.carry, ledger=[]) == MachineCarry(
        phase="enable", plan={"enable_vsm": True, "licensing_workaround": True, "enable_hotpatch": True},
        facts=fresh.to_json(), readiness=booted(h).to_json(), baseline="on",
        actions=["enable_vsm", "licensing_workaround", "reboot"], reboots=1, member=True, workaround_done=True,
        run_seq=3, started_at="2025-11-03T09:00:00Z", licensing_issue=True,
    )
    h = h.next_phase()
    (requested,) = h.replay().new_steps
    assert [(e["change"], e["phase"]) for e in requested.input["entries"]] == [("enable_hotpatch", "requested")]
    (enable,) = h.ledger_written().replay().new_steps
    assert enable.input == {"machine": CALL, "features": [], "create": True}
    h.activity("enable_hotpatch", {"operation": "put"})
    state = h.timer(h.now + ENABLE_FIRST_LOOK).hotpatch_status("Enabled").ledger_written().replay()
    assert outcome(state) == ("hotpatch_enabled", "enabled", ALL_ACTIONS, 1)
    # The row's times span the whole machine, not only its last phase.
    assert state.output["started_at"] == "2025-11-03T09:00:00Z"
    assert state.output["finished_at"] == format_utc(h.now)


# --- enabling ------------------------------------------------------------------------------------------


def test_a_ready_machine_is_enabled_then_read_first_after_10_5_minutes_then_every_poll_interval():
    h = after_assess()
    assert h.replay().new_labels == ["ledger_write_all"]  # enable_hotpatch requested, then made
    h.enable_hotpatch()
    state = h.replay()
    assert state.new_steps == [Step("timer", fire_at=h.now + ENABLE_FIRST_LOOK)]
    assert state.custom_status["step"] == "waiting_for_enablement"
    h.timer(h.now + ENABLE_FIRST_LOOK).hotpatch_status("Enabling")
    assert h.replay().new_steps == [Step("timer", fire_at=h.now + ENABLE_POLL)]
    state = h.timer(h.now + ENABLE_POLL).hotpatch_status("Enabled").ledger_written().replay()
    assert state.labels == ["ledger_write_all", "enable_hotpatch", "timer", "get_machine", "timer", "get_machine",
                            "ledger_write_all"]
    assert outcome(state) == ("hotpatch_enabled", "enabled", ["enable_hotpatch"], 0)


@pytest.mark.parametrize(
    ("facts", "create"),
    [(READY_FACTS, False), (arm_facts(license_features=(), license_in_use=True), False),
     (arm_facts(license_features=(), license_in_use=False), True)],
    ids=["features", "esu-only", "nothing-in-use"],
)
def test_enable_hotpatch_merges_into_the_license_profile_unless_nothing_in_it_is_in_use(facts, create):
    (enable,) = after_assess(facts=facts).ledger_written().replay().new_steps
    assert enable == Step("enable_hotpatch", {
        "machine": CALL, "features": [dict(f) for f in facts.license_features], "create": create})
    assert enable.retry == ARM_RETRY


def test_enablement_failed_escalates_enable_failed_through_the_escalate_activity():
    h = after_assess().enable_hotpatch()
    h.timer(h.now + ENABLE_FIRST_LOOK).hotpatch_status("Failed").ledger_written()
    sent = escalation(h)
    assert (sent["reason"], sent["actions"], sent["name"]) == ("enable_failed", ["enable_hotpatch"], "srv-01")
    assert (sent["machine"], sent["detail"]) == (CALL, "the Hotpatch feature reported Failed")
    assert outcome(h.escalate().replay()) == ("escalated", "enable_failed", ["enable_hotpatch"], 0)


def stuck_enabling(h: MachineHistory) -> list[datetime]:
    """Enablement still ``Enabling`` at every look until the enable timeout (900 s); the looks."""
    h.enable_hotpatch()
    looks = looks_until(h, h.now + 900 * SECONDS, h.now + ENABLE_FIRST_LOOK, ENABLE_POLL,
                        lambda: h.hotpatch_status("Enabling"))
    h.ledger_written()  # enable_hotpatch failed (stuck)
    return looks


def test_enablement_still_enabling_at_the_enable_timeout_escalates_enable_stuck():
    h = after_assess(machine_policy=policy(enable_timeout=900))
    enabled_at = h.now + 30 * SECONDS
    looks = stuck_enabling(h)
    assert looks == [enabled_at + 630 * SECONDS, enabled_at + 780 * SECONDS, enabled_at + 900 * SECONDS]
    assert h.replay().timers == looks
    assert escalation(h)["detail"] == "still Enabling after 15 min: see the agent troubleshooting guide"
    assert outcome(h.escalate().replay()) == ("escalated", "enable_stuck", ["enable_hotpatch"], 0)


def test_reactive_mode_applies_the_workaround_and_its_reboot_only_once_enablement_is_stuck():
    h = after_assess(NEEDS_WORKAROUND, policy(workaround_mode="reactive", enable_timeout=900))
    stuck_enabling(h)
    carried = continued(h.replay())
    assert (carried.carry.phase, carried.carry.actions) == ("reactive", ["enable_hotpatch"])
    h = h.next_phase()
    assert h.replay().new_labels == ["ledger_write_all"]  # the changes, requested
    state = h.apply_changes().rebooted().replay()
    assert [step.input["parameters"] for step in state.steps if step.label == "start_script:apply_changes"] == [
        {"RequestId": f"hotpatch-apply-changes-{h.requested_at:%Y%m%d%H%M%S}-2", "EnableVsm": 0, "ApplyWorkaround": 1,
         "RebootDelaySeconds": 60}]
    assert state.new_steps == [Step("timer", fire_at=h.now + ENABLE_FIRST_LOOK)]  # enable_hotpatch is not repeated
    state = h.timer(h.now + ENABLE_FIRST_LOOK).hotpatch_status("Enabled").ledger_written().replay()
    assert outcome(state) == ("hotpatch_enabled", "enabled", ["enable_hotpatch", "licensing_workaround", "reboot"], 1)


# --- the change phase: apply_changes and the reboot ------------------------------------------------------


@pytest.mark.parametrize(
    ("report", "enable_vsm", "workaround", "actions"),
    [(NEEDS_BOTH, 1, 1, ["enable_vsm", "licensing_workaround", "reboot"]),
     (NEEDS_VSM, 1, 0, ["enable_vsm", "reboot"]), (NEEDS_WORKAROUND, 0, 1, ["licensing_workaround", "reboot"])],
    ids=["both", "vsm", "workaround"],
)
def test_one_apply_changes_run_makes_every_change_that_needs_the_reboot_and_schedules_it(
        report, enable_vsm, workaround, actions):
    h = after_assess(report)
    (requested,) = h.replay().new_steps  # written before any change is made
    assert requested.label == "ledger_write_all"
    assert [(e["change"], e["phase"]) for e in requested.input["entries"]] == [
        ("apply_changes", "requested"), *((action, "requested") for action in actions)]
    h.ledger_written()
    h.requested_at = h.now
    state = h.replay()
    request_id = f"hotpatch-apply-changes-{h.now:%Y%m%d%H%M%S}-2"
    assert state.new_steps == [Step("start_script:apply_changes", {
        "machine": CALL, "script": "apply_changes", "run_name": "hotpatch-apply-changes", "request_id": request_id,
        "parameters": {"RequestId": request_id, "EnableVsm": enable_vsm, "ApplyWorkaround": workaround,
                       "RebootDelaySeconds": 60},
        "timeout_s": 150,  # it stops himds or reboots: its result may never come back
    })]
    assert state.custom_status["step"] == "applying_changes"
    state = h.apply_changes().replay()
    assert state.labels == ["ledger_write_all", "start_script:apply_changes", "timer", "read_script:apply_changes",
                            "timer"]
    assert state.custom_status["actions"] == actions


def test_the_reboot_is_verified_from_fresh_facts_and_readiness_before_enabling():
    h = after_assess(NEEDS_BOTH).apply_changes()
    state = h.replay()
    assert state.new_steps == [Step("timer", fire_at=h.requested_at + REBOOT_FIRST_CHECK)]
    assert state.custom_status["step"] == "waiting_for_reboot"
    assert state.custom_status["requested_at"] == h.requested_at.isoformat()
    h.timer(h.requested_at + REBOOT_FIRST_CHECK)
    assert h.replay().new_labels == ["get_machine"]  # verified on the machine, not from the script's report
    h.read_machine()
    assert h.replay().new_labels == ["start_script:readiness"]
    h = h.run_readiness(booted(h)).ledger_written().next_phase().enable_hotpatch()
    state = h.timer(h.now + ENABLE_FIRST_LOOK).hotpatch_status("Enabled").ledger_written().replay()
    assert state.labels == ["ledger_write_all", "enable_hotpatch", "timer", "get_machine", "ledger_write_all"]
    assert outcome(state) == ("hotpatch_enabled", "enabled", ALL_ACTIONS, 1)


def test_an_apply_changes_result_that_never_comes_back_is_lost_and_the_reboot_wait_starts():
    h = after_assess(NEEDS_BOTH).apply_changes(RUNNING)  # still running at its first look: read once only
    state = h.replay()
    assert state.new_steps == [Step("timer", fire_at=h.requested_at + REBOOT_FIRST_CHECK)]
    assert state.custom_status["actions"] == ["enable_vsm", "licensing_workaround", "reboot"]
    carried = continued(h.rebooted().replay())
    assert (carried.carry.phase, carried.carry.reboots) == ("enable", 1)


def test_the_reboot_wait_keeps_polling_while_the_boot_time_is_from_before_the_request():
    h = after_assess(NEEDS_BOTH).apply_changes()
    h.timer(h.requested_at + REBOOT_FIRST_CHECK).read_machine().run_readiness(readiness(last_boot=READY.last_boot))
    assert h.replay().new_steps == [Step("timer", fire_at=h.now + REBOOT_POLL)]
    h.timer(h.now + REBOOT_POLL).read_machine(arm_facts(status="Disconnected"))  # no readiness run then
    assert h.replay().new_steps == [Step("timer", fire_at=h.now + REBOOT_POLL)]
    h.timer(h.now + REBOOT_POLL).read_machine().run_readiness(booted(h)).ledger_written()
    assert continued(h.replay()).carry.readiness == booted(h).to_json()


def test_a_boot_time_no_later_than_the_reboot_request_is_not_the_reboot() -> None:
    h = after_assess(NEEDS_BOTH).apply_changes()
    assert h.requested_at is not None
    at_the_request = readiness(last_boot=h.requested_at.strftime("%Y-%m-%dT%H:%M:%SZ"))
    h.timer(h.requested_at + REBOOT_FIRST_CHECK).read_machine().run_readiness(at_the_request)
    assert h.replay().new_steps == [Step("timer", fire_at=h.now + REBOOT_POLL)], "not back yet: keep polling"


def test_machine_not_back_by_the_reboot_timeout_escalates_reboot_timeout():
    h = after_assess(NEEDS_BOTH, policy(reboot_timeout=600)).apply_changes()
    requested_at = h.requested_at
    looks = looks_until(h, requested_at + 600 * SECONDS, requested_at + REBOOT_FIRST_CHECK, REBOOT_POLL,
                        lambda: h.read_machine(arm_facts(status="Disconnected")))
    assert looks == [requested_at + s * SECONDS for s in (420, 510, 600)]
    (failed_entries,) = h.replay().new_steps
    assert {(e["change"], e["phase"]) for e in failed_entries.input["entries"]} == {
        ("apply_changes", "failed"), ("enable_vsm", "failed"), ("licensing_workaround", "failed"), ("reboot", "failed")}
    h.ledger_written()
    sent = escalation(h)
    assert (sent["reason"], sent["actions"]) == ("reboot_timeout", ["enable_vsm", "licensing_workaround", "reboot"])
    assert outcome(h.escalate().replay()) == ("escalated", "reboot_timeout",
                                              ["enable_vsm", "licensing_workaround", "reboot"], 1)


def test_vsm_still_off_after_the_reboot_escalates_vsm_not_running_without_enabling():
    h = after_assess(NEEDS_VSM).apply_changes().rebooted(readiness(vbs_status=0))
    assert escalation(h)["reason"] == "vsm_not_running"
    state = h.escalate().replay()
    assert state.labels == ["ledger_write_all", "start_script:apply_changes", "timer", "read_script:apply_changes",
                            "timer", "get_machine", *ASSESSED[2:], "ledger_write_all", "escalate"]
    assert outcome(state) == ("escalated", "vsm_not_running", ["enable_vsm", "reboot"], 1)


def test_reboot_policy_never_escalates_reboot_required_before_any_script():
    h = after_assess(NEEDS_VSM, policy(reboot_policy="never"))
    assert escalation(h)["detail"] == "reboot policy 'never': no change was made"
    state = h.escalate().replay()
    assert state.labels == ["escalate"]
    assert outcome(state) == ("escalated", "reboot_required", [], 0)


def test_window_policy_waits_for_the_next_maintenance_window_before_any_change():
    h = after_assess(NEEDS_VSM, policy(reboot_policy="window"))
    sunday_2am = T0.replace(day=9, hour=2, minute=0)  # the default window: Sun 02:00-06:00 UTC
    state = h.replay()
    assert state.new_steps == [Step("timer", fire_at=sunday_2am)]
    assert state.custom_status["step"] == "waiting_for_window"
    (requested,) = h.timer(sunday_2am).replay().new_steps
    assert requested.label == "ledger_write_all"
    (start,) = h.ledger_written().replay().new_steps
    assert (start.label, start.input["request_id"]) == ("start_script:apply_changes",
                                                        "hotpatch-apply-changes-20251109020000-2")


def test_window_policy_waits_for_a_window_that_opens_in_minutes_too() -> None:
    h = after_assess(NEEDS_VSM, policy(reboot_policy="window", maintenance_window=parse_window("Mon 09:30-10:30")))
    opens = T0.replace(minute=30)  # T0 is a Monday, 09:00 UTC
    assert h.now < opens
    state = h.replay()
    assert state.new_steps == [Step("timer", fire_at=opens)]
    assert state.custom_status["step"] == "waiting_for_window"


# --- reboot approval -------------------------------------------------------------------------------------


def awaiting_approval() -> tuple[MachineHistory, int]:
    """A machine needing VSM under reboot policy ``approval``, waiting; and the approval timeout's timer id."""
    h = after_assess(NEEDS_VSM, policy(reboot_policy="approval"))
    return h, h.timer_created(h.now + 24 * HOURS)


def test_approval_policy_waits_for_the_reboot_approved_event_or_a_timeout():
    h = after_assess(NEEDS_VSM, policy(reboot_policy="approval"))
    state = h.replay()
    assert state.new_steps == [Step("wait:RebootApproved"), Step("timer", fire_at=h.now + 24 * HOURS)]
    assert state.custom_status["step"] == "awaiting_approval"
    assert not state.is_done


def test_an_approval_cancels_the_timeout_and_starts_the_changes():
    h, _ = awaiting_approval()
    state = h.raised("RebootApproved", {"approved": True, "by": "ops"}).replay()
    assert state.new_labels == ["ledger_write_all"]  # the changes, requested
    assert [step.canceled for step in state.steps if step.label == "timer"] == [True]


def test_no_approval_before_the_timeout_escalates_approval_timeout():
    h, timer_id = awaiting_approval()
    h.fired(timer_id, h.now + 24 * HOURS)
    assert escalation(h)["reason"] == "approval_timeout"
    state = h.escalate().replay()
    assert state.labels == ["wait:RebootApproved", "timer", "escalate"]
    assert outcome(state) == ("escalated", "approval_timeout", [], 0)


@pytest.mark.parametrize(
    ("payload", "by"),
    [({"approved": False, "by": "alice"}, "alice"), (json.dumps({"approved": False, "by": "alice"}), "alice"),
     (False, "an unreadable approval (False)"), ("false", "an unreadable approval (False)"),
     ({"approved": "no"}, "an approver"), (0, "an unreadable approval (0)"),
     ([True], "an unreadable approval ([True])")],
    ids=["object", "double-encoded", "false", "false-text", "approved-text", "zero", "list"],
)
def test_a_rejection_or_an_unreadable_approval_escalates_reboot_required_without_any_change(payload, by):
    h, _ = awaiting_approval()
    h.raised("RebootApproved", payload)
    sent = escalation(h)
    assert (sent["reason"], sent["detail"]) == ("reboot_required", f"reboot rejected by {by}: no change was made")
    state = h.escalate().replay()
    assert state.labels == ["wait:RebootApproved", "timer", "escalate"]
    assert outcome(state) == ("escalated", "reboot_required", [], 0)


# --- Run Command failures ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("attempts", "delays"), [(3, (30, 60)), (4, (30, 60, 120))])
def test_readiness_failing_every_attempt_escalates_run_command_failed_after_doubling_backoff(attempts, delays):
    h = MachineHistory(policy(run_command_attempts=attempts)).read_machine()
    backoff = []
    for delay in delays:
        h.script("readiness", start=failed("Conflict"))  # refused: not read
        backoff.append(h.now + delay * SECONDS)
        h.timer(backoff[-1])
    h.script("readiness", failed("Run Command timed out"))  # started, then failed
    sent = escalation(h)
    assert (sent["reason"], sent["detail"]) == ("run_command_failed", "readiness: Run Command timed out")
    state = h.escalate().replay()
    assert state.labels == ["get_machine", "ledger_read", *["start_script:readiness", "timer"] * len(delays),
                            *ASSESSED[2:], "escalate"]
    assert state.timers[:-1] == backoff
    starts = [step.input for step in state.steps if step.label == "start_script:readiness"]
    assert {start["run_name"] for start in starts} == {"hotpatch-readiness"}  # one resource per script
    assert len({start["request_id"] for start in starts}) == attempts  # each attempt tells itself apart
    assert outcome(state) == ("escalated", "run_command_failed", [], 0)


@pytest.mark.parametrize("attempts", [1, 2])
def test_a_run_command_is_tried_at_least_three_times_whatever_the_setting(attempts: int) -> None:
    h = MachineHistory(policy(run_command_attempts=attempts)).read_machine()
    for delay in (30, 60):
        h.script("readiness", start=failed("Conflict")).backoff(delay)
    h.script("readiness", start=failed("Conflict"))
    sent = escalation(h)
    assert (sent["reason"], sent["detail"]) == ("run_command_failed", "readiness: Conflict")
    state = h.escalate().replay()
    assert state.labels.count("start_script:readiness") == 3
    assert outcome(state) == ("escalated", "run_command_failed", [], 0)


def test_a_failing_script_activity_counts_as_a_failed_attempt_and_is_retried():
    h = MachineHistory().read_machine().ledger_read()
    h.activity_fails("start_script", "HttpResponseError: (TooManyRequests) throttled", label="start_script:readiness")
    assert h.replay().new_steps == [Step("timer", fire_at=h.now + 30 * SECONDS)]
    h.backoff(30).script("readiness").timer(h.now + 40 * SECONDS)
    h.activity_fails("read_script", "HttpResponseError: (InternalServerError)", label="read_script:readiness")
    assert h.replay().new_steps == [Step("timer", fire_at=h.now + 60 * SECONDS)]
    assert h.backoff(60).replay().new_labels == ["start_script:readiness"]


def test_apply_changes_failing_three_times_escalates_before_the_reboot():
    h = after_assess(NEEDS_VSM).apply_changes(start=failed("busy: run x still executing"))
    h.backoff(30).apply_changes(failed("Failed, exit code 1: boom")).backoff(60).apply_changes(start=failed("boom"))
    h.ledger_written()  # failed: nothing was made
    assert escalation(h)["detail"] == "apply_changes failed 3 times: boom"  # and no reboot wait
    assert outcome(h.escalate().replay()) == ("escalated", "run_command_failed", [], 0)


def test_a_failing_escalation_still_reports_the_machine():
    h = after_assess().enable_hotpatch()
    h.timer(h.now + ENABLE_FIRST_LOOK).hotpatch_status("Failed").ledger_written()
    h.activity_fails_every_retry(ESCALATE, "webhook store down", attempts=4, interval=10 * SECONDS)  # ARM_RETRY
    state = h.replay()
    assert outcome(state) == ("escalated", "enable_failed", ["enable_hotpatch"], 0)
    assert state.output["detail"].startswith("the Hotpatch feature reported Failed (escalation failed: webhook store")


# --- the outcome record for a rollout window ------------------------------------------------------------


def test_with_record_under_the_outcome_is_recorded_for_the_window_before_completing():
    h = MachineHistory(record_under=WINDOW).read_machine(arm_facts(hotpatch_feature_status="Enabled"))
    state = h.run_readiness().replay()
    assert not state.is_done
    (record,) = state.new_steps
    assert (record.label, record.instance_id) == ("rollout_record", f"{WINDOW}:d:unit")
    state = h.recorded().replay()
    assert outcome(state) == ("hotpatch_enabled", "already_enabled", [], 0)
    assert record.input == {"instance_id": "unit", "machine_id": MACHINE_ID, "row": state.output, "member": False,
                            "queued": False, "assess_only": False, "deferred": False}


def test_an_escalated_machine_is_recorded_after_its_escalation_as_a_member_of_its_wave():
    h = after_assess(NEEDS_VSM, policy(reboot_policy="never"), record_under=WINDOW).escalate()
    (record,) = h.replay().new_steps
    assert (record.label, record.instance_id) == ("rollout_record", f"{WINDOW}:d:unit")
    assert (record.input["row"]["reason"], record.input["member"]) == ("reboot_required", True)
    assert outcome(h.recorded().replay()) == ("escalated", "reboot_required", [], 0)


def test_an_assessed_machine_waiting_for_its_wave_is_recorded_as_queued():
    h = MachineHistory(record_under=WINDOW, assess_only=True).read_machine().run_readiness(NEEDS_VSM)
    (record,) = h.replay().new_steps
    assert record.instance_id == f"{WINDOW}:q:unit"
    assert {key: record.input[key] for key in ("member", "queued", "assess_only")} == {
        "member": True, "queued": True, "assess_only": True}
    assert outcome(h.recorded().replay()) == ("planned", "awaiting_wave", ["enable_vsm", "reboot", "enable_hotpatch"],
                                              0)


def test_an_outcome_recorded_before_does_not_fail_the_machine():
    h = MachineHistory(record_under=WINDOW, recheck=True).read_machine(arm_facts(status="Disconnected"))
    state = h.sub_orchestration_fails("rollout_record", "an instance with this id exists").replay()
    assert outcome(state) == ("skipped_disconnected", "agent_disconnected", [], 0)


def test_the_reboot_is_timed_from_the_apply_changes_attempt_that_scheduled_it():
    h = after_assess(NEEDS_BOTH).apply_changes(start=failed("busy: run x still executing")).backoff(30)
    h.requested_at = h.now  # the second attempt: the first changed nothing
    state = h.apply_changes().replay()
    assert state.new_steps == [Step("timer", fire_at=h.requested_at + REBOOT_FIRST_CHECK)]
    assert state.custom_status["requested_at"] == h.requested_at.isoformat()


def test_readiness_in_the_reboot_wait_never_runs_past_the_reboot_deadline():
    h = after_assess(NEEDS_BOTH, policy(reboot_timeout=500)).apply_changes()
    deadline = h.requested_at + 500 * SECONDS
    h.timer(h.requested_at + REBOOT_FIRST_CHECK).read_machine()
    (start,) = h.replay().new_steps
    assert start.label == "start_script:readiness"
    assert start.input["timeout_s"] == (deadline - h.now).total_seconds() < 60, "the run ends at the deadline"


def test_a_readiness_result_lost_after_the_reboot_is_looked_for_again_soon():
    # A lost result must not hold the machine until the run timeout (600 s) runs past the reboot deadline.
    h = after_assess(NEEDS_BOTH).apply_changes()
    h.timer(h.requested_at + REBOOT_FIRST_CHECK).read_machine()
    (start,) = h.replay().new_steps
    assert start.label == "start_script:readiness"
    assert start.input["timeout_s"] == READINESS_RETRY_AFTER_REBOOT_S < Policy().run_command_timeout
    # Lost: still running at its deadline (60 s); the machine is read again 10 s later, not a poll interval.
    h.script("readiness", RUNNING, timeout_s=READINESS_RETRY_AFTER_REBOOT_S)  # read at 40 s, answered at 70 s
    assert h.replay().new_steps == [Step("timer", fire_at=h.now + READ_AGAIN_S * SECONDS)]


def test_a_restart_an_earlier_run_asked_for_is_waited_for_and_never_requested_again():
    # An earlier orchestration (terminated after apply_changes scheduled the restart) left it pending.
    pending = replace(NEEDS_BOTH, vbs_configured=1, licensing_override=1, license_mutex=False,
                      reboot_pending=("arc_hotpatch",))
    h = MachineHistory().read_machine().run_readiness(pending)
    asked_at = h.now
    state = h.replay()
    assert state.new_steps == [Step("timer", fire_at=asked_at + REBOOT_FIRST_CHECK)], "it waits for that restart"
    back = replace(READY, last_boot=format_utc(asked_at + 100 * SECONDS))
    h.timer(asked_at + REBOOT_FIRST_CHECK).read_machine().run_readiness(back)
    # Back with VSM running and the workaround active: only enablement is left, no second reboot.
    carried = continued(h.replay())
    assert carried.carry.phase == "enable" and carried.carry.reboots == 0
    assert "apply_changes" not in [s.label.split(":")[-1] for s in h.replay().new_steps]


def _earlier_apply_changes(phase_entries: list[tuple[str, str]]) -> list[dict]:
    """Ledger entries another orchestration of this machine wrote for one apply_changes."""
    from core.ledger import LedgerEntry

    return [LedgerEntry.of(MACHINE_ID, "rollout-0", "earlier", change, phase, T0 - 120 * SECONDS,
                           {"request_id": "earlier:1"}).to_json() for change, phase in phase_entries]


def test_an_apply_changes_an_earlier_run_never_saw_end_is_waited_for_before_readiness():
    # The earlier orchestration was terminated while its apply_changes ran: requested, never done or failed.
    h = MachineHistory().read_machine()
    h.ledger_read(_earlier_apply_changes([("apply_changes", "requested"), ("reboot", "requested")]))
    (look,) = h.replay().new_steps
    assert (look.label, look.input["run_name"], look.input["request_id"]) == (
        "read_script:apply_changes", "hotpatch-apply-changes", ""), "it reads whatever execution the resource holds"
    h.activity("read_script", RUNNING, label="read_script:apply_changes")
    assert h.replay().new_steps == [Step("timer", fire_at=h.now + 20 * SECONDS)]
    h.timer(h.now + 20 * SECONDS).activity("read_script", failed("gone"), label="read_script:apply_changes")
    (start,) = h.replay().new_steps
    assert start.label == "start_script:readiness", "then it reads the machine as the earlier run left it"


def test_an_earlier_apply_changes_that_ended_is_not_waited_for():
    h = MachineHistory().read_machine()
    h.ledger_read(_earlier_apply_changes([("apply_changes", "requested"), ("apply_changes", "done")]))
    (start,) = h.replay().new_steps
    assert start.label == "start_script:readiness"


def test_the_rows_actions_are_what_the_ledger_shows_was_requested_and_not_refused():
    # The license write outlived its retries: whether ARM applied it is unknown, so the row keeps the change the
    # ledger shows as requested (never "nothing was done"), like the row of a terminated run.
    h = after_assess().ledger_written()
    h.activity_fails_every_retry("enable_hotpatch", "HttpResponseError: (InternalServerError)", attempts=4,
                                 interval=10 * SECONDS)
    assert escalation(h)["reason"] == "orchestration_failed"
    assert outcome(h.escalate().replay()) == ("escalated", "orchestration_failed", ["enable_hotpatch"], 0)


# --- 2026: Run Command preflight, the two-level enablement status, firmware signals, the forecast --------------


@pytest.mark.parametrize(
    ("facts", "reason", "named"),
    [
        (arm_facts(agent_version="1.32.02759.1012"), "agent_too_old", "1.32.02759.1012 predates Run Command"),
        (arm_facts(agent_version="1.58.03228.2572", config_mode="monitor"), "run_command_blocked",
         "azcmagent config set config.mode full"),
        (arm_facts(extensions_enabled="false"), "run_command_blocked", "azcmagent config set extensions.enabled true"),
        (arm_facts(extensions_blocklist=("Microsoft.CPlat.Core/RunCommandHandlerWindows",)), "run_command_blocked",
         "azcmagent config clear extensions.blocklist"),
        (arm_facts(extensions_allowlist=("Microsoft.Azure.Monitor/AzureMonitorWindowsAgent",)), "run_command_blocked",
         'extensions.allowlist "Microsoft.Azure.Monitor/AzureMonitorWindowsAgent,'
         'Microsoft.CPlat.Core/RunCommandHandlerWindows"'),
    ],
    ids=["too-old", "monitor-mode", "extensions-disabled", "blocklisted", "not-allowlisted"],
)
def test_a_machine_run_command_cannot_reach_is_escalated_before_any_script(facts, reason, named):
    h = MachineHistory().read_machine(facts)
    sent = escalation(h)
    assert sent["reason"] == reason and named in sent["detail"]
    state = h.escalate().replay()
    assert state.labels == ["get_machine", "escalate"]  # no ledger read, no Run Command
    assert outcome(state) == ("escalated", reason, [], 0)


def test_an_agent_that_reports_no_version_or_configuration_is_not_judged_on_them():
    state = MachineHistory().read_machine(arm_facts(agent_version="", hotpatch_feature_status="Enabled")) \
        .run_readiness().replay()
    assert outcome(state) == ("hotpatch_enabled", "already_enabled", [], 0)


def test_action_required_while_enabling_escalates_at_once_with_azures_error_text():
    h = after_assess().enable_hotpatch()
    h.timer(h.now + ENABLE_FIRST_LOOK).read_machine(arm_facts(
        hotpatch_feature_status="Enabled", hotpatch_enablement_status="ActionRequired",
        hotpatch_enablement_error="HotpatchActionRequired: install the latest baseline and restart")).ledger_written()
    sent = escalation(h)
    assert sent["reason"] == "enable_action_required"
    assert sent["detail"] == ("the machine reports hotpatchEnablementStatus ActionRequired: HotpatchActionRequired: "
                              "install the latest baseline and restart")
    assert outcome(h.escalate().replay()) == ("escalated", "enable_action_required", ["enable_hotpatch"], 0)


def test_a_failed_level_escalates_enable_failed_with_its_error_text():
    h = after_assess().enable_hotpatch()
    h.timer(h.now + ENABLE_FIRST_LOOK).read_machine(arm_facts(
        hotpatch_feature_status="Failed", hotpatch_feature_error="VirtualSecureModeNotRunning: VSM is not running"))
    sent = escalation(h.ledger_written())
    assert (sent["reason"], sent["detail"]) == (
        "enable_failed", "the Hotpatch feature reported Failed: VirtualSecureModeNotRunning: VSM is not running")


def test_enablement_is_done_only_when_both_levels_say_enabled_pending_evaluation_keeps_waiting():
    h = after_assess().enable_hotpatch()
    h.timer(h.now + ENABLE_FIRST_LOOK).read_machine(arm_facts(
        hotpatch_feature_status="Enabled", hotpatch_enablement_status="PendingEvaluation"))
    (wait,) = h.replay().new_steps
    assert wait.label == "timer" and wait.fire_at == h.now + ENABLE_POLL  # the license level alone is not done
    h.timer(h.now + ENABLE_POLL).read_machine(arm_facts(
        hotpatch_feature_status="Enabled", hotpatch_enablement_status="Enabled")).ledger_written()
    assert outcome(h.replay()) == ("hotpatch_enabled", "enabled", ["enable_hotpatch"], 0)


def test_a_licensed_machine_whose_machine_level_requires_action_is_escalated_at_the_assessment():
    h = MachineHistory().read_machine(arm_facts(
        hotpatch_feature_status="Enabled", hotpatch_enablement_status="ActionRequired",
        hotpatch_enablement_error="HotpatchActionRequired: restart")).run_readiness()
    sent = escalation(h)
    assert (sent["reason"], sent["actions"]) == ("enable_action_required", [])


def test_a_licensed_machine_pending_evaluation_waits_without_writing_the_license_again():
    h = after_assess(facts=arm_facts(hotpatch_feature_status="Enabled", hotpatch_enablement_status="PendingEvaluation"))
    (wait,) = h.replay().new_steps
    assert wait.label == "timer"  # no ledger entry, no enable_hotpatch: the license is already written
    h.timer(wait.fire_at).read_machine(arm_facts(hotpatch_feature_status="Enabled",
                                                 hotpatch_enablement_status="Enabled"))
    assert outcome(h.replay()) == ("hotpatch_enabled", "already_enabled", [], 0)


def test_a_licensed_machine_whose_level_is_pending_after_the_reboot_is_waited_for_before_it_is_done() -> None:
    enabled = arm_facts(hotpatch_feature_status="Enabled")
    pending = arm_facts(hotpatch_feature_status="Enabled", hotpatch_enablement_status="PendingEvaluation")
    h = after_assess(NEEDS_WORKAROUND, facts=enabled).apply_changes().rebooted(facts=pending)
    assert continued(h.replay()).carry.phase == "enable"
    h = h.next_phase()
    (wait,) = h.replay().new_steps
    assert wait.label == "timer"  # no enable_hotpatch: the license is already written
    h.timer(wait.fire_at).read_machine(arm_facts(hotpatch_feature_status="Enabled",
                                                 hotpatch_enablement_status="Enabled"))
    assert outcome(h.replay()) == ("hotpatch_enabled", "enabled", ["licensing_workaround", "reboot"], 1)


def test_firmware_no_signal_could_tell_escalates_instead_of_calling_the_hardware_unfit():
    h = MachineHistory().read_machine().run_readiness(readiness(firmware="Unknown", firmware_signal="none"))
    sent = escalation(h)
    assert sent["reason"] == "vbs_hardware" and "could not be determined" in sent["detail"]
    assert outcome(h.escalate().replay())[:2] == ("escalated", "vbs_hardware")


def test_the_report_row_forecasts_the_next_update_from_what_was_read():
    pending = readiness(reboot_pending=("windows_update",))
    state = MachineHistory().read_machine(arm_facts(hotpatch_feature_status="Enabled")).run_readiness(pending).replay()
    assert state.output["next_update"] == "reboot"
    assert state.output["next_update_detail"] == "2025-11-11 update: a reboot is pending (windows_update)"


def test_a_dry_run_folds_update_managers_reboot_pending_into_the_forecast():
    h = MachineHistory(policy(dry_run=True)).read_machine(arm_facts(hotpatch_feature_status="Enabled"))
    state = h.run_readiness().assess_patches(reboot_pending=True).replay()
    assert outcome(state) == ("planned", "dry_run", [], 0)
    assert state.output["next_update"] == "reboot"
    assert "Update Manager's patch assessment reports a reboot pending" in state.output["next_update_detail"]


def test_a_rollout_does_not_assess_patches_unless_the_setting_says_so():
    ready = MachineHistory().read_machine(arm_facts(hotpatch_feature_status="Enabled")).run_readiness().replay()
    assert "start_patch_assessment" not in ready.labels
    h = MachineHistory(policy(assess_patches="on")).read_machine(arm_facts(hotpatch_feature_status="Enabled"))
    (start,) = h.run_readiness().replay().new_steps
    assert start.label == "start_patch_assessment"
