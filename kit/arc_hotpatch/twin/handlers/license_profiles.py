"""Handlers for a machine's license profile (``licenseProfiles/default``): get, list, and the long-running
PUT / PATCH / DELETE."""

from __future__ import annotations

from ..arm import ArmError, license_profile_resource, parse_license_profile
from ..calls import Call, Reply
from ..machine import ABSENT, LicenseProfileChange, SimulatedMachine
from ..state import FleetState
from .common import child_not_found, machine
from .operations import DELETE_OPERATION_SECONDS, start_operation

CHILD_TYPE = "licenseProfiles"
LICENSE_OPERATION_SECONDS = 15


def _license_machine(state: FleetState, call: Call) -> SimulatedMachine:
    name = call.params["name"]
    if name.lower() != "default":
        raise ArmError(400, "InvalidParameter", f"The license profile name '{name}' is invalid; it must be 'default'.")
    found = machine(state, call, parent_of=CHILD_TYPE)
    if not found.spec.is_windows and call.method in ("PUT", "PATCH"):
        raise ArmError(400, "InvalidParameter", "License profiles are supported for Windows machines only.")
    return found


def _check_product_type(machine: SimulatedMachine, change: LicenseProfileChange, replace: bool) -> None:
    """Enrolling a product feature or subscription requires productType WindowsServer (given or kept)."""
    features = change.features if change.features is not ABSENT else []
    enrolling = [name for name, status in features if (status or "").lower().startswith("enabl")]
    if change.product_subscription_status not in (ABSENT, None):
        enrolling.append("(product)")
    if not enrolling:
        return
    product_type = change.product_type
    if product_type is ABSENT and not replace and machine.license_profile is not None:
        product_type = machine.license_profile.product_type
    if product_type != "WindowsServer":
        raise ArmError(
            400,
            "InvalidParameter",
            "properties.productProfile.productType must be 'WindowsServer' to enroll Windows Server product "
            "features or subscriptions.",
        )


def get_license_profile(state: FleetState, call: Call) -> Reply:
    found = _license_machine(state, call)
    if found.license_profile is None:
        raise child_not_found(call, CHILD_TYPE, "default")
    return Reply(200, license_profile_resource(found, call.now))


def list_license_profiles(state: FleetState, call: Call) -> Reply:
    found = machine(state, call)
    value = [license_profile_resource(found, call.now)] if found.license_profile else []
    return Reply(200, {"value": value})


def put_license_profile(state: FleetState, call: Call) -> Reply:
    found = _license_machine(state, call)
    change = parse_license_profile(call.body, partial=False)
    _check_product_type(found, change, replace=True)
    created = found.write_license_profile("PUT", change, call.body, call.now)
    headers = start_operation(state, call, "licenseProfiles.put", found, seconds=LICENSE_OPERATION_SECONDS)
    return Reply(201 if created else 200, license_profile_resource(found, call.now), headers)


def patch_license_profile(state: FleetState, call: Call) -> Reply:
    found = _license_machine(state, call)
    if found.license_profile is None:
        raise child_not_found(call, CHILD_TYPE, "default")
    change = parse_license_profile(call.body, partial=True)
    _check_product_type(found, change, replace=False)
    found.write_license_profile("PATCH", change, call.body, call.now)
    headers = start_operation(state, call, "licenseProfiles.patch", found, seconds=LICENSE_OPERATION_SECONDS)
    return Reply(202, None, headers)


def delete_license_profile(state: FleetState, call: Call) -> Reply:
    found = _license_machine(state, call)
    if not found.delete_license_profile(call.now):
        return Reply(204)
    return Reply(
        202, None, start_operation(state, call, "licenseProfiles.delete", found, seconds=DELETE_OPERATION_SECONDS)
    )
