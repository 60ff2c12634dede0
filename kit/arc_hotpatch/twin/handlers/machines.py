"""Handlers for machines: list by subscription or by resource group (paged), get, and assessPatches (a
long-running POST answered 202 with a ``Location``, its final state read there: the 2025-01-13 spec's
``final-state-via: location``)."""

from __future__ import annotations

from typing import Any

from ..arm import machine_resource
from ..calls import Call, Reply
from ..machine import SimulatedMachine
from ..state import FleetState
from .common import expand_instance_view, machine, page, resource_group_machines, subscription
from .operations import start_operation


def list_machines(state: FleetState, call: Call) -> Reply:
    """Machines_ListByResourceGroup when the path names a group, else Machines_ListBySubscription."""
    if "resource_group" in call.params:
        machines = resource_group_machines(state, call)
        instance_view = expand_instance_view(call)
    else:
        machines = state.by_subscription[subscription(state, call).lower()]
        instance_view = False  # Machines_ListBySubscription has no $expand in 2025-01-13

    def render(listed: SimulatedMachine) -> dict[str, Any]:
        listed.advance(call.now)
        return machine_resource(listed, call.now, instance_view=instance_view)

    return page(state, call, machines, render)


def get_machine(state: FleetState, call: Call) -> Reply:
    found = machine(state, call)
    return Reply(200, machine_resource(found, call.now, instance_view=expand_instance_view(call)))


ASSESSMENT_SECONDS = 90  # Update Manager's assessment of one machine takes a minute or two


def assess_patches(state: FleetState, call: Call) -> Reply:
    """Machines_AssessPatches: 202 with the operation's Location (and Retry-After); the result follows there."""
    found = machine(state, call)
    headers = start_operation(state, call, "machines.assessPatches", found, seconds=ASSESSMENT_SECONDS)
    return Reply(202, None, {"Location": headers["Location"], "Retry-After": headers["Retry-After"]})
