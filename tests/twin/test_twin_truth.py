"""``GET <twin>/_twin/machines/{name}``: each simulated machine's truth over plain HTTP, outside ARM."""

from __future__ import annotations

from datetime import datetime

import requests

from .helpers import MachineDriver

SUB_A = "11111111-1111-1111-1111-111111111111"
SUB_B = "22222222-2222-2222-2222-222222222222"


def truth(url: str, name: str, **params: str) -> requests.Response:
    return requests.get(f"{url}/_twin/machines/{name}", params=params, timeout=10)  # no Authorization header


def test_truth_counts_boots_since_the_twin_started(make_twin) -> None:
    harness = make_twin({"seed": 3, "groups": [{"machine": {"name": "m", "vbs_status": 0}}]})
    first = truth(harness.url, "m")
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["id"] == harness.twin.resource_id("m") and body["name"] == "m"
    assert (body["boot_count"], body["boots"], body["reboots_started"]) == (0, [], 0)
    assert body["vsm"] == {"status": 0, "configured": None} and body["pending_reboot"] is False
    assert body["os"]["version"] == "10.0.26100.6899" and body["hotpatch_status"] is None
    assert datetime.fromisoformat(body["booted_at_start"]) < datetime.fromisoformat(body["now"])

    driver = MachineDriver(harness, "m")
    output = driver.apply_changes(delay_s=600, enable_vsm=1, request_id="v")
    pending = truth(harness.url, "M").json()  # names match case-insensitively
    assert pending["pending_reboot"] is True and pending["boot_count"] == 0 and pending["vsm"]["configured"] == 1
    driver.wait_back_after(output)

    after = truth(harness.url, "m").json()
    snapshot = harness.twin.machine("m")
    assert after["boot_count"] == 1 == len(after["boots"]) == after["reboots_started"]
    assert datetime.fromisoformat(after["boots"][0]) == snapshot.last_boot
    assert after["boots"][0].endswith("Z") and after["boots"][0] > output["requested_at"]
    assert after["vsm"]["status"] == 2 and after["pending_reboot"] is False and after["down"] is False
    assert [r["script"] for r in after["run_commands"]][:1] == ["apply_changes"]


def test_truth_is_outside_arm_and_does_not_count_as_arm_traffic(make_twin) -> None:
    harness = make_twin({"seed": 1, "groups": [{"count": 2, "machine": {"name": "m"}}]}, faults="chaos")
    before = harness.twin.metrics()["arm_requests"]
    for _ in range(20):  # chaos faults apply to ARM, never here
        assert truth(harness.url, "m-1").status_code == 200
    assert harness.twin.metrics()["arm_requests"] == before
    listed = requests.get(f"{harness.url}/_twin/machines", timeout=10).json()["value"]
    assert [m["name"] for m in listed] == ["m-1", "m-2"]


def test_unknown_names_paths_and_methods_are_json_errors(make_twin) -> None:
    harness = make_twin({"seed": 1, "groups": [{"machine": {"name": "m"}}]})
    missing = truth(harness.url, "nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "MachineNotFound"
    assert "nope" in missing.json()["error"]["message"]
    assert requests.get(f"{harness.url}/_twin/other", timeout=10).status_code == 404
    deleted = requests.delete(f"{harness.url}/_twin/machines/m", timeout=10)
    assert deleted.status_code == 405 and deleted.json()["error"]["code"] == "MethodNotAllowed"


def test_a_name_used_in_two_subscriptions_is_narrowed_by_subscription(make_twin) -> None:
    harness = make_twin({"seed": 2, "subscriptions": [SUB_A, SUB_B], "groups": [
        {"machine": {"name": "twin-name", "subscription": 0}},
        {"machine": {"name": "twin-name", "subscription": 1}},
    ]})
    ambiguous = truth(harness.url, "twin-name")
    assert ambiguous.status_code == 409, ambiguous.text
    assert len(ambiguous.json()["error"]["candidates"]) == 2
    narrowed = truth(harness.url, "twin-name", subscription=SUB_B.upper())
    assert narrowed.status_code == 200 and narrowed.json()["subscription_id"] == SUB_B
    assert truth(harness.url, "twin-name", subscription=SUB_A, resource_group="no-such-rg").status_code == 404
