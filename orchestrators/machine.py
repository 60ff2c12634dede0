"""The per-machine orchestration (SPEC §2 with SPEC §4's policies).

Deterministic: it decides and waits; every Azure call is an activity, every wait
a durable timer, and the only clock is ``context.current_utc_datetime``.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df

from arc_hotpatch.domain.baselines import baseline_flag, load_baselines
from arc_hotpatch.domain.facts import MachineFacts, parse_machine_id
from arc_hotpatch.domain.policy import Policy
from arc_hotpatch.domain.readiness import Readiness
from arc_hotpatch.domain.rules import Verdict, check_arm_facts, check_readiness, plan_actions, workaround_applies
from arc_hotpatch.domain.schedule import next_window_start, parse_utc
from arc_hotpatch.domain.vocabulary import (
    REBOOT_APPROVED_EVENT,
    Action,
    FinalState,
    Reason,
    RebootPolicy,
    WorkaroundMode,
)

bp = df.Blueprint()

REBOOT_DELAY_S = 60  # the script schedules the restart so the run can report first
# A script that reboots (or stops himds) reports within seconds or never: don't wait the full run timeout.
REBOOTING_SCRIPT_TIMEOUT_S = 150
# First looks: no machine is back within 3 minutes of going down, and the seed says enablement takes
# "about 10 minutes"; polling from the start would only grow the history (and the ARM bill).
REBOOT_FIRST_CHECK_S = REBOOT_DELAY_S + 180
ENABLE_FIRST_CHECK_S = 8 * 60
ARM_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=10_000, max_number_of_attempts=4)
RUN_RETRY_BASE_S = 30

Steps = Generator[Any, Any, Any]


class Finished(Exception):
    """Raised inside the workflow to stop at a final state (carries the verdict)."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.reason)
        self.verdict = verdict


@dataclass
class Run:
    """Everything one orchestration execution knows; rebuilt identically on every replay."""

    context: df.DurableOrchestrationContext
    machine_id: str
    policy: Policy
    rollout_id: str
    facts: MachineFacts | None = None
    readiness: Readiness | None = None
    actions: list[str] = field(default_factory=list)
    reboots: int = 0
    workaround_done: bool = False
    run_seq: int = 0

    @property
    def now(self) -> datetime:
        return self.context.current_utc_datetime

    def status(self, step: str, **extra: Any) -> None:
        self.context.set_custom_status(
            {"step": step, "machine": self.machine_id, "rollout_id": self.rollout_id, "actions": list(self.actions),
             **extra}
        )

    def activity_input(self, **values: Any) -> dict[str, Any]:
        # Only what activities need (the history keeps every input): not the whole policy.
        return {"machine_id": self.machine_id, "arm_endpoint": self.policy.resolved_arm_endpoint,
                "rollout_id": self.rollout_id, **values}

    def done(self, state: FinalState, reason: str, detail: str = "") -> None:
        raise Finished(Verdict(state, reason, detail))


@bp.orchestration_trigger(context_name="context")
def machine_orchestrator(context: df.DurableOrchestrationContext) -> Steps:
    payload = context.get_input() or {}
    run = Run(
        context=context,
        machine_id=payload["machine_id"],
        policy=Policy.from_json(payload.get("policy") or {}),
        rollout_id=payload.get("rollout_id") or "",
    )
    try:
        yield from workflow(run)
        verdict = Verdict(FinalState.HOTPATCH_ENABLED, Reason.ENABLED if run.actions else Reason.ALREADY_ENABLED)
    except Finished as finished:
        verdict = finished.verdict
    if verdict.state == FinalState.ESCALATED:
        run.status("escalating", reason=verdict.reason)
        yield context.call_activity(
            "escalate",
            run.activity_input(name=_name(run), reason=verdict.reason, detail=verdict.detail, actions=run.actions,
                               escalation_webhook=run.policy.escalation_webhook),
        )
    row = report_row(run, verdict)
    run.status("done", state=row["state"], reason=row["reason"])
    return row


def _name(run: Run) -> str:
    return run.facts.name if run.facts else parse_machine_id(run.machine_id)[2]


def report_row(run: Run, verdict: Verdict) -> dict[str, Any]:
    """The machine's line of the report (SPEC §5)."""
    subscription_id, _, name = parse_machine_id(run.machine_id)
    facts, readiness = run.facts, run.readiness
    os_version = facts.os_version_text if facts else ""
    baselines = load_baselines(run.policy.baselines_file)
    if readiness is not None:
        flag = baseline_flag(readiness.build, readiness.ubr, readiness.hotfixes, baselines)
    else:
        version = facts.os_version if facts else None
        flag = baseline_flag(version.build if version else None, version.revision if version else None, None, baselines)
    return {
        "id": run.machine_id,
        "subscription_id": subscription_id,
        "name": facts.name if facts else name,
        "state": verdict.state.value,
        "reason": str(verdict.reason),
        "actions": list(run.actions),
        "reboots": run.reboots,
        "os_version": os_version,
        "baseline": flag.value,
        "detail": verdict.detail,
    }


# --- the workflow --------------------------------------------------------------------------------


def workflow(run: Run) -> Steps:
    policy = run.policy
    run.status("reading_machine")
    machine = yield run.context.call_activity_with_retry("get_machine", ARM_RETRY, run.activity_input())
    if not machine.get("found"):
        run.done(FinalState.SKIPPED_DISCONNECTED, "machine_not_found", "the Arc resource no longer exists")
    run.facts = MachineFacts.from_json(machine["facts"])
    verdict = check_arm_facts(run.facts, policy.exclude_tag)
    if verdict:
        raise Finished(verdict)

    run.status("checking_readiness")
    run.readiness = yield from read_readiness(run)
    verdict = check_readiness(run.readiness)
    if verdict:
        raise Finished(verdict)

    plan = plan_actions(run.readiness, run.facts.hotpatch_enabled, policy.workaround_mode)
    if policy.dry_run:
        detail = ""
        if plan.reboot and policy.reboot_policy == RebootPolicy.NEVER:
            detail = "reboot policy 'never' would escalate this machine (reboot_required)"
        run.actions = plan.actions
        run.done(FinalState.PLANNED, Reason.DRY_RUN, detail)

    if plan.reboot:
        yield from change_and_reboot(run, enable_vsm=plan.enable_vsm, workaround=plan.licensing_workaround)
        if plan.enable_vsm and not run.readiness.vsm_running:
            run.done(
                FinalState.ESCALATED, Reason.VSM_NOT_RUNNING,
                f"VirtualizationBasedSecurityStatus {run.readiness.vbs_status} after reboot: check the hardware "
                "or hypervisor VBS support",
            )

    if plan.enable_hotpatch:
        run.status("enabling_hotpatch")
        yield run.context.call_activity_with_retry(
            "enable_hotpatch", ARM_RETRY, run.activity_input(location=run.facts.location)
        )
        run.actions.append(Action.ENABLE_HOTPATCH.value)
        outcome = yield from wait_for_enablement(run)
        reactive = policy.workaround_mode == WorkaroundMode.REACTIVE and not run.workaround_done
        if outcome == "stuck" and reactive and workaround_applies(run.readiness.ubr, run.readiness):
            yield from change_and_reboot(run, enable_vsm=False, workaround=True)
            outcome = yield from wait_for_enablement(run)
        if outcome == "failed":
            run.done(FinalState.ESCALATED, Reason.ENABLE_FAILED, "the Hotpatch feature reported Failed")
        if outcome == "stuck":
            run.done(
                FinalState.ESCALATED, Reason.ENABLE_STUCK,
                f"still Enabling after {policy.enable_timeout / 60:g} min: see the agent troubleshooting guide",
            )


def read_readiness(run: Run, attempts: int | None = None) -> Steps:
    """Run the readiness script (with retries); escalates ``run_command_failed`` when it keeps failing.

    With ``attempts=1`` (polling around a reboot, where failures are expected) a failure returns None.
    """
    result = yield from run_script(run, "readiness", {}, attempts=attempts)
    if result["status"] != "succeeded":
        if attempts == 1:
            return None
        run.done(FinalState.ESCALATED, Reason.RUN_COMMAND_FAILED, f"readiness: {result.get('error', '')}")
    return Readiness.from_json(result["result"])


def run_script(
    run: Run, script: str, parameters: dict[str, Any], *, accept_lost: bool = False, attempts: int | None = None
) -> Steps:
    """One script through Run Command, retried with exponential backoff on durable timers.

    Each attempt has its own run command name (a reused name while running is a 409).
    Returns the first usable result (``succeeded``, or ``lost`` when ``accept_lost``), else the last one.
    """
    total = attempts or max(3, run.policy.run_command_attempts)
    result: dict[str, Any] = {}
    for attempt in range(1, total + 1):
        run.run_seq += 1
        run_name = f"hotpatch-{script.replace('_', '-')}-{run.now:%Y%m%d%H%M%S}-{run.run_seq}"
        try:
            result = yield run.context.call_activity(
                "run_script",
                run.activity_input(
                    location=run.facts.location if run.facts else "", script=script, run_name=run_name,
                    parameters={"RequestId": run_name, **parameters},
                    timeout_s=min(run.policy.run_command_timeout, REBOOTING_SCRIPT_TIMEOUT_S)
                    if accept_lost else run.policy.run_command_timeout,
                ),
            )
        except Exception as exc:  # an ARM error that outlived the SDK's own retries
            result = {"status": "failed", "error": _first_line(exc)}
        if result["status"] == "succeeded" or (result["status"] == "lost" and accept_lost):
            return result
        if attempt < total:
            delay = RUN_RETRY_BASE_S * 2 ** (attempt - 1)
            yield run.context.create_timer(run.now + timedelta(seconds=delay))
    return result


def usable(result: dict[str, Any]) -> bool:
    return result["status"] in ("succeeded", "lost")


def script_failed(run: Run, script: str, result: dict[str, Any]) -> None:
    attempts = max(3, run.policy.run_command_attempts)
    run.done(
        FinalState.ESCALATED, Reason.RUN_COMMAND_FAILED,
        f"{script} failed {attempts} times: {result.get('error', '')}",
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def reboot_gate(run: Run) -> Steps:
    """Wait until the reboot policy allows a reboot (nothing has been changed yet)."""
    policy = run.policy
    if policy.reboot_policy == RebootPolicy.NEVER:
        run.done(FinalState.ESCALATED, Reason.REBOOT_REQUIRED, "reboot policy 'never': no change was made")
    if policy.reboot_policy == RebootPolicy.APPROVAL:
        deadline = run.now + timedelta(seconds=policy.approval_timeout)
        run.status("awaiting_approval", until=deadline.isoformat())
        approval = run.context.wait_for_external_event(REBOOT_APPROVED_EVENT)
        timeout = run.context.create_timer(deadline)
        winner = yield run.context.task_any([approval, timeout])
        if winner is not approval:
            run.done(FinalState.ESCALATED, Reason.APPROVAL_TIMEOUT, f"no {REBOOT_APPROVED_EVENT} before {deadline}")
        timeout.cancel()
        decision = approval_payload(approval.result)
        if not decision.get("approved", True):
            run.done(
                FinalState.ESCALATED, Reason.REBOOT_REQUIRED,
                f"reboot rejected by {decision.get('by') or 'an approver'}: no change was made",
            )
    if policy.reboot_policy == RebootPolicy.WINDOW:
        opens = next_window_start(policy.maintenance_window, run.now)
        if opens > run.now:
            run.status("waiting_for_window", until=opens.isoformat())
            yield run.context.create_timer(opens)


def approval_payload(raw: Any) -> dict[str, Any]:
    """The approval event's payload: an object, a JSON string of one (the client double-encodes), or nothing."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError:
            raw = {"by": raw}
        if isinstance(raw, str):  # double-encoded
            return approval_payload(raw)
    return raw if isinstance(raw, dict) else {}


def change_and_reboot(run: Run, *, enable_vsm: bool, workaround: bool) -> Steps:
    """Make the changes that need a reboot, then reboot once and wait until the machine is back."""
    yield from reboot_gate(run)
    if enable_vsm:
        run.status("enabling_vsm")
        result = yield from run_script(run, "enable_vsm", {})
        if result["status"] != "succeeded":
            script_failed(run, "enable_vsm", result)
        run.actions.append(Action.ENABLE_VSM.value)
    requested_at = run.now
    if workaround:
        # Stops himds and schedules the reboot itself: its result may never come back.
        run.status("applying_workaround")
        result = yield from run_script(
            run, "licensing_workaround", {"RebootDelaySeconds": REBOOT_DELAY_S}, accept_lost=True
        )
        if not usable(result):
            script_failed(run, "licensing_workaround", result)
        run.actions.append(Action.LICENSING_WORKAROUND.value)
        run.workaround_done = True
    else:
        run.status("rebooting")
        result = yield from run_script(run, "reboot", {"RebootDelaySeconds": REBOOT_DELAY_S}, accept_lost=True)
        if not usable(result):
            script_failed(run, "reboot", result)
    run.actions.append(Action.REBOOT.value)
    run.reboots += 1
    readiness = yield from wait_for_reboot(run, requested_at)
    if readiness is None:
        run.done(
            FinalState.ESCALATED, Reason.REBOOT_TIMEOUT,
            f"not back within {run.policy.reboot_timeout / 60:g} min of the reboot request at {requested_at}",
        )
    run.readiness = readiness


def wait_for_reboot(run: Run, requested_at: datetime) -> Steps:
    """Poll until the machine is Connected with a boot time after ``requested_at`` (verify, never trust
    the script's own report). Returns the fresh readiness, or None at the reboot timeout."""
    deadline = requested_at + timedelta(seconds=run.policy.reboot_timeout)
    poll = timedelta(seconds=run.policy.reboot_poll_interval)
    run.status("waiting_for_reboot", requested_at=requested_at.isoformat())
    yield run.context.create_timer(min(run.now + timedelta(seconds=REBOOT_FIRST_CHECK_S), deadline))
    while True:
        machine = yield run.context.call_activity_with_retry("get_machine", ARM_RETRY, run.activity_input())
        if machine.get("found") and machine["facts"]["status"] == "Connected":
            readiness = yield from read_readiness(run, attempts=1)  # failures are expected around a reboot
            if readiness is not None and parse_utc(readiness.last_boot) > requested_at:
                return readiness
        if run.now >= deadline:
            return None
        yield run.context.create_timer(min(run.now + poll, deadline))


def wait_for_enablement(run: Run) -> Steps:
    """Poll the Hotpatch feature until Enabled / Failed, or ``stuck`` at the enable timeout."""
    deadline = run.now + timedelta(seconds=run.policy.enable_timeout)
    poll = timedelta(seconds=run.policy.enable_poll_interval)
    run.status("waiting_for_enablement", until=deadline.isoformat())
    wait = max(poll, timedelta(seconds=ENABLE_FIRST_CHECK_S))
    while True:
        yield run.context.create_timer(min(run.now + wait, deadline))
        wait = poll
        status = yield run.context.call_activity_with_retry("get_hotpatch_status", ARM_RETRY, run.activity_input())
        if (status or "").lower() == "enabled":
            return "enabled"
        if (status or "").lower() == "failed":
            return "failed"
        if run.now >= deadline:
            return "stuck"
