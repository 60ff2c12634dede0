"""``serve``: the app's HTTP routes, the durable management API and Event Grid on loopback."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from arc_hotpatch.clocks import Clock
from arc_hotpatch.heap import HEAP_TRIM_INTERVAL_S

from .functions import EVENT_GRID_TRIGGER, HTTP_TRIGGER, TIMER_TRIGGER
from .host import DurableHost
from .http_server import HostKeys


def describe_endpoints(host: DurableHost, no_auth: bool = False) -> list[str]:
    """Human-readable lines: every function, its URL or trigger, and the keys to use."""
    base = host.base_url or "http://127.0.0.1:<port>"
    prefix = f"/{host.registry.route_prefix}" if host.registry.route_prefix else ""
    lines = [f"Local durable host (task hub '{host.hub_name}') listening on {base}", "Functions:"]
    for info in sorted(host.registry.functions.values(), key=lambda f: f.name):
        if info.trigger_type == HTTP_TRIGGER:
            route = next(r for r in host.registry.routes if r.function is info)
            methods = ",".join(sorted(route.methods)) if route.methods else "*"
            lines.append(f"    {info.name}: [{methods}] {base}{prefix}/{route.template}  (auth: {route.auth_level})")
        elif info.trigger_type == TIMER_TRIGGER:
            lines.append(
                f"    {info.name}: timerTrigger, schedule {info.trigger.get('schedule')!r}; run now with "
                f"POST {base}/admin/functions/{info.name}"
            )
        elif info.trigger_type == EVENT_GRID_TRIGGER:
            webhook = f"{base}/runtime/webhooks/eventgrid?functionName={info.name}"
            lines.append(f"    {info.name}: eventGridTrigger, POST {webhook}")
        else:
            lines.append(f"    {info.name}: {info.trigger_type}")
    lines.append(f"Durable management API: {base}/runtime/webhooks/durabletask/instances/{{instanceId}}")
    if no_auth:
        lines.append("Keys: not enforced locally, as func start (--auth to require them)")
    else:
        keys = host.keys
        lines += [
            "Keys (pass ?code=<key> or the x-functions-key header):",
            f"    function key:                    {keys.function_key}",
            f"    master key:                      {keys.master_key}",
            f"    durabletask_extension system key: {keys.durabletask_key}",
            f"    eventgrid_extension system key:   {keys.eventgrid_key}",
        ]
    return lines


def run_serve(
    app: Any,
    clock: Clock,
    port: int = 7071,
    no_auth: bool = False,
    *,
    activity_workers: int = 8,
    hub_name: str = "TestHubName",
    batch_size: int = 32,
    keys: HostKeys | None = None,
    run_timer_triggers: bool = True,
    out: Callable[[str], None] = print,
    stop_event: threading.Event | None = None,
    on_started: Callable[[DurableHost], None] | None = None,
) -> None:
    """Serve ``app`` until Ctrl-C (or ``stop_event``), like ``func start``.

    The host installs ``clock`` process-wide (activities' SDK transports sleep on it) and
    runs timers, activities and timer triggers on it.
    """
    with DurableHost(app, clock, activity_workers=activity_workers, hub_name=hub_name, batch_size=batch_size,
                     heap_trim_interval_s=HEAP_TRIM_INTERVAL_S) as host:
        host.start(port=port, no_auth=no_auth, run_timer_triggers=run_timer_triggers, keys=keys)
        for line in describe_endpoints(host, no_auth):
            out(line)
        if on_started is not None:
            on_started(host)
        stop = stop_event or threading.Event()
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            out("Stopping the local durable host.")
