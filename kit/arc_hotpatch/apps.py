"""Which FunctionApp ``serve`` runs (``--app module:attribute``) and the app settings of its
``local.settings.json`` (the ``Values``), as ``func start`` reads them: the environment wins."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from .jsonfiles import JsonFileError, read_json

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # kit/arc_hotpatch/apps.py -> the repository (the app's folder)
LOCAL_SETTINGS = "local.settings.json"
_SPEC = re.compile(r"^(?P<module>[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*):(?P<attribute>[A-Za-z_]\w*)$")


class AppError(ValueError):
    """An ``--app`` that cannot be served, or a ``local.settings.json`` that cannot be read; names which and why."""


def _current_folder_on_path() -> None:
    if os.getcwd() not in sys.path:  # as func start runs in the app's folder: its modules import from there
        sys.path.insert(0, os.getcwd())


def app_folder(spec: str) -> Path:
    """The folder of ``spec``'s module (where its ``local.settings.json`` is), found without importing it."""
    module = _parse(spec)[0]
    _current_folder_on_path()
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        raise AppError(f"--app {spec}: cannot find module {module!r} ({exc})") from None
    if found is None or found.origin is None:
        raise AppError(f"--app {spec}: no module {module!r} on the path (run serve from the app's folder)")
    return Path(found.origin).parent


def is_project_app(spec: str, folder: Path) -> bool:
    """``spec`` (found in ``folder``, ``app_folder``'s answer) names the project's own app, its function_app.py,
    for which the fleet twin starts."""
    return _parse(spec)[0] == "function_app" and folder.resolve() == PROJECT_ROOT


def load_app(spec: str) -> Any:
    """The FunctionApp ``module:attribute`` names (imported from the current folder first, as func start does)."""
    from .durable_host.functions import FunctionAppError
    from .durable_host.functions import load_app as import_app

    _current_folder_on_path()
    try:
        return import_app(spec)
    except FunctionAppError as exc:
        raise AppError(f"--app {spec}: {exc}") from None
    except Exception as exc:  # the app's own import error: its one line
        raise AppError(f"--app {spec}: importing it failed: {type(exc).__name__}: {exc}") from None


def _parse(spec: str) -> tuple[str, str]:
    match = _SPEC.match(spec.strip())
    if not match:
        raise AppError(f"--app {spec!r}: expected module:attribute, such as function_app:app")
    return match.group("module"), match.group("attribute")


def read_local_settings(folder: Path) -> dict[str, str]:
    """The ``Values`` of ``folder/local.settings.json`` (none if the file is absent)."""
    path = folder / LOCAL_SETTINGS
    if not path.is_file():
        return {}
    try:
        data = read_json(path)
    except OSError as exc:
        raise AppError(f"{path}: not readable ({exc.strerror or exc})") from None
    except JsonFileError as exc:
        raise AppError(f"{path}: {exc}") from None
    values = data.get("Values", {}) if isinstance(data, dict) else None
    if not isinstance(values, dict):
        raise AppError(f"{path}: expected an object with a 'Values' object of app settings")
    if data.get("IsEncrypted") is True:
        raise AppError(f"{path}: IsEncrypted is true; decrypt it first (func settings decrypt)")
    settings: dict[str, str] = {}
    for name, value in values.items():
        if isinstance(value, (dict, list)) or value is None:
            raise AppError(f"{path}: Values.{name} must be a string, number or boolean")
        settings[str(name)] = str(value).lower() if isinstance(value, bool) else str(value)
    return settings


def apply_local_settings(folder: Path, environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Put ``local.settings.json``'s Values into the environment where it has none (the environment wins);
    the names applied."""
    environ = os.environ if environ is None else environ
    applied = []
    for name, value in read_local_settings(folder).items():
        if name not in environ:
            environ[name] = value
            applied.append(name)
    return applied
