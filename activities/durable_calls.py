"""Activities and helpers that talk to the Durable Functions engine itself (the durable client).

The per-machine orchestration is a top-level singleton (instance id from the
machine's resource id) whatever starts it: the fleet rollout, the HTTP start or
Event Grid. Everyone starts it through ``start_or_attach``; the engine's own
instance-id uniqueness (host.json ``overridableExistingInstanceStates:
NonRunningStates``) settles the race between two starters.
"""

from __future__ import annotations

import logging
from typing import Any

import azure.durable_functions as df
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

from arc_hotpatch.domain.facts import parse_machine_id
from arc_hotpatch.domain.schedule import machine_instance_id
from arc_hotpatch.domain.vocabulary import FinalState

bp = df.Blueprint()
log = logging.getLogger("arc_hotpatch.durable")

MACHINE_ORCHESTRATOR = "machine_orchestrator"
ACTIVE = {OrchestrationRuntimeStatus.Pending, OrchestrationRuntimeStatus.Running}
FAILED = {OrchestrationRuntimeStatus.Failed, OrchestrationRuntimeStatus.Terminated,
          OrchestrationRuntimeStatus.Canceled}


async def start_or_attach(
    client: df.DurableOrchestrationClient, machine_id: str, policy: dict[str, Any], rollout_id: str = ""
) -> dict[str, Any]:
    """Start the machine's orchestration unless one is already active; either way return its instance id."""
    instance_id = machine_instance_id(machine_id)
    status = await client.get_status(instance_id)
    if status and status.runtime_status in ACTIVE:
        return {"machine_id": machine_id, "instance_id": instance_id, "started": False}
    try:
        await client.start_new(
            MACHINE_ORCHESTRATOR, instance_id, {"machine_id": machine_id, "policy": policy, "rollout_id": rollout_id}
        )
    except Exception as exc:
        # Another starter won the race between our status read and our start.
        status = await client.get_status(instance_id)
        if not (status and status.runtime_status in ACTIVE):
            raise
        log.info("machine_already_started machine=%s instance=%s (%s)", machine_id, instance_id, exc)
        return {"machine_id": machine_id, "instance_id": instance_id, "started": False}
    log.info("machine_started machine=%s instance=%s rollout=%s", machine_id, instance_id, rollout_id)
    return {"machine_id": machine_id, "instance_id": instance_id, "started": True}


def failed_row(machine_id: str, detail: str) -> dict[str, Any]:
    """The report row of a machine whose orchestration crashed (a bug or an unexpected payload)."""
    subscription_id, _, name = parse_machine_id(machine_id)
    return {
        "id": machine_id, "subscription_id": subscription_id, "name": name, "state": FinalState.ESCALATED.value,
        "reason": "orchestration_failed", "actions": [], "reboots": 0, "os_version": "", "baseline": "unknown",
        "detail": detail[:500],
    }


@bp.activity_trigger(input_name="payload")
@bp.durable_client_input(client_name="client")
async def start_machine_workflows(payload: dict[str, Any], client: df.DurableOrchestrationClient) -> list[dict]:
    """Start (or attach to) the orchestrations of a chunk of machines. Idempotent by construction."""
    return [
        await start_or_attach(client, machine_id, payload["policy"], payload.get("rollout_id", ""))
        for machine_id in payload["machine_ids"]
    ]


@bp.activity_trigger(input_name="payload")
@bp.durable_client_input(client_name="client")
async def read_machine_workflows(payload: dict[str, Any], client: df.DurableOrchestrationClient) -> dict[str, Any]:
    """The rows of the finished machine orchestrations among ``instances`` and the ids still running."""
    rows: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []
    for item in payload["instances"]:
        status = await client.get_status(item["instance_id"])
        runtime = status.runtime_status if status else None
        if runtime == OrchestrationRuntimeStatus.Completed and isinstance(status.output, dict):
            rows.append(status.output)
        elif runtime in FAILED:
            rows.append(failed_row(item["machine_id"], f"orchestration {runtime.value}: {status.output}"))
        else:
            pending.append(item)
    return {"rows": rows, "pending": pending}
