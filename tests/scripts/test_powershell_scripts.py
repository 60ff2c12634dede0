"""The Run Command scripts: valid PowerShell, data only through parameters, one JSON line."""

from __future__ import annotations

from pathlib import Path

import pytest
import tree_sitter_powershell
from tree_sitter import Language, Node, Parser

SCRIPTS = sorted((Path(__file__).parents[2] / "activities" / "scripts").glob("*.ps1"))
PARSER = Parser(Language(tree_sitter_powershell.language()))


def error_nodes(node: Node) -> list[Node]:
    found = [node] if node.type == "ERROR" or node.is_missing else []
    for child in node.children:
        found.extend(error_nodes(child))
    return found


def test_both_scripts_exist() -> None:
    assert {p.stem for p in SCRIPTS} == {"readiness", "apply_changes"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses_without_errors(script: Path) -> None:
    tree = PARSER.parse(script.read_bytes())
    errors = error_nodes(tree.root_node)
    assert not errors, [(e.start_point, e.text[:60]) for e in errors]


def test_parser_does_flag_broken_powershell() -> None:
    assert error_nodes(PARSER.parse(b"if ($x -eq { \n param(").root_node)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_contract(script: Path) -> None:
    text = script.read_text()
    assert text.splitlines()[0] == f"# arc-hotpatch: {script.stem}", "marker line the twin and audits rely on"
    tree = PARSER.parse(text.encode())
    kinds = {n.type for n in walk(tree.root_node)}
    assert "param_block" in kinds, "data comes in through Run Command parameters"
    assert "ConvertTo-Json -Compress" in text, "prints one compact JSON line"
    assert "Read-Host" not in text and "-Confirm\n" not in text, "non-interactive"


def walk(node: Node):  # type: ignore[no-untyped-def]
    yield node
    for child in node.children:
        yield from walk(child)


def test_readiness_is_read_only() -> None:
    text = (Path(SCRIPTS[0]).parent / "readiness.ps1").read_text()
    for verb in ("Set-", "New-Item", "Remove-", "Stop-Service", "shutdown", "Restart-Computer"):
        assert verb not in text


def test_workaround_follows_seed_option_2() -> None:
    text = (Path(SCRIPTS[0]).parent / "apply_changes.ps1").read_text()
    assert "Stop-Service -Name 'himds'" in text
    assert "FeatureManagement\\Overrides" in text and "'4264695439' -Value 1" in text
    assert "DeviceLicensingServiceCommandMutex" in text
    assert "Restart-Computer -Confirm" not in text  # the seed's prompt would hang a Run Command
