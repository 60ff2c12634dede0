"""The custom role grants exactly the ARM actions the app's activities declare, nothing broader."""

from __future__ import annotations

import json
import re

import pytest

from activities.permissions import required_arm_actions

from .bicep_tree import INFRA, ROOT, Resource, all_resources, literal, load, lookup, named, object_properties, text

ROLE_JSON = INFRA / "rbac" / "hotpatch-role.json"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"


def _role_definitions() -> list[Resource]:
    found = [r for r in all_resources() if r.type == "Microsoft.Authorization/roleDefinitions" and not r.existing]
    assert found, "no custom role definition under infra/"
    return found


def _permission_value(resource: Resource, key: str) -> list[str]:
    """A permissions[0] entry: a literal list, or `<var>.<key>` of a loadJsonContent() variable."""
    permissions = named(lookup(resource.body, "properties.permissions"))
    assert len(permissions) == 1, f"{resource.file.relative}: one permissions block expected"
    value = object_properties(permissions[0])[key]
    if value.type == "member_expression":
        holder = text(value.child_by_field_name("object"))
        assert text(value.child_by_field_name("property")) == key
        loaded = resource.file.load_json(resource.file.variables[holder])
        return loaded[key]
    return literal(value)


def test_role_json_actions_equal_the_actions_the_code_declares() -> None:
    declared = required_arm_actions()
    granted = json.loads(ROLE_JSON.read_text(encoding="utf-8"))["actions"]
    assert granted == sorted(set(granted)), "keep hotpatch-role.json sorted and without duplicates"
    assert granted == declared, (
        "infra/rbac/hotpatch-role.json must list exactly required_arm_actions(); paste this:\n"
        + json.dumps(declared, indent=2)
    )


@pytest.mark.parametrize("resource", _role_definitions(), ids=lambda r: f"{r.file.relative}:{r.symbol}")
def test_every_role_definition_grants_exactly_those_actions(resource: Resource) -> None:
    assert _permission_value(resource, "actions") == required_arm_actions()
    for key in ("notActions", "dataActions", "notDataActions"):
        assert _permission_value(resource, key) == [], f"{resource.file.relative}: {key} must be empty"
    assert literal(lookup(resource.body, "properties.type")) == "CustomRole"


def test_no_action_is_a_wildcard_or_outside_the_providers_used() -> None:
    for action in json.loads(ROLE_JSON.read_text(encoding="utf-8"))["actions"]:
        assert "*" not in action
        assert action.startswith(("Microsoft.HybridCompute/", "Microsoft.Resources/subscriptions/")), action


def test_role_is_assignable_on_every_target_and_assigned_to_the_app_identity() -> None:
    main = load(INFRA / "main.bicep")
    role_module = next(m for m in main.modules if m.path.name == "role-definition.bicep")
    scopes = text(lookup(role_module.body, "params.assignableScopes"))
    assert "targets" in scopes and "/subscriptions/" in scopes
    target_module = next(m for m in main.modules if m.path.name == "target-subscription.bicep")
    assert text(lookup(target_module.body, "scope")) == "subscription(id)"
    assert text(lookup(target_module.body, "params.principalId")) == "identity.outputs.principalId"

    target = load(target_module.path)
    (assignment,) = target.resources_of("Microsoft.Authorization/roleAssignments")
    assert literal(lookup(assignment.body, "properties.principalType")) == "ServicePrincipal"
    assert "roleDefinitionGuid" in text(lookup(assignment.body, "properties.roleDefinitionId"))


def test_management_group_option_assigns_the_same_role_at_the_group() -> None:
    bf = load(INFRA / "rbac" / "management-group.bicep")
    (definition,) = bf.resources_of("Microsoft.Authorization/roleDefinitions")
    assert text(lookup(definition.body, "properties.assignableScopes")).count("managementGroup().id") == 1
    (assignment,) = bf.resources_of("Microsoft.Authorization/roleAssignments")
    assert text(lookup(assignment.body, "properties.roleDefinitionId")) == f"{definition.symbol}.id"


def test_deploy_doc_rbac_table_lists_exactly_the_actions() -> None:
    doc = DEPLOY_DOC.read_text(encoding="utf-8")
    section = doc.split("## RBAC", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(Microsoft\.[A-Za-z./]+)` \|", section, flags=re.MULTILINE)
    assert sorted(rows) == required_arm_actions()
