"""Activities: each one Azure call (or one Run Command script start or look), idempotent, typed in and out.

They run at least once (a retry or a host restart may run one twice), so every write here is safe to
repeat: a license merge that is already applied writes the same state again, and a script that changes
the machine is started only if its run command does not already hold that request. None of them
waits: the orchestrations wait, on durable timers.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import azure.durable_functions as df
import requests
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.mgmt.hybridcompute import HybridComputeManagementClient

from core.azure_clients import ArmConnection, hybrid_compute_client, subscription_client
from core.baselines import load_baselines, relevant_kbs, standing
from core.clock import current_clock
from core.contracts import (
    COUNT_MACHINES,
    ENABLE_HOTPATCH,
    ESCALATE,
    GET_MACHINE,
    LIST_MACHINES_FROM,
    LIST_SUBSCRIPTIONS,
    READ_PATCH_OPERATION,
    READ_SCRIPT,
    START_ASSESSMENT,
    START_INSTALL,
    START_SCRIPT,
    Cursor,
    Discovery,
    EnableRequest,
    Escalation,
    Listing,
    ListingRequest,
    MachineCall,
    MachineCount,
    MachineRead,
    PatchRequest,
    PatchResult,
    ScriptRequest,
    ScriptResult,
)
from core.facts import HOTPATCH_BUILD, facts_from_arm, parse_machine_id
from core.licensing import merged_hotpatch_update, new_hotpatch_profile
from core.policy import SettingError, escalation_webhook_setting
from core.readiness import ScriptOutputError, parse_action_output, parse_readiness

from .permissions import requires_arm_actions

bp = df.Blueprint()
log = logging.getLogger("arc_hotpatch.activities")
audit_log = logging.getLogger("arc_hotpatch.audit")

SCRIPTS_DIR = Path(__file__).parent / "scripts"
SCRIPT_NAMES = ("readiness", "apply_changes")
CHANGING_SCRIPTS = {"apply_changes"}  # everything but the read-only readiness
TERMINAL_RUN_STATES = {"Succeeded", "Failed", "TimedOut", "Canceled"}
TOKEN_ENV = "HOTPATCH_ARM_TOKEN"  # development only: a static bearer token for the fleet twin
CA_FILE_ENV = "HOTPATCH_ARM_CA_FILE"  # development only: the fleet twin's CA certificate (it serves https)


def script_text(name: str) -> str:
    if name not in SCRIPT_NAMES:
        raise ValueError(f"unknown script {name!r}: expected one of {', '.join(SCRIPT_NAMES)}")
    return _script_file(name)


@functools.cache
def _script_file(name: str) -> str:
    # The scripts ship with the app and do not change while it runs: read once, not on every Run Command.
    return (SCRIPTS_DIR / f"{name}.ps1").read_text("utf-8")


def _connection(arm_endpoint: str) -> ArmConnection:
    """The ARM connection for the policy's resolved endpoint.

    Orchestrations pass the endpoint, not the whole policy: every activity input is kept in
    the history and replayed, so inputs stay small.
    """
    return ArmConnection.for_endpoint(arm_endpoint, token=os.environ.get(TOKEN_ENV) or None,
                                      ca_file=os.environ.get(CA_FILE_ENV) or "")


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
    while True:
        items, next_token = _listing_page(request.where, page_token)
        wanted = items[skip : skip + take - len(ids)]
        ids.extend(wanted)
        if len(ids) >= take and skip + len(wanted) < len(items):
            return Listing(ids, Cursor(page_token, skip + len(wanted)))
        if next_token is None:
            return Listing(ids, Cursor(done=True))
        page_token, skip = next_token, 0
        if len(ids) >= take:
            return Listing(ids, Cursor(page_token))


# A window refills a few slots at a time from the same listing page: keep the pages this process read for a
# few minutes rather than read a page of a hundred machines from ARM for every machine that is started.
PAGE_CACHE_S = 300
_pages: dict[tuple[str, str, str, str | None], tuple[Any, list[str], str | None]] = {}
_pages_lock = threading.Lock()


def _listing_page(where: Discovery, token: str | None) -> tuple[list[str], str | None]:
    """The machine ids of one listing page (``token``: its nextLink, None for the first) and the next token."""
    key = (where.arm_endpoint, where.subscription_id.lower(), where.resource_group.lower(), token)
    now = current_clock().now()
    with _pages_lock:
        cached = _pages.get(key)
    if cached is not None and (now - cached[0]).total_seconds() < PAGE_CACHE_S:
        return cached[1], cached[2]
    pages = _machine_pages(where, token)
    items = [str(_as_dict(m)["id"]) for m in next(iter(pages), [])]
    entry = (now, items, pages.continuation_token)
    with _pages_lock:
        if len(_pages) > 1000:
            _pages.clear()
        _pages[key] = entry
    return items, entry[2]


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
    # Against the baselines released by today (the clock's: a rehearsal's virtual day).
    where = standing(version.build if version else None, version.revision if version else None, None,
                     load_baselines(call.baselines_file), current_clock().now().date())
    return MachineRead(found=True, facts=facts.to_json(), baseline=where.flag.value, baseline_detail=where.detail)


def _run_body(request: ScriptRequest) -> dict[str, Any]:
    parameters = dict(request.parameters)
    if request.script == "readiness":  # the KBs it looks for come from the baselines data, as a parameter
        parameters["RelevantKbs"] = ",".join(relevant_kbs(load_baselines(request.machine.baselines_file)))
    return {
        "location": request.machine.location,
        "properties": {
            "source": {"script": script_text(request.script)},
            # Data only as parameters: the script text never has values formatted into it.
            "parameters": [{"name": k, "value": str(v)} for k, v in sorted(parameters.items())],
            "asyncExecution": True,  # the PUT returns once the agent has the script; read_script follows it
            "timeoutInSeconds": int(request.timeout_s),
        },
    }


def _request_id_of(run: dict[str, Any]) -> str | None:
    for parameter in (run.get("properties") or {}).get("parameters") or []:
        if str(parameter.get("name", "")).lower() == "requestid":
            return str(parameter.get("value", ""))
    return None


@bp.function_name(START_SCRIPT)
@bp.activity_trigger(input_name="request")
@requires_arm_actions(
    "Microsoft.HybridCompute/machines/runCommands/write",
    "Microsoft.HybridCompute/machines/runCommands/read",
    "Microsoft.HybridCompute/machines/runCommands/delete",
)
def start_script(request: ScriptRequest) -> ScriptResult:
    """Start one of our scripts through Arc Run Command (one PUT; the orchestrator reads it later).

    One run command resource per script and machine, re-run by PUT. ``running`` once the agent has it,
    ``failed`` when ARM refused it. At-least-once safe: a script that changes the machine is PUT only if
    the resource does not already hold this request (a second execution of this activity must not run
    the changes, or the reboot, twice); the read-only readiness script is simply PUT again.
    """
    request = ScriptRequest.from_json(request)
    call = request.machine
    _, resource_group, machine = parse_machine_id(call.machine_id)
    runs = _client(call).machine_run_commands
    changing = request.script in CHANGING_SCRIPTS
    if changing:
        try:
            if _request_id_of(_as_dict(runs.get(resource_group, machine, request.run_name))) == request.request_id:
                return ScriptResult(ScriptResult.RUNNING)
        except ResourceNotFoundError:
            pass
    try:
        try:
            runs.begin_create_or_update(resource_group, machine, request.run_name, _run_body(request), polling=False)
        except ResourceExistsError:
            # 409: an execution under this name is still running (another request's, maybe lost for good).
            current = _as_dict(runs.get(resource_group, machine, request.run_name))
            if _request_id_of(current) == request.request_id:
                return ScriptResult(ScriptResult.RUNNING)
            if changing:  # never cancel a change half-way: the orchestrator tries again later
                return ScriptResult(ScriptResult.FAILED, error=f"busy: run {_request_id_of(current)} still executing")
            runs.begin_delete(resource_group, machine, request.run_name, polling=False)  # a read: cancel, re-run
            runs.begin_create_or_update(resource_group, machine, request.run_name, _run_body(request), polling=False)
    except HttpResponseError as exc:
        # Throttling and server errors outlived the SDK's retries: let the caller retry later.
        # A rejection (4xx) is the run's own failure.
        if exc.status_code == 429 or (exc.status_code or 0) >= 500:
            raise
        return ScriptResult(ScriptResult.FAILED, error=f"Run Command not started: {_arm_message(exc)}")
    log.info("run_command_started machine=%s script=%s request=%s", call.machine_id, request.script,
             request.request_id)
    if changing:
        audit(call, request.script, phase="started", request_id=request.request_id, parameters=request.parameters)
    return ScriptResult(ScriptResult.RUNNING)


@bp.function_name(READ_SCRIPT)
@bp.activity_trigger(input_name="request")
@requires_arm_actions("Microsoft.HybridCompute/machines/runCommands/read")
def read_script(request: ScriptRequest) -> ScriptResult:
    """One look at a started script (one GET of the run command with its instance view): ``running`` until
    it ends, then ``succeeded`` with its parsed JSON line, or ``failed``."""
    request = ScriptRequest.from_json(request)
    call, script = request.machine, request.script
    _, resource_group, machine = parse_machine_id(call.machine_id)
    try:
        run = _as_dict(_client(call).machine_run_commands.get(resource_group, machine, request.run_name))
    except ResourceNotFoundError:
        return ScriptResult(ScriptResult.FAILED, error="the run command resource is gone")
    # An empty request id reads whatever execution the resource holds (an earlier orchestration's).
    if request.request_id and _request_id_of(run) != request.request_id:
        return ScriptResult(ScriptResult.FAILED, error=f"replaced by run {_request_id_of(run)}")
    properties = run.get("properties") or {}
    view = properties.get("instanceView") or {}
    state = view.get("executionState") or "Unknown"
    if state in TERMINAL_RUN_STATES:
        outcome = _script_outcome(script, state, view, call.baselines_file)
    elif properties.get("provisioningState") == "Failed":
        outcome = ScriptResult(ScriptResult.FAILED, error=f"Run Command not started: {view.get('error') or 'failed'}")
    else:
        return ScriptResult(ScriptResult.RUNNING)
    log.info("run_command machine=%s script=%s request=%s status=%s", call.machine_id, script, request.request_id,
             outcome.status)
    if script in CHANGING_SCRIPTS:  # every attempt, failed ones too (a failed script may have changed something)
        audit(call, script, phase="ended", request_id=request.request_id, parameters=request.parameters,
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
            data = load_baselines(baselines_file)
            where = standing(readiness.build, readiness.ubr, readiness.hotfixes, data, current_clock().now().date())
            affected = readiness.build == HOTPATCH_BUILD and data.licensing_issue.affects(readiness.ubr)
            return ScriptResult(ScriptResult.SUCCEEDED, result=readiness.to_json(), baseline=where.flag.value,
                                baseline_detail=where.detail, licensing_issue=affected)
        return ScriptResult(ScriptResult.SUCCEEDED, result=parse_action_output(view.get("output"), script))
    except ScriptOutputError as exc:
        return ScriptResult(ScriptResult.FAILED, error=f"unusable output: {exc}")


@bp.function_name(ENABLE_HOTPATCH)
@bp.activity_trigger(input_name="request")
@requires_arm_actions("Microsoft.HybridCompute/machines/licenseProfiles/write")
def enable_hotpatch(request: EnableRequest) -> dict[str, Any]:
    """Merge the Hotpatch feature into the license profile: PATCH the machine's product features (as its
    last read showed them) with Hotpatch set to Enable; PUT a new profile only when it holds nothing.

    PATCH keeps the ESU profile and Software Assurance (a PUT would drop what it does not carry); the
    top-level ``productProfile.subscriptionStatus`` is never sent (that enrolls billed pay-as-you-go).
    The long-running write is not polled: the orchestration watches the feature's status anyway.
    """
    request = EnableRequest.from_json(request)
    call = request.machine
    _, resource_group, machine = parse_machine_id(call.machine_id)
    profiles = _client(call).license_profiles
    operation = "put" if request.create else "patch"
    body = new_hotpatch_profile(call.location) if request.create else merged_hotpatch_update(request.features)
    try:
        if request.create:
            profiles.begin_create_or_update(resource_group, machine, body, polling=False)
        else:
            profiles.begin_update(resource_group, machine, body, polling=False)
    except ResourceNotFoundError:  # the merge found no profile after all: create one
        body, operation = new_hotpatch_profile(call.location), "put"
        profiles.begin_create_or_update(resource_group, machine, body, polling=False)
    audit(call, "enable_hotpatch", phase="written", operation=operation, body=body)
    return {"operation": operation}


# --- Update Manager: patch assessment and hotpatch installation ------------------------------------


def _started(request: PatchRequest, operation: str, begin: Any) -> PatchResult:
    """Start a long-running patch operation (one POST, not polled here): ``running`` with the operation's Location
    to read, or its result when ARM answered at once."""
    try:
        poller = begin(polling=False)
    except HttpResponseError as exc:
        if exc.status_code == 429 or (exc.status_code or 0) >= 500:
            raise
        return PatchResult(PatchResult.FAILED, error=f"{operation} refused: {_arm_message(exc)}")
    # Not polled here: the 202's Location is what read_patch_operation follows (NoPolling keeps the response).
    response = poller.polling_method()._initial_response.http_response
    if response.status_code == 202:
        location = response.headers.get("Location") or ""
        if not location:
            return PatchResult(PatchResult.FAILED, error=f"{operation} answered 202 without a Location")
        return PatchResult(PatchResult.RUNNING, operation_url=location)
    return _patch_outcome(_json_body(response))


@bp.function_name(START_ASSESSMENT)
@bp.activity_trigger(input_name="request")
@requires_arm_actions("Microsoft.HybridCompute/machines/assessPatches/action")
def start_patch_assessment(request: PatchRequest) -> PatchResult:
    """Start ``assessPatches``. Safe to repeat: a second assessment only reads the machine again."""
    request = PatchRequest.from_json(request)
    _, resource_group, name = parse_machine_id(request.machine.machine_id)
    machines = _client(request.machine).machines
    return _started(request, "assessPatches", lambda **kw: machines.begin_assess_patches(resource_group, name, **kw))


def install_parameters(maximum_duration: str) -> dict[str, Any]:
    """installPatches' body: the month's hotpatches only. Never reboot (the 2025-01-13 spec's ``rebootSetting``
    value is ``Never``), Critical and Security, and leave out every KB that needs a reboot."""
    return {
        "maximumDuration": maximum_duration,
        "rebootSetting": "Never",
        "windowsParameters": {"classificationsToInclude": ["Critical", "Security"], "excludeKbsRequiringReboot": True},
    }


@bp.function_name(START_INSTALL)
@bp.activity_trigger(input_name="request")
@requires_arm_actions("Microsoft.HybridCompute/machines/installPatches/action")
def start_patch_install(request: PatchRequest) -> PatchResult:
    """Start ``installPatches`` with ``install_parameters`` (nothing that reboots). At-least-once safe: a second
    run installs what the first left (nothing: hotpatches are installed once) and never reboots."""
    request = PatchRequest.from_json(request)
    _, resource_group, name = parse_machine_id(request.machine.machine_id)
    machines = _client(request.machine).machines
    body = install_parameters(request.maximum_duration)
    audit(request.machine, "install_hotpatches", phase="started", parameters=body)
    return _started(request, "installPatches",
                    lambda **kw: machines.begin_install_patches(resource_group, name, body, **kw))


@bp.function_name(READ_PATCH_OPERATION)
@bp.activity_trigger(input_name="request")
@requires_arm_actions("Microsoft.HybridCompute/machines/read")
def read_patch_operation(request: PatchRequest) -> PatchResult:
    """One look at a started patch operation: GET its Location through the client's pipeline (authentication and
    retries as for every call): 202 still running, 200 its result."""
    from azure.core.rest import HttpRequest

    request = PatchRequest.from_json(request)
    client = _client(request.machine)
    response = client._client.send_request(HttpRequest("GET", request.operation_url))
    if response.status_code == 202:
        return PatchResult(PatchResult.RUNNING, operation_url=request.operation_url)
    if response.status_code == 429 or response.status_code >= 500:
        response.raise_for_status()
    if response.status_code != 200:
        return PatchResult(PatchResult.FAILED, error=f"patch operation: HTTP {response.status_code}")
    return _patch_outcome(_json_body(response))


def _json_body(response: Any) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _count(result: dict[str, Any], key: str) -> int | None:
    value = result.get(key, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _patch_outcome(result: dict[str, Any] | None) -> PatchResult:
    """A ``MachineAssessPatchesResult`` or ``MachineInstallPatchesResult`` (as ARM sends it) as our result; an
    unexpected body is a failure that names what was wrong."""
    if result is None:
        return PatchResult(PatchResult.FAILED, error="patch operation: the result is not a JSON object")
    operation = "installPatches" if "installationActivityId" in result else "assessPatches"
    status = str(result.get("status") or "Unknown")
    if status not in ("Succeeded", "CompletedWithWarnings"):
        detail = result.get("errorDetails") or {}
        message = detail.get("message", "") if isinstance(detail, dict) else ""
        return PatchResult(PatchResult.FAILED, error=f"{operation} {status}: {message}".rstrip(": "))
    if operation == "assessPatches":
        pending = result.get("rebootPending")
        if not isinstance(pending, bool):
            return PatchResult(PatchResult.FAILED, error=f"assessPatches: rebootPending is {pending!r}")
        return PatchResult(PatchResult.SUCCEEDED, reboot_pending=pending)
    counts = {key: _count(result, key) for key in ("installedPatchCount", "pendingPatchCount", "failedPatchCount")}
    bad = [key for key, value in counts.items() if value is None]
    if bad:
        return PatchResult(PatchResult.FAILED, error=f"installPatches: {bad[0]} is {result.get(bad[0])!r}")
    return PatchResult(PatchResult.SUCCEEDED, installed=counts["installedPatchCount"] or 0,
                       pending=counts["pendingPatchCount"] or 0, failed_count=counts["failedPatchCount"] or 0,
                       reboot_status=str(result.get("rebootStatus") or "Unknown"))


# --- people ------------------------------------------------------------------------------------


@bp.function_name(ESCALATE)
@bp.activity_trigger(input_name="escalation")
def escalate(escalation: Escalation) -> dict[str, Any]:
    """Hand a machine to a human: one structured log line always, plus a JSON POST to the webhook.

    The webhook URL comes from the app setting ``HOTPATCH_ESCALATION_WEBHOOK``, read now (never from
    the input: an activity's input is kept in the orchestration's history). It may carry a secret, so
    it is never logged; a failing or invalid webhook is logged (without the URL) and does not fail
    the orchestration.
    """
    escalation = Escalation.from_json(escalation)
    event = {
        "kind": "arc_hotpatch.escalation", "machine_id": escalation.machine.machine_id, "name": escalation.name,
        "reason": escalation.reason, "detail": escalation.detail, "actions": escalation.actions,
        "rollout_id": escalation.machine.rollout_id,
    }
    log.warning("escalation %s", json.dumps(event, sort_keys=True))
    try:
        webhook = escalation_webhook_setting(os.environ)
    except SettingError:  # its message would quote nothing secret, but say only which setting is wrong
        log.error("escalation_webhook_failed machine=%s error=invalid app setting HOTPATCH_ESCALATION_WEBHOOK",
                  escalation.machine.machine_id)
        return {"webhook": "failed", "error": "invalid app setting HOTPATCH_ESCALATION_WEBHOOK"}
    if not webhook:
        return {"webhook": "not_configured"}
    delays = (0.0, 2.0, 5.0)  # with 5 s timeouts: at most 22 s in all (no activity waits longer than 30 s)
    last_error = ""
    for delay in delays:
        current_clock().sleep(delay)
        try:
            response = requests.post(webhook, json=event, timeout=5)
            if response.status_code < 300:
                return {"webhook": "delivered", "status": response.status_code}
            last_error = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            last_error = type(exc).__name__
    log.error("escalation_webhook_failed machine=%s error=%s", escalation.machine.machine_id, last_error)
    return {"webhook": "failed", "error": last_error}
