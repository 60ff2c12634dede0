"""The HTTP start of a subscription rollout (SPEC §5), end to end over real HTTP: start, poll the durable status
URL, the report (while running and at the end) against the twin's fleet, the running run returned while it runs,
400/401."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from tests.rig import ServeFleet, wait_until

OLD = "10.0.26100.4000"  # before KB5066835: no licensing workaround, so no reboot

# Machines of the first subscription, named so that list order (by resource id) is the order below:
# the canary (first wave, one machine) is the quick excluded one, so the rest are still running when
# the test looks at the report mid-rollout.
MIXED: dict[str, tuple[dict[str, Any], tuple[str, str, int]]] = {
    # name: (twin attributes, (state, reason, reboots))
    "a-excluded": ({"tags": {"hotpatch": "exclude"}}, ("excluded", "tagged_exclude", 0)),
    "b-ready": ({}, ("hotpatch_enabled", "enabled", 1)),
    "c-pre-october": ({"os_version": OLD}, ("hotpatch_enabled", "enabled", 0)),
    "d-enrolled": ({"hotpatch": "Enabled", "os_version": OLD}, ("hotpatch_enabled", "already_enabled", 0)),
    "e-offline": ({"status": "Disconnected"}, ("skipped_disconnected", "agent_disconnected", 0)),
    "f-server-2022": ({"os_sku": "Windows Server 2022 Datacenter", "os_version": "10.0.20348.2700"},
                      ("ineligible", "unsupported_os", 0)),
    "g-enable-fails": ({"enable_outcome": "fail", "os_version": OLD}, ("escalated", "enable_failed", 0)),
}
OTHER_SUBSCRIPTION = {"z-elsewhere": {"subscription": 1}}  # must not be touched by the first one's rollout


def mixed_fleet() -> dict[str, dict[str, Any]]:
    return {name: attributes for name, (attributes, _) in MIXED.items()} | OTHER_SUBSCRIPTION


def test_start_poll_and_report_against_the_twin(serve_fleet: ServeFleet) -> None:
    served = serve_fleet(mixed_fleet(), subscriptions=2)
    hold = served.hold_clock()
    started = served.start_rollout()
    assert started.status_code == 202, started.text
    links = started.json()
    instance_id = links["id"]
    assert re.fullmatch(rf"rollout-{served.subscription_id}-\d{{8}}T\d{{6}}Z-[0-9a-f]{{6}}", instance_id), instance_id
    assert started.headers["Location"] == links["statusQueryGetUri"]
    for link in ("statusQueryGetUri", "sendEventPostUri", "terminatePostUri", "purgeHistoryDeleteUri"):
        assert links[link].startswith(f"{served.base_url}/runtime/webhooks/durabletask/instances/{instance_id}")

    # 10 virtual minutes in, every machine is assessed: the ones that need no change are settled (in no wave)
    # and in the report already; the canary, the first machine that needs a change, is still being changed.
    hold.run_for(timedelta(minutes=10))
    running = served.report(instance_id)
    assert running["rollout"]["status"] == "Running"
    assert (running["rollout"]["phase"], running["rollout"]["wave"]) == ("rolling_out", 1)
    # (a Disconnected agent is read again after a grace period before it is skipped: maybe not settled yet)
    settled = ["a-excluded", "d-enrolled", "e-offline", "f-server-2022"]
    shown = [row["name"] for row in running["machines"]]
    assert shown in (settled, [n for n in settled if n != "e-offline"]), (
        "while running, the report has the machines done so far", shown)
    assert [row["id"] for row in running["machines"]] == [served.twin.resource_id(n) for n in shown]
    assert running["summary"]["by_state"] == {"excluded": 1, "hotpatch_enabled": 1, "ineligible": 1} | (
        {"skipped_disconnected": 1} if "e-offline" in shown else {})
    changing = [n for n in ("b-ready", "c-pre-october", "g-enable-fails")
                if (served.machine_status(n) or {}).get("runtimeStatus") == "Running"]
    assert len(changing) == 1, "the canary wave changes exactly one machine"
    page = served.call("GET", f"/api/rollouts/{instance_id}/report?format=html")  # what is known so far
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert all(f"<td>{name}</td>" in page.text for name in shown) and "<td>b-ready</td>" not in page.text
    hold.release()

    final_status = served.wait_for_status_url(links["statusQueryGetUri"])
    assert final_status["runtimeStatus"] == "Completed", final_status
    report = served.report(instance_id)
    assert report["rollout"]["status"] == "Completed"

    rows = {row["name"]: row for row in report["machines"]}
    assert [row["id"] for row in report["machines"]] == served.machine_ids(), "one row per machine, in list order"
    assert set(rows) == set(MIXED), "only the machines of the requested subscription"
    for name, (_, (state, reason, reboots)) in MIXED.items():
        row = rows[name]
        assert (row["state"], row["reason"], row["reboots"]) == (state, reason, reboots), row
        assert row["subscription_id"] == served.subscription_id
        snapshot = served.twin.machine(name)
        assert snapshot.reboots == row["reboots"], f"{name}: the twin rebooted as often as the report says"
        assert (snapshot.hotpatch_status == "Enabled") == (state == "hotpatch_enabled"), name
    untouched = served.twin.machine("z-elsewhere")
    assert not untouched.runs and not untouched.license_writes and untouched.reboots == 0

    # The wave that changed each machine: the canary in wave 1; machines settled without a change in none.
    assert sorted(row["wave"] for row in report["machines"] if row["actions"])[0] == 1
    assert all(row["wave"] == 0 for row in report["machines"] if not row["actions"])
    table = served.call("GET", f"/api/rollouts/{instance_id}/report?format=csv")
    assert table.status_code == 200 and table.headers["Content-Type"].startswith("text/csv")
    csv_rows = list(csv.DictReader(io.StringIO(table.text)))
    assert [(r["name"], r["state"], r["reason"]) for r in csv_rows] == [
        (r["name"], r["state"], r["reason"]) for r in report["machines"]]
    assert served.call("GET", f"/api/rollouts/{instance_id}/report?format=pdf").status_code == 400
    # The format is a word, whatever its case: ?format=CSV is the same table.
    assert served.call("GET", f"/api/rollouts/{instance_id}/report?format=CSV").text == table.text

    summary = report["summary"]
    assert summary["machines"] == len(MIXED) == sum(summary["by_state"].values())
    assert summary["by_state"] == dict(Counter(row["state"] for row in report["machines"]))
    assert summary["reboots"] == sum(row["reboots"] for row in report["machines"])
    assert summary["escalations"] == sum(row["state"] == "escalated" for row in report["machines"])


def test_second_start_while_running_returns_the_running_run_then_a_new_start_is_a_new_run(
        serve_fleet: ServeFleet) -> None:
    served = serve_fleet({"a-ready": {}, "b-ready": {}})
    hold = served.hold_clock()
    first = served.start_rollout({"dry_run": False})
    assert first.status_code == 202, first.text
    instance_id = first.json()["id"]
    hold.run_for(timedelta(minutes=5))

    # The same subscription spelled in upper case is the same rollout.
    for subscription_id in (served.subscription_id, served.subscription_id.upper()):
        again = served.start_rollout({"dry_run": True}, subscription_id=subscription_id)
        # A no-op that returns the running instance (SPEC §3): nothing started, its body not applied.
        assert again.status_code == 202, again.text
        body = again.json()
        assert body["already_running"] is True and instance_id in body["message"]
        assert body["id"] == instance_id
        assert again.headers["Location"] == body["statusQueryGetUri"] == first.json()["statusQueryGetUri"]
    hold.release()

    done = served.wait_for_status_url(first.json()["statusQueryGetUri"])
    assert done["runtimeStatus"] == "Completed" and done["input"]["policy"]["dry_run"] is False

    first_report = served.report(instance_id)
    rerun = served.start_rollout({"dry_run": True})
    assert rerun.status_code == 202, rerun.text
    assert rerun.json()["id"] != instance_id, "every run gets its own instance id"
    assert rerun.json()["id"].startswith(f"rollout-{served.subscription_id}-")
    second = served.wait_for_status_url(rerun.json()["statusQueryGetUri"])
    assert second["runtimeStatus"] == "Completed"
    assert second["input"]["policy"]["dry_run"] is True, "a new rollout ran, with the new request's policy"
    assert second["createdTime"] > done["createdTime"]
    assert served.report(instance_id) == first_report, "the earlier run's report is still readable, unchanged"
    assert served.report(rerun.json()["id"])["rollout"]["id"] == rerun.json()["id"]


GOOD_SUBSCRIPTION = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"
SERVED = "served"  # the served twin's (configured) subscription


@pytest.mark.parametrize(
    ("subscription_id", "body", "code", "message"),
    [
        ("not-a-guid", None, "InvalidRequest", "invalid subscriptionId 'not-a-guid'"),
        ("0b1f6471-1bf0-4dda-aec3-cb9272f0959", None, "InvalidRequest", "invalid subscriptionId"),
        (SERVED, {"rebootPolicy": "auto"}, "InvalidPolicyOverride", "rebootPolicy"),
        (SERVED, {"reboot_policy": "yolo"}, "InvalidPolicyOverride",
         "reboot_policy='yolo': expected one of auto | approval | window | never"),
        (SERVED, {"waves": "0,100%"}, "InvalidPolicyOverride", "waves='0,100%'"),
        (SERVED, {"concurrency": 0}, "InvalidPolicyOverride", "concurrency=0"),
        (SERVED, {"enable_timeout": "soon"}, "InvalidPolicyOverride", "enable_timeout='soon'"),
        (SERVED, {"dry_run": "maybe"}, "InvalidPolicyOverride", "dry_run='maybe': expected a JSON boolean"),
        (SERVED, {"subscriptions": [GOOD_SUBSCRIPTION]}, "OverrideNotAllowed", "subscriptions cannot be set"),
        (SERVED, "{\"dry_run\": tru", "InvalidRequest", "request body is not valid JSON"),
        (SERVED, "[{\"dry_run\": true}]", "InvalidRequest", "request body must be a JSON object"),
        (SERVED, "\"dry_run\"", "InvalidRequest", "request body must be a JSON object"),
        (SERVED, "null", "InvalidRequest", "request body must be a JSON object"),
    ],
    ids=["not_a_guid", "short_guid", "unknown_field", "bad_enum", "bad_waves", "bad_concurrency", "bad_timeout",
         "bad_bool", "fixed_setting", "not_json", "array_body", "string_body", "null_body"],
)
def test_bad_requests_are_400_naming_the_problem(
    serve_fleet: ServeFleet, subscription_id: str, body: Any, code: str, message: str
) -> None:
    served = serve_fleet({"m": {}})
    subscription_id = served.subscription_id if subscription_id == SERVED else subscription_id
    response = served.start_rollout(body, subscription_id=subscription_id)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert message in error["message"], error["message"]
    assert served.host.instance_ids() == [], "nothing started"


def test_keys_are_required(serve_fleet: ServeFleet) -> None:
    served = serve_fleet({"m": {}})
    path = f"/api/subscriptions/{served.subscription_id}/rollouts"
    for key in (None, "not-the-key", served.host.keys.eventgrid_key):
        response = served.call("POST", path, key=key, json={"dry_run": True})
        assert response.status_code == 401, (key, response.text)
        assert served.call("GET", f"/api/rollouts/rollout-{served.subscription_id}/report", key=key).status_code == 401
        assert served.call("POST", "/api/machines/approvals", key=key, json={}).status_code == 401
    assert served.host.instance_ids() == [], "nothing started without a key"

    # The key also works in the x-functions-key header, as on the Functions host.
    with_header = served.call("POST", path, key=None, json={"dry_run": True},
                              headers={"x-functions-key": served.host.keys.function_key})
    assert with_header.status_code == 202, with_header.text
    assert served.wait_for_status_url(with_header.json()["statusQueryGetUri"])["runtimeStatus"] == "Completed"


def test_report_of_an_unknown_rollout_is_404(serve_fleet: ServeFleet) -> None:
    served = serve_fleet({"m": {}})
    response = served.call("GET", "/api/rollouts/rollout-nope/report")
    assert response.status_code == 404
    assert "rollout-nope" in response.json()["error"]["message"]


def test_the_schedule_rolls_out_every_readable_subscription(serve_fleet: ServeFleet) -> None:
    served = serve_fleet({"a-first": {"os_version": OLD}, "b-second": {"subscription": 1, "os_version": OLD}},
                         subscriptions=2)
    served.set_policy(subscriptions="")  # none configured: every subscription the identity can read
    # What the Functions host does on the NCRONTAB schedule, run now through the admin API (master key).
    invoked = served.http.post(f"{served.base_url}/admin/functions/scheduled_rollout",
                               params={"code": served.host.keys.master_key}, json={}, timeout=30)
    assert invoked.status_code == 202, invoked.text
    fleet_run = wait_until(lambda: [i for i in served.host.instance_ids()
                                     if i.startswith("rollout-fleet-") and ":" not in i], "the fleet run to start")
    assert len(fleet_run) == 1 and re.fullmatch(r"rollout-fleet-\d{8}T\d{6}Z-[0-9a-f]{6}", fleet_run[0]), fleet_run
    status = served.wait_for_instance(fleet_run[0])
    assert status["runtimeStatus"] == "Completed", status
    report = served.report(fleet_run[0])
    every_machine = [m.resource_id for m in served.twin.machines()]
    assert sorted(row["id"] for row in report["machines"]) == sorted(every_machine)
    assert {row["subscription_id"] for row in report["machines"]} == set(served.twin.subscription_ids)
    assert all(row["state"] == "hotpatch_enabled" for row in report["machines"]), report["machines"]


def test_the_schedule_starts_a_new_fleet_run_unless_one_is_running(serve_fleet: ServeFleet) -> None:
    served = serve_fleet({"a-first": {"os_version": OLD}})

    def fire() -> None:
        invoked = served.http.post(f"{served.base_url}/admin/functions/scheduled_rollout",
                                   params={"code": served.host.keys.master_key}, json={}, timeout=30)
        assert invoked.status_code == 202, invoked.text

    def fleet_runs() -> list[str]:
        return [i for i in served.host.instance_ids() if i.startswith("rollout-fleet-") and ":" not in i]

    hold = served.hold_clock()
    fire()
    first = wait_until(fleet_runs, "the first fleet run")
    fire()  # while the first one runs: nothing new
    wait_until(lambda: served.host.http.inflight == 0, "the second invocation to end")
    assert fleet_runs() == first
    hold.release()
    assert served.wait_for_instance(first[0])["runtimeStatus"] == "Completed"
    fire()
    runs = wait_until(lambda: len(fleet_runs()) == 2 and fleet_runs(), "a second fleet run")
    assert first[0] in runs, "the first run (and its report) is kept"
    second = next(i for i in runs if i != first[0])
    assert served.wait_for_instance(second)["runtimeStatus"] == "Completed"
    assert [row["name"] for row in served.report(first[0])["machines"]] == ["a-first"]
    assert [row["name"] for row in served.report(second)["machines"]] == ["a-first"]
