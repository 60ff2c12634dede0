"""Durable Task Framework history events, as the Durable extension hands them to out-of-process SDKs.

Events are plain dicts with DTFx's PascalCase field names and an integer ``EventType``
(``azure.durable_functions.models.history.HistoryEventType``). Only fields the
extension really serializes are produced, so a history recorded by the local host
can be fed unchanged to the SDK's ``Orchestrator`` handle.
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

from dateutil.parser import isoparse

# The SDK formats and parses timestamps with this layout (constants.DATETIME_STRING_FORMAT).
DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

HistoryEvent = dict[str, Any]


class EventType(IntEnum):
    """DurableTask.Core.History.EventType (same numbering as the SDK's HistoryEventType)."""

    EXECUTION_STARTED = 0
    EXECUTION_COMPLETED = 1
    EXECUTION_FAILED = 2
    EXECUTION_TERMINATED = 3
    TASK_SCHEDULED = 4
    TASK_COMPLETED = 5
    TASK_FAILED = 6
    SUB_ORCHESTRATION_INSTANCE_CREATED = 7
    SUB_ORCHESTRATION_INSTANCE_COMPLETED = 8
    SUB_ORCHESTRATION_INSTANCE_FAILED = 9
    TIMER_CREATED = 10
    TIMER_FIRED = 11
    ORCHESTRATOR_STARTED = 12
    ORCHESTRATOR_COMPLETED = 13
    EVENT_SENT = 14
    EVENT_RAISED = 15
    CONTINUE_AS_NEW = 16
    GENERIC_EVENT = 17
    HISTORY_STATE = 18
    EXECUTION_SUSPENDED = 19
    EXECUTION_RESUMED = 20


# Events that schedule work and carry the task's sequence number in EventId.
SCHEDULING_EVENT_TYPES = frozenset(
    {EventType.TASK_SCHEDULED, EventType.TIMER_CREATED, EventType.SUB_ORCHESTRATION_INSTANCE_CREATED}
)


@functools.lru_cache(maxsize=1 << 12)
def format_time(moment: datetime) -> str:
    """Timestamp in the SDK's wire format (UTC, microseconds, trailing Z).

    Memoized: every event of a driver pass carries the same few virtual times, and equal
    datetimes (the same instant, or the same naive fields) format to the same text.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime(DATETIME_FORMAT)


@functools.lru_cache(maxsize=1 << 16)
def parse_time(text: str) -> datetime:
    """Parse a wire timestamp (or any ISO 8601 form) to an aware UTC datetime.

    Memoized: every replay re-reads the timestamps of the whole history (the shim's
    OrchestratorStarted times, timer fire times), and datetimes are immutable.
    """
    moment = isoparse(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def status_time(moment: datetime) -> str:
    """Timestamp as the management API prints it (``DateTime.ToString("s") + "Z"``)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _event(event_type: EventType, timestamp: datetime, event_id: int = -1, **fields: Any) -> HistoryEvent:
    event: HistoryEvent = {
        "EventType": int(event_type),
        "EventId": event_id,
        "IsPlayed": False,
        "Timestamp": format_time(timestamp),
    }
    event.update(fields)
    return event


def orchestrator_started(timestamp: datetime) -> HistoryEvent:
    return _event(EventType.ORCHESTRATOR_STARTED, timestamp)


def orchestrator_completed(timestamp: datetime) -> HistoryEvent:
    return _event(EventType.ORCHESTRATOR_COMPLETED, timestamp)


def execution_started(
    timestamp: datetime,
    *,
    name: str,
    instance_id: str,
    execution_id: str,
    input_text: str | None,
    parent: dict[str, Any] | None = None,
) -> HistoryEvent:
    # SDK 1.7.0 reads ExecutionStarted.Version (context.version), so it must be present.
    return _event(
        EventType.EXECUTION_STARTED,
        timestamp,
        OrchestrationInstance={"InstanceId": instance_id, "ExecutionId": execution_id},
        ParentInstance=parent,
        Name=name,
        Version="",
        Input=input_text,
        Tags=None,
    )


def task_scheduled(timestamp: datetime, task_id: int, name: str, input_text: str | None) -> HistoryEvent:
    return _event(EventType.TASK_SCHEDULED, timestamp, task_id, Name=name, Version="", Input=input_text)


def task_completed(timestamp: datetime, task_id: int, result_text: str | None) -> HistoryEvent:
    return _event(EventType.TASK_COMPLETED, timestamp, TaskScheduledId=task_id, Result=result_text)


def task_failed(timestamp: datetime, task_id: int, reason: str, details: str) -> HistoryEvent:
    return _event(EventType.TASK_FAILED, timestamp, TaskScheduledId=task_id, Reason=reason, Details=details)


def timer_created(timestamp: datetime, task_id: int, fire_at: str) -> HistoryEvent:
    return _event(EventType.TIMER_CREATED, timestamp, task_id, FireAt=fire_at)


def timer_fired(timestamp: datetime, timer_id: int, fire_at: str) -> HistoryEvent:
    return _event(EventType.TIMER_FIRED, timestamp, TimerId=timer_id, FireAt=fire_at)


def sub_orchestration_created(
    timestamp: datetime, task_id: int, name: str, instance_id: str, input_text: str | None
) -> HistoryEvent:
    return _event(
        EventType.SUB_ORCHESTRATION_INSTANCE_CREATED,
        timestamp,
        task_id,
        Name=name,
        Version="",
        InstanceId=instance_id,
        Input=input_text,
    )


def sub_orchestration_completed(timestamp: datetime, task_id: int, result_text: str | None) -> HistoryEvent:
    return _event(
        EventType.SUB_ORCHESTRATION_INSTANCE_COMPLETED, timestamp, TaskScheduledId=task_id, Result=result_text
    )


def sub_orchestration_failed(timestamp: datetime, task_id: int, reason: str, details: str) -> HistoryEvent:
    return _event(
        EventType.SUB_ORCHESTRATION_INSTANCE_FAILED,
        timestamp,
        TaskScheduledId=task_id,
        Reason=reason,
        Details=details,
    )


def event_raised(timestamp: datetime, name: str, input_text: str | None) -> HistoryEvent:
    return _event(EventType.EVENT_RAISED, timestamp, Name=name, Input=input_text)


def execution_terminated(timestamp: datetime, reason: str | None) -> HistoryEvent:
    return _event(EventType.EXECUTION_TERMINATED, timestamp, Input=reason)


def execution_completed(
    timestamp: datetime, event_id: int, status: str, result_text: str | None, details: str | None = None
) -> HistoryEvent:
    fields: dict[str, Any] = {"OrchestrationStatus": status, "Result": result_text}
    if details is not None:
        fields["Details"] = details
    return _event(EventType.EXECUTION_COMPLETED, timestamp, event_id, **fields)


def continue_as_new(timestamp: datetime, event_id: int, new_input_text: str | None) -> HistoryEvent:
    return _event(
        EventType.CONTINUE_AS_NEW, timestamp, event_id, OrchestrationStatus="ContinuedAsNew", Result=new_input_text
    )


def event_type_name(event: HistoryEvent) -> str:
    """PascalCase name of an event's type, e.g. ``TaskScheduled``."""
    return "".join(part.capitalize() for part in EventType(event["EventType"]).name.split("_"))


def dumps_event(event: HistoryEvent) -> str:
    return json.dumps(event, separators=(",", ":"))


# What a replay's bookkeeping never reads: the inputs and results an event carries (a raised event's input is read).
_PAYLOAD_FIELDS = ("Input", "Result", "Details")


def without_payload(event: HistoryEvent) -> HistoryEvent:
    """``event`` as a replay checks it: type, ids, names and times, not the payloads (kept serialized)."""
    if event["EventType"] == EventType.EVENT_RAISED:
        return event
    return {key: value for key, value in event.items() if key not in _PAYLOAD_FIELDS}


# What the Durable extension's status query drops of each event type (DurableClient.GetDurableOrchestrationStatusAsync).
_DROPPED_FIELDS = {
    "TaskScheduled": ("Version", "Input"), "SubOrchestrationInstanceCreated": ("Version", "Input"),
    "ExecutionStarted": ("OrchestrationInstance", "ParentInstance", "Version", "Tags", "Input"),
    "ExecutionTerminated": ("Input",), "TimerFired": ("TimerId",), "EventRaised": ("Input",),
}
_SCHEDULED_BY = {"TaskCompleted": "TaskScheduled", "TaskFailed": "TaskScheduled",
                 "SubOrchestrationInstanceCompleted": "SubOrchestrationInstanceCreated",
                 "SubOrchestrationInstanceFailed": "SubOrchestrationInstanceCreated"}
_WITH_RESULT = ("TaskCompleted", "SubOrchestrationInstanceCompleted", "ExecutionCompleted")


def extension_history(events: list[HistoryEvent], *, show_output: bool = False) -> list[dict[str, Any]]:
    """``historyEvents`` as the Durable extension returns them (``showHistory=true``): event types by name, no
    ``EventId`` / ``IsPlayed``; a completion carries its scheduling's ``FunctionName`` and ``ScheduledTime`` and the
    scheduling event itself is left out, as are OrchestratorStarted / OrchestratorCompleted; ``ExecutionStarted``
    names the orchestrator as ``FunctionName``; ``Result`` only with ``showHistoryOutput=true``, as JSON."""
    scheduled: dict[tuple[str, int], tuple[int, Any, Any]] = {}
    dropped: set[int] = set()
    view: list[dict[str, Any]] = []
    for index, event in enumerate(events):
        kind = event_type_name(event)
        item: dict[str, Any] = {"EventType": kind, **{k: v for k, v in event.items() if k != "EventType"}}
        if kind in ("TaskScheduled", "SubOrchestrationInstanceCreated"):
            scheduled[(kind, event["EventId"])] = (index, event.get("Name"), event.get("Timestamp"))
        elif kind in _SCHEDULED_BY:
            found = scheduled.get((_SCHEDULED_BY[kind], item.pop("TaskScheduledId", None)))
            if found is not None:
                dropped.add(found[0])
                item["ScheduledTime"], item["FunctionName"] = found[2], found[1]
        elif kind == "ExecutionStarted":
            item["FunctionName"] = item.pop("Name", None)
        elif kind in ("OrchestratorStarted", "OrchestratorCompleted"):
            dropped.add(index)
        for field in _DROPPED_FIELDS.get(kind, ()):
            item.pop(field, None)
        if kind in _WITH_RESULT:
            if show_output:
                item["Result"] = _json_or_text(item.get("Result"))
            else:
                item.pop("Result", None)
        item.pop("EventId", None)
        item.pop("IsPlayed", None)
        view.append(item)
    return [item for index, item in enumerate(view) if index not in dropped]


def _json_or_text(text: Any) -> Any:
    """The extension's ParseToJToken: JSON when it parses, else the text itself (null stays null)."""
    if not isinstance(text, str):
        return text
    stripped = text.strip()
    if not stripped:
        return ""
    try:
        return json.loads(stripped)
    except json.JSONDecodeError:
        return stripped
