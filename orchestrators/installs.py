"""The per-machine hotpatch installation: this month's hotpatches through Update Manager's ``installPatches``,
never rebooting, and verified on the machine afterwards.

Deterministic like the enrollment workflow it shares its steps with (``orchestrators.machine``): it reads the
machine, settles what must not be touched (not enrolled, this month's update would reboot it, or we cannot tell),
installs on durable timers, and reads the boot time before and after (the result alone is never trusted).
Started by a rollout window with the same waves, scope, concurrency and guardrail as an enrollment rollout; a
machine a wave has not reached yet ends ``planned`` / ``awaiting_wave`` after its assessment.
"""

from __future__ import annotations

from datetime import timedelta

import azure.durable_functions as df

from core.contracts import (
    INSTALL_ORCHESTRATOR,
    START_INSTALL,
    MachineInput,
    PatchRequest,
    PatchResult,
)
from core.facts import ENABLEMENT_ENABLED
from core.forecast import current_update_day, forecast
from core.ledger import DONE, FAILED, REQUESTED
from core.rules import Verdict, check_arm_facts, check_run_command
from core.schedule import parse_utc
from core.vocabulary import Action, FinalState, InstallReason, InstallState, NextUpdate, Reason

from .machine import Finished, Run, conclude, patch_operation, read_readiness
from .machine import _first_line as first_line

bp = df.Blueprint()

INSTALL_DURATION = timedelta(hours=2)  # installPatches' maximumDuration: hotpatches install in minutes
INSTALL_FIRST_LOOK_S = 5 * 60
INSTALL_POLL_S = 60
INSTALL_GRACE_S = 15 * 60  # past maximumDuration ARM still reports the outcome; after that we stop looking


@bp.function_name(INSTALL_ORCHESTRATOR)
@bp.orchestration_trigger(context_name="context")
def install_orchestrator(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    run = Run.resume(context, MachineInput.from_json(context.get_input()))
    queued = False
    try:
        yield from install_workflow(run)
        raise AssertionError("the installation workflow ends with a verdict")
    except Finished as finished:
        verdict = finished.verdict
        queued = verdict.reason == Reason.AWAITING_WAVE
    except Exception as exc:  # a bug or an unexpected payload: this machine is reported, never lost
        verdict = Verdict(InstallState.ESCALATED, Reason.ORCHESTRATION_FAILED, f"unexpected error: {first_line(exc)}")
    return (yield from conclude(run, verdict, queued=queued))


def install_workflow(run: Run):  # type: ignore[no-untyped-def]
    """Read, settle what must not be touched, install (once its wave is open), verify."""
    run.status("reading_machine")
    facts = yield from run.read_machine()
    if facts is None:
        run.done(InstallState.NOT_ENROLLED, Reason.MACHINE_NOT_FOUND, "the Arc resource no longer exists")
    verdict = check_arm_facts(facts, run.policy.exclude_tag)
    if verdict is not None and verdict.state == FinalState.SKIPPED_DISCONNECTED:
        run.done(InstallState.ESCALATED, verdict.reason, f"{verdict.detail}: this month's hotpatches cannot reach it")
    if verdict is not None:
        run.done(InstallState.NOT_ENROLLED, verdict.reason, verdict.detail)
    if facts.enablement != ENABLEMENT_ENABLED:
        run.done(InstallState.NOT_ENROLLED, InstallReason.LICENSE_NOT_ENABLED,
                 f"Hotpatch license {facts.hotpatch_feature_status or 'not set'}, machine level "
                 f"{facts.hotpatch_enablement_status or 'not reported'}: enroll it first (a rollout)")
    blocked = check_run_command(facts)  # the boot time is read with the readiness script
    if blocked is not None:
        run.done(InstallState.ESCALATED, blocked.reason, blocked.detail)
    run.status("checking_readiness")
    before = yield from read_readiness(run)
    run.readiness = before
    month = forecast(run.now, facts, before, run.baseline, run.baseline_detail, run.licensing_issue,
                     day=current_update_day(run.now))
    if month.next_update == NextUpdate.REBOOT:
        run.done(InstallState.REBOOT_REQUIRED, InstallReason.FORECAST_REBOOT, month.detail)
    if month.next_update != NextUpdate.HOTPATCH:
        run.done(InstallState.REBOOT_REQUIRED, InstallReason.FORECAST_UNKNOWN, f"not touched: {month.detail}")
    run.member = True  # it installs: a wave's machine
    if run.policy.dry_run:
        run.actions = [Action.INSTALL_HOTPATCHES.value]
        run.done(FinalState.PLANNED, Reason.DRY_RUN, month.detail)
    if run.input.assess_only:
        run.actions = [Action.INSTALL_HOTPATCHES.value]
        run.done(FinalState.PLANNED, Reason.AWAITING_WAVE, "assessed: waits for its wave")

    result = yield from install(run)
    run.status("verifying")
    after = yield from read_readiness(run)
    run.readiness = after
    rebooted = parse_utc(after.last_boot) > parse_utc(before.last_boot)
    outcome = _outcome(result, rebooted, before.last_boot, after.last_boot)
    yield from run.record(run.entry(Action.INSTALL_HOTPATCHES.value, FAILED if outcome.state == InstallState.ESCALATED
                                    else DONE, outcome.detail, made=True))
    raise Finished(outcome)


def install(run: Run):  # type: ignore[no-untyped-def]
    """installPatches (recorded in the ledger first), read on durable timers until it ends or its deadline passes."""
    run.status("installing_hotpatches")
    yield from run.record(run.entry(Action.INSTALL_HOTPATCHES.value, REQUESTED))
    duration = f"PT{int(INSTALL_DURATION.total_seconds() // 3600)}H"
    deadline = run.now + INSTALL_DURATION + timedelta(seconds=INSTALL_GRACE_S)
    return (yield from patch_operation(run, START_INSTALL, PatchRequest(run.call(), maximum_duration=duration),
                                       deadline, INSTALL_FIRST_LOOK_S, INSTALL_POLL_S))


def _outcome(result: PatchResult, rebooted: bool, before: str, after: str) -> Verdict:
    """The verified outcome: a reboot (seen in the boot time, never taken from the result) escalates; then what
    installPatches reports."""
    if rebooted:
        return Verdict(InstallState.ESCALATED, InstallReason.UNEXPECTED_REBOOT,
                       f"the machine booted during the installation (last boot {before} -> {after})")
    if result.status != PatchResult.SUCCEEDED:
        return Verdict(InstallState.ESCALATED, InstallReason.INSTALL_FAILED, result.error or "installPatches failed")
    if result.failed_count:
        return Verdict(InstallState.ESCALATED, InstallReason.INSTALL_FAILED,
                       f"{result.failed_count} update(s) failed to install ({result.installed} installed)")
    if result.pending:
        return Verdict(InstallState.REBOOT_REQUIRED, InstallReason.UPDATES_PENDING,
                       f"{result.installed} installed, {result.pending} left that need a reboot "
                       f"(rebootStatus {result.reboot_status}; not rebooted)")
    if result.installed:
        return Verdict(InstallState.HOTPATCH_INSTALLED, InstallReason.INSTALLED,
                       f"{result.installed} hotpatch(es) installed without a reboot")
    return Verdict(InstallState.NOTHING_TO_INSTALL, InstallReason.UP_TO_DATE, "nothing to install")
