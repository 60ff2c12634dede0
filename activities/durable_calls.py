"""Activities that talk to the Durable Functions engine itself (the durable client).

A rollout chunk starts its machines' singleton orchestrations (``start_or_attach``, shared
with the Event Grid trigger) and reads their outcomes through these: an orchestrator may
not call the durable client itself, an activity may.
"""

from __future__ import annotations

import azure.durable_functions as df
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

from core.contracts import (
    READ_MACHINE_WORKFLOWS,
    START_MACHINE_WORKFLOWS,
    MachinesRead,
    ReadMachines,
    ReportRow,
    StartedMachine,
    StartMachines,
)
from orchestrators.instances import ENDED_BADLY, start_or_attach

bp = df.Blueprint()


@bp.function_name(START_MACHINE_WORKFLOWS)
@bp.activity_trigger(input_name="request")
@bp.durable_client_input(client_name="client")
async def start_machine_workflows(
    request: StartMachines, client: df.DurableOrchestrationClient
) -> list[StartedMachine]:
    """Start (or attach to) the orchestrations of a chunk of machines. Idempotent by construction."""
    request = StartMachines.from_json(request)
    return [
        await start_or_attach(client, machine_id, request.policy, request.rollout_id)
        for machine_id in request.machine_ids
    ]


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
            rows.append(ReportRow.failed(item.machine_id, f"orchestration {runtime.value}: {status.output}"))
        else:
            pending.append(item)
    return MachinesRead(rows, pending)
