"""Read the Bicep under infra/ through its tree-sitter syntax tree (tree-sitter-bicep).

Enough of Bicep for the infra tests: declarations (param, var, resource with nested
children, module, output), decorators, literal values, object properties, and a small
evaluator for the expressions the app settings use. No regular expressions on Bicep.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import tree_sitter_bicep
from tree_sitter import Language, Node, Parser, Tree

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
LANGUAGE = Language(tree_sitter_bicep.language())

_ESCAPES = {"\\'": "'", "\\\\": "\\", "\\n": "\n", "\\r": "\r", "\\t": "\t", "\\$": "$"}


class NotLiteral(ValueError):
    """The expression needs deployment-time values; ``str()`` shows it."""


def parse(source: bytes) -> Tree:
    return Parser(LANGUAGE).parse(source)


def text(node: Node) -> str:
    return (node.text or b"").decode("utf-8")


def syntax_problems(tree: Tree) -> list[str]:
    """Every ERROR or MISSING node, as 'line:column kind text'."""
    found: list[str] = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            kind = "MISSING" if node.is_missing else "ERROR"
            line, column = node.start_point
            found.append(f"{line + 1}:{column + 1} {kind} {text(node)[:60]!r}")
        stack.extend(node.children)
    return sorted(found)


def named(node: Node) -> list[Node]:
    return [child for child in node.named_children if child.type != "comment"]


# ---------------------------------------------------------------- literals


def string_value(node: Node, evaluate: Callable[[Node], Any] | None = None) -> str:
    """A Bicep string; interpolations need ``evaluate`` (else NotLiteral)."""
    if node.type != "string":
        raise NotLiteral(text(node))
    parts: list[str] = []
    for child in node.children:
        if child.type == "string_content":
            parts.append(text(child))
        elif child.type == "escape_sequence":
            parts.append(_ESCAPES.get(text(child), text(child)))
        elif child.type == "interpolation":
            if evaluate is None:
                raise NotLiteral(text(node))
            parts.append(_to_text(evaluate(named(child)[0])))
    return "".join(parts)


def property_key(prop: Node) -> str:
    """An object key: its text, or the source of an interpolated key such as '${identityId}'."""
    key = prop.named_children[0]
    if key.type != "string":
        return text(key)
    try:
        return string_value(key)
    except NotLiteral:
        return text(key)


def object_properties(node: Node) -> dict[str, Node]:
    """Key -> value node of an object literal (nested resource declarations are left out)."""
    if node.type != "object":
        raise NotLiteral(text(node))
    props: dict[str, Node] = {}
    for prop in node.named_children:
        if prop.type != "object_property" or prop.named_children[0].type == "resource_declaration":
            continue
        props[property_key(prop)] = named(prop)[-1]
    return props


def literal(node: Node) -> Any:
    """The Python value of a literal (string without interpolation, number, bool, null, array, object)."""
    if node.type == "string":
        return string_value(node)
    if node.type == "number":
        return int(text(node))
    if node.type == "boolean":
        return text(node) == "true"
    if node.type == "null":
        return None
    if node.type == "array":
        return [literal(item) for item in named(node)]
    if node.type == "object":
        return {key: literal(value) for key, value in object_properties(node).items()}
    if node.type == "parenthesized_expression":
        return literal(named(node)[0])
    raise NotLiteral(text(node))


def lookup(node: Node, dotted: str) -> Node:
    """Follow object properties: lookup(body, 'properties.filter.includedEventTypes')."""
    for key in dotted.split("."):
        props = object_properties(node)
        if key not in props:
            raise KeyError(f"{dotted}: no {key!r} in {text(node)[:80]!r}")
        node = props[key]
    return node


def identifiers(node: Node) -> set[str]:
    """Every symbol an expression mentions (not property names, not the functions it calls)."""
    found: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if current.type == "identifier":
            found.add(text(current))
        children = current.named_children
        if current.type == "call_expression":
            children = children[1:]
        stack.extend(children)
    return found


def _to_text(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"  # what ARM's string() gives
    return value if isinstance(value, str) else json.dumps(value)


# ---------------------------------------------------------------- declarations


@dataclass
class Param:
    name: str
    type: str
    default: Node | None
    decorators: dict[str, list[Node]]

    def allowed(self) -> list[Any] | None:
        args = self.decorators.get("allowed")
        return literal(args[0]) if args else None


@dataclass
class Resource:
    symbol: str
    type: str  # full type, e.g. Microsoft.Web/sites/config
    api_version: str
    existing: bool
    body: Node  # the resource's object (inside `if` / `for`)
    file: BicepFile


@dataclass
class Module:
    symbol: str
    path: Path
    body: Node
    file: BicepFile


@dataclass
class BicepFile:
    path: Path
    tree: Tree
    target_scope: str = "resourceGroup"
    params: dict[str, Param] = field(default_factory=dict)
    variables: dict[str, Node] = field(default_factory=dict)
    resources: list[Resource] = field(default_factory=list)
    modules: list[Module] = field(default_factory=list)
    outputs: dict[str, Node] = field(default_factory=dict)

    @property
    def relative(self) -> str:
        return self.path.relative_to(ROOT).as_posix()

    def resources_of(self, resource_type: str) -> list[Resource]:
        return [r for r in self.resources if r.type.lower() == resource_type.lower() and not r.existing]

    def load_json(self, call: Node) -> Any:
        """The value of ``loadJsonContent('file')``."""
        if call.type != "call_expression" or text(call.named_children[0]) != "loadJsonContent":
            raise NotLiteral(text(call))
        argument = named(call.named_children[1])[0]
        return json.loads((self.path.parent / string_value(argument)).read_text(encoding="utf-8"))


def body_of(value: Node) -> Node:
    """The object of a resource/module value, inside `if (...) {...}` or `[for ...: {...}]`."""
    while value.type in ("if_statement", "for_statement"):
        value = named(value)[-1]
    if value.type != "object":
        raise NotLiteral(text(value))
    return value


def _declared_value(node: Node) -> Node:
    """The value after '=' in a declaration."""
    children = node.children
    for index, child in enumerate(children):
        if child.type == "=":
            return children[index + 1]
    raise NotLiteral(text(node))


def _decorators(node: Node | None) -> dict[str, list[Node]]:
    found: dict[str, list[Node]] = {}
    if node is None or node.type != "decorators":
        return found
    for decorator in node.named_children:
        call = named(decorator)[0]
        if call.type == "call_expression":
            name = text(call.named_children[0]).removeprefix("sys.")
            found[name] = named(call.named_children[1])
    return found


def _resources(bf: BicepFile, declaration: Node, parent_type: str = "", parent_version: str = "") -> None:
    parts = [c for c in declaration.named_children]
    symbol = text(parts[0])
    type_text = string_value(parts[1])
    resource_type, _, version = type_text.partition("@")
    if parent_type and "/" not in resource_type:
        resource_type = f"{parent_type}/{resource_type}"
        version = version or parent_version
    existing = any(child.type == "existing" for child in declaration.children)
    body = body_of(_declared_value(declaration))
    bf.resources.append(Resource(symbol, resource_type, version, existing, body, bf))
    for prop in body.named_children:
        if prop.type == "object_property" and prop.named_children[0].type == "resource_declaration":
            _resources(bf, prop.named_children[0], resource_type, version)


@cache
def load(path: Path) -> BicepFile:
    tree = parse(path.read_bytes())
    bf = BicepFile(path=path, tree=tree)
    previous: Node | None = None
    for node in tree.root_node.named_children:
        if node.type == "target_scope_assignment":
            bf.target_scope = string_value(named(node)[-1])
        elif node.type == "parameter_declaration":
            parts = node.named_children
            default = _declared_value(node) if any(c.type == "=" for c in node.children) else None
            bf.params[text(parts[0])] = Param(text(parts[0]), text(parts[1]), default, _decorators(previous))
        elif node.type == "variable_declaration":
            bf.variables[text(node.named_children[0])] = _declared_value(node)
        elif node.type == "resource_declaration":
            _resources(bf, node)
        elif node.type == "module_declaration":
            parts = node.named_children
            module_path = (path.parent / string_value(parts[1])).resolve()
            bf.modules.append(Module(text(parts[0]), module_path, body_of(_declared_value(node)), bf))
        elif node.type == "output_declaration":
            bf.outputs[text(node.named_children[0])] = _declared_value(node)
        if node.type != "comment":
            previous = node
    return bf


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def all_files() -> list[BicepFile]:
    return [load(path) for path in bicep_files()]


def all_resources() -> Iterator[Resource]:
    for bf in all_files():
        yield from bf.resources


def callers(module_path: Path) -> list[Module]:
    """Module declarations (in any infra file) that deploy ``module_path``."""
    target = module_path.resolve()
    return [m for bf in all_files() for m in bf.modules if m.path == target]


# ---------------------------------------------------------------- evaluation


@dataclass
class Scope:
    """Values of the names an expression may use: a file's params (defaults unless overridden) and vars."""

    file: BicepFile
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def value(self, name: str) -> Any:
        if name in self.overrides:
            return self.overrides[name]
        if name in self.file.params:
            default = self.file.params[name].default
            if default is None:
                raise NotLiteral(f"parameter {name} has no default")
            return evaluate(default, self)
        if name in self.file.variables:
            return evaluate(self.file.variables[name], self)
        raise NotLiteral(name)


def evaluate(node: Node, scope: Scope) -> Any:
    """Evaluate the deploy-time-free subset the app settings use."""
    kind = node.type
    if kind in ("number", "boolean", "null", "array", "object"):
        if kind == "array":
            return [evaluate(item, scope) for item in named(node)]
        if kind == "object":
            return {key: evaluate(value, scope) for key, value in object_properties(node).items()}
        return literal(node)
    if kind == "string":
        return string_value(node, lambda inner: evaluate(inner, scope))
    if kind == "identifier":
        return scope.value(text(node))
    if kind == "parenthesized_expression":
        return evaluate(named(node)[0], scope)
    if kind == "ternary_expression":
        condition = evaluate(node.child_by_field_name("condition"), scope)
        branch = "consequence" if condition else "alternative"
        return evaluate(node.child_by_field_name(branch), scope)
    if kind == "unary_expression" and text(node).startswith("!"):
        return not evaluate(named(node)[-1], scope)
    if kind == "call_expression":
        function = text(node.named_children[0])
        args = [evaluate(arg, scope) for arg in named(node.named_children[1])]
        if function == "string":
            return _to_text(args[0])
        if function == "join":
            return args[1].join(args[0])
        if function == "union" and all(isinstance(a, dict) for a in args):
            merged: dict[str, Any] = {}
            for arg in args:
                merged.update(arg)
            return merged
        if function == "empty":
            return not args[0]
    raise NotLiteral(text(node))


def object_keys(node: Node, scope: Scope, resolve_param: Callable[[str], tuple[Node, Scope]] | None = None) -> set[str]:
    """Every key an object-valued expression can have (both branches of conditions, all of union())."""
    kind = node.type
    if kind == "object":
        return set(object_properties(node))
    if kind == "parenthesized_expression":
        return object_keys(named(node)[0], scope, resolve_param)
    if kind == "ternary_expression":
        return object_keys(node.child_by_field_name("consequence"), scope, resolve_param) | object_keys(
            node.child_by_field_name("alternative"), scope, resolve_param
        )
    if kind == "call_expression" and text(node.named_children[0]) == "union":
        keys: set[str] = set()
        for arg in named(node.named_children[1]):
            keys |= object_keys(arg, scope, resolve_param)
        return keys
    if kind == "identifier":
        name = text(node)
        if name in scope.file.variables:
            return object_keys(scope.file.variables[name], scope, resolve_param)
        if name in scope.file.params and resolve_param is not None:
            value, outer = resolve_param(name)
            return object_keys(value, outer, resolve_param)
    raise NotLiteral(text(node))
