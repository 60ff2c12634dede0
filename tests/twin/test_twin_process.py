"""The fleet twin in a process of its own (``simulate``): it answers the real SDK clients on the time of the
driver's virtual clock, reports its metrics, and is stopped by its process id."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from azure.mgmt.hybridcompute.models import MachineRunCommand, MachineRunCommandScriptSource

from arc_hotpatch.clocks import MirroredClock, SharedTime, VirtualClock
from arc_hotpatch.twin import load_scenario
from arc_hotpatch.twin.process import TwinProcess
from core.azure_clients import ArmConnection, close_clients, hybrid_compute_client

START = datetime(2026, 3, 2, 9, 30, 0, 123456, tzinfo=UTC)


def test_shared_time_carries_a_moment_to_the_microsecond() -> None:
    shared = SharedTime(multiprocessing.get_context("spawn"))
    clock = VirtualClock(START, on_advance=shared.set)
    mirror = MirroredClock(shared)
    assert mirror.now() == START
    clock.advance(90.5)
    assert mirror.now() == START + timedelta(seconds=90.5) == clock.now()
    with pytest.raises(RuntimeError, match="cannot sleep"):
        mirror.sleep(1)


def _run_view(client, name: str, *, put: bool = False):
    if put:
        client.machine_run_commands.begin_create_or_update(
            "rg-a", "m1", name,
            MachineRunCommand(location="westeurope", source=MachineRunCommandScriptSource(script="Write-Output 1")),
            polling=False,
        )
    return client.machine_run_commands.get("rg-a", "m1", name).instance_view


def test_the_twin_process_answers_on_the_driver_clock_and_stops_by_pid() -> None:
    fleet = load_scenario({"seed": 1, "subscriptions": 1, "groups": [{"machine": {"name": "m1",
                                                                                  "resource_group": "rg-a"}}]})
    shared = TwinProcess.shared_time()
    clock = VirtualClock(START, on_advance=shared.set)
    twin = TwinProcess(fleet, shared)
    url = twin.start()
    pid = twin._process.pid
    ca_file = twin.ca_file
    try:
        assert url.startswith("https://127.0.0.1:") and twin.ca_file and os.path.exists(twin.ca_file)
        assert twin.subscription_ids == fleet.subscription_ids
        connection = ArmConnection.for_endpoint(url, ca_file=twin.ca_file)
        client = hybrid_compute_client(connection, fleet.subscription_ids[0])
        before = _run_view(client, "probe", put=True)
        assert before.end_time is None, "nothing has run yet: the clock has not moved"
        clock.advance(3600)
        after = _run_view(client, "probe")
        assert after.execution_state == "Succeeded", "the twin follows the driver's clock"
        assert START <= after.start_time <= after.end_time <= START + timedelta(hours=1)
        metrics = twin.metrics()
        assert metrics["arm_requests_by_operation"]["runCommands.put"] == 1
        with open(f"/proc/{pid}/comm") as comm:  # named for ps and top (and the fleet benchmark)
            assert comm.read().strip() == "arc-twin"
    finally:
        close_clients()
        twin.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone: stopped (and reaped) by its process id
    assert not os.path.exists(ca_file), "the process's own CA file (the default) goes with it"
    twin.stop()  # idempotent


def test_a_ca_file_the_operator_named_outlives_the_process(tmp_path) -> None:
    named = tmp_path / "twin-ca.pem"
    code = f"from arc_hotpatch.twin.tls import twin_tls; twin_tls({str(named)!r}); print(twin_tls().ca_file)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    default = done.stdout.strip()
    assert default.endswith(".pem") and not os.path.exists(default), "the default file is removed at exit"
    assert named.read_text().startswith("-----BEGIN CERTIFICATE-----"), "a named --ca-file stays"


def test_a_twin_process_that_cannot_start_says_why() -> None:
    fleet = load_scenario({"groups": [{"machine": {"name": "m1"}}]})
    twin = TwinProcess(fleet, TwinProcess.shared_time(), faults={"not a fault": 1})
    with pytest.raises(RuntimeError, match="failed to start"):
        twin.start()
