"""azd postdeploy hook: subscribe the app's Event Grid function to every target subscription.

Event Grid validates an Azure Function destination when the event subscription is
created, so the function ``on_arc_machine_written`` must already be deployed: this
runs after ``azd deploy``, waits until the app lists the function, then deploys
``infra/event-subscriptions.bicep`` with the Azure CLI (``az deployment sub create``).
It is idempotent; run it again (``python3 infra/hooks/wire_event_grid.py``) at any
time. Nothing but the Python standard library and the ``az`` CLI is needed.

Values come from the azd environment (azd passes it to hooks; outside a hook the
script asks ``azd env get-values``): AZURE_FUNCTION_APP_ID, EVENT_GRID_SYSTEM_TOPICS,
EVENT_GRID_FUNCTION_NAME, AZURE_LOCATION, AZURE_SUBSCRIPTION_ID, AZURE_ENV_NAME.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "event-subscriptions.bicep"
WEB_API_VERSION = "2024-04-01"
DEFAULT_FUNCTION = "on_arc_machine_written"
REQUIRED = ("AZURE_FUNCTION_APP_ID", "EVENT_GRID_SYSTEM_TOPICS", "AZURE_LOCATION", "AZURE_SUBSCRIPTION_ID")


class HookError(RuntimeError):
    """A problem the operator has to fix; the message says what and how."""


def is_true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def azd_environment(environ: Mapping[str, str], run: Callable[[Sequence[str]], str] | None = None) -> dict[str, str]:
    """The azd environment: the process environment, completed by ``azd env get-values``."""
    values = dict(environ)
    if all(values.get(name) for name in REQUIRED):
        return values
    azd = shutil.which("azd")
    if azd is None:
        return values
    output = (run or _run_text)([azd, "env", "get-values", "--output", "json"])
    for key, value in json.loads(output or "{}").items():
        values.setdefault(key, value if isinstance(value, str) else json.dumps(value))
    return values


def system_topics(env: Mapping[str, str]) -> list[dict[str, str]]:
    """EVENT_GRID_SYSTEM_TOPICS (a JSON array output by main.bicep), checked."""
    raw = env.get("EVENT_GRID_SYSTEM_TOPICS", "")
    try:
        topics = json.loads(raw) if raw else None
    except json.JSONDecodeError as exc:
        raise HookError(f"EVENT_GRID_SYSTEM_TOPICS is not JSON ({exc}); run 'azd provision' again") from None
    if not isinstance(topics, list) or not topics:
        raise HookError("EVENT_GRID_SYSTEM_TOPICS is missing or empty; run 'azd provision' first")
    checked: list[dict[str, str]] = []
    keys = ("subscriptionId", "resourceGroup", "name")
    for topic in topics:
        if not isinstance(topic, dict) or not all(topic.get(k) for k in keys):
            raise HookError(f"EVENT_GRID_SYSTEM_TOPICS has an entry without {'/'.join(keys)}: {topic!r}")
        checked.append({k: str(topic[k]) for k in keys})
    return checked


def deployment_parameters(env: Mapping[str, str]) -> dict[str, Any]:
    """The parameters file of infra/event-subscriptions.bicep."""
    missing = [name for name in REQUIRED if not env.get(name)]
    if missing:
        raise HookError(f"missing from the azd environment: {', '.join(missing)}; run 'azd provision' first")
    return {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {
            "systemTopics": {"value": system_topics(env)},
            "functionAppResourceId": {"value": env["AZURE_FUNCTION_APP_ID"]},
            "functionName": {"value": env.get("EVENT_GRID_FUNCTION_NAME") or DEFAULT_FUNCTION},
        },
    }


def deployment_command(az: str, env: Mapping[str, str], parameters_file: str) -> list[str]:
    name = f"hotpatch-event-subscriptions-{env.get('AZURE_ENV_NAME') or 'default'}"[:64]
    return [
        az, "deployment", "sub", "create",
        "--name", name,
        "--subscription", env["AZURE_SUBSCRIPTION_ID"],
        "--location", env["AZURE_LOCATION"],
        "--template-file", str(TEMPLATE),
        "--parameters", f"@{parameters_file}",
        "--only-show-errors",
        "--output", "none",
    ]  # fmt: skip


def function_probe_command(az: str, env: Mapping[str, str]) -> list[str]:
    """``az rest`` GET of the function's ARM resource (az prefixes the cloud's ARM endpoint)."""
    function = env.get("EVENT_GRID_FUNCTION_NAME") or DEFAULT_FUNCTION
    url = f"{env['AZURE_FUNCTION_APP_ID']}/functions/{function}?api-version={WEB_API_VERSION}"
    return [az, "rest", "--method", "get", "--url", url, "--only-show-errors", "--output", "none"]


def wait_for_function(
    az: str,
    env: Mapping[str, str],
    timeout_s: float = 600.0,
    interval_s: float = 15.0,
    run: Callable[[Sequence[str]], int] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Wait until the app lists the Event Grid function (the host indexes it after a deploy)."""
    probe = function_probe_command(az, env)
    deadline = time.monotonic() + timeout_s
    while True:
        if (run or _run_status)(probe) == 0:
            return
        if time.monotonic() >= deadline:
            function = env.get("EVENT_GRID_FUNCTION_NAME") or DEFAULT_FUNCTION
            raise HookError(
                f"the app does not list the function {function!r} after {timeout_s:.0f}s; check the deployment "
                "(Functions list in the portal, Application Insights traces), then run this script again"
            )
        sleep(interval_s)


def _run_text(command: Sequence[str]) -> str:
    return subprocess.run(list(command), check=True, capture_output=True, text=True).stdout


def _run_status(command: Sequence[str]) -> int:
    return subprocess.run(list(command), check=False, capture_output=True, text=True).returncode


def main() -> int:
    env = azd_environment(os.environ)
    if is_true(env.get("EVENT_SUBSCRIPTIONS_ENABLED")):
        print("Event Grid: the event subscriptions are part of the provisioned template (EVENT_SUBSCRIPTIONS_ENABLED).")
        return 0
    try:
        parameters = deployment_parameters(env)
        az = shutil.which("az")
        if az is None:
            raise HookError(
                "the Azure CLI (az) is needed to create the Event Grid subscriptions; install it, 'az login', "
                "then run: python3 infra/hooks/wire_event_grid.py (or see docs/deploy.md, 'Event Grid wiring')"
            )
        topics = parameters["parameters"]["systemTopics"]["value"]
        print(f"Event Grid: waiting for the function to be listed, then subscribing {len(topics)} subscription(s)...")
        wait_for_function(az, env)
        with tempfile.TemporaryDirectory() as folder:
            parameters_file = Path(folder) / "event-subscriptions.parameters.json"
            parameters_file.write_text(json.dumps(parameters, indent=2), encoding="utf-8")
            result = subprocess.run(deployment_command(az, env, str(parameters_file)), check=False)
        if result.returncode != 0:
            raise HookError("az deployment sub create failed (see above); fix it and run this script again")
    except HookError as exc:
        print(f"Event Grid wiring failed: {exc}", file=sys.stderr)
        return 1
    for topic in topics:
        print(f"  subscribed: /subscriptions/{topic['subscriptionId']} ({topic['resourceGroup']}/{topic['name']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
