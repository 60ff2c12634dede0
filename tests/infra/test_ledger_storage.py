"""The audit ledger in Azure: a table in the Function App's own storage account, reached with the app's managed
identity, which holds Storage Table Data Contributor there; the app is told the account's table endpoint."""

from __future__ import annotations

from core.ledger import ENDPOINT_SETTING, ledger_settings

from .bicep_tree import INFRA, literal, load, lookup, object_properties, text

TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
MAIN = load(INFRA / "main.bicep")
STORAGE = load(INFRA / "app" / "storage.bicep")
FUNCTION_APP = load(INFRA / "app" / "function-app.bicep")


def test_the_app_identity_holds_the_table_role_on_its_own_storage_account() -> None:
    assert TABLE_DATA_CONTRIBUTOR in literal(STORAGE.variables["storageDataRoles"])
    (assignment,) = STORAGE.resources_of("Microsoft.Authorization/roleAssignments")
    assert text(lookup(assignment.body, "scope")) == "storage", "on the account itself"
    assert text(lookup(assignment.body, "properties.principalId")) == "principalId"
    assert "roleId" in text(lookup(assignment.body, "properties.roleDefinitionId"))
    # ... and that principal is the Function App's identity, that account the app's own.
    storage_module = next(m for m in MAIN.modules if m.path.name == "storage.bicep")
    assert text(lookup(storage_module.body, "params.principalId")) == "identity.outputs.principalId"
    app_module = next(m for m in MAIN.modules if m.path.name == "function-app.bicep")
    assert text(lookup(app_module.body, "params.storageAccountName")) == "storage.outputs.name"
    assert text(lookup(app_module.body, "params.identityId")) == "identity.outputs.id"


def test_the_app_is_told_the_accounts_table_endpoint() -> None:
    platform = object_properties(FUNCTION_APP.variables["platformSettings"])
    assert text(platform[ENDPOINT_SETTING]) == "storage.properties.primaryEndpoints.table"
    assert "HOTPATCH_LEDGER_CONNECTION" not in platform, "no connection string: shared keys are disabled"
    (existing,) = [r for r in FUNCTION_APP.resources
                   if r.existing and r.type == "Microsoft.Storage/storageAccounts" and r.symbol == "storage"]
    assert text(lookup(existing.body, "name")) == "storageAccountName"
    # What the endpoint evaluates to in Azure is a valid ledger setting (with its trailing slash).
    settings = ledger_settings({ENDPOINT_SETTING: "https://sthotpatchabc.table.core.windows.net/"})
    assert settings.endpoint == "https://sthotpatchabc.table.core.windows.net" and not settings.connection_string
