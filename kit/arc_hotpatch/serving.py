"""``serve``: the fleet twin + the local durable host serving the app's routes on loopback, like ``func start``."""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from typing import Any

from core.policy import SETTINGS, Policy

from .clocks import ScaledClock
from .durable_host import run_serve as serve_app
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
    *, fleet: Fleet, policy: Policy, port: int, faults: str, speed: float, no_auth: bool, console: Any,
    stop_event: threading.Event | None = None,
) -> None:
    """Serve until Ctrl-C (or ``stop_event``)."""
    import function_app

    clock = ScaledClock(speed)
    twin = FleetTwin(fleet, clock, faults)
    twin_url = twin.start()
    served_policy = replace(policy, arm_endpoint=twin_url, subscriptions=tuple(twin.subscription_ids))
    os.environ.update(policy_environment(served_policy))
    os.environ.setdefault("HOTPATCH_TASK_HUB", "ArcHotpatchLocal")

    def started(host: Any) -> None:
        console.print(f"Fleet twin (ARM): {twin_url}  ({len(fleet.machines)} machines, x{speed:g} speed)")
        for subscription in twin.subscription_ids:
            console.print(f"  subscription {subscription}")
        key = "" if no_auth else f"?code={host.keys.function_key}"
        url = f"{host.base_url}/api/subscriptions/{twin.subscription_ids[0]}/rollouts{key}"
        console.print(f"Try: curl -X POST '{url}' -d '{{\"dry_run\": true}}'")

    try:
        with twin_environment(twin_url):
            serve_app(
                function_app.app, clock, port, no_auth, activity_workers=16, hub_name=os.environ["HOTPATCH_TASK_HUB"],
                out=console.print, stop_event=stop_event, on_started=started,
            )
    finally:
        twin.stop()
