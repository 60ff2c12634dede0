"""Orchestration semantics of the local durable host, checked against DTFx / SDK documented behaviour.

Every test states the exact history the Durable extension would record (event types,
task ids, order, timer FireAt) and the orchestration result. Time is virtual: the
clock starts at 2026-01-05T08:00:00Z and moves only when nothing is runnable.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from arc_hotpatch.clocks import DEFAULT_START, VirtualClock
from arc_hotpatch.durable_host import (
    DeadlockError,
    InstanceAlreadyExists,
    InstanceGone,
    InstanceNotFound,
    OrchestratorNotFound,
)
from arc_hotpatch.durable_host import history as h

from . import sample_app
from .conftest import at, summarize


def test_sequence_of_activities(make_host):
    # Each episode: OrchestratorStarted, the new events, the newly scheduled work, OrchestratorCompleted.
    clock = VirtualClock()
    host = make_host(clock)
    instance_id = host.start_new("sequence", "seq-1", 5)
    status = host.run_until_complete([instance_id])[instance_id]

    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == [6, 7]
    assert status["input"] == 5
    assert summarize(host.history(instance_id)) == [
        "OS", ("ExecutionStarted", "sequence"), ("TaskScheduled", 0, "add_one"), "OC",
        "OS", ("TaskCompleted", 0), ("TaskScheduled", 1, "add_one"), "OC",
        "OS", ("TaskCompleted", 1), ("ExecutionCompleted", 2, "Completed"), "OC",
    ]  # fmt: skip
    history = host.history(instance_id)
    assert history[2]["Input"] == "5" and history[5]["Result"] == "6"
    assert history[-2]["Result"] == "[6, 7]"
    assert all(event["IsPlayed"] for event in history)  # every episode is over
    assert clock.now() == DEFAULT_START  # activities take no virtual time


def test_async_activity_and_missing_input(make_host):
    host = make_host()
    assert host.run_until_complete([host.start_new("async_activity", "a", "hi")])["a"]["output"] == "HI!"
    instance_id = host.start_new("sequence", "structured", None)
    assert host.run_until_complete([instance_id])[instance_id]["output"] == [1, 2]  # get_input() is None


def test_fan_out_completions_are_delivered_in_batches(make_host):
    # Five completions, at most two per episode (batch_size=2), in task-id order.
    host = make_host(batch_size=2)
    instance_id = host.start_new("fan_out", "fan", 5)
    status = host.run_until_complete([instance_id])[instance_id]

    assert status["output"] == 15
    assert summarize(host.history(instance_id)) == [
        "OS", ("ExecutionStarted", "fan_out"),
        *[("TaskScheduled", i, "add_one") for i in range(5)], "OC",
        "OS", ("TaskCompleted", 0), ("TaskCompleted", 1), "OC",
        "OS", ("TaskCompleted", 2), ("TaskCompleted", 3), "OC",
        "OS", ("TaskCompleted", 4), ("ExecutionCompleted", 5, "Completed"), "OC",
    ]  # fmt: skip
    assert host.metrics()["episodes"] == 4


def test_fan_out_with_default_batch_uses_one_episode(make_host):
    host = make_host()
    instance_id = host.start_new("fan_out", "fan", 5)
    host.run_until_complete([instance_id])
    assert summarize(host.history(instance_id))[8:] == [
        "OS", *[("TaskCompleted", i) for i in range(5)], ("ExecutionCompleted", 5, "Completed"), "OC",
    ]  # fmt: skip


def test_compound_actions_take_ids_depth_first(make_host):
    # task_all([echo a, task_any([timer, echo race]), echo b]): ids 0, 1 (timer), 2, 3.
    clock = VirtualClock()
    t0 = clock.now()
    host = make_host(clock)
    instance_id = host.start_new("nested_compound", "nested")
    status = host.run_until_complete([instance_id])[instance_id]

    assert status["output"] == ["a", "b"]
    assert summarize(host.history(instance_id)) == [
        "OS", ("ExecutionStarted", "nested_compound"),
        ("TaskScheduled", 0, "echo"), ("TimerCreated", 1, at(t0, minutes=10)),
        ("TaskScheduled", 2, "echo"), ("TaskScheduled", 3, "echo"), "OC",
        "OS", ("TaskCompleted", 0), ("TaskCompleted", 2), ("TaskCompleted", 3),
        ("ExecutionCompleted", 4, "Completed"), "OC",
    ]  # fmt: skip
    # The never-awaited timer of a completed orchestration does not keep the run going.
    assert clock.now() == t0


def test_when_any_event_beats_timer(make_host):
    clock = VirtualClock()
    t0 = clock.now()
    host = make_host(clock)
    instance_id = host.start_new("approval_with_timeout", "approval")
    host.run_until(t0 + timedelta(minutes=5))
    host.raise_event(instance_id, "Approval", {"by": "alice"})
    status = host.run_until_complete([instance_id])[instance_id]

    assert status["output"] == {"approved": {"by": "alice"}}
    assert summarize(host.history(instance_id)) == [
        "OS", ("ExecutionStarted", "approval_with_timeout"), ("TimerCreated", 0, at(t0, hours=1)), "OC",
        "OS", ("EventRaised", "Approval"), ("TaskScheduled", 1, "echo"), "OC",
        "OS", ("TaskCompleted", 1), ("ExecutionCompleted", 2, "Completed"), "OC",
    ]  # fmt: skip
    history = host.history(instance_id)
    assert history[4]["Timestamp"] == at(t0, minutes=5)  # the episode ran when the event arrived
    assert clock.now() == t0 + timedelta(minutes=5)  # the cancelled timer did not hold the run


def test_when_any_timer_wins(make_host):
    clock = VirtualClock()
    t0 = clock.now()
    host = make_host(clock)
    instance_id = host.start_new("approval_with_timeout", "approval")
    status = host.run_until_complete([instance_id])[instance_id]

    assert status["output"] == {"timed_out": True}
    assert summarize(host.history(instance_id)) == [
        "OS", ("ExecutionStarted", "approval_with_timeout"), ("TimerCreated", 0, at(t0, hours=1)), "OC",
        "OS", ("TimerFired", 0), ("ExecutionCompleted", 1, "Completed"), "OC",
    ]  # fmt: skip
    assert host.history(instance_id)[4]["Timestamp"] == at(t0, hours=1)
    assert clock.now() == t0 + timedelta(hours=1)


def test_cancelled_timer_still_fires_while_the_instance_runs(make_host):
    # DTFx cannot retract a timer message: a cancelled timer's TimerFired still arrives
    # (and is ignored) if the orchestration is still running at its FireAt.
    clock = VirtualClock()
    t0 = clock.now()
    host = make_host(clock)
    instance_id = host.start_new("approval_with_timeout", "linger", {"linger": True})
    host.run_until(t0 + timedelta(minutes=5))
    host.raise_event(instance_id, "Approval", "yes")
    status = host.run_until_complete([instance_id])[instance_id]

    assert status["output"] == {"approved": "yes"}
    assert summarize(host.history(instance_id)) == [
        "OS", ("ExecutionStarted", "approval_with_timeout"), ("TimerCreated", 0, at(t0, hours=1)), "OC",
        "OS", ("EventRaised", "Approval"), ("TimerCreated", 1, at(t0, hours=2, minutes=5)), "OC",
        "OS", ("TimerFired", 0), "OC",
        "OS", ("TimerFired", 1), ("TaskScheduled", 2, "echo"), "OC",
        "OS", ("TaskCompleted", 2), ("ExecutionCompleted", 3, "Completed"), "OC",
    ]  # fmt: skip


def test_event_raised_before_the_wait_is_buffered(make_host):
    host = make_host()
    instance_id = host.start_new("wait_event", "early")
    host.raise_event(instance_id, "Go", {"k": 1})  # arrives before the orchestrator waits for it
    status = host.run_until_complete([instance_id])[instance_id]

    assert status["output"] == {"k": 1}
    assert summarize(host.history(instance_id)) == [
        "OS", ("ExecutionStarted", "wait_event"), ("EventRaised", "Go"), ("TaskScheduled", 0, "echo"), "OC",
        "OS", ("TaskCompleted", 0), ("ExecutionCompleted", 1, "Completed"), "OC",
    ]  # fmt: skip
    assert host.history(instance_id)[2]["Input"] == '{"k": 1}'


def test_activity_retry_uses_durable_timers(make_host):
    # RetryOptions(60 s, 3 attempts): failure -> timer (new id) -> call again (new id).
    clock = VirtualClock()
    t0 = clock.now()
    host = make_host(clock)
    instance_id = host.start_new("retry_activity", "retry", "key-1")
    status = host.run_until_complete([instance_id])[instance_id]

    assert status["output"] == "ok after 3 attempts"
    assert summarize(host.history(instance_id)) == [
        "OS", ("ExecutionStarted", "retry_activity"), ("TaskScheduled", 0, "flaky"), "OC",
        "OS", ("TaskFailed", 0), ("TimerCreated", 1, at(t0, seconds=60)), "OC",
        "OS", ("TimerFired", 1), ("TaskScheduled", 2, "flaky"), "OC",
        "OS", ("TaskFailed", 2), ("TimerCreated", 3, at(t0, seconds=120)), "OC",
        "OS", ("TimerFired", 3), ("TaskScheduled", 4, "flaky"), "OC",
        "OS", ("TaskCompleted", 4), ("ExecutionCompleted", 5, "Completed"), "OC",
    ]  # fmt: skip
    failed = host.history(instance_id)[5]
    assert failed["Reason"] == "Activity function 'flaky' failed: RuntimeError: transient failure 1 for key-1"
    assert clock.now() == t0 + timedelta(seconds=120)
    assert host.metrics()["activity_calls"]["flaky"] == 3


def test_retry_waits_one_more_timer_after_the_last_failure_and_it_fires_at_once(make_host):
    # DTFx's RetryInterceptor creates a timer after every failed attempt, the last included (kept for replay
    # compatibility; the SDK waits for it too), and that last one fires at once ("Dummy timer for back-compat"):
    # the failure surfaces without another interval.
    clock = VirtualClock()
    t0 = clock.now()
    host = make_host(clock)
    instance_id = host.start_new("retry_exhausted", "exhausted")
    status = host.run_until_complete([instance_id])[instance_id]

    assert status["runtimeStatus"] == "Completed"
    assert status["output"].startswith("gave up: Activity function 'boom' failed: ValueError: kaboom")
    assert summarize(host.history(instance_id)) == [
        "OS", ("ExecutionStarted", "retry_exhausted"), ("TaskScheduled", 0, "boom"), "OC",
        "OS", ("TaskFailed", 0), ("TimerCreated", 1, at(t0, seconds=1)), "OC",
        "OS", ("TimerFired", 1), ("TaskScheduled", 2, "boom"), "OC",
        "OS", ("TaskFailed", 2), ("TimerCreated", 3, at(t0, seconds=1)), "OC",  # fires at once: no second interval
        "OS", ("TimerFired", 3), ("ExecutionCompleted", 4, "Completed"), "OC",
    ]  # fmt: skip
    assert clock.now() == t0 + timedelta(seconds=1)


def test_thirty_days_of_timers_on_the_virtual_clock(make_host):
    clock = VirtualClock()
    t0 = clock.now()
    host = make_host(clock)
    instance_id = host.start_new("thirty_days", "month")
    status = host.run_until_complete([instance_id], timeout_real_s=60)[instance_id]

    assert status["output"] == (t0 + timedelta(days=30)).isoformat()
    assert clock.now() == t0 + timedelta(days=30)
    view = summarize(host.history(instance_id))
    assert [e for e in view if isinstance(e, tuple) and e[0] == "TimerCreated"] == [
        ("TimerCreated", day, at(t0, days=day + 1)) for day in range(30)
    ]
    assert view.count("OS") == 31 and host.metrics()["timers_fired"] == 30


def test_long_timer_is_split_by_the_sdk_under_azure_storage_limits(make_host):
    # The context carries maximumShortTimerDuration 6 days / longRunningTimerIntervalDuration
    # 3 days (Azure Storage), so the SDK replaces one 30-day timer by 3-day sub-timers.
    clock = VirtualClock()
    t0 = clock.now()
    host = make_host(clock)
    instance_id = host.start_new("one_long_timer", "long")
    status = host.run_until_complete([instance_id])[instance_id]

    assert status["output"] == (t0 + timedelta(days=30)).isoformat()
    created = [e for e in summarize(host.history(instance_id)) if isinstance(e, tuple) and e[0] == "TimerCreated"]
    assert created == [("TimerCreated", i, at(t0, days=3 * (i + 1))) for i in range(8)] + [
        ("TimerCreated", 8, at(t0, days=30))
    ]


def test_long_timer_stays_one_timer_without_storage_limits(make_host):
    clock = VirtualClock()
    t0 = clock.now()
    host = make_host(clock, max_short_timer=None)
    instance_id = host.start_new("one_long_timer", "long")
    host.run_until_complete([instance_id])
    assert summarize(host.history(instance_id)) == [
        "OS", ("ExecutionStarted", "one_long_timer"), ("TimerCreated", 0, at(t0, days=30)), "OC",
        "OS", ("TimerFired", 0), ("ExecutionCompleted", 1, "Completed"), "OC",
    ]  # fmt: skip


def test_sub_orchestrations_with_explicit_and_generated_ids(make_host):
    host = make_host()
    instance_id = host.start_new("parent", "parent-1")
    status = host.run_until_complete()[instance_id]

    history = host.history(instance_id)
    execution_id = history[1]["OrchestrationInstance"]["ExecutionId"]
    generated = f"{execution_id}:1"  # DTFx: "<parent execution id>:<task id>"
    assert summarize(history) == [
        "OS", ("ExecutionStarted", "parent"),
        ("SubOrchestrationInstanceCreated", 0, "child", "child-explicit"), "OC",
        "OS", ("SubOrchestrationInstanceCompleted", 0),
        ("SubOrchestrationInstanceCreated", 1, "child", generated), "OC",
        "OS", ("SubOrchestrationInstanceCompleted", 1), ("ExecutionCompleted", 2, "Completed"), "OC",
    ]  # fmt: skip
    assert status["output"] == [
        {"value": 20, "parent": "parent-1", "me": "child-explicit"},
        {"value": 30, "parent": "parent-1", "me": generated},
    ]
    child_start = host.history("child-explicit")[1]
    assert child_start["ParentInstance"]["OrchestrationInstance"]["InstanceId"] == "parent-1"
    assert child_start["ParentInstance"]["TaskScheduleId"] == 0
    assert host.get_status(generated)["runtimeStatus"] == "Completed"
    assert host.metrics()["orchestrations"] == 3


def test_sub_orchestration_failure_reaches_the_parent(make_host):
    host = make_host()
    instance_id = host.start_new("parent_catches_child", "parent-2")
    status = host.run_until_complete()[instance_id]

    child = host.get_status("doomed-child")
    assert child["runtimeStatus"] == "Failed"
    assert child["output"] == "Orchestrator function 'failing_child' failed: child broke"
    assert summarize(host.history(instance_id)) == [
        "OS", ("ExecutionStarted", "parent_catches_child"),
        ("SubOrchestrationInstanceCreated", 0, "failing_child", "doomed-child"), "OC",
        "OS", ("SubOrchestrationInstanceFailed", 0), ("ExecutionCompleted", 1, "Completed"), "OC",
    ]  # fmt: skip
    failed = host.history(instance_id)[5]
    assert failed["Reason"] == "Orchestrator function 'failing_child' failed: child broke"
    assert "ValueError: child broke" in failed["Details"]
    assert status["output"].startswith("caught: Orchestrator function 'failing_child' failed: child broke")


def test_uncaught_sub_orchestration_failure_fails_the_parent(make_host):
    host = make_host()
    instance_id = host.start_new("parent_propagates_child", "parent-3")
    status = host.run_until_complete()[instance_id]
    assert status["runtimeStatus"] == "Failed"
    assert status["output"].startswith(
        "Orchestrator function 'parent_propagates_child' failed: "
        "Orchestrator function 'failing_child' failed: child broke"
    )
    assert summarize(host.history(instance_id))[-2] == ("ExecutionCompleted", 1, "Failed")


def test_sub_orchestration_retry_with_generated_ids(make_host):
    clock = VirtualClock()
    t0 = clock.now()
    host = make_host(clock)
    instance_id = host.start_new("sub_with_retry", "parent-4", "sub-key")
    status = host.run_until_complete()[instance_id]

    history = host.history(instance_id)
    execution_id = history[1]["OrchestrationInstance"]["ExecutionId"]
    assert status["output"] == 2
    assert summarize(history) == [
        "OS", ("ExecutionStarted", "sub_with_retry"),
        ("SubOrchestrationInstanceCreated", 0, "flaky_child", f"{execution_id}:0"), "OC",
        "OS", ("SubOrchestrationInstanceFailed", 0), ("TimerCreated", 1, at(t0, seconds=5)), "OC",
        "OS", ("TimerFired", 1), ("SubOrchestrationInstanceCreated", 2, "flaky_child", f"{execution_id}:2"), "OC",
        "OS", ("SubOrchestrationInstanceCompleted", 2), ("ExecutionCompleted", 3, "Completed"), "OC",
    ]  # fmt: skip
    assert host.get_status(f"{execution_id}:0")["runtimeStatus"] == "Failed"


def test_continue_as_new_starts_a_fresh_history(make_host):
    host = make_host()
    instance_id = host.start_new("counter", "counter", 0)
    status = host.run_until_complete([instance_id])[instance_id]

    assert status["runtimeStatus"] == "Completed" and status["output"] == 2 and status["input"] == 2
    first, second, last = host.execution_histories(instance_id)
    assert summarize(first) == [
        "OS", ("ExecutionStarted", "counter"), ("TaskScheduled", 0, "echo"), "OC",
        "OS", ("TaskCompleted", 0), ("ContinueAsNew", 1, "1"), "OC",
    ]  # fmt: skip
    assert summarize(last) == [
        "OS", ("ExecutionStarted", "counter"), ("TaskScheduled", 0, "echo"), "OC",
        "OS", ("TaskCompleted", 0), ("ExecutionCompleted", 1, "Completed"), "OC",
    ]  # fmt: skip
    assert second[1]["Input"] == "1" and last[1]["Input"] == "2"
    executions = {events[1]["OrchestrationInstance"]["ExecutionId"] for events in (first, second, last)}
    assert len(executions) == 3  # same instance id, new execution each time
    assert host.history(instance_id) == last
    assert host.metrics()["executions"] == 3 and host.metrics()["orchestrations"] == 1


def test_a_host_that_keeps_no_finished_histories_keeps_outcomes_and_metrics(make_host):
    host = make_host(keep_finished_histories=False)  # as simulate runs it: thousands of machines, outcomes only
    counter = host.start_new("counter", "counter", 0)
    waiting = host.start_new("wait_event", "waiting")
    status = host.run_until_complete([counter])[counter]
    assert (status["runtimeStatus"], status["output"]) == ("Completed", 2)
    assert host.execution_histories(counter) == [[]]  # neither the finished execution's events nor earlier ones
    assert summarize(host.history(waiting))[:2] == ["OS", ("ExecutionStarted", "wait_event")]  # a running one keeps
    assert host.metrics()["executions"] == 3 + 1 and host.metrics()["max_history_events"] > 0


def test_played_events_keep_their_payloads_serialized_only_and_every_view_shows_them_whole(make_host):
    # Thousands of machines in flight each held their inputs and results twice, parsed and serialized.
    host = make_host()
    waiting = host.start_new("wait_event", "waiting", {"given": "input"})
    host.run_until_idle()
    parsed = host._store.instances[waiting].history
    assert [h.event_type_name(e) for e in parsed][:4] == ["OrchestratorStarted", "ExecutionStarted",
                                                        "TaskScheduled", "OrchestratorCompleted"]
    assert not any(field in event for event in parsed for field in ("Input", "Result")), parsed
    recorded = host.history(waiting)
    assert len(recorded) == len(parsed) and all(e["IsPlayed"] for e in recorded)
    assert json.loads(recorded[1]["Input"]) == {"given": "input"} and json.loads(recorded[2]["Input"]) == "first"
    assert json.loads(next(e for e in recorded if h.event_type_name(e) == "TaskCompleted")["Result"]) == "first"
    shown = host.get_status(waiting, show_history=True, show_history_output=True)["historyEvents"]
    assert [e["Result"] for e in shown if e["EventType"] == "TaskCompleted"] == ["first"]
    host.raise_event(waiting, "Go", {"data": 1})  # a raised event's input is what the replay hands the orchestrator
    assert host.run_until_complete([waiting])[waiting]["output"] == {"data": 1}


@pytest.mark.parametrize("name, given", [("custom_status", None), ("counter", 0)])
def test_a_finished_instance_packed_answers_its_status_as_one_kept_whole(make_host, name, given):
    statuses = []
    for keep in (True, False):
        host = make_host(keep_finished_histories=keep)
        instance_id = host.start_new(name, "packed", given)
        if name == "custom_status":
            host.run_until_idle()
            host.raise_event(instance_id, "Go", {"data": [1, "two"]})
        statuses.append(host.run_until_complete([instance_id])[instance_id])
        assert (host._store.instances[instance_id].packed is None) == keep  # kept whole, or compressed
        assert host.get_status(instance_id) == statuses[-1]
    kept, packed = statuses
    assert packed == kept and kept["runtimeStatus"] == "Completed" and kept["output"] is not None
    assert (kept["customStatus"] is not None) == (name == "custom_status")


def test_continue_as_new_carries_over_events_received_after_it(make_host):
    # Three events in one batch: the first completes the wait and the orchestrator continues
    # as new; DTFx (BehaviorOnContinueAsNew.Carryover) hands the later two to the next execution.
    host = make_host()
    instance_id = host.start_new("eternal_events", "eternal")
    for value in ("a", "b", "stop"):
        host.raise_event(instance_id, "Item", value)
    status = host.run_until_complete([instance_id])[instance_id]

    assert status["output"] == ["a", "b", "stop"]
    histories = host.execution_histories(instance_id)
    assert [summarize(events) for events in histories] == [
        ["OS", ("ExecutionStarted", "eternal_events"), ("EventRaised", "Item"), ("EventRaised", "Item"),
         ("EventRaised", "Item"), ("ContinueAsNew", 0, '["a"]'), "OC"],
        ["OS", ("ExecutionStarted", "eternal_events"), ("EventRaised", "Item"), ("EventRaised", "Item"),
         ("ContinueAsNew", 0, '["a", "b"]'), "OC"],
        ["OS", ("ExecutionStarted", "eternal_events"), ("EventRaised", "Item"),
         ("ExecutionCompleted", 0, "Completed"), "OC"],
    ]  # fmt: skip


def test_custom_status_follows_the_orchestrator(make_host):
    host = make_host()
    instance_id = host.start_new("custom_status", "status")
    host.run_until_idle()
    status = host.get_status(instance_id)
    assert status["runtimeStatus"] == "Running"
    assert status["customStatus"] == {"stage": "waiting"}

    host.raise_event(instance_id, "Go", 42)
    status = host.run_until_complete([instance_id])[instance_id]
    assert status["customStatus"] == {"stage": "done", "data": 42}
    assert status["output"] == 42


def test_non_determinism_changed_activity_fails_the_instance(make_host):
    host = make_host()
    instance_id = host.start_new("changing_code", "nd-changed")
    host.run_until_idle()
    sample_app.NONDETERMINISM["activity"] = "add_one"  # "deploy" a code change mid-flight
    host.raise_event(instance_id, "Continue", 1)
    status = host.run_until_complete([instance_id])[instance_id]

    assert status["runtimeStatus"] == "Failed"
    message = status["output"]
    assert "Non-deterministic orchestration" in message
    assert "instance 'nd-changed'" in message and "orchestrator 'changing_code'" in message
    assert "scheduled activity 'echo' with sequence number 0" in message
    assert "instead scheduled activity 'add_one'" in message
    assert summarize(host.history(instance_id))[-4:] == [
        "OS", ("EventRaised", "Continue"), ("ExecutionCompleted", 0, "Failed"), "OC",
    ]  # fmt: skip


def test_non_determinism_removed_activity_fails_the_instance(make_host):
    host = make_host()
    instance_id = host.start_new("changing_code", "nd-removed")
    host.run_until_idle()
    sample_app.NONDETERMINISM["skip_activity"] = True
    host.raise_event(instance_id, "Continue", 1)
    status = host.run_until_complete([instance_id])[instance_id]

    assert status["runtimeStatus"] == "Failed"
    assert "instance 'nd-removed'" in status["output"]
    assert "scheduled activity 'echo' with sequence number 0" in status["output"]
    assert "has not (yet?) scheduled this task" in status["output"]


def test_activity_failure_propagates_as_task_failed(make_host):
    host = make_host()
    instance_id = host.start_new("activity_fails", "fails")
    status = host.run_until_complete([instance_id])[instance_id]

    failed = host.history(instance_id)[5]
    assert h.event_type_name(failed) == "TaskFailed" and failed["TaskScheduledId"] == 0
    assert failed["Reason"] == "Activity function 'boom' failed: ValueError: kaboom"
    assert 'raise ValueError("kaboom")' in failed["Details"] and "sample_app.py" in failed["Details"]
    assert "durable_host/host.py" not in failed["Details"]  # only the function's own frames
    assert status["runtimeStatus"] == "Failed"
    assert status["output"].startswith(
        "Orchestrator function 'activity_fails' failed: Activity function 'boom' failed: ValueError: kaboom"
    )
    assert summarize(host.history(instance_id))[-2] == ("ExecutionCompleted", 1, "Failed")
    assert host.metrics()["activity_failures"] == {"boom": 1}


def test_activity_failure_can_be_caught(make_host):
    host = make_host()
    instance_id = host.start_new("activity_failure_caught", "caught")
    status = host.run_until_complete([instance_id])[instance_id]
    assert status["runtimeStatus"] == "Completed"
    assert status["output"].startswith("Activity function 'boom' failed: ValueError: kaboom")


def test_work_after_a_failed_task_all_waits_for_the_whole_when_all(make_host):
    # The SDK resumes the orchestrator at the first failure inside task_all, but the extension's
    # shim awaits Task.WhenAll, which completes only when every task has: the next action is
    # scheduled (with the id the SDK expects) once the slow sibling finished.
    clock = VirtualClock()
    t0 = clock.now()
    host = make_host(clock)
    instance_id = host.start_new("when_all_failure", "when-all")
    status = host.run_until_complete([instance_id])[instance_id]

    assert status["output"] == t0.isoformat()  # the orchestrator code ran right after the failure
    assert summarize(host.history(instance_id)) == [
        "OS", ("ExecutionStarted", "when_all_failure"), ("TaskScheduled", 0, "boom"),
        ("TaskScheduled", 1, "sleeper"), "OC",
        "OS", ("TaskFailed", 0), "OC",
        "OS", ("TaskCompleted", 1), ("TaskScheduled", 2, "echo"), "OC",
        "OS", ("TaskCompleted", 2), ("ExecutionCompleted", 3, "Completed"), "OC",
    ]  # fmt: skip
    assert host.history(instance_id)[10]["Timestamp"] == at(t0, seconds=60)


def test_unknown_activity_fails_like_the_extension(make_host):
    host = make_host()
    instance_id = host.start_new("unknown_activity", "unknown")
    status = host.run_until_complete([instance_id])[instance_id]
    assert status["runtimeStatus"] == "Failed"
    assert (
        "The function 'does_not_exist' doesn't exist, is disabled, or is not an activity function" in (status["output"])
    )
    assert summarize(host.history(instance_id)) == [
        "OS", ("ExecutionStarted", "unknown_activity"), ("ExecutionCompleted", 0, "Failed"), "OC",
    ]  # fmt: skip


def test_deadlock_names_the_waiting_instance(make_host):
    host = make_host()
    instance_id = host.start_new("wait_event", "stuck")
    with pytest.raises(DeadlockError) as raised:
        host.run_until_complete([instance_id])
    assert raised.value.waiting == {"stuck": ["external event 'Go'"]}
    assert "instance 'stuck' (orchestrator 'wait_event', Running)" in str(raised.value)


def test_terminate(make_host):
    host = make_host()
    instance_id = host.start_new("wait_event", "doomed")
    host.run_until_idle()
    host.terminate(instance_id, "operator said stop")
    status = host.run_until_complete([instance_id])[instance_id]

    assert status["runtimeStatus"] == "Terminated" and status["output"] == "operator said stop"
    assert summarize(host.history(instance_id))[-4:] == [
        "OS", ("ExecutionTerminated",), ("ExecutionCompleted", -1, "Terminated"), "OC",
    ]  # fmt: skip
    with pytest.raises(InstanceGone):
        host.raise_event(instance_id, "Go", 1)
    with pytest.raises(InstanceGone):
        host.terminate(instance_id, "again")


def test_start_conflicts_restarts_and_unknown_names(make_host):
    host = make_host()
    host.start_new("wait_event", "single")
    with pytest.raises(InstanceAlreadyExists):
        host.start_new("wait_event", "single")
    with pytest.raises(OrchestratorNotFound, match="'nope' doesn't exist"):
        host.start_new("nope")
    with pytest.raises(InstanceNotFound):
        host.get_status("missing")

    host.raise_event("single", "Go", "first run")
    assert host.run_until_complete(["single"])["single"]["output"] == "first run"
    host.start_new("wait_event", "single")  # a finished instance id can be reused
    assert host.get_status("single")["runtimeStatus"] == "Pending"
    host.raise_event("single", "Go", "second run")
    assert host.run_until_complete(["single"])["single"]["output"] == "second run"


def test_list_and_purge(make_host):
    host = make_host()
    host.start_new("sequence", "done-1", 1)
    host.start_new("wait_event", "waiting-1")
    host.run_until_idle()

    running = host.list_instances(runtime_status=["Running"])
    assert [s["instanceId"] for s in running] == ["waiting-1"]
    assert [s["instanceId"] for s in host.list_instances(instance_id_prefix="done")] == ["done-1"]
    assert host.purge("done-1") == 1 and host.purge("done-1") == 0
    assert host.instance_ids() == ["waiting-1"]
    # A running instance is purged too, as the Azure Storage provider's purge by id does; its event goes nowhere.
    assert host.purge("waiting-1") == 1 and host.instance_ids() == []
    with pytest.raises(InstanceNotFound):
        host.raise_event("waiting-1", "Go", "late")
    host.run_until_idle()


def test_activities_sleeping_on_the_virtual_clock_are_parked(make_host):
    clock = VirtualClock()
    t0 = clock.now()
    host = make_host(clock)
    instance_id = host.start_new("sleepers", "sleepers", [10, 20, 30])
    status = host.run_until_complete([instance_id])[instance_id]

    assert status["output"] == [(t0 + timedelta(seconds=s)).isoformat() for s in (10, 20, 30)]
    episode_times = [e["Timestamp"] for e in host.history(instance_id) if h.event_type_name(e) == "OrchestratorStarted"]
    assert episode_times == [at(t0), at(t0, seconds=10), at(t0, seconds=20), at(t0, seconds=30)]


def test_a_single_worker_runs_sleeping_activities_one_after_another(make_host):
    clock = VirtualClock()
    t0 = clock.now()
    host = make_host(clock, activity_workers=1)
    instance_id = host.start_new("sleepers", "serial", [10, 20, 30])
    status = host.run_until_complete([instance_id])[instance_id]
    assert status["output"] == [(t0 + timedelta(seconds=s)).isoformat() for s in (10, 30, 60)]


def _mixed_run(make_host) -> tuple[str, str, dict]:
    host = make_host(VirtualClock(), batch_size=3)
    ids = [
        host.start_new("fan_out", None, 7),
        host.start_new("retry_activity", None, "det"),
        host.start_new("parent"),
        host.start_new("sleepers", None, [5, 1, 3]),
        host.start_new("approval_with_timeout"),
    ]
    statuses = host.run_until_complete(timeout_real_s=60)
    histories = {iid: host.history(iid) for iid in host.instance_ids()}
    metrics = host.metrics()
    host.close()
    sample_app.reset_knobs()
    return json.dumps(ids), json.dumps([histories, statuses], sort_keys=True), metrics


def test_runs_are_deterministic_on_a_virtual_clock(make_host):
    first = _mixed_run(make_host)
    second = _mixed_run(make_host)
    assert first == second


def test_background_driver_serves_api_calls(make_host):
    host = make_host()
    host.start()
    instance_id = host.start_new("wait_event", "background")
    host.run_until_idle(timeout_real_s=10)
    assert host.get_status(instance_id)["runtimeStatus"] == "Running"
    host.raise_event(instance_id, "Go", "from another thread")
    assert host.run_until_complete([instance_id], timeout_real_s=10)[instance_id]["output"] == "from another thread"
    host.stop()
    assert host.background_errors == []


def test_progress_callback(make_host):
    snapshots: list[dict] = []
    host = make_host()
    instance_id = host.start_new("thirty_days", "progress")
    host.run_until_complete([instance_id], progress=snapshots.append, progress_interval_s=0)
    assert len(snapshots) > 10
    assert snapshots[-1] == {
        "virtual_time": "2026-02-04T08:00:00Z",
        "instances": {"Completed": 1},
        "episodes": 31,
        "activity_calls": 0,
        "pending_timers": 0,
    }


def test_continue_as_new_drops_events_received_before_it(make_host):
    # An event processed in an execution but never awaited is not preserved by ContinueAsNew
    # (the Python SDK has no preserveUnprocessedEvents).
    host = make_host()
    instance_id = host.start_new("counter", "noisy", 1)
    host.raise_event(instance_id, "Noise", "ignored")
    status = host.run_until_complete([instance_id])[instance_id]
    first, last = host.execution_histories(instance_id)
    assert ("EventRaised", "Noise") in summarize(first)
    assert not any(h.event_type_name(e) == "EventRaised" for e in last)
    assert status["output"] == 2


def test_terminate_a_pending_instance(make_host):
    host = make_host()
    instance_id = host.start_new("sequence", "never-ran", 1)
    host.terminate(instance_id, "changed my mind")
    status = host.run_until_complete([instance_id])[instance_id]
    assert status["runtimeStatus"] == "Terminated"
    assert summarize(host.history(instance_id)) == [
        "OS", ("ExecutionStarted", "sequence"), ("ExecutionTerminated",),
        ("ExecutionCompleted", -1, "Terminated"), "OC",
    ]  # fmt: skip
    assert host.metrics()["activity_calls_total"] == 0


def test_terminated_child_fails_the_waiting_parent(make_host):
    # DTFx reports a terminated sub-orchestration to its parent as SubOrchestrationInstanceFailed.
    host = make_host()
    parent_id = host.start_new("parent_of_waiter", "parent-of-waiter")
    host.run_until_idle()
    host.terminate("waiting-child", "bye")
    status = host.run_until_complete([parent_id])[parent_id]
    assert host.get_status("waiting-child")["runtimeStatus"] == "Terminated"
    assert summarize(host.history(parent_id))[-4:] == [
        "OS", ("SubOrchestrationInstanceFailed", 0), ("ExecutionCompleted", 1, "Completed"), "OC",
    ]  # fmt: skip
    assert status["output"].startswith("child ended: bye")
