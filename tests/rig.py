"""One test rig for the workflow and end-to-end suites: a fleet twin and the local durable host running the
real ``function_app`` on one virtual clock (``Rig``), optionally served over real HTTP like ``func start``
(``Served``); polling helpers, Event Grid events, and a hold on the virtual clock so a test can look at a
rollout mid-flight. Fixtures: ``rig_for`` and ``serve_fleet`` (tests/conftest.py)."""

from __future__ import annotations

import contextlib
import json
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from arc_hotpatch.clocks import VirtualClock
from arc_hotpatch.durable_host import DurableHost
from arc_hotpatch.runner import twin_environment
from arc_hotpatch.serving import policy_environment
from arc_hotpatch.twin import Fleet, FleetTwin, load_scenario
from arc_hotpatch.twin.inspection import MachineSnapshot
from core.contracts import MACHINE_ORCHESTRATOR, MachineInput
from core.policy import Policy
from orchestrators.instances import MACHINE_INSTANCE_PREFIX, machine_instance_id
from tests.reference import EVENT_GRID_EXAMPLE

T = TypeVar("T")
REPO = Path(__file__).parents[1]

WAIT_REAL_S = 30.0  # real seconds any single wait may take before the test fails (virtual hours are instant)
MACHINE_WRITE = "Microsoft.HybridCompute/machines/write"
FINISHED = ("Completed", "Failed", "Terminated")


def wait_until(condition: Callable[[], T], what: str, timeout_s: float = WAIT_REAL_S) -> T:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.02)


class ClockHold:
    """Holds a ``VirtualClock`` still until the test lets it run: a thread stays runnable on the clock.

    The host's background driver only jumps the clock to the next wake-up when nothing is runnable,
    so while the hold is on, virtual time stands still. ``run_for(d)`` lets the clock run ``d`` and
    holds it again there (the thread sleeps on the clock until then): everything due before that
    moment has been processed, nothing after it. Orchestrations make no progress while the clock is
    held (the driver waits for it to settle), but HTTP calls and the durable client still work, so a
    test can look at a running rollout, and raise events that are processed once it lets the clock go,
    without racing it.
    """

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self._commands: queue.Queue[timedelta | None] = queue.Queue()
        self._holding = threading.Event()
        self._reached = threading.Event()
        self._thread = threading.Thread(target=self._hold, name="clock-hold", daemon=True)
        self._thread.start()
        if not self._holding.wait(WAIT_REAL_S):
            pytest.fail("the clock hold did not start")

    def _hold(self) -> None:
        with self.clock.running():  # awake inside ``running``: the clock counts this thread as busy
            self._holding.set()
            while (step := self._commands.get()) is not None:
                self.clock.sleep(step.total_seconds())  # asleep: not busy, the clock may run until then
                self._reached.set()

    def run_for(self, duration: timedelta) -> datetime:
        """Let the clock run ``duration`` of virtual time and hold it there; returns that moment."""
        target = self.clock.now() + duration  # the clock is held: ``now`` is stable here
        self._reached.clear()
        self._commands.put(duration)
        if not self._reached.wait(WAIT_REAL_S):
            pytest.fail(f"the virtual clock never reached {target} (now {self.clock.now()})")
        assert self.clock.now() == target, "the clock went past the hold"
        return target

    def release(self) -> None:
        """Let the clock go for good (idempotent)."""
        if self._thread.is_alive():
            self._commands.put(None)
            self._thread.join(timeout=1)
        if self._thread.is_alive():  # still asleep in a run_for that never got there (a failed test)
            self.clock.advance(365 * 86400)
            self._thread.join(timeout=5)


@dataclass
class Rig:
    """A fleet twin and the local durable host running the real ``function_app``, on one virtual clock."""

    clock: VirtualClock
    twin: FleetTwin
    host: DurableHost
    holds: list[ClockHold] = field(default_factory=list)

    def policy(self, **overrides: Any) -> Policy:
        """The policy a rehearsal uses (reboot policy ``auto``, the twin's endpoint and subscriptions) + overrides."""
        base = replace(Policy(), reboot_policy="auto", arm_endpoint=self.twin.base_url or "",
                       subscriptions=tuple(self.twin.subscription_ids))
        return base.with_overrides(overrides) if overrides else base

    def start_machine(self, name: str, **policy: Any) -> str:
        machine_id = self.twin.resource_id(name)
        return self.host.start_new(
            MACHINE_ORCHESTRATOR, machine_instance_id(machine_id),
            MachineInput(machine_id, self.policy(**policy), rollout_id="test").to_json(),
        )

    def run_machine(self, name: str, **policy: Any) -> dict[str, Any]:
        """Run one machine's orchestration to the end; its report row."""
        instance_id = self.start_machine(name, **policy)
        status = self.host.run_until_complete([instance_id], timeout_real_s=120)[instance_id]
        assert status["runtimeStatus"] == "Completed", status
        return status["output"]

    def machine(self, name: str) -> MachineSnapshot:
        return self.twin.machine(name)

    def machine_instances(self) -> list[str]:
        """Instance ids of the per-machine orchestrations the host has."""
        return [i for i in self.host.instance_ids() if i.startswith(MACHINE_INSTANCE_PREFIX)]

    def hold_clock(self) -> ClockHold:
        """Hold the virtual clock where it is now (see ClockHold); let go at teardown if the test doesn't."""
        hold = ClockHold(self.clock)
        self.holds.append(hold)
        return hold


@dataclass
class Served(Rig):
    """The rig's app served over HTTP on loopback, like ``func start``, with function keys on and the
    policy as app settings."""

    monkeypatch: pytest.MonkeyPatch | None = None
    http: requests.Session = field(default_factory=requests.Session)

    # --- configuration -------------------------------------------------------------------------------

    def set_policy(self, **overrides: Any) -> Policy:
        """App settings (HOTPATCH_*) for ``Policy`` + ``overrides``, as the Functions host would expose them."""
        assert self.monkeypatch is not None
        policy = self.policy(**overrides)
        for name, value in policy_environment(policy).items():
            self.monkeypatch.setenv(name, value)
        return policy

    # --- URLs and calls ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self.host.base_url, "the host is not serving"
        return self.host.base_url

    @property
    def subscription_id(self) -> str:
        return self.twin.subscription_ids[0]

    def rollouts_url(self, subscription_id: str | None = None) -> str:
        return f"{self.base_url}/api/subscriptions/{subscription_id or self.subscription_id}/rollouts"

    def call(self, method: str, path: str, *, key: str | None = "function", **kwargs: Any) -> requests.Response:
        """``method`` on ``/api/...`` with the function key (``key=None``: no key; else the key itself)."""
        params = dict(kwargs.pop("params", None) or {})
        if key == "function":
            params["code"] = self.host.keys.function_key
        elif key is not None:
            params["code"] = key
        return self.http.request(method, f"{self.base_url}{path}", params=params, timeout=30, **kwargs)

    def start_rollout(self, body: Any = None, *, subscription_id: str | None = None) -> requests.Response:
        data = None if body is None else (body if isinstance(body, (str, bytes)) else json.dumps(body))
        return self.http.post(self.rollouts_url(subscription_id), params={"code": self.host.keys.function_key},
                              data=data, headers={"Content-Type": "application/json"}, timeout=30)

    def wait_for_status_url(self, status_url: str) -> dict[str, Any]:
        """Poll a ``statusQueryGetUri`` (202 while running) until the instance has finished."""

        def finished() -> dict[str, Any] | None:
            response = self.http.get(status_url, timeout=30)
            assert response.status_code in (200, 202), response.text
            status = response.json()
            return status if status["runtimeStatus"] in FINISHED else None

        return wait_until(finished, f"instance at {status_url} to finish")

    def report(self, instance_id: str) -> dict[str, Any]:
        response = self.call("GET", f"/api/rollouts/{instance_id}/report")
        assert response.status_code == 200, response.text
        return response.json()

    def instance_status(self, instance_id: str) -> dict[str, Any] | None:
        """An instance's status through the durable management API (None: no such instance)."""
        response = self.http.get(
            f"{self.base_url}/runtime/webhooks/durabletask/instances/{instance_id}",
            params={"code": self.host.keys.durabletask_key}, timeout=30,
        )
        if response.status_code == 404:
            return None
        assert response.status_code in (200, 202), response.text
        return response.json()

    def machine_status(self, name: str) -> dict[str, Any] | None:
        return self.instance_status(machine_instance_id(self.twin.resource_id(name)))

    def wait_for_instance(self, instance_id: str) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            status = self.instance_status(instance_id)
            return status if status and status["runtimeStatus"] in FINISHED else None

        return wait_until(finished, f"instance {instance_id} to finish")

    def deliver_events(self, events: list[dict[str, Any]], *, key: str | None = "eventgrid") -> requests.Response:
        """An Event Grid delivery to the app's trigger, as Event Grid posts it to the Functions host."""
        params = {"functionName": "on_arc_machine_written"}
        if key == "eventgrid":
            params["code"] = self.host.keys.eventgrid_key
        elif key is not None:
            params["code"] = key
        return self.http.post(f"{self.base_url}/runtime/webhooks/eventgrid", params=params, data=json.dumps(events),
                              headers={"aeg-event-type": "Notification", "Content-Type": "application/json"},
                              timeout=30)

    # --- the fleet -----------------------------------------------------------------------------------

    def machine_ids(self, subscription_id: str | None = None) -> list[str]:
        """Resource ids of the twin's machines in a subscription, in the order ARM lists them."""
        wanted = (subscription_id or self.subscription_id).lower()
        return [m.resource_id for m in self.twin.machines() if m.subscription_id.lower() == wanted]



def write_event(resource_id: str, *, operation: str = MACHINE_WRITE, event_id: str = "evt-1",
                event_type: str = "Microsoft.Resources.ResourceWriteSuccess", data: Any = None,
                subject: str | None = None) -> dict[str, Any]:
    """An ARM resource write event in the Event Grid schema, shaped like the REST spec's own example."""
    event = json.loads(EVENT_GRID_EXAMPLE.read_text())
    subscription_id = resource_id.split("/")[2] if resource_id.startswith("/subscriptions/") else "unknown"
    if data is None:
        data = event["data"]
        data.update(resourceUri=resource_id, operationName=operation, subscriptionId=subscription_id,
                    resourceProvider=operation.split("/")[0])
        data["authorization"].update(scope=resource_id, action=operation)
    event.update(id=event_id, eventType=event_type, subject=subject or resource_id, data=data,
                 topic=f"/subscriptions/{subscription_id}")
    return event


def one_machine_per_entry(machines: dict[str, dict[str, Any]], *, subscriptions: int = 1, seed: int = 1) -> Fleet:
    """A fleet of one machine per ``{"name": {twin attributes}}`` entry."""
    return load_scenario({
        "seed": seed, "subscriptions": subscriptions,
        "groups": [{"count": 1, "machine": {"name": name, **attributes}} for name, attributes in machines.items()],
    })


class Rigs:
    """Opens rigs for a test and closes everything at its end, in the right order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.stack = contextlib.ExitStack()
        self.opened: list[Rig] = []

    def open(self, machines: dict[str, dict[str, Any]], *, serve: bool = False, subscriptions: int = 1,
             seed: int = 1, faults: Any = None, activity_workers: int = 4, start: datetime | None = None,
             **policy: Any) -> Rig:
        """``start``: the virtual clock's start (default the kit's fixed one)."""
        import function_app

        clock = VirtualClock(start) if start is not None else VirtualClock()
        twin = FleetTwin(one_machine_per_entry(machines, subscriptions=subscriptions, seed=seed), clock, faults)
        twin.start()
        self.stack.callback(twin.stop)
        host = DurableHost(function_app.app, clock, activity_workers=activity_workers)  # installs the clock
        self.stack.callback(host.close)  # ... until closed
        rig: Rig
        if serve:
            # The policy goes into the environment (monkeypatch) before twin_environment saves the ARM
            # settings, so both are undone in the right order.
            rig = served = Served(clock, twin, host, monkeypatch=self.monkeypatch)
            served.set_policy(**policy)
        else:
            rig = Rig(clock, twin, host)
        self.stack.enter_context(twin_environment(twin))
        if serve:
            host.start(port=0)  # function keys on: every call must carry the right key
        self.opened.append(rig)
        return rig

    def close(self) -> None:
        with self.stack:
            for rig in self.opened:
                # Close the host before letting held clocks go, so nothing runs past a test's last look.
                rig.host.close()
                for hold in rig.holds:
                    hold.release()
                if isinstance(rig, Served):
                    rig.http.close()
        for rig in self.opened:
            assert not rig.host.background_errors, f"the host's driver failed: {rig.host.background_errors!r}"


RigFor = Callable[..., Rig]
ServeFleet = Callable[..., Served]


class ServeProcess:
    """``python -m arc_hotpatch serve ...`` as a person runs it: a process of its own, its output read as it comes
    (a full pipe would block it); stopped by its pid (terminate, then kill)."""

    def __init__(self, arguments: list[str], *, cwd: Path, env: dict[str, str], stdout_only: bool = False) -> None:
        """``stdout_only``: read what it prints on stdout alone (stderr goes to the test's own)."""
        python = REPO / ".venv/bin/python"
        command = [str(python if python.exists() else sys.executable), "-m", "arc_hotpatch", "serve", *arguments]
        self.process = subprocess.Popen(command, cwd=cwd, env={**env, "PYTHONUNBUFFERED": "1"},
                                        stdout=subprocess.PIPE, stderr=None if stdout_only else subprocess.STDOUT,
                                        text=True)
        self._lines: queue.Queue[str] = queue.Queue()
        self.printed: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)

    def wait_for(self, patterns: dict[str, str], timeout_s: float = 30.0) -> dict[str, str]:
        """The first group of each pattern, matched against the lines printed (the process must stay up)."""
        found: dict[str, str] = {}
        deadline = time.monotonic() + timeout_s
        for line in self.printed:
            found |= {k: m.group(1) for k, p in patterns.items() if k not in found and (m := re.search(p, line))}
        while len(found) < len(patterns):
            assert self.process.poll() is None, "serve exited:\n" + "".join(self.printed)
            assert time.monotonic() < deadline, "serve did not print what was expected:\n" + "".join(self.printed)
            try:
                line = self._lines.get(timeout=0.5).rstrip("\n")
            except queue.Empty:
                continue
            self.printed.append(line + "\n")
            found |= {k: m.group(1) for k, p in patterns.items() if k not in found and (m := re.search(p, line))}
        return found

    def output_after_exit(self) -> str:
        """Every line it printed, once it has exited (what ``wait_for`` did not read included)."""
        assert self.process.poll() is not None, "serve is still running"
        with contextlib.suppress(queue.Empty):  # the reading thread has the last lines within moments of the exit
            while True:
                self.printed.append(self._lines.get(timeout=0.5))
        return "".join(self.printed)

    def stop(self) -> None:
        self.process.terminate()  # this process only, by its pid
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
