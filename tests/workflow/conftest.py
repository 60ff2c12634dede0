"""A rig for the workflow tests: the fleet twin + the local durable host + the real function_app."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from arc_hotpatch.clocks import VirtualClock
from arc_hotpatch.durable_host import DurableHost
from arc_hotpatch.runner import twin_environment
from arc_hotpatch.twin import FleetTwin
from arc_hotpatch.twin.fleet import load_scenario
from arc_hotpatch.twin.inspection import MachineSnapshot
from core.policy import Policy
from orchestrators.instances import machine_instance_id


@dataclass
class Rig:
    clock: VirtualClock
    twin: FleetTwin
    host: DurableHost

    def policy(self, **overrides: Any) -> Policy:
        base = replace(Policy(), reboot_policy="auto", arm_endpoint=self.twin.base_url or "",
                       subscriptions=tuple(self.twin.subscription_ids))
        return base.with_overrides(overrides) if overrides else base

    def start_machine(self, name: str, **policy: Any) -> str:
        machine_id = self.twin.resource_id(name)
        return self.host.start_new(
            "machine_orchestrator", machine_instance_id(machine_id),
            {"machine_id": machine_id, "policy": self.policy(**policy).to_json(), "rollout_id": "test"},
        )

    def run_machine(self, name: str, **policy: Any) -> dict[str, Any]:
        """Run one machine's orchestration to the end; its report row."""
        instance_id = self.start_machine(name, **policy)
        status = self.host.run_until_complete([instance_id], timeout_real_s=120)[instance_id]
        assert status["runtimeStatus"] == "Completed", status
        return status["output"]

    def machine(self, name: str) -> MachineSnapshot:
        return self.twin.machine(name)


@pytest.fixture
def rig_for() -> Iterator[Any]:
    """``rig_for({"name": {attributes}, ...})`` → a running Rig with one machine per entry."""
    import function_app

    opened: list[tuple[FleetTwin, DurableHost, Any]] = []

    def make(machines: dict[str, dict[str, Any]], *, faults: Any = None, seed: int = 1) -> Rig:
        scenario = {
            "seed": seed, "subscriptions": 1,
            "groups": [{"count": 1, "machine": {"name": name, **attributes}} for name, attributes in machines.items()],
        }
        clock = VirtualClock()
        twin = FleetTwin(load_scenario(scenario), clock, faults)
        url = twin.start()
        env = twin_environment(url)
        env.__enter__()
        host = DurableHost(function_app.app, clock, activity_workers=4)
        opened.append((twin, host, env))
        return Rig(clock, twin, host)

    yield make
    for twin, host, env in reversed(opened):
        host.close()
        twin.stop()
        env.__exit__(None, None, None)
