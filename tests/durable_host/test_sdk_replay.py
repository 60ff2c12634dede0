"""The histories the host records are exactly what the SDK's Orchestrator handle consumes.

Feeding every recorded context JSON straight into ``df.Orchestrator.create(fn)`` (no host
involved) must give back the very state the host received, and the context must only
hold what the Durable extension sends: the host adds nothing the real extension would not.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df
import pytest
from azure.durable_functions.models.DurableOrchestrationContext import DurableOrchestrationContext
from azure.durable_functions.models.ReplaySchema import ReplaySchema

from arc_hotpatch.clocks import VirtualClock
from arc_hotpatch.durable_host import DurableHost
from arc_hotpatch.durable_host import history as h

from . import sample_app

CONTEXT_KEYS = {
    "history",
    "input",
    "instanceId",
    "isReplaying",
    "parentInstanceId",
    "upperSchemaVersion",
    "upperSchemaVersionNew",
    "maximumShortTimerDuration",
    "longRunningTimerIntervalDuration",
}
COMMON = {"EventType", "EventId", "IsPlayed", "Timestamp"}
# DTFx fields per event type (DurableTask.Core.History), as serialized by the extension.
EVENT_FIELDS = {
    "OrchestratorStarted": set(),
    "OrchestratorCompleted": set(),
    "ExecutionStarted": {"OrchestrationInstance", "ParentInstance", "Name", "Version", "Input", "Tags"},
    "TaskScheduled": {"Name", "Version", "Input"},
    "TaskCompleted": {"TaskScheduledId", "Result"},
    "TaskFailed": {"TaskScheduledId", "Reason", "Details"},
    "SubOrchestrationInstanceCreated": {"Name", "Version", "InstanceId", "Input"},
    "SubOrchestrationInstanceCompleted": {"TaskScheduledId", "Result"},
    "SubOrchestrationInstanceFailed": {"TaskScheduledId", "Reason", "Details"},
    "TimerCreated": {"FireAt"},
    "TimerFired": {"TimerId", "FireAt"},
    "EventRaised": {"Name", "Input"},
    "ExecutionCompleted": {"OrchestrationStatus", "Result", "Details"},
    "ContinueAsNew": {"OrchestrationStatus", "Result"},
    "ExecutionTerminated": {"Input"},
}

SCENARIOS: list[tuple[str, Any, list[tuple[float, str, Any]]]] = [
    # (orchestrator, input, [(minutes after start, event name, payload)])
    ("sequence", 3, []),
    ("fan_out", 40, []),
    ("nested_compound", None, []),
    ("approval_with_timeout", {"linger": True}, [(5, "Approval", "ok")]),
    ("approval_with_timeout", None, []),
    ("wait_event", None, [(0, "Go", [1, 2])]),
    ("retry_activity", "replay-key", []),
    ("retry_exhausted", None, []),
    ("one_long_timer", None, []),
    ("parent", None, []),
    ("parent_catches_child", None, []),
    ("parent_propagates_child", None, []),
    ("sub_with_retry", "replay-sub", []),
    ("counter", 0, []),
    ("eternal_events", None, [(0, "Item", "a"), (0, "Item", "stop")]),
    ("custom_status", None, [(1, "Go", "x")]),
    ("activity_fails", None, []),
    ("activity_failure_caught", None, []),
]


def _call_handle(host: Any, orchestrator_name: str, context_json: str) -> dict[str, Any]:
    """Run the raw generator function through a fresh SDK handle, as the Python worker would."""
    generator_function = host.registry.orchestrator(orchestrator_name).user_function.orchestrator_function
    handle = df.Orchestrator.create(generator_function)
    try:
        return json.loads(handle(context_json))
    except Exception as exc:
        text = str(exc)
        marker = "$OutOfProcData$:"
        return json.loads(text[text.index(marker) + len(marker) :])


def _run_scenarios(host: DurableHost, t0: datetime) -> list[str]:
    ids = []
    for number, (name, payload, events) in enumerate(SCENARIOS):
        instance_id = host.start_new(name, f"{name}-{number}", payload)
        ids.append(instance_id)
        for minutes, event_name, data in events:
            if minutes:
                host.run_until(t0 + timedelta(minutes=minutes))
            host.raise_event(instance_id, event_name, data)
        host.run_until_complete([instance_id])
        t0 = host.clock.now()
    return ids


@pytest.fixture(scope="module")
def recorded() -> Iterator[tuple[DurableHost, list[str]]]:
    sample_app.reset_knobs()
    clock = VirtualClock()
    with DurableHost(sample_app.app, clock, record_episodes=True, batch_size=8) as host:
        yield host, _run_scenarios(host, clock.now())
    sample_app.reset_knobs()


def test_every_scenario_finished(recorded):
    host, ids = recorded
    statuses = {iid: host.get_status(iid)["runtimeStatus"] for iid in ids}
    expected_failures = {"parent_propagates_child-11", "activity_fails-16"}
    assert {iid for iid, status in statuses.items() if status == "Failed"} == expected_failures
    assert all(status in ("Completed", "Failed") for status in statuses.values())


def test_recorded_contexts_replay_to_the_same_state_in_the_sdk(recorded):
    host, _ids = recorded
    records = host.episode_log()
    assert len(records) > 60
    for record in records:
        context = json.loads(record.context_json)
        name = context["history"][1]["Name"]
        assert _call_handle(host, name, record.context_json) == record.state, (record.instance_id, name)


def test_context_json_holds_only_what_the_extension_sends(recorded):
    host, _ids = recorded
    for record in host.episode_log():
        context = json.loads(record.context_json)
        assert set(context) == CONTEXT_KEYS
        assert context["upperSchemaVersion"] == 1 and context["upperSchemaVersionNew"] == 2
        assert context["maximumShortTimerDuration"] == "6.00:00:00"
        assert context["longRunningTimerIntervalDuration"] == "3.00:00:00"
        history = context["history"]
        assert h.event_type_name(history[0]) == "OrchestratorStarted"
        assert h.event_type_name(history[1]) == "ExecutionStarted"
        last_started = max(i for i, e in enumerate(history) if h.event_type_name(e) == "OrchestratorStarted")
        for index, event in enumerate(history):
            name = h.event_type_name(event)
            assert set(event) - COMMON <= EVENT_FIELDS[name], (name, set(event))
            assert isinstance(event["EventType"], int) and isinstance(event["EventId"], int)
            assert event["IsPlayed"] is (index < last_started)  # past episodes are replayed
            h.parse_time(event["Timestamp"])
        assert context["isReplaying"] is (last_started > 0)


def test_sdk_parses_contexts_with_replay_schema_v3(recorded):
    host, _ids = recorded
    record = host.episode_log()[0]
    context = DurableOrchestrationContext.from_json(record.context_json)
    assert context._replay_schema is ReplaySchema.V3
    assert context.version == ""
    assert record.state is not None and record.state["schemaVersion"] == ReplaySchema.V3.value
    assert len(record.state["actions"]) == 1  # V2/V3: one list holding every action


def test_final_history_replays_to_the_recorded_output(recorded):
    host, ids = recorded
    for instance_id in ids:
        status = host.get_status(instance_id)
        history = host.history(instance_id)
        # The last episode as the SDK saw it: everything up to the ExecutionCompleted/ContinueAsNew.
        ends = ("ExecutionCompleted", "ContinueAsNew")
        cut = next(i for i, e in enumerate(history) if h.event_type_name(e) in ends)
        events = [dict(e) for e in history[:cut]]
        context = {
            "history": events,
            "input": json.dumps(status["input"]) if status["input"] is not None else None,
            "instanceId": instance_id,
            "isReplaying": True,
            "parentInstanceId": None,
            "upperSchemaVersion": 1,
            "upperSchemaVersionNew": 2,
            "maximumShortTimerDuration": "6.00:00:00",
            "longRunningTimerIntervalDuration": "3.00:00:00",
        }
        state = _call_handle(host, events[1]["Name"], json.dumps(context))
        if status["runtimeStatus"] == "Completed":
            assert state["isDone"] is True
            assert state.get("output") == status["output"], instance_id
        else:
            assert status["output"].endswith(state["error"]) or state["error"] in status["output"]


def test_handles_share_the_sdk_executors_payload_type_and_still_replay_alike(recorded):
    # The host memoizes the namedtuple the SDK's executor defines on every handle call: one class for all.
    from azure.durable_functions.models.TaskOrchestrationExecutor import TaskOrchestrationExecutor

    first, second = TaskOrchestrationExecutor(), TaskOrchestrationExecutor()
    first_types = {type(payload) for payload in first.event_to_SetTaskValuePayload.values()}
    assert first_types == {type(payload) for payload in second.event_to_SetTaskValuePayload.values()}
    assert len(first_types) == 1 and first_types.pop()._fields == ("is_success", "task_id_key")
    host, _ids = recorded
    record = host.episode_log()[-1]
    name = json.loads(record.context_json)["history"][1]["Name"]
    again = _call_handle(host, name, record.context_json)
    assert _call_handle(host, name, record.context_json) == again == record.state
