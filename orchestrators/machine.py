"""The per-machine orchestration (SPEC §2 with SPEC §4's policies).

Deterministic: it decides and waits; every Azure call is an activity, every wait
a durable timer, and the only clock is ``context.current_utc_datetime``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df

from core.contracts import (
    ENABLE_HOTPATCH,
    ESCALATE,
    GET_HOTPATCH_STATUS,
    GET_MACHINE,
    MACHINE_ORCHESTRATOR,
    RUN_SCRIPT,
    Escalation,
    MachineCall,
    MachineInput,
    MachineRead,
    ReportRow,
    ScriptRequest,
    ScriptResult,
)
from core.facts import MachineFacts, parse_machine_id
from core.policy import Policy
from core.readiness import Readiness
from core.rules import Verdict, check_arm_facts, check_readiness, plan_actions, workaround_applies
from core.schedule import next_window_start, parse_utc
from core.vocabulary import (
    REBOOT_APPROVED_EVENT,
    Action,
    BaselineFlag,
    FinalState,
    Reason,
    RebootPolicy,
    WorkaroundMode,
)

from .steps import ARM_RETRY, Steps

bp = df.Blueprint()

REBOOT_DELAY_S = 60  # the script schedules the restart so the run can report first
# A script that reboots (or stops himds) reports within seconds or never: don't wait the full run timeout.
REBOOTING_SCRIPT_TIMEOUT_S = 150
# First looks: no machine is back within 3 minutes of going down, and the seed says enablement takes
# "about 10 minutes"; polling from the start would only grow the history (and the ARM bill).
REBOOT_FIRST_CHECK_S = REBOOT_DELAY_S + 180
ENABLE_FIRST_CHECK_S = 8 * 60
RUN_RETRY_BASE_S = 30


class Finished(Exception):
    """Raised inside the workflow to stop at a final state (carries the verdict)."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.reason)
        self.verdict = verdict


@dataclass
class Run:
    """Everything one orchestration execution knows; rebuilt identically on every replay."""

    context: df.DurableOrchestrationContext
    input: MachineInput
    facts: MachineFacts | None = None
    readiness: Readiness | None = None
    baseline: str = BaselineFlag.UNKNOWN.value  # from the latest read (ARM facts, then readiness)
    actions: list[str] = field(default_factory=list)
    reboots: int = 0
    workaround_done: bool = False
    run_seq: int = 0

    @property
    def machine_id(self) -> str:
        return self.input.machine_id

    @property
    def policy(self) -> Policy:
        return self.input.policy

    @property
    def rollout_id(self) -> str:
        return self.input.rollout_id

    @property
    def now(self) -> datetime:
        return self.context.current_utc_datetime

    def status(self, step: str, **extra: Any) -> None:
        self.context.set_custom_status(
            {"step": step, "machine": self.machine_id, "rollout_id": self.rollout_id, "actions": list(self.actions),
             **extra}
        )

    def call(self) -> MachineCall:
        # Only what activities need (the history keeps every input): not the whole policy.
        return MachineCall(
            machine_id=self.machine_id, arm_endpoint=self.policy.resolved_arm_endpoint, rollout_id=self.rollout_id,
            location=self.facts.location if self.facts else "", baselines_file=self.policy.baselines_file,
        )

    def read_machine(self) -> Steps:
        """The machine's ARM facts now (None when the resource is gone); keeps its baseline flag."""
        read = yield self.context.call_activity_with_retry(GET_MACHINE, ARM_RETRY, self.call())
        read = MachineRead.from_json(read)
        if read.found and self.readiness is None:
            self.baseline = read.baseline
        return MachineFacts.from_json(read.facts) if read.found and read.facts else None

    def done(self, state: FinalState, reason: str, detail: str = "") -> None:
        raise Finished(Verdict(state, reason, detail))


@bp.function_name(MACHINE_ORCHESTRATOR)
@bp.orchestration_trigger(context_name="context")
def machine_orchestrator(context: df.DurableOrchestrationContext) -> Steps:
    run = Run(context=context, input=MachineInput.from_json(context.get_input()))
    try:
        yield from workflow(run)
        verdict = Verdict(FinalState.HOTPATCH_ENABLED, Reason.ENABLED if run.actions else Reason.ALREADY_ENABLED)
    except Finished as finished:
        verdict = finished.verdict
    if verdict.state == FinalState.ESCALATED:
        run.status("escalating", reason=verdict.reason)
        try:
            yield context.call_activity_with_retry(
                ESCALATE, ARM_RETRY,
                Escalation(run.call(), name=_name(run), reason=verdict.reason, detail=verdict.detail,
                           actions=list(run.actions), escalation_webhook=run.policy.escalation_webhook),
            )
        except Exception as exc:  # the machine's outcome stands; the hand-over is what failed
            failure = f"{verdict.detail} (escalation failed: {_first_line(exc)})"
            verdict = Verdict(verdict.state, verdict.reason, failure)
    row = report_row(run, verdict)
    run.status("done", state=row.state, reason=row.reason)
    return row.to_json()  # plain JSON: the status API and the report show it as it is


def _name(run: Run) -> str:
    return run.facts.name if run.facts else parse_machine_id(run.machine_id)[2]


def report_row(run: Run, verdict: Verdict) -> ReportRow:
    """The machine's line of the report (SPEC §5)."""
    subscription_id, _, name = parse_machine_id(run.machine_id)
    facts = run.facts
    return ReportRow(
        id=run.machine_id, subscription_id=subscription_id, name=facts.name if facts else name,
        state=verdict.state.value, reason=str(verdict.reason), actions=list(run.actions), reboots=run.reboots,
        os_version=facts.os_version_text if facts else "", baseline=run.baseline, detail=verdict.detail,
    )


# --- the workflow --------------------------------------------------------------------------------


def workflow(run: Run) -> Steps:
    policy = run.policy
    run.status("reading_machine")
    facts = yield from run.read_machine()
    if facts is None:
        run.done(FinalState.SKIPPED_DISCONNECTED, Reason.MACHINE_NOT_FOUND, "the Arc resource no longer exists")
    run.facts = facts
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
        yield run.context.call_activity_with_retry(ENABLE_HOTPATCH, ARM_RETRY, run.call())
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
    if not result.succeeded:
        if attempts == 1:
            return None
        run.done(FinalState.ESCALATED, Reason.RUN_COMMAND_FAILED, f"readiness: {result.error}")
    run.baseline = result.baseline
    return Readiness.from_json(result.result or {})


def run_script(
    run: Run, script: str, parameters: dict[str, Any], *, accept_lost: bool = False, attempts: int | None = None
) -> Steps:
    """One script through Run Command, retried with exponential backoff on durable timers.

    Each attempt has its own run command name (a reused name while running is a 409).
    Returns the first usable result (``succeeded``, or ``lost`` when ``accept_lost``), else the last one.
    """
    total = attempts or max(3, run.policy.run_command_attempts)
    result = ScriptResult(ScriptResult.FAILED, error="not run")
    for attempt in range(1, total + 1):
        run.run_seq += 1
        run_name = f"hotpatch-{script.replace('_', '-')}-{run.now:%Y%m%d%H%M%S}-{run.run_seq}"
        request = ScriptRequest(
            run.call(), script=script, run_name=run_name, parameters={"RequestId": run_name, **parameters},
            timeout_s=min(run.policy.run_command_timeout, REBOOTING_SCRIPT_TIMEOUT_S)
            if accept_lost else run.policy.run_command_timeout,
        )
        try:
            result = ScriptResult.from_json((yield run.context.call_activity(RUN_SCRIPT, request)))
        except Exception as exc:  # an ARM error that outlived the SDK's own retries
            result = ScriptResult(ScriptResult.FAILED, error=_first_line(exc))
        if result.succeeded or (result.status == ScriptResult.LOST and accept_lost):
            return result
        if attempt < total:
            delay = RUN_RETRY_BASE_S * 2 ** (attempt - 1)
            yield run.context.create_timer(run.now + timedelta(seconds=delay))
    return result


def usable(result: ScriptResult) -> bool:
    return result.status in (ScriptResult.SUCCEEDED, ScriptResult.LOST)


def script_failed(run: Run, script: str, result: ScriptResult) -> None:
    attempts = max(3, run.policy.run_command_attempts)
    run.done(FinalState.ESCALATED, Reason.RUN_COMMAND_FAILED, f"{script} failed {attempts} times: {result.error}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _changes_so_far(run: Run) -> str:
    return f"changes so far: {', '.join(run.actions)}" if run.actions else "no change was made"


def reboot_gate(run: Run) -> Steps:
    """Wait until the reboot policy allows a reboot (before the changes that need it)."""
    policy = run.policy
    if policy.reboot_policy == RebootPolicy.NEVER:
        run.done(FinalState.ESCALATED, Reason.REBOOT_REQUIRED, f"reboot policy 'never': {_changes_so_far(run)}")
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
        if decision.get("approved", True) is not True:  # only an explicit or implied yes reboots
            run.done(
                FinalState.ESCALATED, Reason.REBOOT_REQUIRED,
                f"reboot rejected by {decision.get('by') or 'an approver'}: {_changes_so_far(run)}",
            )
    if policy.reboot_policy == RebootPolicy.WINDOW:
        opens = next_window_start(policy.maintenance_window, run.now)
        if opens > run.now:
            run.status("waiting_for_window", until=opens.isoformat())
            yield run.context.create_timer(opens)


def approval_payload(raw: Any) -> dict[str, Any]:
    """The approval event's payload: an object, a JSON string of one (the client double-encodes), or nothing.

    Nothing, ``{}`` or ``{"by": ...}`` approve (the event is the approval); ``{"approved": false}`` rejects.
    Any other value (``false``, a number, a list) is read as a rejection: a reboot needs a clear yes.
    """
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError:
            raw = {"by": raw}
        if isinstance(raw, str):  # double-encoded
            return approval_payload(raw)
    if raw is None or raw is True:
        return {}
    return raw if isinstance(raw, dict) else {"approved": False, "by": f"an unreadable approval ({raw!r:.40})"}


def change_and_reboot(run: Run, *, enable_vsm: bool, workaround: bool) -> Steps:
    """Make the changes that need a reboot, then reboot once and wait until the machine is back."""
    yield from reboot_gate(run)
    if enable_vsm:
        run.status("enabling_vsm")
        result = yield from run_script(run, "enable_vsm", {})
        if not result.succeeded:
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
        facts = yield from run.read_machine()
        if facts is not None and facts.status == "Connected":
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
        status = yield run.context.call_activity_with_retry(GET_HOTPATCH_STATUS, ARM_RETRY, run.call())
        if (status or "").lower() == "enabled":
            return "enabled"
        if (status or "").lower() == "failed":
            return "failed"
        if run.now >= deadline:
            return "stuck"
