"""Handlers for a machine's Run Commands: the long-running PUT and DELETE, get, PATCH (tags), and list."""

from __future__ import annotations

import re

from ..arm import ArmError, parse_run_command, parse_tags, run_command_resource
from ..calls import Call, Reply
from ..machine import RunCommand, SimulatedMachine
from ..state import FleetState
from .common import child_not_found, expand_instance_view, machine, page
from .operations import DELETE_OPERATION_SECONDS, start_operation

CHILD_TYPE = "runCommands"
RUN_COMMAND_NAME = re.compile(r"^[a-zA-Z0-9\-_.]{1,80}$")


def _run_name(call: Call) -> str:
    name = call.params["name"]
    if not RUN_COMMAND_NAME.match(name):
        raise ArmError(
            400, "InvalidResourceName", f"The resource name '{name}' is invalid. It must match [a-zA-Z0-9-_.]+."
        )
    return name


def _current_run(state: FleetState, call: Call) -> tuple[SimulatedMachine, RunCommand]:
    name = _run_name(call)
    found = machine(state, call, parent_of=CHILD_TYPE)
    run = found.runs.get(name.lower())
    if run is None:
        raise child_not_found(call, CHILD_TYPE, name)
    return found, run


def get_run_command(state: FleetState, call: Call) -> Reply:
    found, run = _current_run(state, call)
    return Reply(200, run_command_resource(found, run, call.now))


def list_run_commands(state: FleetState, call: Call) -> Reply:
    found = machine(state, call)
    instance_view = expand_instance_view(call)
    runs = sorted(found.runs.values(), key=lambda r: r.name.lower())
    return page(state, call, runs, lambda run: run_command_resource(found, run, call.now, instance_view=instance_view))


def put_run_command(state: FleetState, call: Call) -> Reply:
    name = _run_name(call)
    found = machine(state, call, parent_of=CHILD_TYPE)
    request = parse_run_command(call.body)
    existing = found.runs.get(name.lower())
    if existing is not None and not existing.terminal:
        raise ArmError(
            409,
            "Conflict",
            f"Run command '{existing.name}' cannot be updated: its execution is in progress "
            f"(executionState {existing.execution_state}). Use a new name or wait until it finishes.",
        )
    run, replaced = found.create_run(name, request, call.now)
    headers = start_operation(state, call, "runCommands.put", found, run=run)
    body = run_command_resource(found, run, call.now, instance_view=False)
    return Reply(200 if replaced else 201, body, headers)


def patch_run_command(state: FleetState, call: Call) -> Reply:
    found, run = _current_run(state, call)
    body = call.body if isinstance(call.body, dict) else None
    if body is None:
        raise ArmError(400, "InvalidRequestContent", "The request content was invalid: expected a JSON object.")
    if "tags" in body:
        run.tags = parse_tags(body["tags"])
    return Reply(200, run_command_resource(found, run, call.now))


def delete_run_command(state: FleetState, call: Call) -> Reply:
    name = _run_name(call)
    found = machine(state, call, parent_of=CHILD_TYPE)
    if not found.delete_run(name, call.now):
        return Reply(204)
    return Reply(202, None, start_operation(state, call, "runCommands.delete", found, seconds=DELETE_OPERATION_SECONDS))
