"""The ledger activities through the real ``function_app.app`` on the local durable host (a tiny probe
orchestration calls them as the machine orchestration will), and ``GET /api/ledger`` over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import azure.durable_functions as df
import pytest
import requests

import function_app
from arc_hotpatch.clocks import VirtualClock
from arc_hotpatch.durable_host import DurableHost
from arc_hotpatch.durable_host.functions import list_functions
from core.ledger import LEDGER_READ, LEDGER_WRITE, LedgerEntry

SUB = "00000000-0000-0000-0000-000000000001"
MACHINE = f"/subscriptions/{SUB}/resourceGroups/rg-a/providers/Microsoft.HybridCompute/machines/web-01"
PROBE = "ledger_probe"

probe_app = df.DFApp()


@probe_app.orchestration_trigger(context_name="context")
def ledger_probe(context: df.DurableOrchestrationContext) -> Any:
    """Write a requested entry and its outcome (at the orchestration's own time), the first twice, then read."""
    data = context.get_input()
    requested = LedgerEntry.of(data["machine_id"], data["rollout_id"], context.instance_id, "reboot", "requested",
                               context.current_utc_datetime, {"policy": "auto"})
    first = yield context.call_activity(LEDGER_WRITE, requested)
    again = yield context.call_activity(LEDGER_WRITE, requested)
    yield context.call_activity(LEDGER_WRITE, requested.outcome("done", context.current_utc_datetime, "back"))
    entries = yield context.call_activity(LEDGER_READ, data["machine_id"])
    return {"first": first, "again": again, "entries": entries}


class AppWithProbe:
    """``function_app.app``'s functions (the real ledger activities and route) plus the probe orchestration."""

    def get_functions(self) -> list[Any]:
        return list_functions(function_app.app) + list_functions(probe_app)


def test_activities_through_the_app(ledger: str) -> None:
    clock = VirtualClock()
    with DurableHost(AppWithProbe(), clock, activity_workers=2) as host:
        outputs = []
        for rollout in ("rollout-a", "rollout-b"):
            clock.advance(7 * 86400)  # a week between rollouts
            instance_id = host.start_new(PROBE, f"probe-{rollout}", {"machine_id": MACHINE, "rollout_id": rollout})
            status = host.run_until_complete([instance_id], timeout_real_s=60)[instance_id]
            assert status["runtimeStatus"] == "Completed", status
            outputs.append(status["output"])
    first, second = outputs
    assert first["first"] == first["again"], "the repeated write upserted the same entity"
    assert first["first"]["table"] == ledger
    assert [(e["rollout_id"], e["phase"]) for e in first["entries"]] == [("rollout-a", "requested"),
                                                                         ("rollout-a", "done")]
    entries = [LedgerEntry.from_json(e) for e in second["entries"]]
    assert [(e.rollout_id, e.instance_id, e.change, e.phase) for e in entries] == [
        ("rollout-a", "probe-rollout-a", "reboot", "requested"), ("rollout-a", "probe-rollout-a", "reboot", "done"),
        ("rollout-b", "probe-rollout-b", "reboot", "requested"), ("rollout-b", "probe-rollout-b", "reboot", "done"),
    ], "a machine's entries across rollouts, oldest first"
    assert entries[0].parameters == {"policy": "auto"} and entries[1].detail == "back"


@pytest.fixture
def served(ledger: str) -> Iterator[DurableHost]:
    host = DurableHost(function_app.app, VirtualClock())
    try:
        host.start(port=0)
        yield host
    finally:
        host.close()


def get(host: DurableHost, path: str, key: str | None, **params: str) -> requests.Response:
    if key is not None:
        params["code"] = key
    return requests.get(f"{host.base_url}{path}", params=params, timeout=30)


def test_the_route_returns_a_machines_entries(served: DurableHost) -> None:
    from activities.ledger_calls import write_entry

    written = [
        LedgerEntry.of(MACHINE, "rollout-a", "machine-web-01", "apply_changes", "requested", "2026-01-05T08:00:00Z",
                       {"enable_vsm": True}),
        LedgerEntry.of(MACHINE, "rollout-a", "machine-web-01", "apply_changes", "done", "2026-01-05T08:03:00Z",
                       detail="scheduled the reboot"),
        LedgerEntry.of(MACHINE, "rollout-b", "machine-web-01", "enable_hotpatch", "failed", "2026-01-12T08:00:00Z",
                       detail="Enabling for 30 min"),
    ]
    for entry in reversed(written):
        write_entry(entry)
    response = get(served, "/api/ledger", served.keys.function_key, machine_id=MACHINE.upper())
    assert response.status_code == 200, response.text
    body = response.json()
    assert [{k: e[k] for k in ("at", "rollout_id", "instance_id", "change", "phase", "detail")}
            for e in body["entries"]] == [
        {"at": e.at, "rollout_id": e.rollout_id, "instance_id": e.instance_id, "change": e.change, "phase": e.phase,
         "detail": e.detail} for e in written]
    assert body["entries"][0]["parameters"] == {"enable_vsm": True}
    other = MACHINE.replace("web-01", "web-02")
    assert get(served, "/api/ledger", served.keys.function_key, machine_id=other).json()["entries"] == []


@pytest.mark.parametrize("params, needle", [
    ({}, "machine_id"),
    ({"machine_id": ""}, "machine_id"),
    ({"machine_id": "web-01"}, "not an Arc machine resource id"),
    ({"machine_id": MACHINE + "/extensions/x"}, "not an Arc machine resource id"),
    ({"machine_id": "/subscriptions/" + "x" * 5000}, "longer than"),
])
def test_a_bad_machine_id_is_a_400_naming_it(served: DurableHost, params: dict[str, str], needle: str) -> None:
    response = get(served, "/api/ledger", served.keys.function_key, **params)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "InvalidRequest" and needle in error["message"]
    assert len(response.text) < 1000, "a bad value is quoted short"


def test_the_route_is_keyed_like_every_route(served: DurableHost) -> None:
    report_without_key = get(served, "/api/rollouts/rollout-x/report", None)
    assert report_without_key.status_code in (401, 403)
    for key in (None, "wrong-key"):
        response = get(served, "/api/ledger", key, machine_id=MACHINE)
        assert response.status_code == get(served, "/api/rollouts/rollout-x/report", key).status_code
        assert response.status_code in (401, 403)
