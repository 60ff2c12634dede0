"""What the twin knows about our Run Command scripts (``activities/scripts/*.ps1``).

A script is recognised by its marker line ``# arc-hotpatch: <name>``. Parameters arrive
as Run Command ``parameters`` / ``protectedParameters`` ``[{name, value}]`` and are bound
the way PowerShell binds named parameters: case-insensitively, unknown names and
repeats are errors, ``[int]`` parameters must convert. The machine simulation
(``machine.py``) decides what a script does; this module only parses and prints.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

READINESS = "readiness"
APPLY_CHANGES = "apply_changes"

# Script name -> its param() block: parameter name -> (type, default).
SCRIPT_PARAMETERS: dict[str, dict[str, tuple[type, Any]]] = {
    READINESS: {"RequestId": (str, ""), "RelevantKbs": (str, "KB5066835,KB5070893,KB5070881")},
    APPLY_CHANGES: {"RequestId": (str, ""), "EnableVsm": (int, 0), "ApplyWorkaround": (int, 0),
                    "RebootDelaySeconds": (int, 60)},
}

_MARKER = re.compile(r"^[ \t]*#[ \t]*arc-hotpatch:[ \t]*([A-Za-z_]+)[ \t]*\r?$", re.MULTILINE)
_INT32 = re.compile(r"^[ \t]*[+-]?\d+[ \t]*$")
OUTPUT_LIMIT_BYTES = 4096  # Run Command keeps only the last 4 KB of output and error


class ScriptFailure(Exception):
    """The script terminated with an error: PowerShell writes ``message`` to the error stream, exit code 1."""


def recognise_script(script: str | None) -> str | None:
    """The arc-hotpatch script name from its marker line, or None for any other script."""
    if not script:
        return None
    match = _MARKER.search(script)
    if not match or match.group(1) not in SCRIPT_PARAMETERS:
        return None
    return match.group(1)


def bind_parameters(script_name: str, parameters: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Bind ``[{name, value}]`` to the script's param() block as PowerShell would."""
    declared = SCRIPT_PARAMETERS[script_name]
    by_lower = {name.lower(): name for name in declared}
    bound: dict[str, Any] = {}
    for parameter in parameters:
        given = str(parameter.get("name", ""))
        canonical = by_lower.get(given.lower())
        if canonical is None:
            raise ScriptFailure(f"A parameter cannot be found that matches parameter name '{given}'.")
        if canonical in bound:
            raise ScriptFailure(f"Cannot bind parameter because parameter '{canonical}' is specified more than once.")
        kind, _ = declared[canonical]
        raw = str(parameter.get("value", ""))
        if kind is int:
            if not _INT32.match(raw) or not -(2**31) <= int(raw) < 2**31:
                raise ScriptFailure(
                    f"Cannot process argument transformation on parameter '{canonical}'. "
                    f'Cannot convert value "{raw}" to type "System.Int32". '
                    'Error: "Input string was not in a correct format."'
                )
            bound[canonical] = int(raw)
        else:
            bound[canonical] = raw
    for name, (_, default) in declared.items():
        bound.setdefault(name, default)
    return bound


def compact_json(document: Mapping[str, Any]) -> str:
    """``ConvertTo-Json -Compress`` of an ``[ordered]`` hashtable."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def keep_last_4kb(text: str) -> str:
    """Run Command keeps only the last 4 KB of a stream."""
    data = text.encode("utf-8")
    if len(data) <= OUTPUT_LIMIT_BYTES:
        return text
    return data[-OUTPUT_LIMIT_BYTES:].decode("utf-8", errors="ignore")


@dataclass(frozen=True)
class ScriptOutcome:
    """What a finished script reports: exit code and its two streams."""

    exit_code: int
    output: str = ""
    error: str = ""

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0
