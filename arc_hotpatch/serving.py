"""``serve``: the fleet twin + the local durable host serving the app's routes on loopback, like ``func start``."""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from typing import Any

from .clock import ScaledClock
from .domain.policy import SETTINGS, Policy
from .durable_host import DurableHost
from .runner import twin_environment
from .twin import FleetTwin
from .twin.fleet import Fleet


def policy_environment(policy: Policy) -> dict[str, str]:
    """The app settings (HOTPATCH_*) that make the app's own ``load_policy`` return ``policy``."""
    data = policy.to_json()
    env: dict[str, str] = {}
    for spec in SETTINGS:
        value = data[spec.field]
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, list):
            value = ",".join(value)
        env[spec.env] = str(value)
    return env


def run_serve(
    *, fleet: Fleet, policy: Policy, port: int, faults: str, speed: float, no_auth: bool, console: Any
) -> None:
    """Serve until Ctrl-C."""
    import function_app

    clock = ScaledClock(speed)
    twin = FleetTwin(fleet, clock, faults)
    twin_url = twin.start()
    served_policy = replace(policy, arm_endpoint=twin_url, subscriptions=tuple(twin.subscription_ids))
    os.environ.update(policy_environment(served_policy))
    os.environ.setdefault("HOTPATCH_TASK_HUB", "ArcHotpatchLocal")
    try:
        with twin_environment(twin_url), DurableHost(function_app.app, clock, activity_workers=16) as host:
            host.start(port=port, no_auth=no_auth)
            base = host.http.public_url
            console.print(f"Fleet twin (ARM): {twin_url}  ({len(fleet.machines)} machines, speed x{speed:g})")
            for subscription in twin.subscription_ids:
                console.print(f"  subscription {subscription}")
            console.print(f"App: {base}/api/   durable API: {base}/runtime/webhooks/durabletask/")
            if not no_auth:
                console.print(f"Function key: {host.http.function_key}  (?code=... or x-functions-key header)")
            first = twin.subscription_ids[0]
            key = "" if no_auth else f"?code={host.http.function_key}"
            body = '{"dry_run": true}'
            console.print(f"Try: curl -X POST '{base}/api/subscriptions/{first}/rollouts{key}' -d '{body}'")
            console.print("Ctrl-C to stop.")
            threading.Event().wait()
    except KeyboardInterrupt:
        console.print("stopped")
    finally:
        twin.stop()
