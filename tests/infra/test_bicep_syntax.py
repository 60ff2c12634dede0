"""Every Bicep file under infra/ parses with tree-sitter-bicep, and its references resolve."""

from __future__ import annotations

from pathlib import Path

import pytest

from .bicep_tree import INFRA, ROOT, bicep_files, load, lookup, object_properties, parse, syntax_problems, text

FILES = bicep_files()


def _ids(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_infra_has_the_expected_templates() -> None:
    names = {path.relative_to(INFRA).as_posix() for path in FILES}
    assert {"main.bicep", "event-subscriptions.bicep", "rbac/management-group.bicep"} <= names
    assert len(FILES) >= 10


@pytest.mark.parametrize("path", FILES, ids=_ids)
def test_parses_without_error_or_missing_nodes(path: Path) -> None:
    tree = parse(path.read_bytes())
    assert tree.root_node.type == "infrastructure"
    assert syntax_problems(tree) == []


def test_the_checker_reports_broken_bicep() -> None:
    broken = b"param name string = 'x\nresource r 'Microsoft.Web/sites@2024-04-01' = {\n  name: name\n"
    assert syntax_problems(parse(broken))


@pytest.mark.parametrize("path", FILES, ids=_ids)
def test_modules_and_loaded_json_files_exist(path: Path) -> None:
    bf = load(path)
    for module in bf.modules:
        assert module.path.is_file(), f"{bf.relative}: module {module.symbol} -> missing {module.path}"
        assert module.path.is_relative_to(INFRA)
    stack = [bf.tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "call_expression" and text(node.named_children[0]) == "loadJsonContent":
            assert bf.load_json(node), f"{bf.relative}: {text(node)} is empty"
        stack.extend(node.children)


@pytest.mark.parametrize("path", FILES, ids=_ids)
def test_module_calls_pass_known_and_required_params(path: Path) -> None:
    bf = load(path)
    for module in bf.modules:
        target = load(module.path)
        passed = set(object_properties(lookup(module.body, "params")))
        unknown = passed - set(target.params)
        assert not unknown, f"{bf.relative}: {module.symbol} passes unknown params {sorted(unknown)}"
        required = {name for name, param in target.params.items() if param.default is None}
        assert required <= passed, f"{bf.relative}: {module.symbol} misses {sorted(required - passed)}"


def test_target_scopes() -> None:
    scopes = {load(path).relative: load(path).target_scope for path in FILES}
    assert scopes["infra/main.bicep"] == "subscription"
    assert scopes["infra/event-subscriptions.bicep"] == "subscription"
    assert scopes["infra/rbac/role-definition.bicep"] == "subscription"
    assert scopes["infra/target/target-subscription.bicep"] == "subscription"
    assert scopes["infra/rbac/management-group.bicep"] == "managementGroup"
    assert scopes["infra/app/function-app.bicep"] == "resourceGroup"
