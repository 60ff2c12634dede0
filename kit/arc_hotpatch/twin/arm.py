"""ARM shapes of the twin: errors, request bodies in, resources out (HybridCompute 2025-01-13).

Rendering follows the spec's definitions (``Machine``, ``LicenseProfile``,
``MachineRunCommand``, common-types ``OperationStatusResult`` and ``ErrorResponse``):
no nulls, read-only properties filled in the way ARM fills them, secrets
(``runAsPassword``, protected parameter values) never echoed.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from .machine import (
    ABSENT,
    LicenseProfile,
    LicenseProfileChange,
    ProductFeature,
    RunCommand,
    RunRequest,
    SimulatedMachine,
)
from .scripts import recognise_script
from .seeding import stable_uuid

MACHINE_TYPE = "Microsoft.HybridCompute/machines"
LICENSE_PROFILE_TYPE = "Microsoft.HybridCompute/machines/licenseProfiles"
RUN_COMMAND_TYPE = "Microsoft.HybridCompute/machines/runCommands"
LICENSE_TYPE = "Microsoft.HybridCompute/licenses"

PRODUCT_TYPES = ("WindowsServer", "WindowsIoTEnterprise")
# What a write may say about a subscription status: the update enum, or a read-back value
# (the spec's own CreateOrUpdate example sends "Enabled").
WRITABLE_SUBSCRIPTION_STATUSES = (
    "Enable",
    "Disable",
    "Unknown",
    "Enabling",
    "Enabled",
    "Disabled",
    "Disabling",
    "Failed",
)
HOTPATCH_ENABLEMENT_BY_FEATURE_STATUS = {
    "Enabled": "Enabled",
    "Enabling": "PendingEvaluation",
    "Failed": "ActionRequired",
    "Disabled": "Disabled",
    "Disabling": "Disabled",
    "Unknown": "Unknown",
}


class ArmError(Exception):
    """An ARM error response: HTTP status, ``{"error": {"code", "message"}}`` and extra headers."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def invalid_content(detail: str) -> ArmError:
    return ArmError(
        400, "InvalidRequestContent", f"The request content was invalid and could not be deserialized: {detail}"
    )


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid_content(f"'{where}' must be a JSON object.")
    return value


def _optional_string(container: Mapping[str, Any], key: str, where: str) -> str | None:
    value = container.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid_content(f"'{where}.{key}' must be a string.")
    return value


def _optional_boolean(container: Mapping[str, Any], key: str, where: str) -> bool | None:
    value = container.get(key)
    if value is not None and not isinstance(value, bool):
        raise invalid_content(f"'{where}.{key}' must be a boolean.")
    return value


def _nested_property(
    properties: Mapping[str, Any],
    outer: str,
    inner: str,
    parse: Callable[[Mapping[str, Any], str, str], Any],
) -> Any:
    """``properties.outer.inner`` parsed: None if ``outer`` is null, ``ABSENT`` if either is missing."""
    if outer not in properties:
        return ABSENT
    container = properties[outer]
    if container is None:
        return None
    where = f"properties.{outer}"
    container = _object(container, where)
    if inner not in container:
        return ABSENT
    return parse(container, inner, where)


def parse_tags(value: Any, where: str = "tags") -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise invalid_content(f"'{where}' must be an object of string values.")
    return dict(value)


def _location(body: Mapping[str, Any]) -> str:
    location = body.get("location")
    if not isinstance(location, str) or not location.strip():
        raise ArmError(400, "LocationRequired", "The location property is required for this definition.")
    return location


def _subscription_status(value: Any, where: str) -> str | None:
    if value is None:
        return None
    for accepted in WRITABLE_SUBSCRIPTION_STATUSES:
        if isinstance(value, str) and value.lower() == accepted.lower():
            return accepted
    raise ArmError(
        400,
        "InvalidParameter",
        f"The value {value!r} of '{where}' is invalid. Accepted values: {', '.join(WRITABLE_SUBSCRIPTION_STATUSES)}.",
    )


def parse_license_profile(body: Any, *, partial: bool) -> LicenseProfileChange:
    """A PUT (``partial=False``) or PATCH body of ``licenseProfiles/default``."""
    body = _object(body, "body")
    fields: dict[str, Any] = {}
    if not partial:
        fields["location"] = _location(body)
    if "tags" in body:
        fields["tags"] = parse_tags(body["tags"])
    properties = body.get("properties")
    if properties is None:
        return LicenseProfileChange(**fields)
    properties = _object(properties, "properties")

    fields["software_assurance_customer"] = _nested_property(
        properties, "softwareAssurance", "softwareAssuranceCustomer", _optional_boolean
    )
    fields["esu_assigned_license"] = _nested_property(properties, "esuProfile", "assignedLicense", _optional_string)

    if "productProfile" in properties:
        product = properties["productProfile"]
        if product is None:
            fields.update(product_type=None, product_subscription_status=None, features=[])
        else:
            product = _object(product, "properties.productProfile")
            if "productType" in product:
                product_type = product["productType"]
                if product_type is not None and product_type not in PRODUCT_TYPES:
                    raise ArmError(
                        400,
                        "InvalidParameter",
                        f"The value {product_type!r} of 'properties.productProfile.productType' is invalid. "
                        f"Accepted values: {', '.join(PRODUCT_TYPES)}.",
                    )
                fields["product_type"] = product_type
            if "subscriptionStatus" in product:
                fields["product_subscription_status"] = _subscription_status(
                    product["subscriptionStatus"], "properties.productProfile.subscriptionStatus"
                )
            if "productFeatures" in product:
                fields["features"] = _parse_features(product["productFeatures"])
    return LicenseProfileChange(**fields)


def _parse_features(value: Any) -> list[tuple[str, str | None]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid_content("'properties.productProfile.productFeatures' must be an array.")
    features: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for index, item in enumerate(value):
        where = f"properties.productProfile.productFeatures[{index}]"
        item = _object(item, where)
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ArmError(400, "InvalidParameter", f"'{where}.name' is required.")
        if name.lower() in seen:
            raise ArmError(400, "InvalidParameter", f"The product feature '{name}' is listed more than once.")
        seen.add(name.lower())
        features.append((name, _subscription_status(item.get("subscriptionStatus"), f"{where}.subscriptionStatus")))
    return features


def _parse_parameters(value: Any, where: str) -> list[dict[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid_content(f"'{where}' must be an array of {{name, value}}.")
    parameters = []
    for index, item in enumerate(value):
        item = _object(item, f"{where}[{index}]")
        name, val = item.get("name"), item.get("value")
        if not isinstance(name, str) or not name or not isinstance(val, str):
            raise invalid_content(f"'{where}[{index}]' needs a string 'name' and a string 'value'.")
        parameters.append({"name": name, "value": val})
    return parameters


def parse_run_command(body: Any) -> RunRequest:
    """A PUT body of ``runCommands/{name}``."""
    body = _object(body, "body")
    location = _location(body)
    properties = _object(body.get("properties") or {}, "properties")
    source = _object(properties.get("source") or {}, "properties.source")
    given = [key for key in ("script", "scriptUri", "commandId") if source.get(key)]
    if len(given) != 1 or not isinstance(source[given[0]], str):
        raise ArmError(
            400,
            "InvalidParameter",
            "Exactly one of 'script', 'scriptUri' or 'commandId' must be specified in 'properties.source'.",
        )
    # Thousands of runs of the same few scripts: one copy of each text, not one per execution kept.
    clean_source = {given[0]: sys.intern(source[given[0]])}
    if isinstance(source.get("scriptUriManagedIdentity"), dict):
        clean_source["scriptUriManagedIdentity"] = source["scriptUriManagedIdentity"]
    asynchronous = properties.get("asyncExecution", False)
    if not isinstance(asynchronous, bool):
        raise invalid_content("'properties.asyncExecution' must be a boolean.")
    timeout = properties.get("timeoutInSeconds")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0):
        raise invalid_content("'properties.timeoutInSeconds' must be a whole number >= 0.")
    return RunRequest(
        location=location,
        tags=parse_tags(body.get("tags")),
        source=clean_source,
        parameters=_parse_parameters(properties.get("parameters"), "properties.parameters"),
        protected_parameters=_parse_parameters(properties.get("protectedParameters"), "properties.protectedParameters"),
        async_execution=asynchronous,
        timeout_in_seconds=timeout or None,
        run_as_user=_optional_string(properties, "runAsUser", "properties"),
        output_blob_uri=_optional_string(properties, "outputBlobUri", "properties"),
        error_blob_uri=_optional_string(properties, "errorBlobUri", "properties"),
        script_name=recognise_script(source.get("script")),
    )


# --- rendering -------------------------------------------------------------------------------


def _feature_json(feature: ProductFeature, *, with_name: bool = True) -> dict[str, Any]:
    document: dict[str, Any] = {"name": feature.name} if with_name else {}
    document["subscriptionStatus"] = feature.status
    if feature.enrollment_date is not None:
        document["enrollmentDate"] = iso(feature.enrollment_date)
    if feature.disenrollment_date is not None:
        document["disenrollmentDate"] = iso(feature.disenrollment_date)
    if feature.error is not None:
        document["error"] = dict(feature.error)
    return document


def _product_profile_json(profile: LicenseProfile) -> dict[str, Any] | None:
    document: dict[str, Any] = {}
    if profile.product_subscription is not None:
        document.update(_feature_json(profile.product_subscription, with_name=False))
    if profile.product_type is not None:
        document["productType"] = profile.product_type
    if profile.features:
        document["productFeatures"] = [_feature_json(f) for f in profile.features]
    return document or None


def _esu_facts(machine: SimulatedMachine, profile: LicenseProfile | None) -> dict[str, Any]:
    """Read-only ESU facts ARM reports for any Windows machine."""
    spec = machine.spec
    eligible = spec.is_windows_server and "2012" in spec.os_sku
    assigned = profile is not None and profile.esu_assigned_license is not None
    document: dict[str, Any] = {
        "esuEligibility": "Eligible" if eligible else "Ineligible",
        "esuKeyState": "Active" if eligible and assigned else "Inactive",
    }
    if spec.edition_id in ("ServerStandard", "ServerDatacenter"):
        document["serverType"] = spec.edition_id.removeprefix("Server")
    return document


def license_profile_resource(machine: SimulatedMachine, now: datetime) -> dict[str, Any]:
    profile = machine.license_profile
    assert profile is not None
    properties: dict[str, Any] = {}
    if profile.software_assurance_customer is not None:
        properties["softwareAssurance"] = {"softwareAssuranceCustomer": profile.software_assurance_customer}
    esu = _esu_facts(machine, profile)
    if profile.esu_assigned_license is not None:
        esu["assignedLicense"] = profile.esu_assigned_license
        esu["assignedLicenseImmutableId"] = _license_immutable_id(profile.esu_assigned_license)
    properties["esuProfile"] = esu
    product = _product_profile_json(profile)
    if product is not None:
        properties["productProfile"] = product
    properties["provisioningState"] = profile.provisioning_state_at(now)
    document: dict[str, Any] = {
        "id": f"{machine.resource_id}/licenseProfiles/default",
        "name": "default",
        "type": LICENSE_PROFILE_TYPE,
        "location": profile.location,
    }
    if profile.tags:
        document["tags"] = dict(profile.tags)
    document["properties"] = properties
    return document


def _license_immutable_id(license_id: str) -> str:
    return stable_uuid("license", license_id.lower())


def _license_instance_view(machine: SimulatedMachine) -> dict[str, Any]:
    profile = machine.license_profile
    view: dict[str, Any] = {"licenseStatus": "Licensed", "licenseChannel": "Volume:GVLK"}
    if profile is not None and profile.software_assurance_customer is not None:
        view["softwareAssurance"] = {"softwareAssuranceCustomer": profile.software_assurance_customer}
    esu = _esu_facts(machine, profile)
    if profile is not None and profile.esu_assigned_license is not None:
        license_id = profile.esu_assigned_license
        edition = "Standard" if machine.spec.edition_id == "ServerStandard" else "Datacenter"
        esu["assignedLicense"] = {
            "id": license_id,
            "name": license_id.rstrip("/").rsplit("/", 1)[-1],
            "type": LICENSE_TYPE,
            "location": machine.location,
            "properties": {
                "tenantId": machine.tenant_id,
                "licenseType": "ESU",
                "licenseDetails": {
                    "state": "Activated",
                    "target": "Windows Server 2012",
                    "edition": edition,
                    "type": "pCore",
                    "processors": 16,
                    "immutableId": _license_immutable_id(license_id),
                },
            },
        }
        esu["licenseAssignmentState"] = "Assigned"
    else:
        esu["licenseAssignmentState"] = "NotAssigned"
    view["esuProfile"] = esu
    product = _product_profile_json(profile) if profile is not None else None
    if product is not None:
        view["productProfile"] = product
    return view


def _patch_settings(machine: SimulatedMachine, instance_view: bool) -> dict[str, Any]:
    if not machine.spec.is_windows:
        return {"assessmentMode": "ImageDefault", "patchMode": "ImageDefault"}
    feature = machine.hotpatch_feature
    status = feature.status if feature is not None else "Disabled"
    settings: dict[str, Any] = {
        "assessmentMode": "ImageDefault",
        "patchMode": "AutomaticByOS",
        "enableHotpatching": status in ("Enabled", "Enabling"),
    }
    if instance_view:
        hotpatch_status: dict[str, Any] = {"hotpatchEnablementStatus": HOTPATCH_ENABLEMENT_BY_FEATURE_STATUS[status]}
        if feature is not None and feature.error is not None:
            hotpatch_status["error"] = dict(feature.error)
        elif status == "Enabled" and machine.enablement_action_required is not None:
            hotpatch_status = {"hotpatchEnablementStatus": "ActionRequired",
                               "error": dict(machine.enablement_action_required)}
        settings["status"] = hotpatch_status
    return settings


def machine_resource(machine: SimulatedMachine, now: datetime, *, instance_view: bool = False) -> dict[str, Any]:
    spec = machine.spec
    windows = spec.is_windows
    domain = "corp.contoso.com"
    fqdn = f"{machine.name}.{domain}"
    properties: dict[str, Any] = {
        "provisioningState": "Succeeded",
        "status": machine.agent_status,
        "lastStatusChange": iso(machine.last_status_change),
        "agentVersion": machine.agent_version,
        "vmId": machine.vm_id,
        "vmUuid": machine.vm_uuid,
        "displayName": machine.name,
        "machineFqdn": fqdn,
        "dnsFqdn": fqdn,
        "domainName": domain if windows else "",
        "adFqdn": fqdn if windows else "",
        "osName": "windows" if windows else "linux",
        "osType": "windows" if windows else "linux",
        "osVersion": spec.os_version,
        "osSku": spec.os_sku,
        "mssqlDiscovered": "false",
        "detectedProperties": {
            "cloudprovider": "N/A",
            "manufacturer": "Microsoft Corporation",
            "model": "Virtual Machine",
            "coreCount": "8",
            "logicalCoreCount": "16",
            "totalPhysicalMemoryInGigabytes": "32",
        },
        "agentConfiguration": _agent_configuration(machine),
        "serviceStatuses": {
            "extensionService": {"status": machine.himds.lower(), "startupType": "automatic"},
            "guestConfigurationService": {"status": machine.himds.lower(), "startupType": "automatic"},
        },
        "cloudMetadata": {"provider": "N/A"},
        "firmwareProfile": {"type": "UEFI" if spec.uefi else "BIOS", "serialNumber": machine.vm_uuid},
        "agentUpgrade": {"enableAutomaticUpgrade": False},
        "osProfile": {
            "computerName": machine.name.upper()[:15] if windows else machine.name,
            ("windowsConfiguration" if windows else "linuxConfiguration"): {
                "patchSettings": _patch_settings(machine, instance_view)
            },
        },
    }
    if windows:
        properties["osEdition"] = spec.edition_id.lower()
    if machine.agent_status == "Error":
        properties["errorDetails"] = [
            {
                "code": "AgentHeartbeatFailure",
                "message": "The Connected Machine agent reported an error: the himds service cannot reach Azure.",
            }
        ]
    if instance_view and windows:
        properties["licenseProfile"] = _license_instance_view(machine)
    document: dict[str, Any] = {
        "id": machine.resource_id,
        "name": machine.name,
        "type": MACHINE_TYPE,
        "location": machine.location,
        "tags": dict(machine.tags),
        "identity": {"type": "SystemAssigned", "principalId": machine.principal_id, "tenantId": machine.tenant_id},
        "properties": properties,
    }
    return document


def _agent_configuration(machine: SimulatedMachine) -> dict[str, Any]:
    """``agentConfiguration`` as ``azcmagent config`` set it (the scenario's extensions_* and agent_config_mode)."""
    spec = machine.spec

    def extensions(entries: tuple[str, ...]) -> list[dict[str, str]]:
        return [{"publisher": e.split("/", 1)[0], "type": e.split("/", 1)[1]} for e in entries]

    configuration: dict[str, Any] = {
        "extensionsEnabled": "true" if spec.extensions_enabled else "false",
        "guestConfigurationEnabled": "true",
        "configMode": spec.agent_config_mode,
        "incomingConnectionsPorts": [],
        "proxyBypass": [],
    }
    if spec.extensions_blocklist:
        configuration["extensionsBlockList"] = extensions(spec.extensions_blocklist)
    if spec.extensions_allowlist:
        configuration["extensionsAllowList"] = extensions(spec.extensions_allowlist)
    return configuration


ISO_DURATION = re.compile(r"^P(?:\d+D)?(?:T(?=\d)(?:\d+H)?(?:\d+M)?(?:\d+(?:\.\d+)?S)?)?$")


def install_result(machine: SimulatedMachine, operation: Any, ended_at: datetime) -> dict[str, Any]:
    """A ``MachineInstallPatchesResult`` (2025-01-13) of the installation the machine makes as the operation ends."""
    request = operation.request or {}
    body: dict[str, Any] = {
        "status": "Succeeded", "installationActivityId": operation.op_id, "rebootStatus": "Unknown",
        "maintenanceWindowExceeded": False, "excludedPatchCount": 0, "notSelectedPatchCount": 0,
        "pendingPatchCount": 0, "installedPatchCount": 0, "failedPatchCount": 0,
        "startDateTime": iso(operation.started_at), "lastModifiedDateTime": iso(ended_at), "startedBy": "User",
        "patchServiceUsed": "WU", "osType": "Windows" if machine.spec.is_windows else "Linux",
    }
    if not machine.agent_reachable:
        body.update(status="Failed", errorDetails={"code": "MachineNotReachable",
                                                   "message": "The Connected Machine agent did not answer."})
        return body
    done = machine.install_patches(ended_at, str(request.get("rebootSetting") or "IfRequired"),
                                   bool(request.get("excludeKbsRequiringReboot")))
    body.update(installedPatchCount=done["installed"], pendingPatchCount=done["pending"],
                excludedPatchCount=done["excluded"], rebootStatus=done["reboot"])
    return body


def assessment_result(machine: SimulatedMachine, activity_id: str, started_at: datetime,
                      ended_at: datetime) -> dict[str, Any]:
    """A ``MachineAssessPatchesResult`` (2025-01-13): the machine's pending reboot as Windows reports it; a machine
    whose agent cannot be reached fails the assessment."""
    windows = machine.spec.is_windows
    body: dict[str, Any] = {
        "status": "Succeeded" if machine.agent_reachable else "Failed",
        "assessmentActivityId": activity_id,
        "rebootPending": bool(machine.pending_reboot_reasons),
        "startDateTime": iso(started_at),
        "lastModifiedDateTime": iso(ended_at),
        "availablePatchCountByClassification": {
            "security": 1 if windows else 0, "critical": 0, "definition": 1 if windows else 0, "updateRollup": 0,
            "featurePack": 0, "servicePack": 0, "tools": 0, "updates": 0, "other": 0,
        },
        "startedBy": "User",
        "patchServiceUsed": "WU" if windows else "APT",
        "osType": "Windows" if windows else "Linux",
    }
    if not machine.agent_reachable:
        body["errorDetails"] = {"code": "MachineNotReachable",
                                "message": "The Connected Machine agent did not answer the assessment."}
    return body


def run_command_resource(
    machine: SimulatedMachine, run: RunCommand, now: datetime, *, instance_view: bool = True
) -> dict[str, Any]:
    request = run.request
    properties: dict[str, Any] = {
        "source": dict(request.source),
        "parameters": [dict(p) for p in request.parameters],
        "protectedParameters": [],  # values are secrets: never returned
        "asyncExecution": request.async_execution,
    }
    if request.run_as_user is not None:
        properties["runAsUser"] = request.run_as_user
    if request.timeout_in_seconds is not None:
        properties["timeoutInSeconds"] = request.timeout_in_seconds
    if request.output_blob_uri is not None:
        properties["outputBlobUri"] = request.output_blob_uri
    if request.error_blob_uri is not None:
        properties["errorBlobUri"] = request.error_blob_uri
    properties["provisioningState"] = run.provisioning_state_at(now)
    if instance_view:
        properties["instanceView"] = run_instance_view(run, now)
    document: dict[str, Any] = {
        "id": f"{machine.resource_id}/runCommands/{run.name}",
        "name": run.name,
        "type": RUN_COMMAND_TYPE,
        "location": request.location,
    }
    if run.tags:
        document["tags"] = dict(run.tags)
    document["properties"] = properties
    return document


def run_instance_view(run: RunCommand, now: datetime) -> dict[str, Any]:
    view: dict[str, Any] = {
        "executionState": run.execution_state,
        "executionMessage": run.execution_message,
        "output": run.output,
        "error": run.error,
    }
    if run.exit_code is not None:
        view["exitCode"] = run.exit_code
    if run.start_time is not None:
        view["startTime"] = iso(run.start_time)
    if run.end_time is not None:
        view["endTime"] = iso(run.end_time)
    error = run.provisioning_error_at(now)
    if error is not None:
        view["statuses"] = [
            {
                "code": f"ProvisioningState/failed/{error['code']}",
                "level": "Error",
                "displayStatus": "Provisioning failed",
                "message": error["message"],
                "time": iso(run.end_time or now),
            }
        ]
    return view


def subscription_resource(subscription_id: str, tenant_id: str, index: int) -> dict[str, Any]:
    """A ``Subscription`` of Microsoft.Resources subscriptions 2022-12-01."""
    return {
        "id": f"/subscriptions/{subscription_id}",
        "authorizationSource": "RoleBased",
        "managedByTenants": [],
        "subscriptionId": subscription_id,
        "tenantId": tenant_id,
        "displayName": f"Arc fleet {index + 1}",
        "state": "Enabled",
        "subscriptionPolicies": {
            "locationPlacementId": "Public_2014-09-01",
            "quotaId": "EnterpriseAgreement_2014-09-01",
            "spendingLimit": "Off",
        },
        "tags": {},
    }
