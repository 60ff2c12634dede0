"""The served app for end-to-end tests: a fleet twin and the local durable host on one VirtualClock, the real
``function_app`` behind real HTTP with function keys on, and the rollout policy as app settings."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from arc_hotpatch.clocks import VirtualClock
from arc_hotpatch.durable_host import DurableHost
from arc_hotpatch.runner import twin_environment
from arc_hotpatch.twin import FleetTwin
from arc_hotpatch.twin.fleet import load_scenario

from .rig import Served

ServeFleet = Callable[..., Served]


@pytest.fixture
def serve_fleet(monkeypatch: pytest.MonkeyPatch) -> Iterator[ServeFleet]:
    """``serve_fleet({"name": {twin attributes}, ...}, subscriptions=1, **policy)`` → a running ``Served``.

    The policy (reboot policy ``auto`` unless overridden) goes into the environment with monkeypatch,
    before ``twin_environment`` saves the ARM settings, so both are undone in the right order.
    """
    import function_app

    stack = contextlib.ExitStack()
    opened: list[Served] = []

    def serve(machines: dict[str, dict[str, Any]], *, subscriptions: int = 1, seed: int = 7,
              **policy: Any) -> Served:
        scenario = {
            "seed": seed, "subscriptions": subscriptions,
            "groups": [{"count": 1, "machine": {"name": name, **attributes}} for name, attributes in machines.items()],
        }
        clock = VirtualClock()
        twin = FleetTwin(load_scenario(scenario), clock)
        twin_url = twin.start()
        stack.callback(twin.stop)
        host = DurableHost(function_app.app, clock, activity_workers=8)  # installs the clock process-wide
        stack.callback(host.close)  # ... until closed
        served = Served(clock, twin, host, monkeypatch)
        served.set_policy(**policy)
        stack.enter_context(twin_environment(twin_url))
        host.start(port=0)  # function keys on: every call below must carry the right key
        opened.append(served)
        return served

    with stack:
        yield serve
        for served in opened:
            # Close the host before letting held clocks go, so nothing runs past a test's last look.
            served.host.close()
            for hold in served.holds:
                hold.release()
            served.http.close()
    for served in opened:
        assert not served.host.background_errors, f"the host's driver failed: {served.host.background_errors!r}"
