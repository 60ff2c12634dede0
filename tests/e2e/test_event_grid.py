"""The Event Grid trigger over the host's webhook (SPEC §5): a newly onboarded machine is enrolled, every other
event is ignored with a 2xx (Event Grid retries anything else), and a machine named by the fleet rollout and
Event Grid at once gets one orchestration and one reboot."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import requests

from arc_hotpatch.twin import machine_spec
from orchestrators.instances import machine_instance_id
from tests.rig import Served, ServeFleet, write_event

OLD = "10.0.26100.4000"  # no licensing workaround: no reboot

IGNORED: dict[str, Callable[[str], dict[str, Any]]] = {
    # our own writes to the machine: enablement and Run Command must not restart its orchestration
    "license_profile_write": lambda machine: write_event(
        f"{machine}/licenseProfiles/default", operation="Microsoft.HybridCompute/machines/licenseProfiles/write"),
    "run_command_write": lambda machine: write_event(
        f"{machine}/runCommands/hotpatch-readiness-1", operation="Microsoft.HybridCompute/machines/runCommands/write"),
    "another_resource_type": lambda machine: write_event(
        machine.replace("Microsoft.HybridCompute/machines", "Microsoft.Compute/virtualMachines"),
        operation="Microsoft.Compute/virtualMachines/write"),
    "delete_event": lambda machine: write_event(
        machine, operation="Microsoft.HybridCompute/machines/delete",
        event_type="Microsoft.Resources.ResourceDeleteSuccess"),
    "data_not_an_object": lambda machine: write_event(machine, data="Microsoft.HybridCompute/machines/write"),
    "no_operation_name": lambda machine: write_event(machine, data={"resourceUri": machine}),
    "not_a_machine_id": lambda machine: write_event("/subscriptions/x/machines/y", subject="garbage"),
}


def onboard(served: Served, name: str, **attributes: Any) -> str:
    """Onboard a new machine to the twin (Arc's ``machines/write`` happened); its resource id."""
    return served.twin.add_machine(machine_spec({"name": name, **attributes}))


def test_a_newly_onboarded_machine_is_enrolled(serve_fleet: ServeFleet) -> None:
    served = serve_fleet({"existing": {}})
    machine_id = onboard(served, "new-server")
    instance_id = machine_instance_id(machine_id)
    assert served.instance_status(instance_id) is None

    delivered = served.deliver_events([write_event(machine_id, event_id="onboarded-1")])
    assert delivered.status_code == 202, delivered.text
    status = served.wait_for_instance(instance_id)
    assert status["runtimeStatus"] == "Completed", status
    row = status["output"]
    assert (row["id"], row["state"], row["reason"], row["reboots"]) == (machine_id, "hotpatch_enabled", "enabled", 1)
    assert status["customStatus"]["rollout_id"] == "event-onboarded-1"
    snapshot = served.twin.machine("new-server")
    assert snapshot.hotpatch_status == "Enabled" and snapshot.reboots == 1
    assert served.machine_instances() == [instance_id], "only the named machine was started"
    assert not served.twin.machine("existing").runs


@pytest.mark.parametrize("make_event", list(IGNORED.values()), ids=list(IGNORED))
def test_other_events_start_nothing_and_are_acknowledged(
    serve_fleet: ServeFleet, make_event: Callable[[str], dict[str, Any]]
) -> None:
    served = serve_fleet({"existing": {}})
    machine_id = onboard(served, "new-server")
    delivered = served.deliver_events([make_event(machine_id)])
    assert delivered.status_code // 100 == 2, delivered.text
    assert served.host.instance_ids() == [], "no orchestration started"
    assert not served.twin.machine("new-server").runs


def test_the_webhook_takes_deliveries_like_func_start(serve_fleet: ServeFleet) -> None:
    # Locally, as with `func start`, the webhook needs no key (on Azure the subscription's endpoint carries
    # &code=<the eventgrid_extension system key>); a key that is given must be one of the host's keys.
    served = serve_fleet({"existing": {}, "other": {}})
    event = write_event(served.twin.resource_id("existing"))
    assert served.deliver_events([event], key="not-a-key").status_code == 401
    assert served.host.instance_ids() == []
    assert served.deliver_events([event], key=None).status_code == 202
    assert served.deliver_events([write_event(served.twin.resource_id("other"), event_id="e2")]).status_code == 202
    assert sorted(served.machine_instances()) == sorted(
        machine_instance_id(served.twin.resource_id(name)) for name in ("existing", "other")
    )


def test_fleet_rollout_and_event_grid_at_once_give_one_orchestration_and_one_reboot(serve_fleet: ServeFleet) -> None:
    names = ["m-1", "m-2", "m-3", "m-4"]
    served = serve_fleet({name: {} for name in names})  # each needs the workaround and one reboot
    machine_ids = [served.twin.resource_id(name) for name in names]
    # Event ids are spelled as the ARM request was (the spec's example has "resourcegroups"), not as ARM lists them.
    events = {name: write_event(m.replace("/resourceGroups/", "/resourcegroups/"), event_id=f"e-{name}")
              for name, m in zip(names, machine_ids, strict=True)}
    event_first, rollout_first = names[:2], names[2:]

    hold = served.hold_clock()
    responses: dict[str, requests.Response] = {}

    def post(label: str, send: Callable[[], requests.Response]) -> None:
        responses[label] = send()

    # The rollout start and Event Grid deliveries for half the machines race each other.
    senders = [threading.Thread(target=post, args=("rollout", lambda: served.start_rollout({"waves": "100%"})))]
    senders += [threading.Thread(target=post, args=(name, lambda e=events[name]: served.deliver_events([e])))
                for name in event_first]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(timeout=30)
    assert responses["rollout"].status_code == 202, responses["rollout"].text
    assert all(responses[name].status_code == 202 for name in event_first), responses

    # Five minutes in, the rollout has started the others and every machine is mid-workflow:
    # Event Grid names all of them (again).
    hold.run_for(timedelta(minutes=5))
    started_by = {}
    for name in names:
        status = served.machine_status(name)
        assert status is not None and status["runtimeStatus"] == "Running", (name, status)
        started_by[name] = status["customStatus"]["rollout_id"]
    assert started_by == {name: f"event-e-{name}" for name in event_first} | {
        name: responses["rollout"].json()["id"] for name in rollout_first}, "both orders happened"
    assert served.deliver_events(list(events.values())).status_code == 202
    hold.release()

    final = served.wait_for_status_url(responses["rollout"].json()["statusQueryGetUri"])
    assert final["runtimeStatus"] == "Completed", final
    report = served.report(responses["rollout"].json()["id"])
    assert [(row["id"], row["state"], row["reboots"]) for row in report["machines"]] == [
        (machine_id, "hotpatch_enabled", 1) for machine_id in machine_ids
    ], "one row per machine, in list order, under the id ARM lists, whoever started it"
    for name in names:
        snapshot = served.twin.machine(name)
        assert snapshot.reboots == 1, f"{name} rebooted once"
        assert [r.script for r in snapshot.runs].count("apply_changes") == 1, f"{name}: one workaround run"
    assert sorted(served.machine_instances()) == sorted(machine_instance_id(m) for m in machine_ids)
    # Every orchestration the host ever created is still there under its own id: no machine's instance
    # was started a second time (a restart under the same id would count twice here).
    metrics = served.host.metrics()
    assert metrics["orchestrations"] == len(served.host.instance_ids()), metrics["orchestrations"]


def test_a_bad_app_setting_fails_the_delivery_so_event_grid_retries(serve_fleet: ServeFleet,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    served = serve_fleet({"existing": {}})
    event = write_event(served.twin.resource_id("existing"))
    monkeypatch.setenv("HOTPATCH_REBOOT_POLICY", "sometimes")
    failed = served.deliver_events([event])
    assert failed.status_code == 500 and "HOTPATCH_REBOOT_POLICY" in failed.text
    assert served.machine_instances() == [], "nothing started with a bad setting"
    monkeypatch.setenv("HOTPATCH_REBOOT_POLICY", "auto")
    assert served.deliver_events([event]).status_code == 202  # Event Grid's retry succeeds
    assert served.machine_instances() == [machine_instance_id(served.twin.resource_id("existing"))]


# --- scope: an event for a machine outside the configured scope is skipped with one log line ------------------

def test_events_outside_the_configured_scope_are_skipped_with_one_log_line(
    serve_fleet: ServeFleet, caplog: pytest.LogCaptureFixture
) -> None:
    served = serve_fleet({"in-scope": {"resource_group": "rg-in"}, "other-group": {"resource_group": "rg-out"},
                          "other-subscription": {"subscription": 1, "resource_group": "rg-in"}}, subscriptions=2)
    first = served.twin.subscription_ids[0]
    served.set_policy(subscriptions=first, resource_group="RG-IN")  # resource group names are case-insensitive
    caplog.set_level("INFO", logger="arc_hotpatch.triggers")
    for name, reason in (("other-group", "resource group rg-out"),
                         ("other-subscription", f"subscription {served.twin.subscription_ids[1]}")):
        caplog.clear()
        delivered = served.deliver_events([write_event(served.twin.resource_id(name), event_id=f"e-{name}")])
        assert delivered.status_code == 202, delivered.text
        ignored = [r.getMessage() for r in caplog.records if "event_ignored" in r.getMessage()]
        assert len(ignored) == 1 and f"id=e-{name}" in ignored[0] and "reason=out of scope" in ignored[0], ignored
        assert reason in ignored[0], ignored
    assert served.host.instance_ids() == [], "nothing outside the scope started"
    assert served.deliver_events([write_event(served.twin.resource_id("in-scope"))]).status_code == 202
    assert served.machine_instances() == [machine_instance_id(served.twin.resource_id("in-scope"))]


# --- CloudEvents 1.0 deliveries ----------------------------------------------------------------------------------

def cloud_event(event: dict[str, Any]) -> dict[str, Any]:
    """The CloudEvents 1.0 form of an Event Grid schema event (as Event Grid sends it with the CloudEvents schema)."""
    return {"specversion": "1.0", "id": event["id"], "source": event["topic"], "type": event["eventType"],
            "subject": event["subject"], "time": event["eventTime"], "datacontenttype": "application/json",
            "data": event["data"]}


def post_cloud(served: Served, body: Any, content_type: str, **headers: str) -> requests.Response:
    return served.http.post(f"{served.base_url}/runtime/webhooks/eventgrid",
                            params={"functionName": "on_arc_machine_written"},
                            data=body if isinstance(body, (str, bytes)) else json.dumps(body),
                            headers={"Content-Type": content_type, **headers}, timeout=30)


def test_cloudevents_structured_and_batch_deliveries_enroll_machines(serve_fleet: ServeFleet) -> None:
    served = serve_fleet({"one": {"os_version": OLD}, "two": {"os_version": OLD}, "three": {"os_version": OLD}})
    ids = {name: served.twin.resource_id(name) for name in ("one", "two", "three")}
    single = post_cloud(served, cloud_event(write_event(ids["one"], event_id="ce-1")), "application/cloudevents+json")
    assert single.status_code == 202, single.text
    batch = [cloud_event(write_event(ids[name], event_id=f"ce-{name}")) for name in ("two", "three")]
    delivered = post_cloud(served, batch, "application/cloudevents-batch+json; charset=utf-8",
                           **{"aeg-event-type": "Notification"})
    assert delivered.status_code == 202, delivered.text
    for name, event_id in (("one", "ce-1"), ("two", "ce-two"), ("three", "ce-three")):
        status = served.wait_for_instance(machine_instance_id(ids[name]))
        assert status["runtimeStatus"] == "Completed", status
        assert status["customStatus"]["rollout_id"] == f"event-{event_id}"
        assert status["output"]["state"] == "hotpatch_enabled"
    # Another type of CloudEvent is acknowledged and ignored, like an Event Grid schema one.
    other = cloud_event(write_event(ids["one"], event_id="ce-del",
                                    event_type="Microsoft.Resources.ResourceDeleteSuccess"))
    assert post_cloud(served, other, "application/cloudevents+json").status_code == 202


@pytest.mark.parametrize(
    ("change", "content_type", "message"),
    [
        ({"specversion": "0.3"}, "application/cloudevents+json", 'specversion must be "1.0"'),
        ({"type": None}, "application/cloudevents+json", "lacks required attribute(s) (non-empty strings): type"),
        ({"source": ""}, "application/cloudevents-batch+json", "source"),
        ({"time": 5}, "application/cloudevents+json", "time must be a string"),
        ({"data_base64": "AAAA"}, "application/cloudevents+json", "data_base64"),
        ({"time": "not a time"}, "application/cloudevents+json", "event"),
    ],
    ids=["old_specversion", "no_type", "empty_source", "time_not_a_string", "binary_data", "bad_time"],
)
def test_malformed_cloudevents_are_400_naming_the_schema_expected(
    serve_fleet: ServeFleet, change: dict[str, Any], content_type: str, message: str
) -> None:
    served = serve_fleet({"m": {}})
    event = cloud_event(write_event(served.twin.resource_id("m"))) | change
    event = {k: v for k, v in event.items() if v is not None}
    response = post_cloud(served, [event] if "batch" in content_type else event, content_type)
    assert response.status_code == 400, response.text
    said = response.json()["Message"]
    assert message in said and "CloudEvents 1.0 in structured mode" in said, said
    assert served.host.instance_ids() == []


def test_bodies_of_neither_schema_are_400_never_500(serve_fleet: ServeFleet) -> None:
    served = serve_fleet({"m": {}})
    for body, content_type in ((json.dumps({"not": "an event"}), "application/cloudevents+json"),
                               ("[" * 50_000, "application/json"),
                               (b"\xff\xfe", "application/cloudevents+json"),
                               (json.dumps("a string"), "application/cloudevents+json")):
        response = post_cloud(served, body, content_type, **{"aeg-event-type": "Notification"})
        assert response.status_code == 400, (body[:30], response.text)
        said = response.json()["Message"]
        assert "CloudEvents 1.0" in said and "Event Grid schema" in said, said
    binary = post_cloud(served, "{}", "application/json", **{"ce-specversion": "1.0", "ce-type": "x"})
    assert binary.status_code == 400 and "binary mode" in binary.text
    assert served.host.instance_ids() == []


def test_the_cloudevents_abuse_protection_handshake(serve_fleet: ServeFleet) -> None:
    served = serve_fleet({"m": {}})
    url = f"{served.base_url}/runtime/webhooks/eventgrid"
    params = {"functionName": "on_arc_machine_written"}
    answered = served.http.options(url, params=params, headers={"WebHook-Request-Origin": "eventgrid.azure.net"},
                                   timeout=30)
    assert answered.status_code == 200, answered.text
    assert answered.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert served.http.options(url, params=params, timeout=30).status_code == 400
