"""Reading the kit's JSON input files (scenarios, faults, ``local.settings.json``) with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class JsonFileError(ValueError):
    """A file that is not UTF-8 JSON; ``str()`` says why in a few words, the caller names the file."""


def read_json(path: Path) -> Any:
    """The JSON value in ``path``. OSError as reading raises it; JsonFileError for text that is not UTF-8,
    not JSON, or nested too deeply for the parser (a RecursionError, which no caller should meet)."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte order mark (Notepad's) is not an error
    except UnicodeDecodeError as exc:
        raise JsonFileError(f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
    try:
        return json.loads(text)
    except ValueError as exc:  # a JSONDecodeError, or an integer past Python's digit limit
        raise JsonFileError(f"not valid JSON ({exc})") from None
    except RecursionError:
        raise JsonFileError("not valid JSON (nested too deeply)") from None
