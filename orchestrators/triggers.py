"""The triggers (client functions): the three triggers (schedule, HTTP, Event Grid), the report and reboot approvals.

They validate input, decide what to start and talk to the durable client; the
work itself happens in the orchestrations. Every rejection names what was wrong.

Hostile input gets a bounded, clean answer, never a 500: a request body over 64 KB is a 413;
a body that is not UTF-8 JSON, nests deeper than 32 levels, repeats a key or uses NaN/Infinity is
a 400; so is a value of the wrong JSON type (``{"dry_run": "yes"}``). An error message quotes at
most a short prefix of a bad value. A rollout request may only narrow the app settings
(``core.policy.narrow``); a start for a subscription outside the configured scope
(``HOTPATCH_SUBSCRIPTIONS``) is a 403, and an Event Grid event for a machine outside the scope
(subscriptions, ``HOTPATCH_RESOURCE_GROUP``) is skipped with one ``event_ignored`` log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import weakref
from dataclasses import replace
from typing import Any

import azure.durable_functions as df
import azure.functions as func
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

from core.clock import current_clock
from core.contracts import (
    ENROLL,
    INSTALL,
    ROLLOUT_ORCHESTRATOR,
    MachineDone,
    MachineInput,
    RecordPage,
    RolloutState,
    record_content,
)
from core.facts import MachinePayloadError, parse_machine_id
from core.policy import (
    NarrowingError,
    Policy,
    SettingError,
    load_policy,
    narrow,
    parse_subscription_id,
    quote_value,
    unknown_settings,
)
from core.report_views import report_csv, report_html
from core.rollout import summarize
from core.vocabulary import REBOOT_APPROVED_EVENT

from .instances import (
    ACTIVE,
    FLEET_INSTALL_ID,
    FLEET_ROLLOUT_ID,
    machine_instance_id,
    new_rollout_id,
    record_prefix,
    running_rollout,
    start_or_attach,
    subscription_install_id,
    subscription_rollout_id,
)

bp = df.Blueprint()
log = logging.getLogger("arc_hotpatch.triggers")

MACHINE_WRITE_OPERATION = "Microsoft.HybridCompute/machines/write"
RESOURCE_WRITE_SUCCESS = "Microsoft.Resources.ResourceWriteSuccess"
MAX_BODY_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32
MAX_NAME_CHARS = 256  # an approver's name


class RequestRejected(ValueError):
    """A request answered with ``status`` (400 unless said otherwise) and an error ``code``; ``str()`` is the
    message (short: it quotes at most a prefix of a bad value)."""

    def __init__(self, message: str, status: int = 400, code: str = "InvalidRequest") -> None:
        super().__init__(message)
        self.status, self.code = status, code


def _json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, indent=2), status_code=status, mimetype="application/json", headers=headers or {}
    )


def _error(status: int, code: str, message: str) -> func.HttpResponse:
    return _json_response(status, {"error": {"code": code, "message": message}})


_warned_unknown: set[str] = set()


def app_policy() -> Policy:
    """The policy from app settings; raises SettingError naming a bad setting. Warns once per name about a
    ``HOTPATCH_*`` app setting that is no setting (a typo would leave the default in force)."""
    for name in unknown_settings(os.environ):
        if name not in _warned_unknown:
            _warned_unknown.add(name)
            log.warning("unknown_setting name=%s: not a HOTPATCH setting, ignored (a typo?)", name)
    return load_policy(os.environ)


# --- schedule ------------------------------------------------------------------------------------


@bp.timer_trigger(schedule="%HOTPATCH_SCHEDULE%", arg_name="timer", run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def scheduled_rollout(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    """The whole fleet on the configured schedule, a new run (``rollout-fleet-<time>-<random>``) each time;
    a running fleet run is left alone."""
    policy = app_policy()  # a bad setting fails the invocation, visibly, naming the setting
    await _start_run(client, FLEET_ROLLOUT_ID, policy, ENROLL)


# The binding reads HOTPATCH_INSTALL_TIMER: the deployment sets it to HOTPATCH_INSTALL_SCHEDULE, or to a placeholder
# with this function disabled while that is empty (a timer needs a valid schedule to be indexed).
@bp.timer_trigger(schedule="%HOTPATCH_INSTALL_TIMER%", arg_name="timer", run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def scheduled_hotpatch_install(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    """The whole fleet's hotpatch installation on ``HOTPATCH_INSTALL_SCHEDULE`` (off by default: the deployment
    disables this function until a schedule is set), a new run (``installs-fleet-<time>-<random>``) each time."""
    policy = app_policy()
    if not policy.install_schedule:
        log.info("scheduled_hotpatch_install_off (HOTPATCH_INSTALL_SCHEDULE is empty)")
        return
    await _start_run(client, FLEET_INSTALL_ID, policy, INSTALL)


# --- HTTP start for a subscription ---------------------------------------------------------------


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def _too_deep(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether brackets outside strings nest deeper than ``limit`` (checked before parsing: no RecursionError)."""
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub('""', text)):
        depth += 1 if match.group() in "[{" else -1
        if depth > limit:
            return True
    return False


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise RequestRejected(f"request body repeats the key {quote_value(key)}")
        data[key] = value
    return data


def _no_constant(name: str) -> Any:
    raise RequestRejected(f"request body is not valid JSON: {name} is not a JSON number")


MAX_INTEGER_DIGITS = 18  # no field takes more; Python's own limit (4,300) would answer with its own words


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise RequestRejected(f"request body has an integer of {len(digits.lstrip('-'))} digits; at most "
                              f"{MAX_INTEGER_DIGITS} are accepted")
    return int(digits)


def json_object_body(body: bytes, expected: str) -> dict[str, Any]:
    """An optional JSON object body ({} when empty); ``RequestRejected`` naming what is wrong otherwise
    (413 over ``MAX_BODY_BYTES``; 400 for bytes that are not UTF-8 JSON, nesting deeper than
    ``MAX_JSON_DEPTH``, a repeated key, NaN/Infinity, or anything but an object)."""
    body = body or b""
    if len(body) > MAX_BODY_BYTES:
        raise RequestRejected(f"request body is {len(body)} bytes; at most {MAX_BODY_BYTES} are accepted",
                              413, "RequestTooLarge")
    if not body.strip():
        return {}
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RequestRejected(f"request body is not UTF-8 text (byte {exc.start})") from None
    if _too_deep(text):
        raise RequestRejected(f"request body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(text, object_pairs_hook=_object_without_duplicates, parse_constant=_no_constant,
                          parse_int=_bounded_int)
    except json.JSONDecodeError as exc:
        raise RequestRejected(f"request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
                              ) from None
    except RecursionError:  # _too_deep should have caught it
        raise RequestRejected(f"request body nests deeper than {MAX_JSON_DEPTH} levels") from None
    if not isinstance(data, dict):
        raise RequestRejected(f"request body must be {expected}")
    return data


def parse_rollout_request(subscription_id: str, body: bytes, base: Policy) -> Policy:
    """The rollout policy for ``POST /subscriptions/{id}/rollouts``: ``base`` (the app settings) narrowed by the
    body (``core.policy.narrow``), for the subscription in the path.

    Raises ``RequestRejected`` (400 malformed id or body, 403 a subscription outside the configured scope,
    413 a body too large) or ``SettingError`` / ``NarrowingError`` naming the field."""
    try:
        subscription = parse_subscription_id(subscription_id)
    except ValueError as exc:
        raise RequestRejected(f"invalid subscriptionId {quote_value(subscription_id)}: expected {exc}") from None
    if base.subscriptions and subscription not in base.subscriptions:
        raise RequestRejected(
            f"subscription {subscription} is outside the configured scope (HOTPATCH_SUBSCRIPTIONS names "
            f"{len(base.subscriptions)} other subscription(s))", 403, "SubscriptionOutOfScope")
    overrides = json_object_body(body, 'a JSON object of policy overrides, e.g. {"dry_run": true}')
    return narrow(replace(base, subscriptions=(subscription,)), overrides)


_start_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _start_lock() -> asyncio.Lock:
    """Serializes rollout starts on this worker's loop: the look for a running run and the start are one step."""
    loop = asyncio.get_running_loop()
    lock = _start_locks.get(loop)
    if lock is None:
        lock = _start_locks[loop] = asyncio.Lock()
    return lock


def _rollout_running(req: func.HttpRequest, client: df.DurableOrchestrationClient,
                     instance_id: str) -> func.HttpResponse:
    """Starting again while a run is going is a no-op that returns the running instance (SPEC §3): its status
    URLs as a start answers them, saying that this request started nothing (its body was not applied)."""
    links = client.get_client_response_links(req, instance_id)
    body = {**links, "already_running": True,
            "message": f"a run is already going: {instance_id}; this request started nothing"}
    return _json_response(202, body, {"Location": links["statusQueryGetUri"], "Retry-After": "10"})


@bp.route(route="subscriptions/{subscriptionId}/rollouts", methods=["POST"])
@bp.durable_client_input(client_name="client")
async def start_subscription_rollout(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Start a rollout run of one subscription (a new instance id per run); while one runs, its links (202)."""
    return await _start_subscription_run(req, client, ENROLL)


async def _start_run(client: df.DurableOrchestrationClient, stem: str, policy: Policy,
                     kind: str) -> tuple[str, bool]:
    """A new run under ``stem`` unless one runs: (its instance id, True), or (the running one's, False)."""
    async with _start_lock():
        running = await running_rollout(client, stem)
        if running is not None:
            log.info("run_already_running kind=%s instance=%s", kind, running.instance_id)
            return running.instance_id, False
        instance_id = new_rollout_id(stem, current_clock().now())
        await client.start_new(ROLLOUT_ORCHESTRATOR, instance_id, RolloutState(policy, kind=kind).to_json())
    log.info("run_started kind=%s instance=%s dry_run=%s reboot_policy=%s", kind, instance_id, policy.dry_run,
             policy.reboot_policy)
    return instance_id, True


async def _start_subscription_run(req: func.HttpRequest, client: df.DurableOrchestrationClient,
                                  kind: str) -> func.HttpResponse:
    """A run of ``kind`` for the subscription of the path, its policy the app settings narrowed by the body."""
    try:
        base = app_policy()
    except SettingError as exc:
        return _error(500, "InvalidAppSetting", str(exc))
    try:
        policy = parse_rollout_request(req.route_params.get("subscriptionId", ""), req.get_body(), base)
    except RequestRejected as exc:
        return _error(exc.status, exc.code, str(exc))
    except NarrowingError as exc:
        return _error(400, "OverrideNotAllowed", str(exc))
    except SettingError as exc:
        return _error(400, "InvalidPolicyOverride", str(exc))
    except ValueError as exc:
        return _error(400, "InvalidRequest", str(exc)[:300])
    stem = (subscription_rollout_id if kind == ENROLL else subscription_install_id)(policy.subscriptions[0])
    instance_id, started = await _start_run(client, stem, policy, kind)
    if not started:
        return _rollout_running(req, client, instance_id)
    return client.create_check_status_response(req, instance_id)


@bp.route(route="subscriptions/{subscriptionId}/hotpatch-installs", methods=["POST"])
@bp.durable_client_input(client_name="client")
async def start_subscription_install(req: func.HttpRequest, client: df.DurableOrchestrationClient
                                     ) -> func.HttpResponse:
    """Install this month's hotpatches on a subscription's enrolled machines (never rebooting): the same body rules
    as a rollout (202, 400, 403; the running run's links while one runs), the same waves, concurrency and
    guardrail; its report at the rollout route."""
    return await _start_subscription_run(req, client, INSTALL)


# --- report --------------------------------------------------------------------------------------


async def _windows(client: df.DurableOrchestrationClient, custom: dict[str, Any]) -> list[Any]:
    """The statuses of a rollout run's subscription windows."""
    return [s for s in [await client.get_status(w) for w in custom.get("windows") or []] if s and s.runtime_status]


def rows_of_records(records: list[Any]) -> list[dict[str, Any]]:
    """The report rows in a window's records: a machine's outcome (queued ones are not final), halted pages."""
    rows: list[dict[str, Any]] = []
    for record in records:
        content = record_content(record.input_, record.output)
        record_json = content if isinstance(content, dict) else {}
        if "row" in record_json and not record_json.get("queued") and not record_json.get("deferred"):
            rows.append(MachineDone.from_json(record_json).row.to_json())
        elif "rows" in record_json:
            rows.extend(row.to_json() for row in RecordPage.from_json(record_json).rows)
    return rows


REPORT_FORMATS = ("json", "html", "csv")


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
    shape = (req.params.get("format") or "json").strip().lower()
    if shape not in REPORT_FORMATS:
        return _error(400, "InvalidFormat", f"format {quote_value(shape)}: expected json, html or csv")
    report = await rollout_report(client, instance_id)
    if report is None:
        return _error(404, "RolloutNotFound", f"no rollout with instance id {quote_value(instance_id)}")
    if shape == "html":
        return func.HttpResponse(report_html(report, f"Hotpatch rollout {instance_id}"), status_code=200,
                                 mimetype="text/html", charset="utf-8")
    if shape == "csv":
        return func.HttpResponse(report_csv(report), status_code=200, mimetype="text/csv", charset="utf-8",
                                 headers={"Content-Disposition": f'attachment; filename="{instance_id}.csv"'})
    return _json_response(200, report)


# --- reboot approvals ------------------------------------------------------------------------------


APPROVAL_FIELDS = ("machine_id", "approved", "by")


def _approval(body: bytes, fields: tuple[str, ...] = APPROVAL_FIELDS) -> dict[str, Any]:
    data = json_object_body(body, 'a JSON object such as {"machine_id": "...", "by": "alice"}')
    unknown = [key for key in data if key not in fields]
    if unknown:
        raise RequestRejected(f"unknown field {quote_value(unknown[0])}: expected {', '.join(fields)}")
    if "approved" in data and not isinstance(data["approved"], bool):
        raise RequestRejected(f"'approved' must be a JSON boolean (true or false), not {quote_value(data['approved'])}")
    by = data.get("by")
    if by is not None and (not isinstance(by, str) or len(by) > MAX_NAME_CHARS):
        raise RequestRejected(f"'by' must be a JSON string of at most {MAX_NAME_CHARS} characters, "
                              f"not {quote_value(data['by'])}")
    if "machine_id" in data and (not isinstance(data["machine_id"], str) or len(data["machine_id"]) > 1024):
        raise RequestRejected(f"'machine_id' must be an Arc machine resource id (a JSON string), "
                              f"not {quote_value(data['machine_id'])}")
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
            raise RequestRejected("'machine_id' (the Arc machine resource id) is required")
        parse_machine_id(machine_id)
    except RequestRejected as exc:
        return _error(exc.status, exc.code, str(exc))
    except (ValueError, MachinePayloadError) as exc:
        return _error(400, "InvalidRequest", str(exc)[:300])
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
        data = _approval(req.get_body(), ("approved", "by"))
    except RequestRejected as exc:
        return _error(exc.status, exc.code, str(exc))
    decision = {"approved": data.get("approved", True), "by": str(data.get("by") or "")}
    rollout = await client.get_status(rollout_id)
    custom = rollout.custom_status if rollout and isinstance(rollout.custom_status, dict) else {}
    if not custom.get("run_key"):
        return _error(404, "RolloutNotFound", f"no rollout with instance id {quote_value(rollout_id)}")
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


def _event_type(event: Any) -> Any:
    """An Event Grid schema event's ``event_type``, or a CloudEvents 1.0 event's ``type``."""
    event_type = getattr(event, "event_type", None)
    return event_type if event_type is not None else getattr(event, "type", None)


def _said(value: Any, limit: int = 200) -> str:
    """A value from an event, cut short for a log line."""
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "…"


def machine_from_event(event: func.EventGridEvent) -> str | None:
    """The Arc machine resource id of a machine write event, or None (with the reason logged).

    Takes an Event Grid schema event or a CloudEvents 1.0 one (``func.CloudEvent``: ``type`` for ``eventType``)."""
    data = event.get_json() if callable(getattr(event, "get_json", None)) else None
    event_id, event_type = _said(getattr(event, "id", None)), _event_type(event)
    if not isinstance(getattr(event, "id", None), str) or not event.id:  # both schemas require a string id
        log.info("event_ignored id=%s reason=the event id is not a non-empty string", event_id)
        return None
    if event_type != RESOURCE_WRITE_SUCCESS:
        log.info("event_ignored id=%s reason=event type %s", event_id, _said(event_type))
        return None
    if not isinstance(data, dict):
        log.info("event_ignored id=%s reason=data is not an object", event_id)
        return None
    if data.get("operationName") != MACHINE_WRITE_OPERATION:
        log.info("event_ignored id=%s reason=operation %s", event_id, _said(data.get("operationName")))
        return None
    resource_id = data.get("resourceUri") or getattr(event, "subject", None)
    try:
        parse_machine_id(resource_id if isinstance(resource_id, str) else "")
    except MachinePayloadError as exc:
        log.info("event_ignored id=%s reason=%s", event_id, _said(exc))
        return None
    return resource_id


def out_of_scope(machine_id: str, policy: Policy) -> str | None:
    """Why a machine is outside the configured scope (subscriptions, resource group), or None if inside."""
    subscription, resource_group, _ = parse_machine_id(machine_id)
    if policy.subscriptions and subscription not in policy.subscriptions:
        return f"subscription {subscription} is not in HOTPATCH_SUBSCRIPTIONS"
    if policy.resource_group and resource_group.lower() != policy.resource_group.lower():
        return f"resource group {_said(resource_group, 90)} is not HOTPATCH_RESOURCE_GROUP {policy.resource_group}"
    return None


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
    outside = out_of_scope(machine_id, policy)
    if outside:
        log.info("event_ignored id=%s reason=out of scope: %s machine=%s", _said(event.id), outside, machine_id)
        return
    machine_input = MachineInput(machine_id, policy, rollout_id=f"event-{_said(event.id, 100)}")
    started = await start_or_attach(client, machine_input)
    log.info("event_machine id=%s machine=%s instance=%s started=%s", event.id, machine_id,
             started.instance_id, started.started)
