"""Handlers for ARM's async operations: the status (``Azure-AsyncOperation``) and result (``Location``)
endpoints the SDK polls, and ``start_operation`` for the long-running writes that hand those links out."""

from __future__ import annotations

from typing import Any

from core.azure_clients import HYBRID_COMPUTE_API_VERSION

from ..arm import ArmError, assessment_result, install_result, iso, license_profile_resource, run_command_resource
from ..calls import Call, Reply
from ..machine import RunCommand, SimulatedMachine
from ..state import AsyncOperation, FleetState
from .common import subscription

DELETE_OPERATION_SECONDS = 5
LICENSE_RETRY_AFTER = 5
RUN_COMMAND_RETRY_AFTER = 10


def _location_path(machine: SimulatedMachine) -> str:
    # Operations live under the machine's subscription and location, as HybridCompute's do.
    return f"/subscriptions/{machine.subscription_id}/providers/Microsoft.HybridCompute/locations/{machine.location}"


def _retry_after(operation: AsyncOperation) -> str:
    return str(RUN_COMMAND_RETRY_AFTER if operation.run is not None else LICENSE_RETRY_AFTER)


def start_operation(
    state: FleetState,
    call: Call,
    operation: str,
    machine: SimulatedMachine,
    *,
    seconds: float | None = None,
    run: RunCommand | None = None,
) -> dict[str, str]:
    """Start an async operation; returns the headers that point the client at it."""
    pending = state.operations.start(operation, machine, call.now, seconds=seconds, run=run)
    base = f"{call.origin}{_location_path(machine)}"
    version = f"?api-version={HYBRID_COMPUTE_API_VERSION}"
    return {
        "Azure-AsyncOperation": f"{base}/operationStatus/{pending.op_id}{version}",
        "Location": f"{base}/operationResults/{pending.op_id}{version}",
        "Retry-After": _retry_after(pending),
    }


def _find_operation(state: FleetState, call: Call) -> AsyncOperation:
    found = subscription(state, call)
    operation = state.operations.get(call.params["operation_id"])
    if operation is None or operation.machine.subscription_id != found:
        raise ArmError(404, "OperationNotFound", f"The operation '{call.params['operation_id']}' was not found.")
    operation.machine.advance(call.now)
    return operation


def operation_status(state: FleetState, call: Call) -> Reply:
    operation = _find_operation(state, call)
    status, error, ended_at = operation.status(call.now)
    body: dict[str, Any] = {
        "id": f"{_location_path(operation.machine)}/operationStatus/{operation.op_id}",
        "name": operation.op_id,
        "status": status,
        "startTime": iso(operation.started_at),
    }
    headers: dict[str, str] = {}
    if status == "InProgress":
        headers["Retry-After"] = _retry_after(operation)
    else:
        body["endTime"] = iso(ended_at or call.now)
        body["percentComplete"] = 100
    if error is not None:
        body["error"] = dict(error)
    return Reply(200, body, headers)


def operation_result(state: FleetState, call: Call) -> Reply:
    operation = _find_operation(state, call)
    status, error, ended_at = operation.status(call.now)
    if status == "InProgress":
        location = f"{call.origin}{call.path}?api-version={HYBRID_COMPUTE_API_VERSION}"
        return Reply(202, None, {"Location": location, "Retry-After": _retry_after(operation)})
    if status != "Succeeded":
        assert error is not None
        raise ArmError(409 if status == "Canceled" else 400, error["code"], error["message"])
    machine = operation.machine
    if operation.run is not None:
        return Reply(200, run_command_resource(machine, operation.run, call.now))
    if operation.operation in ("licenseProfiles.put", "licenseProfiles.patch") and machine.license_profile:
        return Reply(200, license_profile_resource(machine, call.now))
    if operation.operation == "machines.assessPatches":
        return Reply(200, assessment_result(machine, operation.op_id, operation.started_at, ended_at or call.now))
    if operation.operation == "machines.installPatches":
        if operation.result is None:  # the installation happens once, when the operation is first seen done
            operation.result = install_result(machine, operation, ended_at or call.now)
        return Reply(200, operation.result)
    return Reply(204)
