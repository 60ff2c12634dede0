"""Determinism lint of the orchestrator code: no clocks, randomness, environment, I/O or SDK clients.

An orchestrator function is replayed from its history on every episode, so everything it does
must give the same answer on every replay: time only from ``context.current_utc_datetime``,
waiting only through ``context.create_timer``, all I/O in activities. The lint parses every
``.py`` under ``orchestrators/`` with ``ast`` (no import, no run) and decides what is
orchestrator code as follows:

* **Orchestrator modules** (every module under ``orchestrators/`` not in ``CLIENT_MODULES``;
  today ``machine.py``, ``fleet.py``, ``steps.py``) are linted whole: module-level code, every
  function and method. An import of a forbidden module there (``random``, ``uuid``,
  ``secrets``, ``threading``, networking, the Azure SDK clients, ...) is itself a finding.
* **Client modules** (``triggers.py``, ``instances.py``, ``ledger_route.py``) hold the client
  functions (HTTP ``route``, ``timer_trigger``, ``event_grid_trigger``, anything with a
  ``durable_client_input``) and their helpers, which run once per request and may read clocks,
  ``uuid``/``secrets``, the environment. There only the *orchestrator-reachable* functions are
  linted: any function decorated ``orchestration_trigger``/``entity_trigger``, every name an
  orchestrator module imports from the client module (``from .instances import
  outcome_record_id``), and, transitively, every top-level function or class those reference
  in the same module or import from another ``orchestrators`` module. (A plain "everything not
  decorated as a client function" rule would flag helpers such as ``triggers.app_policy``, which
  reads the environment but only client functions call.) Their module-level imports are not
  findings: ``instances.new_rollout_id`` uses ``secrets`` for client functions only.

Forbidden, by resolved dotted name (aliases and ``from x import y`` are followed): ``datetime``
``now``/``utcnow``/``today``, ``date.today``, ``time.time``/``monotonic``/``perf_counter``/
``sleep`` (and their ``_ns`` forms), ``asyncio.sleep``, ``os.environ``/``getenv``/``urandom``,
``open()`` (builtin, ``io.open``), ``pathlib`` reads and writes (``read_text`` ... ``write_bytes``,
``Path.open``), and any use or import of ``random``, ``uuid``, ``secrets``, ``threading``,
``socket``, ``requests``, ``urllib``, ``http.client``, ``aiohttp``, ``azure.mgmt``,
``azure.identity``, ``azure.data.tables``, ``azure.storage``, ``azure.core``.
Not linted: ``core/`` (pure by its own contract) and ``activities/`` (where I/O belongs).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "orchestrators"
CLIENT_MODULES = frozenset({"triggers", "instances", "ledger_route"})
ORCHESTRATOR_DECORATORS = frozenset({"orchestration_trigger", "entity_trigger"})
CLIENT_DECORATORS = frozenset({"route", "timer_trigger", "schedule", "event_grid_trigger", "durable_client_input",
                               "http_trigger", "queue_trigger", "blob_trigger", "service_bus_queue_trigger"})

FORBIDDEN_MODULES = (
    "random", "uuid", "secrets", "threading", "socket", "requests", "urllib", "http.client", "aiohttp",
    "azure.mgmt", "azure.identity", "azure.data.tables", "azure.storage", "azure.core",
)
FORBIDDEN_NAMES = frozenset({
    "datetime.datetime.now", "datetime.datetime.utcnow", "datetime.datetime.today", "datetime.date.today",
    "time.time", "time.time_ns", "time.monotonic", "time.monotonic_ns", "time.perf_counter",
    "time.perf_counter_ns", "time.sleep", "asyncio.sleep",
    "os.environ", "os.environb", "os.getenv", "os.getenvb", "os.putenv", "os.urandom",
    "builtins.open", "io.open", "os.open",
})
# Attribute tails forbidden whatever the receiver resolves to (``Path(p).read_text()``, a ``datetime``
# imported under another name, ``date.today()`` on an unresolved ``date``).
FORBIDDEN_TAILS = frozenset({
    ("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("date", "today"),
})
PATHLIB_IO = frozenset({"read_text", "write_text", "read_bytes", "write_bytes"})


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def _forbidden_module(dotted: str) -> str | None:
    for module in FORBIDDEN_MODULES:
        if dotted == module or dotted.startswith(module + "."):
            return module
    return None


def _decorator_names(node: ast.AST) -> set[str]:
    names: set[str] = set()
    for decorator in getattr(node, "decorator_list", []):
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute):
            names.add(target.attr)
        elif isinstance(target, ast.Name):
            names.add(target.id)
    return names


def _dotted(node: ast.AST) -> list[str] | None:
    """``a.b.c`` as ``["a", "b", "c"]``; a call in the chain (``Path(p).read_text``) keeps its callee's
    chain and the attributes after it; None for anything else at the root."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Call):
        inner = _dotted(node.func)
        return None if inner is None else inner + list(reversed(parts))
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return list(reversed(parts))
    return None


class Linter:
    """The findings of one module's source; ``bindings`` maps local names to what their imports bind."""

    def __init__(self, source: str, path: str, package: str = "orchestrators") -> None:
        self.path = path
        self.tree = ast.parse(source, filename=path)
        self.package = package
        self.bindings: dict[str, str] = {}
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        self.bindings[alias.asname] = alias.name
                    else:
                        head = alias.name.split(".")[0]
                        self.bindings[head] = head
            elif isinstance(node, ast.ImportFrom):
                base = self._from_module(node)
                for alias in node.names:
                    self.bindings[alias.asname or alias.name] = f"{base}.{alias.name}" if base else alias.name

    def _from_module(self, node: ast.ImportFrom) -> str:
        if node.level:
            return ".".join(part for part in (self.package, node.module) if part)
        return node.module or ""

    def resolve(self, parts: list[str]) -> str:
        head = self.bindings.get(parts[0])
        if head is None and parts[0] == "open" and len(parts) == 1:
            head = "builtins.open"
        return ".".join([head or parts[0], *parts[1:]])

    # ------------------------------------------------------------------ findings

    def import_findings(self) -> Iterator[Finding]:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if module := _forbidden_module(alias.name):
                        yield Finding(self.path, node.lineno, f"import {alias.name} (forbidden module {module})")
            elif isinstance(node, ast.ImportFrom) and not node.level:
                base = node.module or ""
                for alias in node.names:
                    dotted = f"{base}.{alias.name}"
                    if module := _forbidden_module(dotted):
                        yield Finding(self.path, node.lineno,
                                      f"from {base} import {alias.name} (forbidden module {module})")
                    elif dotted in FORBIDDEN_NAMES:
                        yield Finding(self.path, node.lineno, f"from {base} import {alias.name} (forbidden {dotted})")

    def body_findings(self, root: ast.AST) -> Iterator[Finding]:
        """Forbidden uses inside ``root`` (a function, a class or the whole module), imports aside."""
        reported: set[tuple[int, int]] = set()
        calls = {id(node.func): node for node in ast.walk(root) if isinstance(node, ast.Call)}
        for node in ast.walk(root):
            if not isinstance(node, ast.Attribute | ast.Name) or (node.lineno, node.col_offset) in reported:
                continue
            what = self._forbidden_use(node, calls.get(id(node)))
            if what:
                # A chain is reported once, at its longest expression (``os.environ.get``, not also ``os.environ``).
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Attribute | ast.Name):
                        reported.add((inner.lineno, inner.col_offset))
                yield Finding(self.path, node.lineno, what)

    def _forbidden_use(self, node: ast.Attribute | ast.Name, call: ast.Call | None) -> str | None:
        """What is wrong with ``node`` (``call``: the call it is the callee of, shown in the message)."""
        if isinstance(node, ast.Name) and node.id not in self.bindings and node.id != "open":
            return None
        parts = _dotted(node)
        if parts is None:
            return None
        text = ast.unparse(call or node)
        text = text if len(text) <= 80 else text[:77] + "..."
        resolved = self.resolve(parts)
        if module := _forbidden_module(resolved):
            return f"{text} (uses forbidden module {module})"
        for length in range(len(resolved.split(".")), 0, -1):
            prefix = ".".join(resolved.split(".")[:length])
            if prefix in FORBIDDEN_NAMES:
                return f"{text} (forbidden {prefix})"
        if len(parts) >= 2 and (parts[-2], parts[-1]) in FORBIDDEN_TAILS:
            return f"{text} (forbidden {parts[-2]}.{parts[-1]})"
        if parts[-1] in PATHLIB_IO and len(parts) >= 2:
            return f"{text} (file I/O: {parts[-1]})"
        if parts[-1] == "open" and resolved.startswith("pathlib."):
            return f"{text} (file I/O: pathlib open)"
        return None

    # ------------------------------------------------------------------ what is orchestrator code

    def top_level(self) -> dict[str, ast.AST]:
        return {node.name: node for node in self.tree.body
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}

    def references(self, node: ast.AST) -> set[str]:
        """Names ``node`` refers to: local top-level definitions and ``module.name`` of sibling imports."""
        local = self.top_level()
        found: set[str] = set()
        for inner in ast.walk(node):
            if isinstance(inner, ast.Name):
                if inner.id in local:
                    found.add(inner.id)
                elif self.bindings.get(inner.id, "").startswith(self.package + "."):
                    found.add(self.bindings[inner.id])
            elif isinstance(inner, ast.Attribute) and isinstance(inner.value, ast.Name):
                target = self.bindings.get(inner.value.id, "")
                if target.startswith(self.package + ".") and target.count(".") == 1:  # from . import instances
                    found.add(f"{target}.{inner.attr}")
        return found

    def imported_siblings(self) -> set[str]:
        """``orchestrators.<module>.<name>`` for every name this module imports from a sibling module."""
        return {target for target in self.bindings.values()
                if target.startswith(self.package + ".") and target.count(".") == 2}


def lint_source(source: str, path: str = "<snippet>") -> list[Finding]:
    """Findings of ``source`` as an orchestrator module (linted whole, its imports included)."""
    linter = Linter(source, path)
    return sorted({*linter.import_findings(), *linter.body_findings(linter.tree)}, key=lambda f: (f.line, f.what))


def lint_package(package: Path = PACKAGE) -> tuple[list[Finding], dict[str, list[str]]]:
    """Findings under ``package``, and for each module what was linted (``*`` for the whole module)."""
    linters = {path.stem: Linter(path.read_text(), str(path.relative_to(package.parent)))
               for path in sorted(package.glob("*.py"))}
    findings: set[Finding] = set()
    linted: dict[str, list[str]] = {}
    pending: list[str] = []
    for stem, linter in linters.items():
        if stem not in CLIENT_MODULES:
            linted[stem] = ["*"]
            findings |= {*linter.import_findings(), *linter.body_findings(linter.tree)}
            pending += sorted(linter.imported_siblings())
            pending += sorted(f"orchestrators.{stem}.{name}" for name in linter.references(linter.tree)
                              if "." not in name)
        else:
            pending += [f"orchestrators.{stem}.{name}" for name, node in linter.top_level().items()
                        if _decorator_names(node) & ORCHESTRATOR_DECORATORS]
    seen: set[str] = set()
    while pending:
        target = pending.pop()
        if target in seen:
            continue
        seen.add(target)
        _, stem, name = target.split(".", 2)
        linter = linters.get(stem)
        if linter is None or stem not in CLIENT_MODULES or name not in linter.top_level():
            continue  # whole-module linted already, or not a function/class (a constant, a re-export)
        node = linter.top_level()[name]
        linted.setdefault(stem, []).append(name)
        findings |= set(linter.body_findings(node))
        for reference in linter.references(node):
            pending.append(reference if "." in reference else f"orchestrators.{stem}.{reference}")
    return sorted(findings, key=lambda f: (f.path, f.line, f.what)), {k: sorted(v) for k, v in linted.items()}


# ---------------------------------------------------------------------------------- tests


def test_orchestrator_code_is_deterministic() -> None:
    findings, linted = lint_package()
    assert {"machine", "fleet", "steps"} <= {stem for stem, names in linted.items() if names == ["*"]}, linted
    message = "\n".join(
        ["non-deterministic code in orchestrator code (replays must give the same answer; use"
         " context.current_utc_datetime / context.create_timer, move I/O into an activity):"]
        + [f"  {finding}" for finding in findings]
    )
    assert not findings, message


def test_client_functions_are_not_linted_but_what_orchestrators_import_is() -> None:
    _, linted = lint_package()
    assert "outcome_record_id" in linted.get("instances", []), linted
    assert "record_prefix" in linted.get("instances", []), linted  # reached through outcome_record_id
    for client_side in ("new_rollout_id", "start_or_attach"):
        assert client_side not in linted.get("instances", []), linted
    assert not set(linted.get("triggers", [])) & {"app_policy", "scheduled_rollout", "start_subscription_rollout"}


FLAGGED = [
    ("import random", "random"),
    ("import random as r\nr.choice([1])", "random"),
    ("from random import choice", "random"),
    ("import uuid", "uuid"),
    ("uuid.uuid4()", "uuid"),
    ("import secrets", "secrets"),
    ("import threading", "threading"),
    ("import socket", "socket"),
    ("import requests", "requests"),
    ("import urllib.request", "urllib"),
    ("from http.client import HTTPSConnection", "http.client"),
    ("import aiohttp", "aiohttp"),
    ("from azure.mgmt.hybridcompute import X", "azure.mgmt"),
    ("from azure.identity import DefaultAzureCredential", "azure.identity"),
    ("from azure.data.tables import TableClient", "azure.data.tables"),
    ("import azure.storage.blob", "azure.storage"),
    ("from azure.core.pipeline import Pipeline", "azure.core"),
    ("datetime.now()", "datetime.now"),
    ("from datetime import datetime\ndef f():\n    return datetime.now()", "datetime.datetime.now"),
    ("import datetime as dt\nx = dt.datetime.utcnow()", "datetime.datetime.utcnow"),
    ("from datetime import datetime as D\nD.today()", "datetime.datetime.today"),
    ("from datetime import date\ndate.today()", "datetime.date.today"),
    ("date.today()", "date.today"),
    ("import time\ntime.time()", "time.time"),
    ("import time\ntime.monotonic()", "time.monotonic"),
    ("import time\ntime.perf_counter()", "time.perf_counter"),
    ("import time\ntime.sleep(1)", "time.sleep"),
    ("from time import sleep", "time.sleep"),
    ("import asyncio\nasync def f():\n    await asyncio.sleep(1)", "asyncio.sleep"),
    ("import os\nos.environ['X']", "os.environ"),
    ("os.environ['X']", "os.environ"),
    ("import os\nos.environ.get('X')", "os.environ"),
    ("import os\nos.getenv('X')", "os.getenv"),
    ("import os\nos.urandom(8)", "os.urandom"),
    ("from os import environ", "os.environ"),
    ("open('f')", "builtins.open"),
    ("def f():\n    with open('f') as handle:\n        return handle.read()", "builtins.open"),
    ("from pathlib import Path\nPath('f').read_text()", "read_text"),
    ("from pathlib import Path\nPath('f').write_bytes(b'')", "write_bytes"),
    ("from pathlib import Path\nPath('f').open()", "pathlib open"),
]


@pytest.mark.parametrize(("source", "expected"), FLAGGED, ids=[source for source, _ in FLAGGED])
def test_the_lint_flags(source: str, expected: str) -> None:
    findings = lint_source(source)
    assert findings, f"not flagged: {source!r}"
    assert any(expected in finding.what for finding in findings), [str(f) for f in findings]
    assert all(finding.path == "<snippet>" and finding.line >= 1 for finding in findings)


ALLOWED = [
    "def orchestrator(context):\n    now = context.current_utc_datetime\n    yield context.create_timer(now)",
    "from datetime import datetime, timedelta\n"
    "def f(context):\n    return context.current_utc_datetime + timedelta(minutes=5)",
    "from datetime import datetime\ndatetime.fromisoformat('2026-01-01T00:00:00+00:00')",
    "import json\njson.dumps({'a': 1})",
    "import hashlib\nhashlib.sha256(b'x').hexdigest()",
    "import azure.durable_functions as df\ndf.RetryOptions(1000, 3)",
    "def f(run):\n    return run.now",
    "def f(context):\n    return context.new_uuid()",
    "def f(run):\n    run.open = True\n    return run.time",
]


@pytest.mark.parametrize("source", ALLOWED)
def test_the_lint_allows(source: str) -> None:
    assert lint_source(source) == []


def test_a_finding_names_file_line_and_call() -> None:
    findings = lint_source("import json\n\ndef orchestrator(context):\n    return uuid4()\n"
                           "from uuid import uuid4\n", path="orchestrators/example.py")
    assert [str(finding) for finding in findings] == [
        "orchestrators/example.py:4: uuid4() (uses forbidden module uuid)",
        "orchestrators/example.py:5: from uuid import uuid4 (forbidden module uuid)",
    ]
    [imported] = lint_source("x = 1\nimport random\n", path="orchestrators/example.py")
    assert str(imported) == "orchestrators/example.py:2: import random (forbidden module random)"


def test_the_lint_follows_orchestrators_into_client_modules(tmp_path: Path) -> None:
    """A copy of the package with violations planted: one in a client-module helper an orchestrator
    reaches (flagged), one in a client function and its helper (not flagged), one in an orchestrator."""
    package = tmp_path / "orchestrators"
    package.mkdir()
    for path in PACKAGE.glob("*.py"):
        (package / path.name).write_text(path.read_text())
    instances = package / "instances.py"
    instances.write_text(instances.read_text().replace(
        'def record_prefix(window_id: str, kind: str = "") -> str:\n',
        'def record_prefix(window_id: str, kind: str = "") -> str:\n    _salt = os.getenv("SALT")\n',
    ).replace("import hashlib\n", "import hashlib\nimport os\n"))
    (package / "machine.py").write_text((package / "machine.py").read_text() + "\n\ndef _late():\n"
                                        "    import time\n    return time.time()\n")
    findings, _ = lint_package(package)
    texts = [str(finding) for finding in findings]
    assert any(t.startswith("orchestrators/instances.py:") and "os.getenv('SALT')" in t for t in texts), texts
    assert any(t.startswith("orchestrators/machine.py:") and "time.time()" in t for t in texts), texts
    assert len(texts) == 2, texts  # app_policy (os.environ) and new_rollout_id (secrets) stay client-side
