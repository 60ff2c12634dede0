"""The hosting resources follow Microsoft's azd Functions templates: Flex Consumption, identity everywhere."""

from __future__ import annotations

from tree_sitter import Node

from .bicep_tree import INFRA, NotLiteral, Resource, all_resources, literal, load, lookup, object_properties, text

# Resource type -> API version, each checked against the Bicep type definitions of
# Azure/bicep-types-az (property names included) when it was chosen. Changing one
# means checking the properties again.
VERIFIED_API_VERSIONS = {
    "Microsoft.Resources/resourceGroups": "2024-03-01",
    "Microsoft.ManagedIdentity/userAssignedIdentities": "2023-01-31",
    "Microsoft.Storage/storageAccounts": "2023-05-01",
    "Microsoft.Storage/storageAccounts/blobServices": "2023-05-01",
    "Microsoft.Storage/storageAccounts/blobServices/containers": "2023-05-01",
    "Microsoft.OperationalInsights/workspaces": "2023-09-01",
    "Microsoft.Insights/components": "2020-02-02",
    "Microsoft.Web/serverfarms": "2024-04-01",
    "Microsoft.Web/sites": "2024-04-01",
    "Microsoft.Web/sites/config": "2024-04-01",
    "Microsoft.Authorization/roleAssignments": "2022-04-01",
    "Microsoft.Authorization/roleDefinitions": "2022-04-01",
    "Microsoft.EventGrid/systemTopics": "2025-02-15",
    "Microsoft.EventGrid/systemTopics/eventSubscriptions": "2025-02-15",
    "Microsoft.DurableTask/schedulers": "2025-11-01",
    "Microsoft.DurableTask/schedulers/taskHubs": "2025-11-01",
}


def _one(path: str, resource_type: str) -> Resource:
    (resource,) = load(INFRA / path).resources_of(resource_type)
    return resource


def test_api_versions_are_the_verified_ones() -> None:
    for resource in all_resources():
        assert VERIFIED_API_VERSIONS.get(resource.type) == resource.api_version, (
            f"{resource.file.relative}: {resource.type}@{resource.api_version} is not a verified version"
        )


def test_storage_has_no_shared_keys_and_no_public_blobs() -> None:
    properties = literal(lookup(_one("app/storage.bicep", "Microsoft.Storage/storageAccounts").body, "properties"))
    assert properties["allowSharedKeyAccess"] is False
    assert properties["allowBlobPublicAccess"] is False
    assert properties["minimumTlsVersion"] == "TLS1_2"
    assert properties["supportsHttpsTrafficOnly"] is True
    container = _one("app/storage.bicep", "Microsoft.Storage/storageAccounts/blobServices/containers")
    assert literal(lookup(container.body, "properties.publicAccess")) == "None"


def test_role_assignments_grant_the_built_in_roles_the_host_needs() -> None:
    storage = load(INFRA / "app" / "storage.bicep")
    assert literal(storage.variables["storageDataRoles"]) == [
        "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
        "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
        "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    ]
    monitoring = load(INFRA / "app" / "monitoring.bicep")
    assert literal(monitoring.variables["monitoringMetricsPublisherRoleId"]) == "3913510d-42f4-4e42-8a64-420c390055eb"
    scheduler = load(INFRA / "app" / "durable-task-scheduler.bicep")
    assert literal(scheduler.variables["durableTaskDataContributorRoleId"]) == "0ad04412-c4d5-4796-b79c-f76d14c8d402"
    for bf in (storage, monitoring, scheduler):
        for assignment in bf.resources_of("Microsoft.Authorization/roleAssignments"):
            assert literal(lookup(assignment.body, "properties.principalType")) == "ServicePrincipal"
            assert text(lookup(assignment.body, "properties.principalId")) == "principalId"
            assert "subscriptionResourceId('Microsoft.Authorization/roleDefinitions'" in text(
                lookup(assignment.body, "properties.roleDefinitionId")
            )


def test_application_insights_uses_entra_authentication_only() -> None:
    component = _one("app/monitoring.bicep", "Microsoft.Insights/components")
    properties = literal_or_text(lookup(component.body, "properties"))
    assert properties["DisableLocalAuth"] is True
    assert properties["WorkspaceResourceId"] == "logAnalytics.id"


def test_flex_consumption_python_311_with_identity_deployment_storage() -> None:
    plan = _one("app/function-app.bicep", "Microsoft.Web/serverfarms")
    assert literal(lookup(plan.body, "sku")) == {"tier": "FlexConsumption", "name": "FC1"}
    assert literal(lookup(plan.body, "properties.reserved")) is True
    app = _one("app/function-app.bicep", "Microsoft.Web/sites")
    assert literal(lookup(app.body, "kind")) == "functionapp,linux"
    assert literal(lookup(app.body, "identity.type")) == "UserAssigned"
    assert literal(lookup(app.body, "properties.httpsOnly")) is True
    config = lookup(app.body, "properties.functionAppConfig")
    assert literal(lookup(config, "runtime.name")) == "python"
    assert text(lookup(config, "runtime.version")) == "pythonVersion"
    assert literal(load(INFRA / "app" / "function-app.bicep").params["pythonVersion"].default) == "3.11"
    storage = lookup(config, "deployment.storage")
    assert literal(lookup(storage, "type")) == "blobContainer"
    assert literal(lookup(storage, "authentication.type")) == "UserAssignedIdentity"
    assert text(lookup(storage, "authentication.userAssignedIdentityResourceId")) == "identityId"
    tags = text(lookup(app.body, "tags"))
    assert "'azd-service-name': serviceName" in tags


def test_durable_task_scheduler_is_optional_and_off_by_default() -> None:
    main = load(INFRA / "main.bicep")
    assert literal(main.params["durableTaskSchedulerEnabled"].default) is False
    (call,) = [m for m in main.modules if m.path.name == "durable-task-scheduler.bicep"]
    assert "durableTaskSchedulerEnabled" in text(call.body.parent)
    scheduler = _one("app/durable-task-scheduler.bicep", "Microsoft.DurableTask/schedulers")
    assert text(lookup(scheduler.body, "properties.ipAllowlist")) == "ipAllowlist"
    hub = _one("app/durable-task-scheduler.bicep", "Microsoft.DurableTask/schedulers/taskHubs")
    assert text(lookup(hub.body, "name")) == "taskHubName"


def test_identity_is_user_assigned_and_shared() -> None:
    main = load(INFRA / "main.bicep")
    (call,) = [m for m in main.modules if m.path.name == "function-app.bicep"]
    params = object_properties(lookup(call.body, "params"))
    assert text(params["identityId"]) == "identity.outputs.id"
    assert text(params["identityClientId"]) == "identity.outputs.clientId"
    for name in ("storage.bicep", "monitoring.bicep", "durable-task-scheduler.bicep"):
        (module,) = [m for m in main.modules if m.path.name == name]
        assert text(lookup(module.body, "params.principalId")) == "identity.outputs.principalId"


def literal_or_text(node: Node) -> dict[str, object]:
    """An object whose values are literals where they can be, else their source text."""
    result: dict[str, object] = {}
    for key, value in object_properties(node).items():
        try:
            result[key] = literal(value)
        except NotLiteral:
            result[key] = text(value)
    return result
