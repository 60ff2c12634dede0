"""Orchestration instance ids, and start-or-attach of the per-machine singleton.

The per-machine orchestration is a top-level singleton (instance id from the machine's
resource id) whatever starts it: the fleet rollout, the HTTP start or Event Grid. Everyone
starts it through ``start_or_attach``; the engine's own instance-id uniqueness (host.json
``overridableExistingInstanceStates: NonRunningStates``) settles a race between two starters.

A rollout run is not a singleton id: every run gets its own instance id (``new_rollout_id``:
``rollout-<subscription>-<UTC yyyymmddThhmmssZ>-<random>``, ``rollout-fleet-...`` for the
scheduled whole-fleet run), so every run keeps its history and its report. "One running per
subscription" is kept by the starter (``running_rollout``: the active instances under the
subscription's prefix). Ids of the windows and records of a run contain ``:``, a rollout's never.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from datetime import datetime
from typing import Any

import azure.durable_functions as df
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

from core.contracts import INSTALL, INSTALL_ORCHESTRATOR, MACHINE_ORCHESTRATOR, MachineInput, StartedMachine

log = logging.getLogger("arc_hotpatch.durable")

MACHINE_INSTANCE_PREFIX = "hotpatch-"  # every per-machine orchestration's instance id starts so
ACTIVE = frozenset({OrchestrationRuntimeStatus.Pending, OrchestrationRuntimeStatus.Running})
ENDED_BADLY = frozenset({OrchestrationRuntimeStatus.Failed, OrchestrationRuntimeStatus.Terminated,
                         OrchestrationRuntimeStatus.Canceled})
_UNSAFE = re.compile(r"[^a-z0-9-]+")


def machine_instance_id(machine_id: str, kind: str = "") -> str:
    """The per-machine singleton's orchestration instance id: stable for a machine whatever starts it (one for
    its enrollment, ``hotpatch-install-...`` for its hotpatch installations).

    Readable (the machine name) and unique (a hash of the full, case-folded resource id);
    only characters instance ids allow.
    """
    resource_id = machine_id.strip().lower()
    digest = hashlib.sha256(resource_id.encode()).hexdigest()[:16]
    name = _UNSAFE.sub("-", resource_id.rsplit("/", 1)[-1]).strip("-")[:40] or "machine"
    return f"{MACHINE_INSTANCE_PREFIX}{'install-' if kind == INSTALL else ''}{name}-{digest}"


ROLLOUT_PREFIX = "rollout-"
FLEET_ROLLOUT_ID = "rollout-fleet"  # the scheduled whole-fleet runs: ``rollout-fleet-<time>-<random>``
RUNNING = ACTIVE | {OrchestrationRuntimeStatus.ContinuedAsNew}


# Hotpatch installation runs: stems of their own, so a running rollout never stands in for an installation run
# (nor the other way round).
INSTALL_PREFIX = "installs-"
FLEET_INSTALL_ID = "installs-fleet"


def subscription_install_id(subscription_id: str) -> str:
    """The stem of a subscription's hotpatch installation runs' ids."""
    return f"{INSTALL_PREFIX}{subscription_id.strip().lower()}"


def subscription_rollout_id(subscription_id: str) -> str:
    """The stem of a subscription's rollout runs' ids (and the id of a run started before ids had a time)."""
    return f"{ROLLOUT_PREFIX}{subscription_id.strip().lower()}"


def new_rollout_id(stem: str, now: datetime, suffix: str | None = None) -> str:
    """A new rollout run's instance id under ``stem`` (``subscription_rollout_id`` or ``FLEET_ROLLOUT_ID``):
    the UTC start time and a short random suffix. Client functions only (it reads randomness)."""
    return f"{stem}-{now:%Y%m%dT%H%M%SZ}-{suffix or secrets.token_hex(3)}"


def is_run_of(instance_id: str, stem: str) -> bool:
    """Whether ``instance_id`` is a rollout run (not one of its windows or records) under ``stem``."""
    return ":" not in instance_id and (instance_id == stem or instance_id.startswith(stem + "-"))


async def running_rollout(client: df.DurableOrchestrationClient, stem: str) -> Any | None:
    """The status of the active rollout run under ``stem``, or None (the oldest, should there be two)."""
    statuses = await client.get_status_by(instance_id_prefix=stem, runtime_status=sorted(RUNNING, key=str))
    runs = [s for s in statuses if s.instance_id and is_run_of(s.instance_id, stem) and s.runtime_status in RUNNING]
    runs.sort(key=lambda s: (str(s.created_time or ""), s.instance_id))
    return runs[0] if runs else None


def window_instance_id(run_key: str, index: int) -> str:
    """A rollout run's window for its ``index``-th subscription; every record of the window is under it."""
    return f"{run_key}:w{index}"


def record_prefix(window_id: str, kind: str = "") -> str:
    """The ids of a window's records: ``d`` (a machine's outcome), ``q`` (a machine queued for its wave),
    ``h`` (a page of machines a halt left unstarted)."""
    return f"{window_id}:{kind}"


def outcome_record_id(window_id: str, queued: bool, machine_instance: str, deferred: bool = False) -> str:
    """``d`` a machine's outcome, ``q`` queued for its wave, ``r`` read Disconnected (to read again later)."""
    kind = "r" if deferred else ("q" if queued else "d")
    return f"{record_prefix(window_id, kind)}:{machine_instance}"


def halted_record_id(window_id: str, page: int) -> str:
    return f"{record_prefix(window_id, 'h')}{page}"


async def start_or_attach(client: df.DurableOrchestrationClient, machine_input: MachineInput) -> StartedMachine:
    """Start the machine's orchestration unless one is already active; either way return its instance id."""
    machine_id, rollout_id = machine_input.machine_id, machine_input.rollout_id
    instance_id = machine_instance_id(machine_id, machine_input.kind)
    orchestrator = INSTALL_ORCHESTRATOR if machine_input.kind == INSTALL else MACHINE_ORCHESTRATOR
    status = await client.get_status(instance_id)
    if status and status.runtime_status in ACTIVE:
        return StartedMachine(machine_id, instance_id, started=False)
    try:
        await client.start_new(orchestrator, instance_id, machine_input.to_json())
    except Exception as exc:
        # Another starter won the race between our status read and our start.
        status = await client.get_status(instance_id)
        if not (status and status.runtime_status in ACTIVE):
            raise
        log.info("machine_already_started machine=%s instance=%s (%s)", machine_id, instance_id, exc)
        return StartedMachine(machine_id, instance_id, started=False)
    log.info("machine_started machine=%s instance=%s rollout=%s", machine_id, instance_id, rollout_id)
    return StartedMachine(machine_id, instance_id, started=True)
