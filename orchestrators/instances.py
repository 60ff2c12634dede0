"""Orchestration instance ids, and start-or-attach of the per-machine singleton.

The per-machine orchestration is a top-level singleton (instance id from the machine's
resource id) whatever starts it: the fleet rollout, the HTTP start or Event Grid. Everyone
starts it through ``start_or_attach``; the engine's own instance-id uniqueness (host.json
``overridableExistingInstanceStates: NonRunningStates``) settles a race between two starters.
"""

from __future__ import annotations

import hashlib
import logging
import re

import azure.durable_functions as df
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

from core.contracts import MACHINE_ORCHESTRATOR, MachineInput, StartedMachine

log = logging.getLogger("arc_hotpatch.durable")

MACHINE_INSTANCE_PREFIX = "hotpatch-"  # every per-machine orchestration's instance id starts so
FLEET_ROLLOUT_ID = "rollout-fleet"
ACTIVE = frozenset({OrchestrationRuntimeStatus.Pending, OrchestrationRuntimeStatus.Running})
ENDED_BADLY = frozenset({OrchestrationRuntimeStatus.Failed, OrchestrationRuntimeStatus.Terminated,
                         OrchestrationRuntimeStatus.Canceled})
_UNSAFE = re.compile(r"[^a-z0-9-]+")


def machine_instance_id(machine_id: str) -> str:
    """The per-machine singleton's orchestration instance id: stable for a machine whatever starts it.

    Readable (the machine name) and unique (a hash of the full, case-folded resource id);
    only characters instance ids allow.
    """
    resource_id = machine_id.strip().lower()
    digest = hashlib.sha256(resource_id.encode()).hexdigest()[:16]
    name = _UNSAFE.sub("-", resource_id.rsplit("/", 1)[-1]).strip("-")[:40] or "machine"
    return f"{MACHINE_INSTANCE_PREFIX}{name}-{digest}"


def subscription_rollout_id(subscription_id: str) -> str:
    return f"rollout-{subscription_id}"


def window_instance_id(run_key: str, index: int) -> str:
    """A rollout run's window for its ``index``-th subscription; every record of the window is under it."""
    return f"{run_key}:w{index}"


def record_prefix(window_id: str, kind: str = "") -> str:
    """The ids of a window's records: ``d`` (a machine's outcome), ``q`` (a machine queued for its wave),
    ``h`` (a page of machines a halt left unstarted)."""
    return f"{window_id}:{kind}"


def outcome_record_id(window_id: str, queued: bool, machine_instance: str) -> str:
    return f"{record_prefix(window_id, 'q' if queued else 'd')}:{machine_instance}"


def halted_record_id(window_id: str, page: int) -> str:
    return f"{record_prefix(window_id, 'h')}{page}"


async def start_or_attach(client: df.DurableOrchestrationClient, machine_input: MachineInput) -> StartedMachine:
    """Start the machine's orchestration unless one is already active; either way return its instance id."""
    machine_id, rollout_id = machine_input.machine_id, machine_input.rollout_id
    instance_id = machine_instance_id(machine_id)
    status = await client.get_status(instance_id)
    if status and status.runtime_status in ACTIVE:
        return StartedMachine(machine_id, instance_id, started=False)
    try:
        await client.start_new(MACHINE_ORCHESTRATOR, instance_id, machine_input.to_json())
    except Exception as exc:
        # Another starter won the race between our status read and our start.
        status = await client.get_status(instance_id)
        if not (status and status.runtime_status in ACTIVE):
            raise
        log.info("machine_already_started machine=%s instance=%s (%s)", machine_id, instance_id, exc)
        return StartedMachine(machine_id, instance_id, started=False)
    log.info("machine_started machine=%s instance=%s rollout=%s", machine_id, instance_id, rollout_id)
    return StartedMachine(machine_id, instance_id, started=True)
