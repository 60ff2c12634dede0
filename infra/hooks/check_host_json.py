"""azd predeploy hook: host.json must use the Durable Functions backend the infrastructure provides.

The backend is chosen twice: main.bicep (parameter durableTaskSchedulerEnabled, azd
variable DURABLE_TASK_SCHEDULER_ENABLED) creates the Durable Task Scheduler and sets
DURABLE_TASK_SCHEDULER_CONNECTION_STRING, and host.json names the storage provider.
The platform's scale controller reads the provider from the deployed host.json file
(app-setting overrides of host.json do not reach it), so the file itself must match;
this check stops ``azd deploy`` before a mismatched package goes out.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TASK_HUB_REFERENCE = "%HOTPATCH_TASK_HUB%"
DTS_CONNECTION_SETTING = "DURABLE_TASK_SCHEDULER_CONNECTION_STRING"
HOST_STORAGE = "AzureWebJobsStorage"


def is_true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def problems(host: Mapping[str, Any], scheduler_enabled: bool) -> list[str]:
    """What in host.json does not match the infrastructure (empty: all good)."""
    durable = host.get("extensions", {}).get("durableTask")
    if not isinstance(durable, Mapping):
        return ["host.json has no extensions.durableTask section"]
    found: list[str] = []
    if durable.get("hubName") != TASK_HUB_REFERENCE:
        found.append(
            f"extensions.durableTask.hubName is {durable.get('hubName')!r}; the infrastructure sets the task hub in "
            f"the app setting HOTPATCH_TASK_HUB, so hubName must be {TASK_HUB_REFERENCE!r}"
        )
    provider = durable.get("storageProvider") or {}
    kind = str(provider.get("type") or "AzureStorage")
    if scheduler_enabled:
        if kind.lower() != "azuremanaged":
            found.append(
                f"DURABLE_TASK_SCHEDULER_ENABLED is true but host.json storageProvider.type is {kind!r}: set "
                f'"storageProvider": {{"type": "azureManaged", "connectionStringName": "{DTS_CONNECTION_SETTING}"}}'
            )
        elif provider.get("connectionStringName") != DTS_CONNECTION_SETTING:
            found.append(f"storageProvider.connectionStringName must be {DTS_CONNECTION_SETTING!r}")
    elif kind.lower() != "azurestorage":
        found.append(
            f"host.json storageProvider.type is {kind!r} but the infrastructure provides the Azure Storage backend: "
            "set DURABLE_TASK_SCHEDULER_ENABLED=true and run 'azd provision', or use the type 'AzureStorage'"
        )
    elif (provider.get("connectionName") or provider.get("connectionStringName") or HOST_STORAGE) != HOST_STORAGE:
        found.append(f"storageProvider must use the host's storage connection {HOST_STORAGE!r} (identity-based)")
    return found


def main() -> int:
    path = ROOT / "host.json"
    try:
        host = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        print(f"host.json check: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    found = problems(host, is_true(os.environ.get("DURABLE_TASK_SCHEDULER_ENABLED")))
    for problem in found:
        print(f"host.json check: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
