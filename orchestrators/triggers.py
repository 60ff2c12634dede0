"""The triggers (client functions): the three triggers (schedule, HTTP, Event Grid), the report and reboot approvals.

They validate input, decide what to start and talk to the durable client; the
work itself happens in the orchestrations. Every rejection names what was wrong.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import azure.durable_functions as df
import azure.functions as func
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

from core.contracts import ROLLOUT_ORCHESTRATOR, MachineDone, MachineInput, RecordPage, RolloutState
from core.facts import MachinePayloadError, parse_machine_id
from core.policy import Policy, SettingError, load_policy, parse_subscription_id
from core.rollout import summarize
from core.vocabulary import REBOOT_APPROVED_EVENT

from .instances import (
    ACTIVE,
    FLEET_ROLLOUT_ID,
    machine_instance_id,
    record_prefix,
    start_or_attach,
    subscription_rollout_id,
)

bp = df.Blueprint()
log = logging.getLogger("arc_hotpatch.triggers")

MACHINE_WRITE_OPERATION = "Microsoft.HybridCompute/machines/write"
RESOURCE_WRITE_SUCCESS = "Microsoft.Resources.ResourceWriteSuccess"
# A rollout started over HTTP is for the subscription in its path: these can't be overridden in the body.
NOT_OVERRIDABLE = {"subscriptions", "schedule", "cloud", "arm_endpoint", "baselines_file"}


def _json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, indent=2), status_code=status, mimetype="application/json", headers=headers or {}
    )


def _error(status: int, code: str, message: str) -> func.HttpResponse:
    return _json_response(status, {"error": {"code": code, "message": message}})


def app_policy() -> Policy:
    """The policy from app settings; raises SettingError naming a bad setting."""
    return load_policy(os.environ)


# --- schedule ------------------------------------------------------------------------------------


@bp.timer_trigger(schedule="%HOTPATCH_SCHEDULE%", arg_name="timer", run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def scheduled_rollout(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    """The whole fleet on the configured schedule (a running fleet rollout is left alone)."""
    policy = app_policy()  # a bad setting fails the invocation, visibly, naming the setting
    status = await client.get_status(FLEET_ROLLOUT_ID)
    if status and status.runtime_status in ACTIVE:
        log.info("scheduled_rollout_already_running instance=%s", FLEET_ROLLOUT_ID)
        return
    await client.start_new(ROLLOUT_ORCHESTRATOR, FLEET_ROLLOUT_ID, RolloutState(policy).to_json())
    log.info("scheduled_rollout_started instance=%s past_due=%s", FLEET_ROLLOUT_ID, timer.past_due)


# --- HTTP start for a subscription ---------------------------------------------------------------


def json_object_body(body: bytes, expected: str) -> dict[str, Any]:
    """An optional JSON object body ({} when empty); ValueError naming what is wrong otherwise."""
    if not body or not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"request body must be {expected}")
    return data


def parse_rollout_request(subscription_id: str, body: bytes, base: Policy) -> Policy:
    """The rollout policy for ``POST /subscriptions/{id}/rollouts``; raises ValueError naming the problem."""
    try:
        subscription = parse_subscription_id(subscription_id)
    except ValueError as exc:
        raise ValueError(f"invalid subscriptionId {subscription_id!r}: expected {exc}") from None
    overrides = json_object_body(body, 'a JSON object of policy overrides, e.g. {"dry_run": true}')
    fixed = sorted(NOT_OVERRIDABLE & set(overrides))
    if fixed:
        raise ValueError(f"{', '.join(fixed)} cannot be set in a rollout request (it is fixed by the app settings)")
    return base.with_overrides({**overrides, "subscriptions": [subscription]})


@bp.route(route="subscriptions/{subscriptionId}/rollouts", methods=["POST"])
@bp.durable_client_input(client_name="client")
async def start_subscription_rollout(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    try:
        base = app_policy()
    except SettingError as exc:
        return _error(500, "InvalidAppSetting", str(exc))
    try:
        policy = parse_rollout_request(req.route_params.get("subscriptionId", ""), req.get_body(), base)
    except SettingError as exc:
        return _error(400, "InvalidPolicyOverride", str(exc))
    except ValueError as exc:
        return _error(400, "InvalidRequest", str(exc))
    instance_id = subscription_rollout_id(policy.subscriptions[0])
    status = await client.get_status(instance_id)
    if status and status.runtime_status in ACTIVE:
        links = client.create_http_management_payload(instance_id)
        return _json_response(
            409,
            {"error": {"code": "RolloutRunning", "message": f"a rollout is running: {instance_id}"},
             **links},
            {"Location": links["statusQueryGetUri"]},
        )
    await client.start_new(ROLLOUT_ORCHESTRATOR, instance_id, RolloutState(policy).to_json())
    log.info("rollout_started instance=%s dry_run=%s reboot_policy=%s", instance_id, policy.dry_run,
             policy.reboot_policy)
    return client.create_check_status_response(req, instance_id)


# --- report --------------------------------------------------------------------------------------


async def _windows(client: df.DurableOrchestrationClient, custom: dict[str, Any]) -> list[Any]:
    """The statuses of a rollout run's subscription windows."""
    return [s for s in [await client.get_status(w) for w in custom.get("windows") or []] if s and s.runtime_status]


def rows_of_records(records: list[Any]) -> list[dict[str, Any]]:
    """The report rows in a window's records: a machine's outcome (queued ones are not final), halted pages."""
    rows: list[dict[str, Any]] = []
    for record in records:
        output = record.output if isinstance(record.output, dict) else {}
        if "row" in output and not output.get("queued"):
            rows.append(MachineDone.from_json(output).row.to_json())
        elif "rows" in output:
            rows.extend(row.to_json() for row in RecordPage.from_json(output).rows)
    return rows


async def rollout_report(client: df.DurableOrchestrationClient, instance_id: str) -> dict[str, Any] | None:
    """The report of SPEC §5 for a rollout: every machine finished so far, while it runs too; None if unknown.

    Every outcome is a record under its window's id, written when the machine finished.
    """
    status = await client.get_status(instance_id)
    if not status or status.runtime_status is None:
        return None
    custom = status.custom_status if isinstance(status.custom_status, dict) else {}
    rows: list[dict[str, Any]] = []
    for window_id in custom.get("windows") or []:
        records = await client.get_status_by(instance_id_prefix=record_prefix(window_id),
                                             runtime_status=[OrchestrationRuntimeStatus.Completed])
        rows.extend(rows_of_records(records))
    order = {s: i for i, s in enumerate(custom.get("subscription_ids") or [])}
    rows.sort(key=lambda r: (order.get(str(r.get("subscription_id")), len(order)), str(r.get("id")).lower()))
    return {
        "rollout": {
            "id": instance_id, "status": status.runtime_status.value, "phase": custom.get("phase"),
            "wave": custom.get("wave"), "waves": custom.get("waves"), "errors": custom.get("errors") or [],
        },
        "summary": summarize(rows),
        "machines": rows,
    }


@bp.route(route="rollouts/{instanceId}/report", methods=["GET"])
@bp.durable_client_input(client_name="client")
async def get_rollout_report(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    instance_id = req.route_params.get("instanceId", "")
    report = await rollout_report(client, instance_id)
    if report is None:
        return _error(404, "RolloutNotFound", f"no rollout with instance id {instance_id!r}")
    return _json_response(200, report)


# --- reboot approvals ------------------------------------------------------------------------------


def _approval(body: bytes) -> dict[str, Any]:
    data = json_object_body(body, 'a JSON object such as {"machine_id": "...", "by": "alice"}')
    if "approved" in data and not isinstance(data["approved"], bool):
        raise ValueError("'approved' must be true or false")
    return data


def _awaiting_approval(status: Any) -> bool:
    custom = status.custom_status if status and isinstance(status.custom_status, dict) else {}
    return bool(status and status.runtime_status in ACTIVE and custom.get("step") == "awaiting_approval")


@bp.route(route="machines/approvals", methods=["POST"])
@bp.durable_client_input(client_name="client")
async def approve_machine_reboot(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Release (or reject, ``"approved": false``) the reboot a machine is waiting for."""
    try:
        data = _approval(req.get_body())
        machine_id = data.get("machine_id")
        if not isinstance(machine_id, str):
            raise ValueError("'machine_id' (the Arc machine resource id) is required")
        parse_machine_id(machine_id)
    except (ValueError, MachinePayloadError) as exc:
        return _error(400, "InvalidRequest", str(exc))
    instance_id = machine_instance_id(machine_id)
    status = await client.get_status(instance_id)
    if not _awaiting_approval(status):
        return _error(409, "NotAwaitingApproval", f"{machine_id} is not waiting for a reboot approval")
    decision = {"approved": data.get("approved", True), "by": str(data.get("by") or "")}
    await client.raise_event(instance_id, REBOOT_APPROVED_EVENT, decision)
    log.info("reboot_decision machine=%s approved=%s by=%s", machine_id, decision["approved"], decision["by"])
    return _json_response(202, {"machine_id": machine_id, "instance_id": instance_id, **decision})


@bp.route(route="rollouts/{instanceId}/approvals", methods=["POST"])
@bp.durable_client_input(client_name="client")
async def approve_rollout_reboots(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Release every reboot the machines of a rollout are waiting for."""
    rollout_id = req.route_params.get("instanceId", "")
    try:
        data = _approval(req.get_body())
    except ValueError as exc:
        return _error(400, "InvalidRequest", str(exc))
    decision = {"approved": data.get("approved", True), "by": str(data.get("by") or "")}
    rollout = await client.get_status(rollout_id)
    custom = rollout.custom_status if rollout and isinstance(rollout.custom_status, dict) else {}
    if not custom.get("run_key"):
        return _error(404, "RolloutNotFound", f"no rollout with instance id {rollout_id!r}")
    # The machines a rollout waits for are its windows' pending instances, whoever started them.
    windows = await _windows(client, custom)
    waiting = sorted(
        {i for window in windows if window.runtime_status in ACTIVE and isinstance(window.custom_status, dict)
         for i in window.custom_status.get("pending", [])}
    )
    released = []
    for instance_id in waiting:
        status = await client.get_status(instance_id)
        if _awaiting_approval(status):
            await client.raise_event(instance_id, REBOOT_APPROVED_EVENT, decision)
            released.append(status.custom_status.get("machine"))
    log.info("rollout_reboot_decision rollout=%s machines=%d approved=%s", rollout_id, len(released),
             decision["approved"])
    return _json_response(202, {"rollout_id": rollout_id, "machines": released, **decision})


# --- Event Grid: a machine was onboarded or written -----------------------------------------------


def machine_from_event(event: func.EventGridEvent) -> str | None:
    """The Arc machine resource id of a machine write event, or None (with the reason logged)."""
    data = event.get_json() if callable(getattr(event, "get_json", None)) else None
    if event.event_type != RESOURCE_WRITE_SUCCESS:
        log.info("event_ignored id=%s reason=event type %s", event.id, event.event_type)
        return None
    if not isinstance(data, dict):
        log.info("event_ignored id=%s reason=data is not an object", event.id)
        return None
    if data.get("operationName") != MACHINE_WRITE_OPERATION:
        log.info("event_ignored id=%s reason=operation %s", event.id, data.get("operationName"))
        return None
    resource_id = data.get("resourceUri") or event.subject
    try:
        parse_machine_id(resource_id or "")
    except MachinePayloadError as exc:
        log.info("event_ignored id=%s reason=%s", event.id, exc)
        return None
    return resource_id


@bp.event_grid_trigger(arg_name="event")
@bp.durable_client_input(client_name="client")
async def on_arc_machine_written(event: func.EventGridEvent, client: df.DurableOrchestrationClient) -> None:
    """A machine was onboarded (or written): start its orchestration unless one is running."""
    machine_id = machine_from_event(event)
    if machine_id is None:
        return
    # A bad setting fails the delivery (naming the setting) so Event Grid retries it and the
    # onboarding is not lost; a bad event is acknowledged above, since retrying cannot fix it.
    policy = app_policy()
    started = await start_or_attach(client, MachineInput(machine_id, policy, rollout_id=f"event-{event.id}"))
    log.info("event_machine id=%s machine=%s instance=%s started=%s", event.id, machine_id,
             started.instance_id, started.started)
