"""Activities that talk to the Durable Functions engine itself (the durable client).

An orchestrator may not call the durable client; an activity may. Rollout windows start their
machines' singleton orchestrations (``start_or_attach``, shared with the Event Grid trigger),
read the records their machines leave when they end, and look at the ones that may not leave
one; a rollout reads its windows.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import azure.durable_functions as df
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

from core.contracts import (
    READ_INSTANCES,
    READ_MACHINE_WORKFLOWS,
    READ_RECORDS,
    ROLLOUT_WINDOW,
    START_MACHINES,
    START_WINDOWS,
    InstanceView,
    MachinesRead,
    ReadMachines,
    RecordQuery,
    ReportRow,
    StartedMachine,
    StartedMachines,
    StartMachines,
    WindowState,
    record_content,
)
from core.ledger import changes_made
from core.schedule import parse_utc
from orchestrators.instances import ACTIVE, ENDED_BADLY, start_or_attach, window_instance_id

from .ledger_calls import read_entries

bp = df.Blueprint()


@bp.function_name(START_MACHINES)
@bp.activity_trigger(input_name="request")
@bp.durable_client_input(client_name="client")
async def start_machines(request: StartMachines, client: df.DurableOrchestrationClient) -> StartedMachines:
    """Start (or attach to) the orchestrations of the given machines.

    Idempotent: a second execution finds the first one's instances running and attaches.
    """
    request = StartMachines.from_json(request)
    return StartedMachines([await start_or_attach(client, replace(request.template, machine_id=machine_id))
                            for machine_id in request.machine_ids])


@bp.function_name(READ_MACHINE_WORKFLOWS)
@bp.activity_trigger(input_name="request")
@bp.durable_client_input(client_name="client")
async def read_machine_workflows(request: ReadMachines, client: df.DurableOrchestrationClient) -> MachinesRead:
    """The rows of the finished machine orchestrations among ``instances`` and the ids still running."""
    request = ReadMachines.from_json(request)
    rows: list[ReportRow] = []
    pending: list[StartedMachine] = []
    for item in request.instances:
        status = await client.get_status(item.instance_id)
        runtime = status.runtime_status if status else None
        if runtime == OrchestrationRuntimeStatus.Completed and isinstance(status.output, dict):
            rows.append(ReportRow.from_json(status.output))
        elif runtime in ENDED_BADLY:
            # What it really did before it ended is in the ledger (its own entries, by instance id).
            actions, reboots = changes_made(read_entries(item.machine_id), item.instance_id)
            row = ReportRow.failed(item.machine_id, f"orchestration {runtime.value}: {status.output}")
            rows.append(replace(row, actions=actions, reboots=reboots))
        else:
            pending.append(item)
    return MachinesRead(rows, pending)


@bp.function_name(START_WINDOWS)
@bp.activity_trigger(input_name="windows")
@bp.durable_client_input(client_name="client")
async def start_windows(windows: list[dict[str, Any]], client: df.DurableOrchestrationClient) -> list[str]:
    """Start a rollout's subscription windows (top-level, so that the rollout may continue as new)."""
    started = []
    for window in (WindowState.from_json(w) for w in windows):
        instance_id = window_instance_id(window.run_key, window.index)
        status = await client.get_status(instance_id)
        if not (status and status.runtime_status in ACTIVE) and not (
                status and status.runtime_status == OrchestrationRuntimeStatus.Completed):
            await client.start_new(ROLLOUT_WINDOW, instance_id, window.to_json())
        started.append(instance_id)
    return started


@bp.function_name(READ_INSTANCES)
@bp.activity_trigger(input_name="instance_ids")
@bp.durable_client_input(client_name="client")
async def read_instances(instance_ids: list[str], client: df.DurableOrchestrationClient) -> list[InstanceView]:
    """Runtime status, custom status and output of each instance (``runtime_status`` None: no such instance)."""
    views = []
    for instance_id in instance_ids:
        status = await client.get_status(instance_id)
        runtime = status.runtime_status.value if status and status.runtime_status else None
        views.append(InstanceView(instance_id, runtime, status.custom_status if runtime else None,
                                  status.output if runtime else None))
    return views


@bp.function_name(READ_RECORDS)
@bp.activity_trigger(input_name="query")
@bp.durable_client_input(client_name="client")
async def read_records(query: RecordQuery, client: df.DurableOrchestrationClient) -> list[InstanceView]:
    """The completed records under ``prefix`` (created at or after ``since``), oldest first."""
    query = RecordQuery.from_json(query)
    since = parse_utc(query.since) if query.since else None
    statuses = await client.get_status_by(created_time_from=since, instance_id_prefix=query.prefix,
                                          runtime_status=[OrchestrationRuntimeStatus.Completed])
    # The view's output is the record (its input).
    views = [InstanceView(s.instance_id, s.runtime_status.value, None, record_content(s.input_, s.output),
                          s.created_time.isoformat() if s.created_time else "") for s in statuses]
    return sorted(views, key=lambda v: (v.created_time, v.instance_id))
