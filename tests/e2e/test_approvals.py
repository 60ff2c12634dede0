"""Reboot approvals over HTTP (reboot policy ``approval``): a machine that needs a reboot waits without changing
anything, ``POST /api/machines/approvals`` releases one machine, ``POST /api/rollouts/{id}/approvals`` releases
every waiting machine of a rollout, and a machine that is not waiting is a 409."""

from __future__ import annotations

from datetime import timedelta

from tests.rig import Served, ServeFleet

OLD = "10.0.26100.4000"  # enable only: no reboot, so no approval needed


def assert_waiting_unchanged(served: Served, name: str) -> None:
    status = served.machine_status(name)
    assert status is not None and status["runtimeStatus"] == "Running", (name, status)
    assert status["customStatus"]["step"] == "awaiting_approval", (name, status["customStatus"])
    snapshot = served.twin.machine(name)
    assert snapshot.reboots == 0 and not snapshot.license_writes, f"{name} changed while waiting"
    assert {run.script for run in snapshot.runs} == {"readiness"}, f"{name} ran more than the readiness check"


def test_approvals_release_waiting_reboots(serve_fleet: ServeFleet) -> None:
    served = serve_fleet({"a-ready": {}, "b-ready": {}, "c-ready": {}, "d-no-reboot": {"os_version": OLD}},
                         reboot_policy="approval")
    ids = {name: served.twin.resource_id(name) for name in ("a-ready", "b-ready", "c-ready", "d-no-reboot")}
    hold = served.hold_clock()
    started = served.start_rollout({"waves": "100%"})
    assert started.status_code == 202, started.text
    rollout_id = started.json()["id"]

    hold.run_for(timedelta(minutes=30))
    for name in ("a-ready", "b-ready", "c-ready"):
        assert_waiting_unchanged(served, name)
    no_reboot = served.machine_status("d-no-reboot")
    assert no_reboot is not None and no_reboot["output"]["state"] == "hotpatch_enabled", no_reboot

    def approve(body: object) -> tuple[int, dict]:
        response = served.call("POST", "/api/machines/approvals", json=body)
        return response.status_code, response.json()

    status, body = approve({"machine_id": ids["d-no-reboot"]})
    assert (status, body["error"]["code"]) == (409, "NotAwaitingApproval")
    unknown = ids["a-ready"].replace("/a-ready", "/never-onboarded")
    assert approve({"machine_id": unknown})[0] == 409
    status, body = approve({"by": "alice"})
    assert status == 400 and "machine_id" in body["error"]["message"]
    status, body = approve({"machine_id": "web-1"})
    assert status == 400 and "not an Arc machine resource id" in body["error"]["message"]

    status, body = approve({"machine_id": ids["a-ready"], "by": "alice"})
    assert status == 202, body
    assert (body["machine_id"], body["approved"], body["by"]) == (ids["a-ready"], True, "alice")

    hold.run_for(timedelta(minutes=5))  # released: rebooting, running but no longer waiting for an approval
    running = served.machine_status("a-ready")
    assert running is not None and running["runtimeStatus"] == "Running", running
    assert running["customStatus"]["step"] != "awaiting_approval", running["customStatus"]
    status, body = approve({"machine_id": ids["a-ready"]})
    assert status == 409 and body["error"]["code"] == "NotAwaitingApproval", ("running, not waiting", body)

    hold.run_for(timedelta(hours=3))
    released = served.machine_status("a-ready")
    assert released is not None and released["runtimeStatus"] == "Completed", released
    assert (released["output"]["state"], released["output"]["reboots"]) == ("hotpatch_enabled", 1)
    assert served.twin.machine("a-ready").reboots == 1
    for name in ("b-ready", "c-ready"):
        assert_waiting_unchanged(served, name)
    assert approve({"machine_id": ids["a-ready"]})[0] == 409, "a machine that is done is not waiting"

    everyone = served.call("POST", f"/api/rollouts/{rollout_id}/approvals", json={"by": "bob"})
    assert everyone.status_code == 202, everyone.text
    assert sorted(everyone.json()["machines"]) == sorted([ids["b-ready"], ids["c-ready"]])
    hold.release()

    final = served.wait_for_status_url(started.json()["statusQueryGetUri"])
    assert final["runtimeStatus"] == "Completed", final
    report = served.report(rollout_id)
    assert [(row["name"], row["state"], row["reboots"]) for row in report["machines"]] == [
        ("a-ready", "hotpatch_enabled", 1), ("b-ready", "hotpatch_enabled", 1), ("c-ready", "hotpatch_enabled", 1),
        ("d-no-reboot", "hotpatch_enabled", 0),
    ]
    for name, row in zip(ids, report["machines"], strict=True):
        assert served.twin.machine(name).reboots == row["reboots"], name
    assert served.call("POST", f"/api/rollouts/{rollout_id}/approvals").json()["machines"] == [], "none left"


def test_rollout_approval_also_releases_a_machine_event_grid_started(serve_fleet: ServeFleet) -> None:
    from tests.rig import write_event

    served = serve_fleet({"a-ready": {}, "b-ready": {}}, reboot_policy="approval")
    hold = served.hold_clock()
    delivered = served.deliver_events([write_event(served.twin.resource_id("b-ready"))])
    assert delivered.status_code < 300, delivered.text
    hold.run_for(timedelta(minutes=10))
    assert_waiting_unchanged(served, "b-ready")  # started by Event Grid, not by the rollout
    started = served.start_rollout({"waves": "100%"})
    rollout_id = started.json()["id"]
    hold.run_for(timedelta(minutes=30))
    assert_waiting_unchanged(served, "a-ready")
    everyone = served.call("POST", f"/api/rollouts/{rollout_id}/approvals", json={"by": "carol"})
    assert everyone.status_code == 202, everyone.text
    assert sorted(everyone.json()["machines"]) == sorted(served.twin.resource_id(n) for n in ("a-ready", "b-ready"))
    hold.release()
    final = served.wait_for_status_url(started.json()["statusQueryGetUri"])
    assert final["runtimeStatus"] == "Completed", final
    assert [served.twin.machine(n).reboots for n in ("a-ready", "b-ready")] == [1, 1]
    assert served.call("POST", "/api/rollouts/rollout-unknown/approvals").status_code == 404
