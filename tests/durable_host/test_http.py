"""serve mode: the app's HTTP routes, the durable client over the RPC API, the management API,
Event Grid deliveries and function keys, all on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from arc_hotpatch.clocks import DEFAULT_START, ScaledClock, VirtualClock
from arc_hotpatch.durable_host import DurableHost, HostKeys, describe_endpoints, run_serve

from . import sample_app

WRITE_EVENT = {
    "id": "evt-1",
    "topic": "/subscriptions/00000000-0000-0000-0000-000000000001",
    "subject": "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg"
    "/providers/Microsoft.HybridCompute/machines/web01",
    "eventType": "Microsoft.Resources.ResourceWriteSuccess",
    "eventTime": "2026-01-05T08:00:00Z",
    "data": {"operationName": "Microsoft.HybridCompute/machines/write"},
    "dataVersion": "",
    "metadataVersion": "1",
}
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"


def poll(fetch: Callable[[], requests.Response], done: Callable[[requests.Response], bool]) -> requests.Response:
    deadline = time.monotonic() + 15
    while True:
        response = fetch()
        if done(response) or time.monotonic() > deadline:
            return response
        time.sleep(0.02)


def wait_for(predicate: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + 15
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def served(make_host) -> DurableHost:
    host = make_host(ScaledClock(speed=60))
    host.start(port=0)
    return host


def test_http_start_poll_raise_and_terminate(served):
    base, keys = served.base_url, served.keys
    started = requests.post(f"{base}/api/start/approval_flow", params={"code": keys.function_key}, json={"m": 1})
    assert started.status_code == 202
    links = started.json()
    assert started.headers["Location"] == links["statusQueryGetUri"]
    assert links["statusQueryGetUri"].startswith(f"{base}/runtime/webhooks/durabletask/instances/{links['id']}?")
    assert (
        "taskHub=TestHubName" in links["statusQueryGetUri"]
        and f"code={keys.durabletask_key}" in (links["statusQueryGetUri"])
    )

    running = poll(lambda: requests.get(links["statusQueryGetUri"]), lambda r: r.json()["runtimeStatus"] == "Running")
    assert running.status_code == 202 and running.json()["input"] == {"m": 1}

    # The management API stores the body verbatim: the orchestrator gets the JSON object.
    raised = requests.post(links["sendEventPostUri"].replace("{eventName}", "Approval"), json={"approved": True})
    assert raised.status_code == 202
    done = poll(lambda: requests.get(links["statusQueryGetUri"]), lambda r: r.status_code == 200)
    assert done.json()["runtimeStatus"] == "Completed"
    assert done.json()["output"] == {"payload": {"approved": True}, "payload_type": "dict", "input": {"m": 1}}
    assert requests.post(links["sendEventPostUri"].replace("{eventName}", "Approval"), json=1).status_code == 410

    second = requests.post(f"{base}/api/start/approval_flow", headers={"x-functions-key": keys.function_key}).json()
    poll(lambda: requests.get(second["statusQueryGetUri"]), lambda r: r.json()["runtimeStatus"] == "Running")
    terminated = requests.post(second["terminatePostUri"].replace("{text}", "no longer needed"))
    assert terminated.status_code == 202
    final = poll(lambda: requests.get(second["statusQueryGetUri"]), lambda r: r.status_code == 200).json()
    assert final["runtimeStatus"] == "Terminated" and final["output"] == "no longer needed"
    assert requests.post(second["terminatePostUri"].replace("{text}", "again")).status_code == 410


def test_python_client_raise_event_payload_arrives_double_encoded(served):
    # DurableOrchestrationClient.raise_event json.dumps the data and posts it as JSON again,
    # so the orchestrator receives a string (azure-functions-durable-python issue #295).
    base, keys = served.base_url, served.keys
    links = requests.post(f"{base}/api/start/approval_flow", params={"code": keys.function_key}, json=[1, 2]).json()
    poll(lambda: requests.get(links["statusQueryGetUri"]), lambda r: r.json()["runtimeStatus"] == "Running")
    assert requests.post(f"{base}/api/instances/{links['id']}/approve", json={"approved": True}).status_code == 202
    done = poll(lambda: requests.get(links["statusQueryGetUri"]), lambda r: r.status_code == 200).json()
    assert done["output"] == {"payload": '{"approved": true}', "payload_type": "str", "input": [1, 2]}


def test_durable_client_status_list_purge_and_terminate_through_rpc(served):
    base, keys = served.base_url, served.keys
    code = {"code": keys.function_key}
    links = requests.post(f"{base}/api/start/sequence", params=code, json=10).json()
    poll(lambda: requests.get(links["statusQueryGetUri"]), lambda r: r.status_code == 200)

    status = requests.get(f"{base}/api/instances/{links['id']}", params=code).json()
    assert status["runtimeStatus"] == "Completed" and status["output"] == [11, 12] and status["input"] == 10
    missing = requests.get(f"{base}/api/instances/nope", params=code)
    assert missing.status_code == 404 and missing.json() == {"found": False}

    waiting = requests.post(f"{base}/api/start/wait_event", params=code).json()
    poll(lambda: requests.get(waiting["statusQueryGetUri"]), lambda r: r.json()["runtimeStatus"] == "Running")
    assert sorted(requests.get(f"{base}/api/instances", params=code).json()) == sorted([links["id"], waiting["id"]])
    assert requests.post(f"{base}/api/instances/{waiting['id']}/terminate", params=code).status_code == 202
    poll(lambda: requests.get(waiting["statusQueryGetUri"]), lambda r: r.json()["runtimeStatus"] == "Terminated")

    assert requests.delete(f"{base}/api/instances/{links['id']}", params=code).json() == {"deleted": 1}
    assert served.find_status(links["id"]) is None


def test_rpc_api_status_codes(served):
    rpc = served.http.rpc_base_url
    assert rpc.startswith("http://127.0.0.1:") and rpc.endswith("/durabletask/")
    unknown = requests.post(f"{rpc}orchestrators/no_such_orchestrator", json=None)
    assert unknown.status_code == 400 and "doesn't exist" in unknown.json()["ExceptionMessage"]

    # The Python client double-encodes the start input: the RPC API unwraps it once.
    started = requests.post(f"{rpc}orchestrators/wait_event/fixed-id", json='{"a": 1}')
    assert started.status_code == 202 and started.json()["id"] == "fixed-id"
    assert requests.post(f"{rpc}orchestrators/wait_event/fixed-id").status_code == 409
    poll(lambda: requests.get(f"{rpc}instances/fixed-id"), lambda r: r.json()["runtimeStatus"] == "Running")
    status = requests.get(f"{rpc}instances/fixed-id")
    assert status.status_code == 202 and status.json()["input"] == {"a": 1}

    assert requests.get(f"{rpc}instances/nope").status_code == 404
    assert requests.get(f"{rpc}instances/nope").content == b""  # the SDK reads an empty 404 as "not found"
    assert requests.post(f"{rpc}instances/nope/raiseEvent/Go", json=1).status_code == 404
    bad_type = requests.post(f"{rpc}instances/fixed-id/raiseEvent/Go", data="1", headers={"Content-Type": "text/plain"})
    assert bad_type.status_code == 400
    assert requests.post(f"{rpc}instances/fixed-id/raiseEvent/Go", json="done").status_code == 202
    poll(lambda: requests.get(f"{rpc}instances/fixed-id"), lambda r: r.status_code == 200)
    assert requests.post(f"{rpc}instances/fixed-id/raiseEvent/Go", json=1).status_code == 410
    assert requests.post(f"{rpc}instances/fixed-id/terminate?reason=x").status_code == 410
    listed = requests.get(f"{rpc}instances/", params={"runtimeStatus": "Completed"}).json()
    assert [s["instanceId"] for s in listed] == ["fixed-id"]
    assert requests.get(f"{rpc}instances/", params={"runtimeStatus": "Running"}).json() == []
    assert requests.delete(f"{rpc}instances/", params={}).status_code == 400
    assert requests.delete(f"{rpc}instances/fixed-id").json() == {"instancesDeleted": 1}
    assert requests.delete(f"{rpc}instances/fixed-id").status_code == 404
    assert requests.post(f"{rpc}instances/x/rewind?reason=r").status_code == 501
    other_hub = requests.get(f"{rpc}instances/", params={"taskHub": "OtherHub"})
    assert other_hub.status_code == 404 and "OtherHub" in other_hub.json()["Message"]


def test_function_keys_methods_routes_and_parameters(served):
    base, keys = served.base_url, served.keys
    assert requests.post(f"{base}/api/start/sequence").status_code == 401
    assert requests.post(f"{base}/api/start/sequence", params={"code": "wrong"}).status_code == 401
    assert requests.post(f"{base}/api/start/sequence", params={"code": keys.master_key}, json=1).status_code == 202
    wrong_method = requests.get(f"{base}/api/start/sequence", params={"code": keys.function_key})
    assert wrong_method.status_code == 405 and wrong_method.headers["Allow"] == "POST"
    assert requests.get(f"{base}/api/nothing/here").status_code == 404
    assert requests.get(f"{base}/elsewhere").status_code == 404

    hello = requests.get(f"{base}/api/hello/bob", params={"greeting": "hey"})  # anonymous route
    assert hello.status_code == 200 and hello.text == "hello bob (hey)"
    assert requests.get(f"{base}/api/hello/b0b").status_code == 404  # {name:alpha} constraint

    assert requests.get(f"{base}/api/admin-only", params={"code": keys.function_key}).status_code == 401
    admin = requests.get(f"{base}/api/admin-only", headers={"x-functions-key": keys.master_key})
    assert admin.status_code == 200 and admin.text == "admin ok"
    assert requests.get(f"{base}/runtime/webhooks/durabletask/instances/").status_code == 401
    with_system_key = requests.get(
        f"{base}/runtime/webhooks/durabletask/instances/", params={"code": keys.durabletask_key}
    )
    assert with_system_key.status_code == 200


def test_no_auth_mode_accepts_requests_without_keys(make_host):
    host = make_host(ScaledClock(speed=60))
    host.start(port=0, no_auth=True)
    assert requests.post(f"{host.base_url}/api/start/sequence", json=1).status_code == 202
    assert requests.get(f"{host.base_url}/api/admin-only").text == "admin ok"
    lines = describe_endpoints(host, no_auth=True)
    assert "Keys: not enforced locally, as func start (--auth to require them)" in lines


def test_event_grid_delivery_validation_and_errors(served):
    base, keys = served.base_url, served.keys
    url = f"{base}/runtime/webhooks/eventgrid"
    query = {"functionName": "on_machine_write", "code": keys.eventgrid_key}
    notification = {"aeg-event-type": "Notification"}

    delivered = requests.post(url, params=query, headers=notification, json=[WRITE_EVENT])
    assert delivered.status_code == 202
    status = served.run_until_complete(["onboard-web01"], timeout_real_s=15)["onboard-web01"]
    assert status["output"] == [6, 7]  # sequence started with len("web01")

    ignored = dict(WRITE_EVENT, id="evt-2", eventType="Microsoft.Resources.ResourceDeleteSuccess")
    assert requests.post(url, params=query, headers=notification, json=[ignored]).status_code == 202

    validation = requests.post(
        url,
        params=query,
        headers={"aeg-event-type": "SubscriptionValidation"},
        json=[{"id": "v", "eventType": VALIDATION_EVENT, "data": {"validationCode": "c0de"}}],
    )
    assert validation.status_code == 200 and validation.json() == {"validationResponse": "c0de"}
    not_a_code = requests.post(url, params=query, headers={"aeg-event-type": "SubscriptionValidation"},
                               json=[{"id": "v", "eventType": VALIDATION_EVENT, "data": {"validationCode": 5}}])
    assert not_a_code.status_code == 400 and "string data.validationCode" in not_a_code.text

    # Like `func start`, no key is needed locally; a wrong one is refused.
    without_key = requests.post(url, params={"functionName": "on_machine_write"}, headers=notification, json=[])
    assert without_key.status_code == 202
    wrong_key = requests.post(url, params={"functionName": "on_machine_write", "code": "nope"}, headers=notification,
                              json=[])
    assert wrong_key.status_code == 401
    malformed = requests.post(url, params=query, headers=notification, data="{not json")
    assert malformed.status_code == 400 and "not JSON" in malformed.json()["Message"]
    not_array = requests.post(url, params=query, headers=notification, json={"id": 1})
    assert not_array.status_code == 400 and "JSON array" in not_array.json()["Message"]
    incomplete = requests.post(url, params=query, headers=notification, json=[{"id": "x"}])
    assert incomplete.status_code == 400 and "eventType" in incomplete.json()["Message"]
    missing_header = requests.post(url, params=query, json=[WRITE_EVENT])
    assert missing_header.status_code == 400
    unknown = requests.post(url, params=dict(query, functionName="nope"), headers=notification, json=[WRITE_EVENT])
    assert unknown.status_code == 404
    # data that is not an object makes the function raise: Event Grid gets a 500 and would retry.
    broken = requests.post(url, params=query, headers=notification, json=[dict(WRITE_EVENT, data="text")])
    assert broken.status_code == 500 and "on_machine_write" in broken.json()["error"]


def test_admin_endpoint_runs_a_timer_function(served, monkeypatch):
    monkeypatch.setenv("NIGHTLY_SCHEDULE", "0 0 2 * * *")
    base, keys = served.base_url, served.keys
    assert requests.post(f"{base}/admin/functions/nightly", json={}).status_code == 401
    assert requests.post(f"{base}/admin/functions/nightly", params={"code": keys.function_key}).status_code == 401
    accepted = requests.post(f"{base}/admin/functions/nightly", headers={"x-functions-key": keys.master_key}, json={})
    assert accepted.status_code == 202
    assert wait_for(lambda: any(i.startswith("nightly-") for i in served.instance_ids()))
    master = {"x-functions-key": keys.master_key}
    assert requests.post(f"{base}/admin/functions/nope", headers=master).status_code == 404
    hello = requests.post(f"{base}/admin/functions/hello", headers={"x-functions-key": keys.master_key})
    assert hello.status_code == 404


def test_client_functions_on_a_virtual_clock_without_a_public_server(make_host, monkeypatch):
    # simulate mode: timer and Event Grid functions invoked in-process, the client still talks
    # to the host over its RPC endpoint, and the run stays on virtual time.
    monkeypatch.setenv("NIGHTLY_SCHEDULE", "0 0 2 * * *")
    clock = VirtualClock()
    host = make_host(clock)
    host.invoke_timer("nightly")
    host.deliver_event_grid("on_machine_write", [WRITE_EVENT])
    statuses = host.run_until_complete()
    assert set(statuses) == {"nightly-20260105T080000", "onboard-web01"}
    assert statuses["nightly-20260105T080000"]["output"] == [42, 43]
    assert clock.now() == DEFAULT_START
    binding = host.client_binding_json()
    assert '"rpcBaseUrl": "http://127.0.0.1:' in binding and '"taskHubName": "TestHubName"' in binding


def test_timer_triggers_fire_on_their_schedule(make_host, monkeypatch):
    monkeypatch.setenv("NIGHTLY_SCHEDULE", "0 0 2 * * *")
    clock = VirtualClock()
    host = make_host(clock)
    host.start(run_timer_triggers=True)
    assert wait_for(lambda: "nightly-20260106T020000" in host.instance_ids())
    host.stop()
    ids = host.instance_ids()
    assert ids[0] == "nightly-20260106T020000"  # first 02:00 after the 08:00 start
    assert all(i.startswith("nightly-") and i.endswith("T020000") for i in ids)


@pytest.mark.parametrize(("schedule", "disabled", "scheduled"),
                         [("0 0 2 * * *", "", True), ("", "", False), ("0 0 2 * * *", "true", False)],
                         ids=["scheduled", "empty-schedule", "AzureWebJobs.nightly.Disabled"])
def test_a_timer_is_off_when_disabled_or_its_schedule_setting_is_empty(make_host, monkeypatch, schedule, disabled,
                                                                        scheduled):
    monkeypatch.setenv("NIGHTLY_SCHEDULE", schedule)
    monkeypatch.setenv("AzureWebJobs.nightly.Disabled", disabled)
    host = make_host(VirtualClock())
    host.start(run_timer_triggers=True)
    assert ("nightly" in host.http.scheduled_timers) is scheduled
    if scheduled:  # it fires (the idle virtual clock jumps to 02:00): let that run before the host stops
        assert wait_for(lambda: any(i.startswith("nightly-") for i in host.instance_ids()))
    host.stop()


def test_run_serve_prints_endpoints_and_stops(monkeypatch):
    lines: list[str] = []
    stop = threading.Event()
    started: list[Any] = []
    keys = HostKeys("fk", "mk", "dk", "ek")
    thread = threading.Thread(
        target=run_serve,
        args=(sample_app.app, ScaledClock(speed=60)),
        kwargs={
            "port": 0,
            "keys": keys,
            "run_timer_triggers": False,
            "out": lines.append,
            "stop_event": stop,
            "on_started": started.append,
        },
    )
    thread.start()
    assert wait_for(lambda: bool(started))
    base = started[0].base_url
    assert requests.post(f"{base}/api/start/sequence", params={"code": "fk"}, json=1).status_code == 202
    stop.set()
    thread.join(timeout=15)
    assert not thread.is_alive()
    text = "\n".join(lines)
    assert f"http_start: [POST] {base}/api/start/{{orchestrator}}  (auth: function)" in text
    assert "master key:                      mk" in text
    assert f"POST {base}/runtime/webhooks/eventgrid?functionName=on_machine_write" in text


def _completed(rpc: str, instance_id: str) -> None:
    poll(lambda: requests.get(f"{rpc}instances/{instance_id}"), lambda r: r.status_code == 200)


def test_show_history_is_the_extensions_view_of_the_history(served):
    rpc = served.http.rpc_base_url
    requests.post(f"{rpc}orchestrators/sequence/seq-1", json="1")
    requests.post(f"{rpc}orchestrators/parent/parent-1")
    _completed(rpc, "seq-1")
    _completed(rpc, "parent-1")

    events = requests.get(f"{rpc}instances/seq-1", params={"showHistory": "true"}).json()["historyEvents"]
    assert [e["EventType"] for e in events] == ["ExecutionStarted", "TaskCompleted", "TaskCompleted",
                                                "ExecutionCompleted"]  # no Orchestrator*/TaskScheduled
    assert events[0]["FunctionName"] == "sequence" and "Input" not in events[0] and "Name" not in events[0]
    assert all(e["FunctionName"] == "add_one" and e["ScheduledTime"] <= e["Timestamp"] for e in events[1:3])
    assert events[-1]["OrchestrationStatus"] == "Completed"
    assert not any(key in e for e in events for key in ("EventId", "IsPlayed", "Result", "TaskScheduledId"))

    with_output = requests.get(f"{rpc}instances/seq-1", params={"showHistory": "true", "showHistoryOutput": "true"})
    events = with_output.json()["historyEvents"]
    assert [e["Result"] for e in events[1:]] == [2, 3, [2, 3]]  # as JSON, not string-encoded

    events = requests.get(f"{rpc}instances/parent-1", params={"showHistory": "true", "showHistoryOutput": "true"}
                          ).json()["historyEvents"]
    children = [e for e in events if e["EventType"] == "SubOrchestrationInstanceCompleted"]
    assert [c["FunctionName"] for c in children] == ["child", "child"] and children[0]["Result"]["value"] == 20
    assert "SubOrchestrationInstanceCreated" not in [e["EventType"] for e in events]
    assert "historyEvents" not in requests.get(f"{rpc}instances/seq-1").json()


def test_a_running_instance_is_purged_as_the_azure_storage_provider_does(served):
    rpc = served.http.rpc_base_url
    requests.post(f"{rpc}orchestrators/wait_event/waiting-1")
    poll(lambda: requests.get(f"{rpc}instances/waiting-1"), lambda r: r.json()["runtimeStatus"] == "Running")
    purged = requests.delete(f"{rpc}instances/waiting-1")
    assert (purged.status_code, purged.json()) == (200, {"instancesDeleted": 1})
    assert requests.get(f"{rpc}instances/waiting-1").status_code == 404
    assert requests.post(f"{rpc}instances/waiting-1/raiseEvent/Go", json=1).status_code == 404


@pytest.mark.parametrize(
    ("operation", "seen"),
    [("rewind", "The local durable host does not support 'rewind' of an orchestration instance"),
     ("suspend", "The operation failed with an unexpected status code 501"),
     ("resume", "The operation failed with an unexpected status code 501")],
)
def test_an_unsupported_operation_tells_the_sdk_user_what_it_can(served, operation, seen):
    rpc = served.http.rpc_base_url
    requests.post(f"{rpc}orchestrators/wait_event/to-rewind")
    answer = requests.post(f"{served.base_url}/api/instances/to-rewind/unsupported/{operation}")
    assert answer.status_code == 200 and seen in answer.text
    direct = requests.post(f"{rpc}instances/to-rewind/{operation}?reason=r")
    assert direct.status_code == 501 and "func start" in direct.json()
