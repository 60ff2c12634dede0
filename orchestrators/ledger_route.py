"""``GET /api/ledger?machine_id=<ARM id>``: a machine's audit ledger entries across rollouts.

A client function like the triggers (keyed: the app's FUNCTION auth level); it reads the table through the
ledger's own helper (activities/ledger_calls.py), so no orchestration is involved and nothing here touches
settings or SDK clients itself.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from activities.ledger_calls import read_entries
from core.facts import MachinePayloadError, parse_machine_id
from core.ledger import LedgerSettingError

bp = df.Blueprint()
log = logging.getLogger("arc_hotpatch.ledger")

MAX_MACHINE_ID_CHARS = 1000


def _json_response(status: int, body: Any) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, indent=2), status_code=status, mimetype="application/json")


def _error(status: int, code: str, message: str) -> func.HttpResponse:
    return _json_response(status, {"error": {"code": code, "message": message}})


def requested_machine_id(params: Any) -> str:
    """The ``machine_id`` query parameter, checked; ValueError naming the problem."""
    machine_id = (params.get("machine_id") or "").strip()
    if not machine_id:
        raise ValueError("the query parameter 'machine_id' (the Arc machine resource id) is required")
    if len(machine_id) > MAX_MACHINE_ID_CHARS:
        raise ValueError(f"'machine_id' is longer than {MAX_MACHINE_ID_CHARS} characters: {machine_id[:60]!r}...")
    try:
        parse_machine_id(machine_id)
    except MachinePayloadError as exc:
        raise ValueError(f"invalid 'machine_id': {str(exc)[:300]}") from None
    return machine_id


@bp.route(route="ledger", methods=["GET"])
def get_machine_ledger(req: func.HttpRequest) -> func.HttpResponse:
    """``{"machine_id", "entries": [{"at", "rollout_id", "instance_id", "change", "phase", "detail",
    "parameters"}]}``, oldest first."""
    try:
        machine_id = requested_machine_id(req.params)
    except ValueError as exc:
        return _error(400, "InvalidRequest", str(exc))
    try:
        entries = read_entries(machine_id)
    except LedgerSettingError as exc:
        return _error(500, "InvalidAppSetting", str(exc))
    return _json_response(200, {"machine_id": machine_id, "entries": [entry.view() for entry in entries]})
