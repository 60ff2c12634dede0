"""Validate the fleet twin's responses against the HybridCompute 2025-01-13 REST specification.

The swagger file and the common-types it refers to are loaded into one
``referencing.Registry`` (each under its file URI, so the specs' relative ``$ref``s
resolve as they do in the repository). A response is checked in three ways:

1. its status code must be one the operation documents (``responses`` of the swagger
   operation, found by ``operationId``); an error status must fit ``default``;
2. its body must validate (JSON Schema draft 4, which Swagger 2.0 schemas are) against
   the documented schema, with ``date-time`` formats checked; ``x-ms-*``, ``readOnly``
   and other annotations are ignored by the validator, ``allOf`` is applied as written;
3. it must not carry properties the spec does not define (Swagger object schemas allow
   extra properties; a typo such as ``hotpatchEnablementStaus`` would otherwise pass),
   and every header the documented response lists (``Azure-AsyncOperation``,
   ``Location``, ``Retry-After``) must be present.

ARM's operation status endpoint is not a swagger path: it is checked against
common-types ``OperationStatusResult``. The subscriptions list belongs to another spec
(Microsoft.Resources subscriptions 2022-12-01) that is not vendored: it is checked
against a hand-written schema of that version's ``Subscription`` definition.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from jsonschema import Draft4Validator, FormatChecker
from referencing import Registry
from referencing.jsonschema import DRAFT4

SPECS_ROOT = Path(__file__).parent / "azure-rest-api-specs" / "specification"
HYBRID_COMPUTE = (
    SPECS_ROOT / "hybridcompute/resource-manager/Microsoft.HybridCompute/stable/2025-01-13/HybridCompute.json"
)
COMMON_TYPES = [SPECS_ROOT / f"common-types/resource-management/{v}/types.json" for v in ("v1", "v3", "v5")]
EXAMPLES = HYBRID_COMPUTE.parent / "examples"

# The twin's request-counting names -> swagger operationIds.
OPERATION_IDS = {
    "machines.get": "Machines_Get",
    "machines.assessPatches": "Machines_AssessPatches",
    "machines.installPatches": "Machines_InstallPatches",
    "machines.list_by_subscription": "Machines_ListBySubscription",
    "machines.list_by_resource_group": "Machines_ListByResourceGroup",
    "licenseProfiles.get": "LicenseProfiles_Get",
    "licenseProfiles.put": "LicenseProfiles_CreateOrUpdate",
    "licenseProfiles.patch": "LicenseProfiles_Update",
    "licenseProfiles.delete": "LicenseProfiles_Delete",
    "licenseProfiles.list": "LicenseProfiles_List",
    "runCommands.get": "MachineRunCommands_Get",
    "runCommands.put": "MachineRunCommands_CreateOrUpdate",
    "runCommands.patch": "MachineRunCommands_Update",
    "runCommands.delete": "MachineRunCommands_Delete",
    "runCommands.list": "MachineRunCommands_List",
}

# Microsoft.Resources subscriptions 2022-12-01 ``Subscription`` / ``SubscriptionListResult`` (not vendored).
_SUBSCRIPTION = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "subscriptionId", "displayName", "tenantId", "state"],
    "properties": {
        "id": {"type": "string"},
        "subscriptionId": {"type": "string"},
        "displayName": {"type": "string"},
        "tenantId": {"type": "string"},
        "state": {"enum": ["Enabled", "Warned", "PastDue", "Disabled", "Deleted"]},
        "subscriptionPolicies": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "locationPlacementId": {"type": "string"},
                "quotaId": {"type": "string"},
                "spendingLimit": {"enum": ["On", "Off", "CurrentPeriodOff"]},
            },
        },
        "authorizationSource": {"type": "string"},
        "managedByTenants": {
            "type": "array",
            "items": {"type": "object", "properties": {"tenantId": {"type": "string"}}},
        },
        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
SUBSCRIPTION_SCHEMAS = {
    "subscriptions.get": _SUBSCRIPTION,
    "subscriptions.list": {
        "type": "object",
        "additionalProperties": False,
        "required": ["value"],
        "properties": {"value": {"type": "array", "items": _SUBSCRIPTION}, "nextLink": {"type": "string"}},
    },
}

_format_checker = FormatChecker()


@_format_checker.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str) or "T" not in value:
        return False
    return datetime.fromisoformat(value).tzinfo is not None


class SpecContract:
    """The 2025-01-13 contract, loaded once per test session."""

    def __init__(self) -> None:
        resources = []
        for path in [HYBRID_COMPUTE, *COMMON_TYPES]:
            contents = json.loads(path.read_text(encoding="utf-8"))
            resources.append((path.resolve().as_uri(), DRAFT4.create_resource(contents)))
        self.registry: Registry = Registry().with_resources(resources)
        self.hybrid_compute_uri = HYBRID_COMPUTE.resolve().as_uri()
        self.common_v3_uri = COMMON_TYPES[1].resolve().as_uri()
        self.swagger: dict[str, Any] = json.loads(HYBRID_COMPUTE.read_text(encoding="utf-8"))
        self.operations: dict[str, dict[str, Any]] = {}
        for methods in self.swagger["paths"].values():
            for operation in methods.values():
                if isinstance(operation, dict) and "operationId" in operation:
                    self.operations[operation["operationId"]] = operation

    def definition_ref(self, name: str) -> str:
        return f"{self.hybrid_compute_uri}#/definitions/{name}"

    def common_ref(self, name: str) -> str:
        return f"{self.common_v3_uri}#/definitions/{name}"

    def schema_problems(self, body: Any, schema: dict[str, Any], base_uri: str | None = None) -> list[str]:
        """JSON Schema errors plus properties the spec does not define."""
        base = base_uri or self.hybrid_compute_uri
        if set(schema) == {"$ref"}:  # a swagger response schema: make its reference absolute
            schema = {"$ref": urljoin(base, schema["$ref"])}
        validator = Draft4Validator(schema, registry=self.registry, format_checker=_format_checker)
        problems = [
            f"{'/'.join(str(p) for p in error.absolute_path) or '(body)'}: {error.message}"
            for error in validator.iter_errors(body)
        ]
        problems.extend(self.undefined_properties(body, schema, base))
        return problems

    def problems_for_definition(self, body: Any, ref: str) -> list[str]:
        return self.schema_problems(body, {"$ref": ref})

    # --- properties the spec does not define ---------------------------------------------------

    def _resolve(self, schema: dict[str, Any], base: str) -> tuple[dict[str, Any], str]:
        while "$ref" in schema:
            target = urljoin(base, schema["$ref"])
            resolved = self.registry.resolver(base_uri=base).lookup(schema["$ref"])
            base = target.split("#", 1)[0]
            schema = resolved.contents
        return schema, base

    def _object_members(
        self, schema: dict[str, Any], base: str
    ) -> tuple[dict[str, tuple[dict[str, Any], str]], Any, bool]:
        """(declared properties, additionalProperties, whether the schema describes an object)."""
        schema, base = self._resolve(schema, base)
        members: dict[str, tuple[dict[str, Any], str]] = {
            name: (sub, base) for name, sub in schema.get("properties", {}).items()
        }
        additional = schema.get("additionalProperties")
        additional_at = (additional, base) if isinstance(additional, dict) else additional
        describes_object = "properties" in schema or schema.get("type") == "object"
        for parent in schema.get("allOf", []):
            parent_members, parent_additional, parent_object = self._object_members(parent, base)
            members.update(parent_members)
            additional_at = additional_at if additional_at is not None else parent_additional
            describes_object = describes_object or parent_object
        return members, additional_at, describes_object

    def undefined_properties(self, body: Any, schema: dict[str, Any], base: str, path: str = "") -> list[str]:
        problems: list[str] = []
        schema, base = self._resolve(schema, base)
        if isinstance(body, dict):
            members, additional, describes_object = self._object_members(schema, base)
            if not describes_object:
                return problems
            for key, value in body.items():
                where = f"{path}/{key}"
                if key in members:
                    problems.extend(self.undefined_properties(value, members[key][0], members[key][1], where))
                elif isinstance(additional, tuple):
                    problems.extend(self.undefined_properties(value, additional[0], additional[1], where))
                elif additional is None and members:
                    problems.append(f"{where}: property not defined by the spec")
        elif isinstance(body, list) and isinstance(schema.get("items"), dict):
            for index, item in enumerate(body):
                problems.extend(self.undefined_properties(item, schema["items"], base, f"{path}/{index}"))
        return problems

    # --- whole responses -------------------------------------------------------------------------

    def response_problems(self, record: Any, resource_type_schemas: dict[str, str] | None = None) -> list[str]:
        """Everything wrong with one ``ExchangeRecord`` according to the contract."""
        status, body, operation = record.status, record.body, record.operation
        where = f"{record.method} {record.path} -> {status} ({operation})"
        if status >= 400:
            problems = self.problems_for_definition(body, self.common_ref("ErrorResponse"))
            error = body.get("error") if isinstance(body, dict) else None
            if not isinstance(error, dict) or not error.get("code") or not error.get("message"):
                problems.append("an ARM error needs error.code and error.message")
            return [f"{where}: {p}" for p in problems]
        if operation in SUBSCRIPTION_SCHEMAS:
            schema = SUBSCRIPTION_SCHEMAS[operation]
            return [f"{where}: {p}" for p in self.schema_problems(body, schema)]
        if operation == "operationStatus.get":
            problems = self.problems_for_definition(body, self.common_ref("OperationStatusResult"))
            if body.get("status") not in ("InProgress", "Succeeded", "Failed", "Canceled"):
                problems.append(f"status {body.get('status')!r} is not an ARM async operation status")
            return [f"{where}: {p}" for p in problems]
        if operation == "operationResults.get":
            if status in (202, 204):
                return [] if body is None else [f"{where}: {status} must have no body"]
            by_type = {
                "Microsoft.HybridCompute/machines/licenseProfiles": "LicenseProfile",
                "Microsoft.HybridCompute/machines/runCommands": "MachineRunCommand",
            }
            definition = by_type.get(body.get("type", "") if isinstance(body, dict) else "")
            if isinstance(body, dict) and "assessmentActivityId" in body:  # assessPatches' final state (no type)
                definition = "MachineAssessPatchesResult"
            if isinstance(body, dict) and "installationActivityId" in body:  # installPatches' final state
                definition = "MachineInstallPatchesResult"
            if definition is None:
                return [f"{where}: operation result of unknown resource type"]
            return [f"{where}: {p}" for p in self.problems_for_definition(body, self.definition_ref(definition))]
        operation_id = OPERATION_IDS.get(operation)
        if operation_id is None:
            return [f"{where}: no documented operation for {operation!r}"]
        documented = self.operations[operation_id]["responses"]
        response = documented.get(str(status))
        if response is None:
            return [f"{where}: status {status} is not documented for {operation_id} ({', '.join(documented)})"]
        problems = []
        for header in response.get("headers", {}):
            if header.lower() not in {h.lower() for h in record.headers}:
                problems.append(f"documented header {header} is missing")
        schema = response.get("schema")
        if schema is None:
            if body is not None:
                problems.append(f"{status} is documented without a body, got one")
        else:
            problems.extend(self.schema_problems(body, schema))
        return [f"{where}: {p}" for p in problems]

    def all_problems(self, records: Iterable[Any]) -> list[str]:
        problems: list[str] = []
        for record in records:
            problems.extend(self.response_problems(record))
        return problems
