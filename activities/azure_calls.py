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

from arc_hotpatch.azure_clients import ArmConnection, hybrid_compute_client, subscription_client
from arc_hotpatch.clock import current_clock
from arc_hotpatch.domain.facts import facts_from_arm, hotpatch_feature_status, parse_machine_id
from arc_hotpatch.domain.licensing import merged_hotpatch_update, new_hotpatch_profile
from arc_hotpatch.domain.readiness import ScriptOutputError, parse_action_output, parse_readiness

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


def _connection(payload: dict[str, Any]) -> ArmConnection:
    """The ARM connection for ``payload["arm_endpoint"]`` (the policy's resolved endpoint).

    Orchestrations pass the endpoint, not the whole policy: every activity input is kept in
    the history and replayed, so inputs stay small.
    """
    return ArmConnection.for_endpoint(payload["arm_endpoint"], token=os.environ.get(TOKEN_ENV) or None)


def _client(payload: dict[str, Any]):  # type: ignore[no-untyped-def]
    subscription_id, _, _ = parse_machine_id(payload["machine_id"])
    return hybrid_compute_client(_connection(payload), subscription_id)


def audit(payload: dict[str, Any], change: str, **details: Any) -> None:
    """The audit trail: one structured line per change made to a machine, written where the change is made.

    In Azure these land in Application Insights (``traces``, logger ``arc_hotpatch.audit``) with the
    invocation's operation id, queryable per machine or rollout.
    """
    record = {
        "kind": "arc_hotpatch.audit", "at": current_clock().now().isoformat(), "machine_id": payload["machine_id"],
        "rollout_id": payload.get("rollout_id", ""), "change": change, **details,
    }
    audit_log.info("audit %s", json.dumps(record, sort_keys=True))


def _as_dict(model: Any) -> dict[str, Any]:
    return model.as_dict() if hasattr(model, "as_dict") else dict(model)


# --- discovery -----------------------------------------------------------------------------


@bp.activity_trigger(input_name="payload")
@requires_arm_actions("Microsoft.Resources/subscriptions/read")
def list_subscriptions(payload: dict[str, Any]) -> list[str]:
    """Every subscription the identity can read (used when none are configured)."""
    client = subscription_client(_connection(payload))
    return sorted(str(s.subscription_id).lower() for s in client.subscriptions.list())


def _machine_pages(payload: dict[str, Any], continuation: str | None):  # type: ignore[no-untyped-def]
    """Pages of the subscription's (or resource group's) machines, from ``continuation`` (a nextLink)."""
    client = hybrid_compute_client(_connection(payload), payload["subscription_id"])
    resource_group = payload.get("resource_group") or ""
    pager = (
        client.machines.list_by_resource_group(resource_group)
        if resource_group
        else client.machines.list_by_subscription()
    )
    return pager.by_page(continuation_token=continuation)


@bp.activity_trigger(input_name="payload")
@requires_arm_actions("Microsoft.HybridCompute/machines/read")
def count_machines(payload: dict[str, Any]) -> dict[str, Any]:
    """How many Arc machines the subscription (or resource group) has: pages through all of them.

    A subscription or resource group that does not exist, or that the identity may not read, is
    an answer (``count`` 0 with the ARM ``error``), so the rest of the fleet still rolls out;
    throttling and server errors that outlive the SDK's retries still raise (retried later).
    """
    try:
        return {"count": sum(sum(1 for _ in page) for page in _machine_pages(payload, None))}
    except HttpResponseError as exc:
        if exc.status_code == 429 or (exc.status_code or 0) >= 500:
            raise
        return {"count": 0, "error": _arm_message(exc)}


@bp.activity_trigger(input_name="payload")
@requires_arm_actions("Microsoft.HybridCompute/machines/read")
def list_machines_from(payload: dict[str, Any]) -> dict[str, Any]:
    """Up to ``take`` machine ids from ``cursor`` ({"page": nextLink or null, "skip": n, "done"?}) and the next cursor.

    A cursor is a page's continuation plus an offset in it, so an orchestration
    can walk a subscription of any size carrying a few bytes of state; only ids
    are returned (the machine orchestration reads each machine itself).
    """
    cursor = payload.get("cursor") or {"page": None, "skip": 0}
    take = int(payload["take"])
    if cursor.get("done"):
        return {"machine_ids": [], "cursor": cursor}
    ids: list[str] = []
    page_token, skip = cursor.get("page"), int(cursor.get("skip") or 0)
    pages = _machine_pages(payload, page_token)
    for page in pages:
        items = [str(_as_dict(m)["id"]) for m in page]
        wanted = items[skip : skip + take - len(ids)]
        ids.extend(wanted)
        if len(ids) >= take and skip + len(wanted) < len(items):
            return {"machine_ids": ids, "cursor": {"page": page_token, "skip": skip + len(wanted)}}
        page_token, skip = pages.continuation_token, 0
        if page_token is None:
            return {"machine_ids": ids, "cursor": {"page": None, "skip": 0, "done": True}}
        if len(ids) >= take:
            break
    return {"machine_ids": ids, "cursor": {"page": page_token, "skip": 0}}


# --- one machine -----------------------------------------------------------------------------


@bp.activity_trigger(input_name="payload")
@requires_arm_actions("Microsoft.HybridCompute/machines/read")
def get_machine(payload: dict[str, Any]) -> dict[str, Any]:
    """The machine's facts (SPEC §2) from GET with ``$expand=instanceView``; ``None`` if it is gone."""
    _, resource_group, name = parse_machine_id(payload["machine_id"])
    try:
        machine = _client(payload).machines.get(resource_group, name, expand="instanceView")
    except ResourceNotFoundError:
        return {"found": False}
    return {"found": True, "facts": facts_from_arm(_as_dict(machine)).to_json()}


@bp.activity_trigger(input_name="payload")
@requires_arm_actions(
    "Microsoft.HybridCompute/machines/runCommands/write",
    "Microsoft.HybridCompute/machines/runCommands/read",
    "Microsoft.HybridCompute/machines/runCommands/delete",
    *LRO_STATUS_ACTIONS,
)
def run_script(payload: dict[str, Any]) -> dict[str, Any]:
    """Run one of our scripts through Arc Run Command and wait for its result.

    Input: machine_id, location, script, run_name (unique per step and attempt),
    parameters ({name: value}), timeout_s, policy. Output: ``status`` =
    ``succeeded`` (with ``result``, the parsed JSON line), ``failed`` (with
    ``error``) or ``lost`` (no terminal state before the timeout: expected for
    a script that stops himds or reboots; the caller verifies by re-reading
    facts). The run command resource is deleted when done.
    """
    script = payload["script"]
    text = script_text(script)
    _, resource_group, machine = parse_machine_id(payload["machine_id"])
    run_name = payload["run_name"]
    timeout_s = float(payload.get("timeout_s") or 600)
    client = _client(payload)
    runs = client.machine_run_commands
    body = {
        "location": payload["location"],
        "properties": {
            "source": {"script": text},
            # Data only as parameters: the script text never has values formatted into it.
            "parameters": [{"name": k, "value": str(v)} for k, v in sorted((payload.get("parameters") or {}).items())],
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
            return {"status": "failed", "error": f"Run Command not started: {_arm_message(exc)}"}
    outcome: dict[str, Any] = {"status": "lost", "error": f"no result within {int(timeout_s)} s"}
    poll = RUN_POLL_FIRST_S
    while True:
        clock.sleep(poll)  # no script finishes at once: look after the first interval
        properties = _as_dict(runs.get(resource_group, machine, run_name)).get("properties") or {}
        view = properties.get("instanceView") or {}
        state = view.get("executionState") or "Unknown"
        if state in TERMINAL_RUN_STATES:
            outcome = _script_outcome(script, state, view)
            break
        if properties.get("provisioningState") == "Failed":
            outcome = {"status": "failed", "error": f"Run Command not started: {view.get('error') or 'failed'}"}
            break
        if (clock.now() - started).total_seconds() >= timeout_s:
            break
        poll = min(poll * 2, RUN_POLL_MAX_S)
    _delete_run(runs, resource_group, machine, run_name)
    log.info(
        "run_command machine=%s script=%s run=%s status=%s",
        payload["machine_id"], script, run_name, outcome["status"],
    )
    if script in CHANGING_SCRIPTS:  # every attempt, failed ones too (a failed script may have changed something)
        audit(payload, script, run_name=run_name, parameters=payload.get("parameters") or {},
              started_at=started.isoformat(), outcome=outcome["status"], error=outcome.get("error", ""))
    return outcome


def _arm_message(exc: HttpResponseError) -> str:
    error = getattr(exc, "error", None)
    if error is not None and getattr(error, "code", None):
        return f"{error.code}: {error.message}"
    return str(exc.message or exc).splitlines()[0]


def _script_outcome(script: str, state: str, view: dict[str, Any]) -> dict[str, Any]:
    if state != "Succeeded" or view.get("exitCode") not in (0, None):
        detail = (view.get("error") or view.get("executionMessage") or "").strip()[-500:]
        return {"status": "failed", "error": f"{state}, exit code {view.get('exitCode')}: {detail}"}
    try:
        if script == "readiness":
            return {"status": "succeeded", "result": parse_readiness(view.get("output")).to_json()}
        return {"status": "succeeded", "result": parse_action_output(view.get("output"), script)}
    except ScriptOutputError as exc:
        return {"status": "failed", "error": f"unusable output: {exc}"}


def _delete_run(runs: Any, resource_group: str, machine: str, run_name: str) -> None:
    """Delete the finished run command; a failure here never fails the step (it is only clean-up)."""
    try:
        runs.begin_delete(resource_group, machine, run_name, polling=False)  # no need to wait for it to go
    except ResourceNotFoundError:
        pass
    except HttpResponseError as exc:
        log.warning("run_command_cleanup_failed run=%s error=%s", run_name, _arm_message(exc))


@bp.activity_trigger(input_name="payload")
@requires_arm_actions(
    "Microsoft.HybridCompute/machines/licenseProfiles/read",
    "Microsoft.HybridCompute/machines/licenseProfiles/write",
    *LRO_STATUS_ACTIONS,
)
def enable_hotpatch(payload: dict[str, Any]) -> dict[str, Any]:
    """GET the license profile, merge only the Hotpatch feature, write it back.

    Existing profile: PATCH with the merged feature list (keeps esuProfile and
    software assurance; a PUT would drop what it does not carry). No profile
    yet: PUT a new one. Never the top-level productProfile.subscriptionStatus
    (that enrolls billed pay-as-you-go).
    """
    _, resource_group, machine = parse_machine_id(payload["machine_id"])
    profiles = _client(payload).license_profiles
    try:
        current = _as_dict(profiles.get(resource_group, machine))
    except ResourceNotFoundError:
        current = None
    if current is None:
        body = new_hotpatch_profile(payload["location"])
        result = _as_dict(profiles.begin_create_or_update(resource_group, machine, body).result())
        operation = "put"
    else:
        body = merged_hotpatch_update(current)
        result = _as_dict(profiles.begin_update(resource_group, machine, body).result())
        operation = "patch"
    audit(payload, "enable_hotpatch", operation=operation, body=body,
          status=hotpatch_feature_status(result.get("properties")))
    return {"operation": operation, "status": hotpatch_feature_status(result.get("properties"))}


@bp.activity_trigger(input_name="payload")
@requires_arm_actions("Microsoft.HybridCompute/machines/licenseProfiles/read")
def get_hotpatch_status(payload: dict[str, Any]) -> str | None:
    """The Hotpatch feature's status (Enabling, Enabled, Failed, ...), None without a profile."""
    _, resource_group, machine = parse_machine_id(payload["machine_id"])
    try:
        profile = _as_dict(_client(payload).license_profiles.get(resource_group, machine))
    except ResourceNotFoundError:
        return None
    return hotpatch_feature_status(profile.get("properties"))


# --- people ------------------------------------------------------------------------------------


@bp.activity_trigger(input_name="payload")
def escalate(payload: dict[str, Any]) -> dict[str, Any]:
    """Hand a machine to a human: one structured log line always, plus a JSON POST to the webhook.

    The webhook URL may carry a secret, so it is never logged; a failing webhook
    is logged (without the URL) and does not fail the orchestration.
    """
    event = {k: payload.get(k) for k in ("machine_id", "name", "reason", "detail", "actions", "rollout_id")}
    event["kind"] = "arc_hotpatch.escalation"
    log.warning("escalation %s", json.dumps(event, sort_keys=True))
    webhook = payload.get("escalation_webhook") or ""
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
    log.error("escalation_webhook_failed machine=%s error=%s", payload.get("machine_id"), last_error)
    return {"webhook": "failed", "error": last_error}
