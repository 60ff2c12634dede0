"""Activities: each one Azure call (or one Run Command script), idempotent, JSON in and out.

They run at least once (a retry or a host restart may run one twice), so every
write here is safe to repeat: a license merge that is already applied writes
the same state again, a Run Command name is unique per orchestration step and
attempt, and a run that already exists under that name is followed, not
started again.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import azure.durable_functions as df
import requests
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.mgmt.hybridcompute import HybridComputeManagementClient

from core.azure_clients import ArmConnection, hybrid_compute_client, lro_polling, subscription_client
from core.baselines import baseline_flag, load_baselines
from core.clock import current_clock
from core.contracts import (
    COUNT_MACHINES,
    ENABLE_HOTPATCH,
    ESCALATE,
    GET_HOTPATCH_STATUS,
    GET_MACHINE,
    LIST_MACHINES_FROM,
    LIST_SUBSCRIPTIONS,
    RUN_SCRIPT,
    Cursor,
    Discovery,
    Escalation,
    Listing,
    ListingRequest,
    MachineCall,
    MachineCount,
    MachineRead,
    ScriptRequest,
    ScriptResult,
)
from core.facts import facts_from_arm, hotpatch_feature_status, parse_machine_id
from core.licensing import merged_hotpatch_update, new_hotpatch_profile
from core.readiness import ScriptOutputError, parse_action_output, parse_readiness

from .permissions import requires_arm_actions

bp = df.Blueprint()
log = logging.getLogger("arc_hotpatch.activities")
audit_log = logging.getLogger("arc_hotpatch.audit")

SCRIPTS_DIR = Path(__file__).parent / "scripts"
SCRIPT_NAMES = ("readiness", "enable_vsm", "licensing_workaround", "reboot")
CHANGING_SCRIPTS = {"enable_vsm", "licensing_workaround", "reboot"}  # everything but the read-only readiness
TERMINAL_RUN_STATES = {"Succeeded", "Failed", "TimedOut", "Canceled"}
RUN_POLL_FIRST_S = 15.0  # instance view polls back off from here ...
RUN_POLL_MAX_S = 30.0  # ... to here
# Polling a long-running write reads its status under the provider's locations (as the built-in roles grant).
LRO_STATUS_ACTIONS = (
    "Microsoft.HybridCompute/locations/operationstatus/read",
    "Microsoft.HybridCompute/locations/operationresults/read",
)
TOKEN_ENV = "HOTPATCH_ARM_TOKEN"  # development only: a static bearer token for the fleet twin


def script_text(name: str) -> str:
    if name not in SCRIPT_NAMES:
        raise ValueError(f"unknown script {name!r}: expected one of {', '.join(SCRIPT_NAMES)}")
    return (SCRIPTS_DIR / f"{name}.ps1").read_text("utf-8")


def _connection(arm_endpoint: str) -> ArmConnection:
    """The ARM connection for the policy's resolved endpoint.

    Orchestrations pass the endpoint, not the whole policy: every activity input is kept in
    the history and replayed, so inputs stay small.
    """
    return ArmConnection.for_endpoint(arm_endpoint, token=os.environ.get(TOKEN_ENV) or None)


def _client(call: MachineCall) -> HybridComputeManagementClient:
    subscription_id, _, _ = parse_machine_id(call.machine_id)
    return hybrid_compute_client(_connection(call.arm_endpoint), subscription_id)


def audit(call: MachineCall, change: str, **details: Any) -> None:
    """The audit trail: one structured line per change made to a machine, written where the change is made.

    In Azure these land in Application Insights (``traces``, logger ``arc_hotpatch.audit``) with the
    invocation's operation id, queryable per machine or rollout.
    """
    record = {
        "kind": "arc_hotpatch.audit", "at": current_clock().now().isoformat(), "machine_id": call.machine_id,
        "rollout_id": call.rollout_id, "change": change, **details,
    }
    audit_log.info("audit %s", json.dumps(record, sort_keys=True))


def _as_dict(model: Any) -> dict[str, Any]:
    return model.as_dict() if hasattr(model, "as_dict") else dict(model)


# --- discovery -----------------------------------------------------------------------------


@bp.function_name(LIST_SUBSCRIPTIONS)
@bp.activity_trigger(input_name="arm_endpoint")
@requires_arm_actions("Microsoft.Resources/subscriptions/read")
def list_subscriptions(arm_endpoint: str) -> list[str]:
    """Every subscription the identity can read (used when none are configured)."""
    client = subscription_client(_connection(arm_endpoint))
    return sorted(str(s.subscription_id).lower() for s in client.subscriptions.list())


def _machine_pages(where: Discovery, continuation: str | None) -> Any:
    """Pages of the subscription's (or resource group's) machines, from ``continuation`` (a nextLink)."""
    client = hybrid_compute_client(_connection(where.arm_endpoint), where.subscription_id)
    pager = (
        client.machines.list_by_resource_group(where.resource_group)
        if where.resource_group
        else client.machines.list_by_subscription()
    )
    return pager.by_page(continuation_token=continuation)


@bp.function_name(COUNT_MACHINES)
@bp.activity_trigger(input_name="where")
@requires_arm_actions("Microsoft.HybridCompute/machines/read")
def count_machines(where: Discovery) -> MachineCount:
    """How many Arc machines the subscription (or resource group) has: pages through all of them.

    A subscription or resource group that does not exist, or that the identity may not read, is
    an answer (``count`` 0 with the ARM ``error``), so the rest of the fleet still rolls out;
    throttling and server errors that outlive the SDK's retries still raise (retried later).
    """
    where = Discovery.from_json(where)
    try:
        return MachineCount(sum(sum(1 for _ in page) for page in _machine_pages(where, None)))
    except HttpResponseError as exc:
        if exc.status_code == 429 or (exc.status_code or 0) >= 500:
            raise
        return MachineCount(0, error=_arm_message(exc))


@bp.function_name(LIST_MACHINES_FROM)
@bp.activity_trigger(input_name="request")
@requires_arm_actions("Microsoft.HybridCompute/machines/read")
def list_machines_from(request: ListingRequest) -> Listing:
    """Up to ``take`` machine ids from the cursor (a page's nextLink and an offset in it), and the next cursor.

    A cursor is a page's continuation plus an offset in it, so an orchestration
    can walk a subscription of any size carrying a few bytes of state; only ids
    are returned (the machine orchestration reads each machine itself).
    """
    request = ListingRequest.from_json(request)
    cursor, take = request.cursor, request.take
    if cursor.done:
        return Listing([], cursor)
    ids: list[str] = []
    page_token, skip = cursor.page, cursor.skip
    pages = _machine_pages(request.where, page_token)
    for page in pages:
        items = [str(_as_dict(m)["id"]) for m in page]
        wanted = items[skip : skip + take - len(ids)]
        ids.extend(wanted)
        if len(ids) >= take and skip + len(wanted) < len(items):
            return Listing(ids, Cursor(page_token, skip + len(wanted)))
        page_token, skip = pages.continuation_token, 0
        if page_token is None:
            return Listing(ids, Cursor(done=True))
        if len(ids) >= take:
            break
    return Listing(ids, Cursor(page_token))


# --- one machine -----------------------------------------------------------------------------


@bp.function_name(GET_MACHINE)
@bp.activity_trigger(input_name="call")
@requires_arm_actions("Microsoft.HybridCompute/machines/read")
def get_machine(call: MachineCall) -> MachineRead:
    """The machine's facts (SPEC §2) from GET with ``$expand=instanceView`` and their baseline flag; not found
    if it is gone."""
    call = MachineCall.from_json(call)
    _, resource_group, name = parse_machine_id(call.machine_id)
    try:
        machine = _client(call).machines.get(resource_group, name, expand="instanceView")
    except ResourceNotFoundError:
        return MachineRead(found=False)
    facts = facts_from_arm(_as_dict(machine))
    version = facts.os_version
    flag = baseline_flag(version.build if version else None, version.revision if version else None, None,
                         load_baselines(call.baselines_file))
    return MachineRead(found=True, facts=facts.to_json(), baseline=flag.value)


@bp.function_name(RUN_SCRIPT)
@bp.activity_trigger(input_name="request")
@requires_arm_actions(
    "Microsoft.HybridCompute/machines/runCommands/write",
    "Microsoft.HybridCompute/machines/runCommands/read",
    "Microsoft.HybridCompute/machines/runCommands/delete",
    *LRO_STATUS_ACTIONS,
)
def run_script(request: ScriptRequest) -> ScriptResult:
    """Run one of our scripts through Arc Run Command and wait for its result.

    Returns ``succeeded`` (with ``result``, the parsed JSON line), ``failed`` (with ``error``) or
    ``lost`` (no terminal state before the timeout: expected for a script that stops himds or
    reboots; the caller verifies by re-reading facts). The run command resource is deleted when done.
    """
    request = ScriptRequest.from_json(request)
    call, script = request.machine, request.script
    text = script_text(script)
    _, resource_group, machine = parse_machine_id(call.machine_id)
    run_name = request.run_name
    timeout_s = float(request.timeout_s or 600)
    runs = _client(call).machine_run_commands
    body = {
        "location": call.location,
        "properties": {
            "source": {"script": text},
            # Data only as parameters: the script text never has values formatted into it.
            "parameters": [{"name": k, "value": str(v)} for k, v in sorted(request.parameters.items())],
            "asyncExecution": True,  # the PUT returns once started; we follow the instance view
            "timeoutInSeconds": int(timeout_s),
        },
    }
    clock = current_clock()
    started = clock.now()
    try:
        existing = _as_dict(runs.get(resource_group, machine, run_name))
    except ResourceNotFoundError:
        existing = None
    if existing is None:  # a second execution of this activity follows the first run instead of starting another
        try:
            # No LRO wait: with asyncExecution the operation only says the agent took the script;
            # the instance view below says the same and more.
            runs.begin_create_or_update(resource_group, machine, run_name, body, polling=False)
        except ResourceExistsError:
            pass  # 409: the same run is already executing; follow it below
        except HttpResponseError as exc:
            # Throttling and server errors outlived the SDK's retries: let the caller retry later.
            # A rejection (4xx) is the run's own failure.
            if exc.status_code == 429 or (exc.status_code or 0) >= 500:
                raise
            return ScriptResult(ScriptResult.FAILED, error=f"Run Command not started: {_arm_message(exc)}")
    outcome = ScriptResult(ScriptResult.LOST, error=f"no result within {int(timeout_s)} s")
    poll = RUN_POLL_FIRST_S
    while True:
        clock.sleep(poll)  # no script finishes at once: look after the first interval
        properties = _as_dict(runs.get(resource_group, machine, run_name)).get("properties") or {}
        view = properties.get("instanceView") or {}
        state = view.get("executionState") or "Unknown"
        if state in TERMINAL_RUN_STATES:
            outcome = _script_outcome(script, state, view, call.baselines_file)
            break
        if properties.get("provisioningState") == "Failed":
            error = view.get("error") or "failed"
            outcome = ScriptResult(ScriptResult.FAILED, error=f"Run Command not started: {error}")
            break
        if (clock.now() - started).total_seconds() >= timeout_s:
            break
        poll = min(poll * 2, RUN_POLL_MAX_S)
    _delete_run(runs, resource_group, machine, run_name)
    log.info("run_command machine=%s script=%s run=%s status=%s", call.machine_id, script, run_name, outcome.status)
    if script in CHANGING_SCRIPTS:  # every attempt, failed ones too (a failed script may have changed something)
        audit(call, script, run_name=run_name, parameters=request.parameters, started_at=started.isoformat(),
              outcome=outcome.status, error=outcome.error)
    return outcome


def _arm_message(exc: HttpResponseError) -> str:
    error = getattr(exc, "error", None)
    if error is not None and getattr(error, "code", None):
        return f"{error.code}: {error.message}"
    return str(exc.message or exc).splitlines()[0]


def _script_outcome(script: str, state: str, view: dict[str, Any], baselines_file: str) -> ScriptResult:
    if state != "Succeeded" or view.get("exitCode") not in (0, None):
        detail = (view.get("error") or view.get("executionMessage") or "").strip()[-500:]
        return ScriptResult(ScriptResult.FAILED, error=f"{state}, exit code {view.get('exitCode')}: {detail}")
    try:
        if script == "readiness":
            readiness = parse_readiness(view.get("output"))
            flag = baseline_flag(readiness.build, readiness.ubr, readiness.hotfixes, load_baselines(baselines_file))
            return ScriptResult(ScriptResult.SUCCEEDED, result=readiness.to_json(), baseline=flag.value)
        return ScriptResult(ScriptResult.SUCCEEDED, result=parse_action_output(view.get("output"), script))
    except ScriptOutputError as exc:
        return ScriptResult(ScriptResult.FAILED, error=f"unusable output: {exc}")


def _delete_run(runs: Any, resource_group: str, machine: str, run_name: str) -> None:
    """Delete the finished run command; a failure here never fails the step (it is only clean-up)."""
    try:
        runs.begin_delete(resource_group, machine, run_name, polling=False)  # no need to wait for it to go
    except ResourceNotFoundError:
        pass
    except HttpResponseError as exc:
        log.warning("run_command_cleanup_failed run=%s error=%s", run_name, _arm_message(exc))


@bp.function_name(ENABLE_HOTPATCH)
@bp.activity_trigger(input_name="call")
@requires_arm_actions(
    "Microsoft.HybridCompute/machines/licenseProfiles/read",
    "Microsoft.HybridCompute/machines/licenseProfiles/write",
    *LRO_STATUS_ACTIONS,
)
def enable_hotpatch(call: MachineCall) -> dict[str, Any]:
    """GET the license profile, merge only the Hotpatch feature, write it back.

    Existing profile: PATCH with the merged feature list (keeps esuProfile and
    software assurance; a PUT would drop what it does not carry). No profile
    yet: PUT a new one. Never the top-level productProfile.subscriptionStatus
    (that enrolls billed pay-as-you-go).
    """
    call = MachineCall.from_json(call)
    _, resource_group, machine = parse_machine_id(call.machine_id)
    profiles = _client(call).license_profiles
    try:
        current = _as_dict(profiles.get(resource_group, machine))
    except ResourceNotFoundError:
        current = None
    if current is None:
        body = new_hotpatch_profile(call.location)
        poller = profiles.begin_create_or_update(resource_group, machine, body, polling=lro_polling(call.arm_endpoint))
        operation = "put"
    else:
        body = merged_hotpatch_update(current)
        poller = profiles.begin_update(resource_group, machine, body, polling=lro_polling(call.arm_endpoint))
        operation = "patch"
    result = _as_dict(poller.result())
    audit(call, "enable_hotpatch", operation=operation, body=body,
          status=hotpatch_feature_status(result.get("properties")))
    return {"operation": operation, "status": hotpatch_feature_status(result.get("properties"))}


@bp.function_name(GET_HOTPATCH_STATUS)
@bp.activity_trigger(input_name="call")
@requires_arm_actions("Microsoft.HybridCompute/machines/licenseProfiles/read")
def get_hotpatch_status(call: MachineCall) -> str | None:
    """The Hotpatch feature's status (Enabling, Enabled, Failed, ...), None without a profile."""
    call = MachineCall.from_json(call)
    _, resource_group, machine = parse_machine_id(call.machine_id)
    try:
        profile = _as_dict(_client(call).license_profiles.get(resource_group, machine))
    except ResourceNotFoundError:
        return None
    return hotpatch_feature_status(profile.get("properties"))


# --- people ------------------------------------------------------------------------------------


@bp.function_name(ESCALATE)
@bp.activity_trigger(input_name="escalation")
def escalate(escalation: Escalation) -> dict[str, Any]:
    """Hand a machine to a human: one structured log line always, plus a JSON POST to the webhook.

    The webhook URL may carry a secret, so it is never logged; a failing webhook
    is logged (without the URL) and does not fail the orchestration.
    """
    escalation = Escalation.from_json(escalation)
    event = {
        "kind": "arc_hotpatch.escalation", "machine_id": escalation.machine.machine_id, "name": escalation.name,
        "reason": escalation.reason, "detail": escalation.detail, "actions": escalation.actions,
        "rollout_id": escalation.machine.rollout_id,
    }
    log.warning("escalation %s", json.dumps(event, sort_keys=True))
    webhook = escalation.escalation_webhook
    if not webhook:
        return {"webhook": "not_configured"}
    delays = (0.0, 2.0, 8.0)
    last_error = ""
    for delay in delays:
        current_clock().sleep(delay)
        try:
            response = requests.post(webhook, json=event, timeout=10)
            if response.status_code < 300:
                return {"webhook": "delivered", "status": response.status_code}
            last_error = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            last_error = type(exc).__name__
    log.error("escalation_webhook_failed machine=%s error=%s", escalation.machine.machine_id, last_error)
    return {"webhook": "failed", "error": last_error}
