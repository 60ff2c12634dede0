"""Handlers for machines: list by subscription or by resource group (paged), get, and assessPatches (a
long-running POST answered 202 with a ``Location``, its final state read there: the 2025-01-13 spec's
``final-state-via: location``)."""

from __future__ import annotations

from typing import Any

from ..arm import ISO_DURATION, invalid_content, machine_resource
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


INSTALL_SECONDS = 5 * 60  # installing a month's hotpatches takes minutes
REBOOT_SETTINGS = ("IfRequired", "Never", "Always")


def install_patches(state: FleetState, call: Call) -> Reply:
    """Machines_InstallPatches: the body checked as the spec's MachineInstallPatchesParameters (maximumDuration and
    rebootSetting required), then 202 with the operation's Location; the machine installs when it completes."""
    found = machine(state, call)
    body = call.body if isinstance(call.body, dict) else None
    if body is None:
        raise invalid_content("the request body must be a MachineInstallPatchesParameters object")
    duration, reboot = body.get("maximumDuration"), body.get("rebootSetting")
    if not isinstance(duration, str) or not ISO_DURATION.match(duration):
        raise invalid_content(f"maximumDuration {duration!r} is not an ISO 8601 duration such as PT4H")
    if reboot not in REBOOT_SETTINGS:
        raise invalid_content(f"rebootSetting {reboot!r} is not one of {', '.join(REBOOT_SETTINGS)}")
    windows = body.get("windowsParameters") or {}
    if not isinstance(windows, dict):
        raise invalid_content("windowsParameters must be an object")
    headers = start_operation(state, call, "machines.installPatches", found, seconds=INSTALL_SECONDS)
    state.operations.get(headers["Location"].rsplit("/", 1)[-1].split("?")[0]).request = {
        "rebootSetting": reboot, "excludeKbsRequiringReboot": windows.get("excludeKbsRequiringReboot") is True}
    return Reply(202, None, {"Location": headers["Location"], "Retry-After": headers["Retry-After"]})
