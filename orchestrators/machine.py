"""The per-machine orchestration (SPEC §2 with SPEC §4's policies).

Deterministic: it decides and waits; every Azure call is an activity, every wait
a durable timer, and the only clock is ``context.current_utc_datetime``. No activity
waits: a Run Command is started by one activity and read by another, with durable
timers between, and every deadline (run timeout, reboot, enablement) is kept exactly.

Started by a rollout window, a machine may be asked only to assess (``assess_only``: its
wave has not opened); it then ends ``planned`` / ``awaiting_wave`` if it needs a change,
and the window starts it again when its wave opens. Whatever happens, a machine that a
window waits for records its outcome at the end (``record_under``), crash included.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df

from core.contracts import (
    ENABLE_HOTPATCH,
    ESCALATE,
    GET_MACHINE,
    MACHINE_ORCHESTRATOR,
    READ_PATCH_OPERATION,
    READ_SCRIPT,
    ROLLOUT_RECORD,
    START_ASSESSMENT,
    START_SCRIPT,
    EnableRequest,
    Escalation,
    MachineCall,
    MachineCarry,
    MachineDone,
    MachineInput,
    MachineRead,
    PatchRequest,
    PatchResult,
    ReportRow,
    ScriptRequest,
    ScriptResult,
)
from core.facts import (
    ENABLEMENT_ACTION_REQUIRED,
    ENABLEMENT_ENABLED,
    ENABLEMENT_FAILED,
    ENABLEMENT_PENDING,
    MachineFacts,
    parse_machine_id,
)
from core.forecast import forecast
from core.ledger import (
    DONE,
    FAILED,
    LEDGER_READ,
    LEDGER_WRITE_ALL,
    REQUESTED,
    LedgerBatch,
    LedgerEntry,
    changes_made,
    unsettled_change,
)
from core.policy import Policy
from core.readiness import Readiness
from core.rules import (
    Plan,
    Verdict,
    check_arm_facts,
    check_readiness,
    check_run_command,
    plan_actions,
    workaround_applies,
)
from core.schedule import format_utc, next_window_start, parse_utc
from core.vocabulary import (
    REBOOT_APPROVED_EVENT,
    Action,
    BaselineFlag,
    FinalState,
    Reason,
    RebootPolicy,
    WorkaroundMode,
)

from .instances import outcome_record_id
from .steps import ARM_RETRY, Steps

bp = df.Blueprint()

REBOOT_DELAY_S = 60  # the script schedules the restart so the run can report first
# A script that reboots (or stops himds) reports within seconds or never: don't wait the full run timeout.
REBOOTING_SCRIPT_TIMEOUT_S = 150
# Around a reboot a readiness result may be lost (the agent restarts under it): look again soon rather
# than wait out the run timeout, so a machine back in time is seen in time.
READINESS_RETRY_AFTER_REBOOT_S = 60
READ_AGAIN_S = 10  # ... and after a lost or failed read of a Connected machine, the next one follows at once
# Run Command: a script takes half a minute or so; looking earlier only costs ARM reads.
SCRIPT_FIRST_LOOK_S = 40
SCRIPT_POLL_S = 20
# First looks: no machine is back within minutes of going down, and the seed says enablement takes
# "about 10 minutes"; polling from the start would only grow the history (and the ARM bill).
REBOOT_FIRST_CHECK_S = REBOOT_DELAY_S + 6 * 60
ENABLE_FIRST_CHECK_S = 10 * 60 + 30
RUN_RETRY_BASE_S = 30
# Update Manager's patch assessment takes a minute or a few; past the timeout the forecast goes without it.
ASSESSMENT_FIRST_LOOK_S = 60
ASSESSMENT_POLL_S = 30
ASSESSMENT_TIMEOUT_S = 15 * 60
APPLY_CHANGES = "apply_changes"  # the one script for every change that needs the reboot (and the reboot)
ASSESS, CHANGE, ENABLE, REACTIVE = "assess", "change", "enable", "reactive"  # the phases (one execution each)


class Finished(Exception):
    """Raised inside the workflow to stop at a final state (carries the verdict)."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.reason)
        self.verdict = verdict


class NextPhase(Exception):
    """Raised inside the workflow to continue as new into the next phase (a fresh, short history)."""

    def __init__(self, phase: str) -> None:
        super().__init__(phase)
        self.phase = phase


@dataclass
class Run:
    """Everything one orchestration execution knows; rebuilt identically on every replay."""

    context: df.DurableOrchestrationContext
    input: MachineInput
    facts: MachineFacts | None = None
    readiness: Readiness | None = None
    baseline: str = BaselineFlag.UNKNOWN.value  # from the latest read (ARM facts, then readiness)
    baseline_detail: str = ""  # why (the baselines data's words), for the next-update forecast
    licensing_issue: bool = False  # the readiness revision is in the licensing issue's range (baselines data)
    assessed_reboot_pending: bool | None = None  # Update Manager's assessment (assess_patches), None: not known
    actions: list[str] = field(default_factory=list)
    reboots: int = 0
    member: bool = False  # the plan had changes: the machine belongs to a wave
    workaround_done: bool = False
    run_seq: int = 0
    plan: Plan | None = None
    script_started_at: datetime | None = None  # when the current (or last) Run Command attempt started
    started_at: str = ""  # when the first phase started (carried through continue-as-new)
    ledger: list[LedgerEntry] = field(default_factory=list)  # what this run wrote to the audit ledger

    @classmethod
    def resume(cls, context: df.DurableOrchestrationContext, machine_input: MachineInput) -> Run:
        """A run from its input, with what an earlier phase carried (if it continued as new)."""
        carry = machine_input.carry
        if carry is None:
            return cls(context, machine_input, started_at=format_utc(context.current_utc_datetime))
        return cls(
            context, machine_input, facts=MachineFacts.from_json(carry.facts),
            readiness=Readiness.from_json(carry.readiness), baseline=carry.baseline, actions=list(carry.actions),
            reboots=carry.reboots, member=carry.member, workaround_done=carry.workaround_done,
            run_seq=carry.run_seq, plan=Plan(**carry.plan), started_at=carry.started_at,
            ledger=[LedgerEntry.from_json(e) for e in carry.ledger], baseline_detail=carry.baseline_detail,
            licensing_issue=carry.licensing_issue, assessed_reboot_pending=carry.assessed_reboot_pending,
        )

    def carry(self, phase: str) -> MachineInput:
        assert self.facts is not None and self.readiness is not None and self.plan is not None
        return replace(self.input, carry=MachineCarry(
            phase=phase, plan=asdict(self.plan), facts=self.facts.to_json(), readiness=self.readiness.to_json(),
            baseline=self.baseline, actions=list(self.actions), reboots=self.reboots, member=self.member,
            workaround_done=self.workaround_done, run_seq=self.run_seq, started_at=self.started_at,
            ledger=[e.to_json() for e in self.ledger], baseline_detail=self.baseline_detail,
            licensing_issue=self.licensing_issue, assessed_reboot_pending=self.assessed_reboot_pending,
        ))

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
        """The machine's ARM facts now (None when the resource is gone); keeps the latest and its baseline flag."""
        read = MachineRead.from_json((yield self.context.call_activity_with_retry(GET_MACHINE, ARM_RETRY, self.call())))
        if not read.found or not read.facts:
            return None
        if self.readiness is None:
            self.baseline, self.baseline_detail = read.baseline, read.baseline_detail
        self.facts = MachineFacts.from_json(read.facts)
        return self.facts

    def done(self, state: FinalState, reason: str, detail: str = "") -> None:
        raise Finished(Verdict(state, reason, detail))

    @property
    def run_key(self) -> str:
        """This run of the machine's orchestration (its instance id is reused by the next run)."""
        return f"{self.context.instance_id}@{self.started_at}"

    def entry(self, change: str, phase: str, detail: str = "", **parameters: Any) -> LedgerEntry:
        return LedgerEntry.of(self.machine_id, self.rollout_id, self.context.instance_id, change, phase, self.now,
                              {"run": self.run_key, **parameters}, detail)

    def record(self, *entries: LedgerEntry) -> Steps:
        """Write entries to the audit ledger (before a change is made: it is not made if this fails)."""
        yield self.context.call_activity_with_retry(LEDGER_WRITE_ALL, ARM_RETRY, LedgerBatch(list(entries)))
        self.ledger.extend(entries)

    def changes_made(self) -> None:
        """The report's actions and reboots from the ledger entries this run wrote (as for a terminated run, whose
        window reads them from the table): every change requested that did not fail before it was made."""
        self.actions, self.reboots = changes_made(self.ledger, self.context.instance_id, self.run_key)


@bp.function_name(MACHINE_ORCHESTRATOR)
@bp.orchestration_trigger(context_name="context")
def machine_orchestrator(context: df.DurableOrchestrationContext) -> Steps:
    run = Run.resume(context, MachineInput.from_json(context.get_input()))
    queued = deferred = False
    try:
        yield from workflow(run)
        verdict = Verdict(FinalState.HOTPATCH_ENABLED, Reason.ENABLED if run.actions else Reason.ALREADY_ENABLED)
    except NextPhase as next_phase:
        context.continue_as_new(run.carry(next_phase.phase).to_json())
        return None
    except Finished as finished:
        verdict = finished.verdict
        queued = verdict.reason == Reason.AWAITING_WAVE
        deferred = verdict.reason == Reason.AWAITING_RECHECK
    except Exception as exc:  # a bug or an unexpected payload: this machine is reported, never lost
        verdict = Verdict(FinalState.ESCALATED, Reason.ORCHESTRATION_FAILED, f"unexpected error: {_first_line(exc)}")
    return (yield from conclude(run, verdict, queued=queued, deferred=deferred))


def conclude(run: Run, verdict: Verdict, *, queued: bool = False, deferred: bool = False) -> Steps:
    """The end of a machine's run, whatever decided it: its actions from the ledger, the escalation handed to a
    human, the outcome recorded for the window that waits for it; returns the report row's JSON."""
    context = run.context
    if verdict.state != FinalState.PLANNED:  # planned: the actions it would take (nothing was written)
        run.changes_made()
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
    if run.input.record_under:
        # The window that waits for this machine reads its outcome from this record (and the report too).
        done = MachineDone(context.instance_id, run.machine_id, row, member=run.member, queued=queued,
                           assess_only=run.input.assess_only, deferred=deferred)
        record_id = outcome_record_id(run.input.record_under, queued, context.instance_id, deferred)
        with contextlib.suppress(Exception):  # it exists already: this outcome was recorded before
            yield context.call_sub_orchestrator(ROLLOUT_RECORD, done.to_json(), record_id)
    run.status("done", state=row.state, reason=row.reason)
    return row.to_json()  # plain JSON: the status API and the report show it as it is


def _name(run: Run) -> str:
    return run.facts.name if run.facts else parse_machine_id(run.machine_id)[2]


def report_row(run: Run, verdict: Verdict) -> ReportRow:
    """The machine's line of the report (SPEC §5)."""
    subscription_id, _, name = parse_machine_id(run.machine_id)
    facts = run.facts
    outlook = forecast(run.now, facts, run.readiness, run.baseline, run.baseline_detail, run.licensing_issue,
                       run.assessed_reboot_pending)
    return ReportRow(
        id=run.machine_id, subscription_id=subscription_id, name=facts.name if facts else name,
        state=verdict.state.value, reason=str(verdict.reason), actions=list(run.actions), reboots=run.reboots,
        os_version=facts.os_version_text if facts else "", baseline=run.baseline, detail=verdict.detail,
        started_at=run.started_at, finished_at=format_utc(run.now), next_update=outlook.next_update.value,
        next_update_detail=outlook.detail, wave=run.input.wave if run.member and not run.policy.dry_run else 0,
    )


# --- the workflow --------------------------------------------------------------------------------


def workflow(run: Run) -> Steps:
    """The phases of SPEC §2, each in an execution of its own: assess (checks 1-8, the plan), change (VSM, the
    workaround, the one reboot), enable (and, in reactive mode, the workaround when enablement is stuck)."""
    carry = run.input.carry
    phase = carry.phase if carry is not None else ASSESS
    if phase == ASSESS:
        plan = yield from assess(run)
        run.plan = plan
        if plan.reboot:
            raise NextPhase(CHANGE)
        if plan.enable_hotpatch or _enablement(run) != ENABLEMENT_ENABLED:
            raise NextPhase(ENABLE)  # to enable, or (already written) to wait until both levels say Enabled
        return
    plan = run.plan
    assert plan is not None and run.readiness is not None
    if phase == CHANGE:
        yield from change_and_reboot(run, enable_vsm=plan.enable_vsm, workaround=plan.licensing_workaround)
        if plan.enable_vsm and not run.readiness.vsm_running:
            run.done(
                FinalState.ESCALATED, Reason.VSM_NOT_RUNNING,
                f"VirtualizationBasedSecurityStatus {run.readiness.vbs_status} after reboot: check the hardware "
                "or hypervisor VBS support",
            )
        if plan.enable_hotpatch or _enablement(run) != ENABLEMENT_ENABLED:
            raise NextPhase(ENABLE)
        return
    if phase == ENABLE:
        facts = run.facts
        assert facts is not None
        if plan.enable_hotpatch:
            run.status("enabling_hotpatch")
            request = EnableRequest(run.call(), list(facts.license_features), create=not facts.license_in_use)
            yield from run.record(run.entry(Action.ENABLE_HOTPATCH.value, REQUESTED, create=request.create))
            yield run.context.call_activity_with_retry(ENABLE_HOTPATCH, ARM_RETRY, request)
            run.actions.append(Action.ENABLE_HOTPATCH.value)
        outcome = yield from wait_for_enablement(run)
        reactive = run.policy.workaround_mode == WorkaroundMode.REACTIVE and not run.workaround_done
        if outcome == "stuck" and reactive and workaround_applies(run.licensing_issue, run.readiness):
            raise NextPhase(REACTIVE)
    else:  # REACTIVE: enablement was stuck; the workaround and its reboot, then wait for it again
        yield from change_and_reboot(run, enable_vsm=False, workaround=True)
        outcome = yield from wait_for_enablement(run)
    enablement_escalation(run, outcome)
    if outcome == "stuck":
        run.done(
            FinalState.ESCALATED, Reason.ENABLE_STUCK,
            f"still Enabling after {run.policy.enable_timeout / 60:g} min: see the agent troubleshooting guide",
        )


def assess(run: Run) -> Steps:
    """Checks 1-8 and the plan: ends the run here when a check decides, or in a dry run, or when it only
    assesses for a wave not open yet."""
    policy = run.policy
    run.status("reading_machine")
    facts = yield from run.read_machine()
    if facts is None:
        run.done(FinalState.SKIPPED_DISCONNECTED, Reason.MACHINE_NOT_FOUND, "the Arc resource no longer exists")
    verdict = check_arm_facts(facts, policy.exclude_tag)
    if verdict and _read_again_later(run, verdict):
        if run.input.record_under:
            # Its window starts it again after the grace period; no slot is held while it waits.
            run.done(FinalState.PLANNED, Reason.AWAITING_RECHECK,
                     f"agent {facts.status}: read again in {policy.disconnected_grace / 60:g} min")
        run.status("waiting_for_agent", until=(run.now + timedelta(seconds=policy.disconnected_grace)).isoformat())
        yield run.context.create_timer(run.now + timedelta(seconds=policy.disconnected_grace))
        facts = yield from run.read_machine()
        if facts is None:
            run.done(FinalState.SKIPPED_DISCONNECTED, Reason.MACHINE_NOT_FOUND, "the Arc resource no longer exists")
        verdict = check_arm_facts(facts, policy.exclude_tag)
    verdict = verdict or check_run_command(facts)  # no script is sent to an agent that would refuse it
    if verdict:
        raise Finished(verdict)

    yield from settle_earlier_changes(run)
    run.status("checking_readiness")
    run.readiness = yield from read_readiness(run)
    if run.readiness.our_reboot_pending:
        # An earlier run (terminated, crashed, another trigger's) asked for a restart that has not happened:
        # wait for it and decide from the machine as it comes back; never ask for a second one.
        run.status("waiting_for_pending_reboot")
        readiness = yield from wait_for_reboot(run, run.now)
        if readiness is None:
            run.done(FinalState.ESCALATED, Reason.REBOOT_TIMEOUT,
                     f"a restart an earlier run asked for is still pending after {policy.reboot_timeout / 60:g} min")
        run.readiness = readiness
    verdict = check_readiness(run.readiness)
    if verdict:
        raise Finished(verdict)

    plan = plan_actions(run.readiness, facts.hotpatch_enabled, policy.workaround_mode, run.licensing_issue)
    run.member = bool(plan.actions)
    if not plan.actions:  # enrolled by its license already: a machine level that failed is no change of ours to make
        enablement_escalation(run, _enablement(run))
    if policy.assesses_patches:
        yield from assess_patches(run)
    if policy.dry_run:
        detail = ""
        if plan.reboot and policy.reboot_policy == RebootPolicy.NEVER:
            detail = "reboot policy 'never' would escalate this machine (reboot_required)"
        run.actions = plan.actions
        run.done(FinalState.PLANNED, Reason.DRY_RUN, detail)
    if run.input.assess_only and plan.actions:
        run.actions = plan.actions
        run.done(FinalState.PLANNED, Reason.AWAITING_WAVE, "assessed: waits for its wave")
    return plan


def settle_earlier_changes(run: Run) -> Steps:
    """An apply_changes that an earlier orchestration of this machine requested and never saw end (terminated,
    crashed, another trigger's) may still run: wait until its Run Command is no longer running, so what is
    read next is what it left (a pending restart included, which the readiness script reports)."""
    if run.policy.dry_run:
        return
    entries = [LedgerEntry.from_json(e) for e in (yield run.context.call_activity_with_retry(
        LEDGER_READ, ARM_RETRY, run.machine_id))]
    earlier = unsettled_change(entries, run.run_key)
    if earlier is None:
        return
    run.status("waiting_for_earlier_change", instance=earlier.instance_id)
    request = ScriptRequest(run.call(), script=APPLY_CHANGES, run_name=run_command_name(APPLY_CHANGES),
                            request_id="", timeout_s=REBOOTING_SCRIPT_TIMEOUT_S)
    deadline = run.now + timedelta(seconds=REBOOTING_SCRIPT_TIMEOUT_S)
    while run.now < deadline:
        result = ScriptResult.from_json((yield run.context.call_activity(READ_SCRIPT, request)))
        if result.status != ScriptResult.RUNNING:
            return
        yield run.context.create_timer(min(run.now + timedelta(seconds=SCRIPT_POLL_S), deadline))


def run_command_name(script: str) -> str:
    """The machine's one run command resource for ``script`` (re-run by PUT): ``hotpatch-apply-changes``."""
    return f"hotpatch-{script.replace('_', '-')}"


def _read_again_later(run: Run, verdict: Verdict) -> bool:
    """An agent read as not Connected may be a flap (an agent restart, a network blip): read it once more after
    ``disconnected_grace`` before skipping it. Not in a dry run (it reports what it sees), not twice."""
    return (verdict.state == FinalState.SKIPPED_DISCONNECTED and verdict.reason != Reason.MACHINE_NOT_FOUND
            and not run.input.recheck and not run.policy.dry_run and run.policy.disconnected_grace > 0)


def read_readiness(run: Run, attempts: int | None = None, deadline: datetime | None = None) -> Steps:
    """Run the readiness script (with retries); escalates ``run_command_failed`` when it keeps failing.

    With ``attempts=1`` (polling around a reboot, where failures and lost results are expected) a failure
    returns None, and a run that has not reported within ``READINESS_RETRY_AFTER_REBOOT_S`` counts as lost.
    """
    timeout_s = READINESS_RETRY_AFTER_REBOOT_S if attempts == 1 else None
    result = yield from run_script(run, "readiness", {}, attempts=attempts, deadline=deadline, timeout_s=timeout_s)
    if not result.succeeded:
        if attempts == 1:
            return None
        run.done(FinalState.ESCALATED, Reason.RUN_COMMAND_FAILED, f"readiness: {result.error}")
    run.baseline, run.baseline_detail, run.licensing_issue = (result.baseline, result.baseline_detail,
                                                              result.licensing_issue)
    return Readiness.from_json(result.result or {})


def run_script(
    run: Run, script: str, parameters: dict[str, Any], *, accept_lost: bool = False, attempts: int | None = None,
    deadline: datetime | None = None, timeout_s: float | None = None,
) -> Steps:
    """One script through Run Command, retried with exponential backoff on durable timers.

    Each attempt starts the script (one activity: the PUT) and reads it after durable timers (one
    activity per look) until it ends or its timeout passes (``lost``). Returns the first usable
    result (``succeeded``, or ``lost`` when ``accept_lost``), else the last one; ``run.script_started_at``
    is when the attempt that gave it started. Nothing waits past ``deadline`` (the run timeout shrinks).
    """
    total = attempts or max(3, run.policy.run_command_attempts)
    limit = timeout_s or (REBOOTING_SCRIPT_TIMEOUT_S if accept_lost else run.policy.run_command_timeout)
    timeout_s = min(run.policy.run_command_timeout, limit)
    result = ScriptResult(ScriptResult.FAILED, error="not run")
    for attempt in range(1, total + 1):
        if deadline is not None:
            left = (deadline - run.now).total_seconds()
            if left <= 0:
                break
            timeout_s = min(timeout_s, left)
        run.run_seq += 1
        run.script_started_at = run.now
        request_id = f"{run_command_name(script)}-{run.now:%Y%m%d%H%M%S}-{run.run_seq}"
        request = ScriptRequest(
            run.call(), script=script, run_name=run_command_name(script), request_id=request_id,
            parameters={"RequestId": request_id, **parameters}, timeout_s=timeout_s,
        )
        result = yield from _script_attempt(run, request, lost_is_likely=accept_lost)
        if result.succeeded or (result.status == ScriptResult.LOST and accept_lost):
            return result
        if attempt < total:
            retry_at = run.now + timedelta(seconds=RUN_RETRY_BASE_S * 2 ** (attempt - 1))
            yield run.context.create_timer(min(retry_at, deadline) if deadline is not None else retry_at)
    return result


def _script_attempt(run: Run, request: ScriptRequest, lost_is_likely: bool = False) -> Steps:
    """Start the script, then look at it on durable timers until it ends or its deadline passes.

    ``lost_is_likely``: a script that stops himds or reboots is looked at once: still running then, it
    will not report (the caller verifies from the machine instead of waiting for its timeout).
    """
    started_at = run.now
    try:
        started = ScriptResult.from_json((yield run.context.call_activity(START_SCRIPT, request)))
        if started.status != ScriptResult.RUNNING:
            return started
        deadline = run.now + timedelta(seconds=request.timeout_s)
        look = timedelta(seconds=SCRIPT_FIRST_LOOK_S)
        while True:
            yield run.context.create_timer(min(run.now + look, deadline))
            look = timedelta(seconds=SCRIPT_POLL_S)
            result = ScriptResult.from_json((yield run.context.call_activity(READ_SCRIPT, request)))
            if result.status != ScriptResult.RUNNING:
                return result
            if run.now >= deadline or lost_is_likely:
                return ScriptResult(ScriptResult.LOST, error=f"no result after {(run.now - started_at).seconds} s")
    except Finished:
        raise
    except Exception as exc:  # an ARM error that outlived the SDK's own retries
        return ScriptResult(ScriptResult.FAILED, error=_first_line(exc))


def usable(result: ScriptResult) -> bool:
    return result.status in (ScriptResult.SUCCEEDED, ScriptResult.LOST)


def script_failed(run: Run, script: str, result: ScriptResult) -> None:
    attempts = max(3, run.policy.run_command_attempts)
    run.done(FinalState.ESCALATED, Reason.RUN_COMMAND_FAILED, f"{script} failed {attempts} times: {result.error}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].strip()[:300] if text else type(exc).__name__


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
    """Make the changes that need a reboot and schedule it, in one script run; wait until the machine is back.

    The script sets VSM, applies the workaround (it stops himds, so its result may never come back)
    and schedules the reboot; whether it all happened is read from the machine after the reboot.
    """
    yield from reboot_gate(run)
    run.status("applying_changes", enable_vsm=enable_vsm, licensing_workaround=workaround)
    changes = [c.value for c, wanted in ((Action.ENABLE_VSM, enable_vsm), (Action.LICENSING_WORKAROUND, workaround),
                                         (Action.REBOOT, True)) if wanted]
    script_id = f"{run.run_key}:{run.run_seq + 1}"  # tells this apply_changes from others in the ledger
    yield from run.record(*(run.entry(c, REQUESTED, request_id=script_id) for c in [APPLY_CHANGES, *changes]))
    result = yield from run_script(
        run, APPLY_CHANGES,
        {"EnableVsm": int(enable_vsm), "ApplyWorkaround": int(workaround), "RebootDelaySeconds": REBOOT_DELAY_S},
        accept_lost=True,
    )
    if not usable(result):
        yield from run.record(*(run.entry(c, FAILED, result.error, request_id=script_id, made=False)
                                for c in [APPLY_CHANGES, *changes]))
        script_failed(run, APPLY_CHANGES, result)
    requested_at = run.script_started_at  # the attempt that scheduled the reboot (earlier ones changed nothing)
    assert requested_at is not None
    if enable_vsm:
        run.actions.append(Action.ENABLE_VSM.value)
    if workaround:
        run.actions.append(Action.LICENSING_WORKAROUND.value)
        run.workaround_done = True
    run.actions.append(Action.REBOOT.value)
    run.reboots += 1
    run.assessed_reboot_pending = None  # an assessment from before this reboot no longer says anything
    readiness = yield from wait_for_reboot(run, requested_at)
    yield from run.record(*_outcomes(run, readiness, [APPLY_CHANGES, *changes], script_id))
    if readiness is None:
        run.done(
            FinalState.ESCALATED, Reason.REBOOT_TIMEOUT,
            f"not back within {run.policy.reboot_timeout / 60:g} min of the reboot request at {requested_at}",
        )
    run.readiness = readiness


def _outcomes(run: Run, readiness: Readiness | None, changes: list[str], script_id: str) -> list[LedgerEntry]:
    """What the machine shows of each change after the reboot wait (verified, never taken from the script)."""
    shown = {
        APPLY_CHANGES: readiness is not None,
        Action.REBOOT.value: readiness is not None,
        Action.ENABLE_VSM.value: readiness is not None and readiness.vsm_running,
        Action.LICENSING_WORKAROUND.value: readiness is not None and readiness.workaround_active,
    }
    detail = "seen on the machine after the reboot" if readiness is not None else "the machine did not come back"
    return [run.entry(c, DONE if shown[c] else FAILED, detail, request_id=script_id) for c in changes]


def wait_for_reboot(run: Run, requested_at: datetime) -> Steps:
    """Poll until the machine is Connected with a boot time after ``requested_at`` (verify, never trust
    the script's own report). Returns the fresh readiness, or None at the reboot timeout."""
    deadline = requested_at + timedelta(seconds=run.policy.reboot_timeout)
    poll = timedelta(seconds=run.policy.reboot_poll_interval)
    run.status("waiting_for_reboot", requested_at=requested_at.isoformat())
    yield run.context.create_timer(min(requested_at + timedelta(seconds=REBOOT_FIRST_CHECK_S), deadline))
    while True:
        facts = yield from run.read_machine()
        unread = False
        if facts is not None and facts.status == "Connected":
            # Failures are expected around a reboot; the run's timeout ends at the reboot deadline.
            readiness = yield from read_readiness(run, attempts=1, deadline=deadline)
            if readiness is not None and parse_utc(readiness.last_boot) > requested_at:
                return readiness
            unread = readiness is None  # a lost or failed result: a machine back in time is seen in time
        if run.now >= deadline:
            return None
        wait = timedelta(seconds=READ_AGAIN_S) if unread else poll
        yield run.context.create_timer(min(run.now + wait, deadline))


def wait_for_enablement(run: Run) -> Steps:
    """Poll the machine until both levels say Enabled, one fails, or ``stuck`` at the enable timeout; the outcome
    of a write this run made goes to the ledger."""
    outcome = yield from _poll_enablement(run)
    if Action.ENABLE_HOTPATCH.value in run.actions:
        yield from run.record(run.entry(Action.ENABLE_HOTPATCH.value, DONE if outcome == ENABLEMENT_ENABLED else FAILED,
                                        f"Hotpatch {outcome}", made=True))
    return outcome


def _enablement(run: Run) -> str:
    return run.facts.enablement if run.facts is not None else ENABLEMENT_PENDING


def enablement_escalation(run: Run, outcome: str) -> None:
    """A level that reports Failed, or a machine that reports ActionRequired, escalates at once with Azure's
    error text (there is nothing to wait for)."""
    error = run.facts.enablement_error if run.facts else ""
    said = f": {error}" if error else ""
    if outcome == ENABLEMENT_FAILED:
        run.done(FinalState.ESCALATED, Reason.ENABLE_FAILED, f"the Hotpatch feature reported Failed{said}")
    if outcome == ENABLEMENT_ACTION_REQUIRED:
        run.done(FinalState.ESCALATED, Reason.ENABLE_ACTION_REQUIRED,
                 f"the machine reports hotpatchEnablementStatus ActionRequired{said or ' (no error text)'}")


def _poll_enablement(run: Run) -> Steps:
    """Until both levels say Enabled (``enabled``), one reports Failed or ActionRequired, or ``stuck`` at the
    deadline; PendingEvaluation and Enabling keep waiting."""
    deadline = run.now + timedelta(seconds=run.policy.enable_timeout)
    poll = timedelta(seconds=run.policy.enable_poll_interval)
    run.status("waiting_for_enablement", until=deadline.isoformat())
    wait = max(poll, timedelta(seconds=ENABLE_FIRST_CHECK_S))
    while True:
        yield run.context.create_timer(min(run.now + wait, deadline))
        wait = poll
        facts = yield from run.read_machine()
        outcome = facts.enablement if facts is not None else ENABLEMENT_PENDING
        if outcome != ENABLEMENT_PENDING:
            return outcome
        if run.now >= deadline:
            return "stuck"


def assess_patches(run: Run) -> Steps:
    """Update Manager's patch assessment (``assess_patches``), for the forecast's pending-reboot signal: started by
    one activity, read on durable timers by another until it ends or its timeout passes. A failed or unfinished
    assessment leaves the forecast to the readiness script's signals."""
    run.status("assessing_patches")
    result = yield from patch_operation(run, START_ASSESSMENT, PatchRequest(run.call()),
                                        run.now + timedelta(seconds=ASSESSMENT_TIMEOUT_S),
                                        ASSESSMENT_FIRST_LOOK_S, ASSESSMENT_POLL_S)
    run.assessed_reboot_pending = result.reboot_pending if result.status == PatchResult.SUCCEEDED else None


def patch_operation(run: Run, start: str, request: PatchRequest, deadline: datetime, first_look_s: float,
                    poll_s: float) -> Steps:
    """An Update Manager operation: started by the ``start`` activity, its Location read on durable timers until it
    ends or ``deadline`` passes (then it is reported failed, still running)."""
    result = PatchResult.from_json((yield run.context.call_activity_with_retry(start, ARM_RETRY, request)))
    look = timedelta(seconds=first_look_s)
    while result.status == PatchResult.RUNNING and run.now < deadline:
        yield run.context.create_timer(min(run.now + look, deadline))
        look = timedelta(seconds=poll_s)
        result = PatchResult.from_json((yield run.context.call_activity_with_retry(
            READ_PATCH_OPERATION, ARM_RETRY, replace(request, operation_url=result.operation_url))))
    if result.status == PatchResult.RUNNING:
        return PatchResult(PatchResult.FAILED, error=f"still running at {deadline:%Y-%m-%d %H:%M} UTC")
    return result
