"""``serve``: the fleet twin + the local durable host serving the app's routes on loopback, like ``func start``."""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from datetime import datetime
from typing import Any

from core import policy as core_policy
from core.ledger import connection_endpoint
from core.policy import SETTINGS, Policy

from .azurite import ledger_environment
from .clocks import DEFAULT_START, ScaledClock
from .durable_host import run_serve as serve_app
from .runner import twin_environment, twin_scope
from .twin import FleetTwin
from .twin.fleet import Fleet


def policy_environment(policy: Policy) -> dict[str, str]:
    """The app settings (HOTPATCH_*) that make the app's own ``load_policy`` return ``policy``.

    A secret setting (the escalation webhook, which ``to_json`` blanks) is written from the policy
    itself when it has one and left out otherwise, so an empty policy field never wipes the
    environment's own HOTPATCH_ESCALATION_WEBHOOK.
    """
    data = policy.to_json()
    secrets = set(getattr(core_policy, "SECRET_FIELDS", ()))
    env: dict[str, str] = {}
    for spec in SETTINGS:
        if spec.field in secrets:
            secret = getattr(policy, spec.field, "")
            if secret:
                env[spec.env] = str(secret)
            continue
        value = data[spec.field]
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, list):
            value = ",".join(value)
        env[spec.env] = str(value)
    env["HOTPATCH_INSTALL_TIMER"] = env.get("HOTPATCH_INSTALL_SCHEDULE", "")  # the timer's binding (empty: off here)
    return env


def run_serve(
    *, fleet: Fleet, policy: Policy, port: int, faults: str, speed: float, no_auth: bool, console: Any,
    stop_event: threading.Event | None = None, start: datetime = DEFAULT_START, app: Any = None,
) -> None:
    """Serve ``app`` (default the project's) with the fleet twin behind it until Ctrl-C (or ``stop_event``); the
    simulated clock starts at ``start``."""
    if app is None:
        import function_app

        app = function_app.app
    scope = twin_scope(policy.subscriptions, fleet.subscription_ids)  # HOTPATCH_SUBSCRIPTIONS may name some
    clock = ScaledClock(speed, start)
    twin = FleetTwin(fleet, clock, faults)
    twin_url = twin.start()
    served_policy = replace(policy, arm_endpoint=twin_url, subscriptions=scope)
    os.environ.update(policy_environment(served_policy))
    os.environ.setdefault("HOTPATCH_TASK_HUB", "ArcHotpatchLocal")

    def started(host: Any) -> None:
        console.print(f"Fleet twin: {twin_url}")
        console.print(f"  CA certificate: {twin.ca_file}")
        console.print(f"  ARM + {len(fleet.machines)} simulated machines, x{speed:g} speed; "
                      f"machine truth: {twin_url}/_twin/machines/{{name}}")
        for subscription in twin.subscription_ids:
            out_of_scope = "" if subscription in scope else "  (out of scope: not in HOTPATCH_SUBSCRIPTIONS)"
            console.print(f"  subscription {subscription}{out_of_scope}")
        key = "" if no_auth else f"?code={host.keys.function_key}"
        url = f"{host.base_url}/api/subscriptions/{scope[0]}/rollouts{key}"
        console.print(f"Try: curl -X POST '{url}' -d '{{\"dry_run\": true}}'")

    try:
        with twin_environment(twin), ledger_environment() as ledger:  # the audit ledger: Azurite unless set
            if ledger:
                console.print(f"Audit ledger: Azurite table service {connection_endpoint(ledger)}")
            serve_app(
                app, clock, port, no_auth, activity_workers=16, hub_name=os.environ["HOTPATCH_TASK_HUB"],
                out=console.print, stop_event=stop_event, on_started=started,
            )
    finally:
        twin.stop()


def run_serve_app(*, app: Any, port: int, speed: float, no_auth: bool, console: Any,
                  stop_event: threading.Event | None = None, start: datetime = DEFAULT_START) -> None:
    """Serve another FunctionApp alone (no fleet twin, no ledger), like ``func start``, until Ctrl-C."""
    serve_app(app, ScaledClock(speed, start), port, no_auth, activity_workers=16,
              hub_name=os.environ.get("HOTPATCH_TASK_HUB") or "TestHubName", out=console.print, stop_event=stop_event)
