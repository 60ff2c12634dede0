"""Orchestration histories for unit tests, built event by event the way the Durable extension sends them.

In the style of azure-functions-durable-python's ``tests/test_utils/ContextBuilder.py``: a test writes
what the orchestrator decided (TaskScheduled, TimerCreated) and what came back (TaskCompleted,
TimerFired, EventRaised), each answer in an episode of its own (OrchestratorCompleted, then
OrchestratorStarted at the answer's time), and :meth:`History.replay` feeds the context JSON to the
orchestrator registered on ``function_app.app``, through the SDK's own handle, and returns its state.

Task ids are given in order, one per activity, sub-orchestration or timer, as the SDK numbers its tasks;
waiting for an external event takes none, a retry (its timer, the task scheduled again) takes ids but is no
action. The history remembers every action it holds (its label and, for a timer, its fire time), and
:meth:`History.replay` checks that the orchestrator took exactly those, in that order: a test's history is
its expectation too. :attr:`State.new_steps` are the actions the orchestrator took after the history ends.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from functools import cache
from itertools import zip_longest
from typing import Any

from azure.durable_functions.models.utils.df_serialization import df_dumps

from arc_hotpatch.durable_host.functions import list_functions

T0 = datetime(2025, 11, 3, 9, 0, tzinfo=UTC)  # a Monday, 09:00 UTC
STEP = timedelta(seconds=30)  # how long an activity takes unless a test says otherwise
OUT_OF_PROC = "$OutOfProcData$:"
_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # azure.durable_functions.constants.DATETIME_STRING_FORMAT


class EventType(IntEnum):
    EXECUTION_STARTED = 0
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
    EVENT_RAISED = 15


class ActionType(IntEnum):
    CALL_ACTIVITY = 0
    CALL_ACTIVITY_WITH_RETRY = 1
    CALL_SUB_ORCHESTRATOR = 2
    CONTINUE_AS_NEW = 4
    CREATE_TIMER = 5
    WAIT_FOR_EXTERNAL_EVENT = 6
    WHEN_ANY = 11
    WHEN_ALL = 12


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_FORMAT)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@cache
def registered_orchestrator(name: str) -> Callable[[str], str]:
    """The user function the Functions worker calls for orchestrator ``name`` (the SDK's handle)."""
    import function_app

    for function in list_functions(function_app.app):
        if function.get_function_name() == name:
            return function.get_user_function()
    raise LookupError(f"no function {name!r} registered on function_app.app")


class History:
    """One orchestration execution's history; every method appends events and returns ``self``
    (or, for what the orchestrator decided, the task id it got)."""

    def __init__(self, orchestrator: str, input_: Any, *, start: datetime = T0, instance_id: str = "unit") -> None:
        self.orchestrator = orchestrator
        self.input_text = json.dumps(input_)
        self.instance_id = instance_id
        self.now = start
        self.events: list[dict[str, Any]] = []
        self.expected: list[tuple[str, datetime | None]] = []  # (label, fire time) of each action it holds
        self._next_id = 0
        self._append(EventType.ORCHESTRATOR_STARTED)
        self._append(EventType.EXECUTION_STARTED, Name=orchestrator, Version="", Input=self.input_text)

    @property
    def actions(self) -> int:
        """How many top-level actions of the orchestrator the history holds."""
        return len(self.expected)

    def _append(self, kind: EventType, event_id: int = -1, **fields: Any) -> None:
        self.events.append(
            {"EventType": int(kind), "EventId": event_id, "IsPlayed": False, "Timestamp": format_time(self.now),
             **fields}
        )

    def _task_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _new_action(self, label: str, fire_at: datetime | None = None) -> int:
        self.expected.append((label, fire_at))
        return self._task_id()

    def _episode(self, at: datetime) -> None:
        """End the episode that decided, start the one that receives an answer at ``at``."""
        self._append(EventType.ORCHESTRATOR_COMPLETED)
        self.now = max(self.now, at)
        self._append(EventType.ORCHESTRATOR_STARTED)

    # --- what the orchestrator decided (one call per top-level action) -------------------------------

    def scheduled(self, name: str, label: str | None = None) -> int:
        """An activity call (with or without retry): TaskScheduled; returns its task id. ``label``: the step's
        label as :class:`Step` shows it, when it is more than the name (``start_script:readiness``)."""
        task_id = self._new_action(label or name)
        self._append(EventType.TASK_SCHEDULED, task_id, Name=name, Version="")
        return task_id

    def timer_created(self, fire_at: datetime) -> int:
        """A timer (alone, or with an external event in a WhenAny: still one action); returns its id."""
        task_id = self._new_action("timer", fire_at)
        self._append(EventType.TIMER_CREATED, task_id, FireAt=format_time(fire_at))
        return task_id

    def sub_orchestration_created(self, name: str) -> int:
        task_id = self._new_action(name)
        self._append(EventType.SUB_ORCHESTRATION_INSTANCE_CREATED, task_id, Name=name, Version="")
        return task_id

    # --- what came back (each in a new episode) ------------------------------------------------------

    def completed(self, task_id: int, result: Any, *, took: timedelta = STEP,
                  kind: EventType = EventType.TASK_COMPLETED) -> History:
        """TaskCompleted (or ``kind``) with ``result`` encoded as the SDK's activity converter encodes it."""
        self._episode(self.now + took)
        self._append(kind, TaskScheduledId=task_id, Result=df_dumps(result))
        return self

    def failed(self, task_id: int, reason: str, *, took: timedelta = STEP,
               kind: EventType = EventType.TASK_FAILED) -> History:
        self._episode(self.now + took)
        self._append(kind, TaskScheduledId=task_id, Reason=reason, Details=f"{reason} (details)")
        return self

    def fired(self, timer_id: int, fire_at: datetime) -> History:
        self._episode(fire_at)
        self._append(EventType.TIMER_FIRED, TimerId=timer_id, FireAt=format_time(fire_at))
        return self

    def raised(self, name: str, payload: Any, *, after: timedelta = STEP) -> History:
        self._episode(self.now + after)
        self._append(EventType.EVENT_RAISED, Name=name, Input=json.dumps(payload))
        return self

    # --- the usual pairs -------------------------------------------------------------------------------

    def activity(self, name: str, result: Any, *, label: str | None = None, took: timedelta = STEP) -> History:
        return self.completed(self.scheduled(name, label), result, took=took)

    def activity_fails(self, name: str, reason: str, *, label: str | None = None) -> History:
        return self.failed(self.scheduled(name, label), reason)

    def activity_fails_every_retry(self, name: str, reason: str, *, attempts: int, interval: timedelta) -> History:
        """An activity called with retry failing all ``attempts``: after each failure the retry timer fires and the
        task is scheduled again, under new ids; after the last one a timer that fires at once (DurableTask.Core's
        RetryInterceptor keeps it for replay compatibility; the SDK waits for it)."""
        task_id = self.scheduled(name)
        for attempt in range(attempts):
            self.failed(task_id, reason)
            timer_id = self._task_id()
            wait = interval if attempt < attempts - 1 else timedelta(0)
            self._append(EventType.TIMER_CREATED, timer_id, FireAt=format_time(self.now + wait))
            self.fired(timer_id, self.now + wait)
            if attempt < attempts - 1:
                task_id = self._task_id()
                self._append(EventType.TASK_SCHEDULED, task_id, Name=name, Version="")
        return self

    def timer(self, fire_at: datetime) -> History:
        return self.fired(self.timer_created(fire_at), fire_at)

    def sub_orchestration(self, name: str, result: Any = None) -> History:
        return self.completed(self.sub_orchestration_created(name), result,
                              kind=EventType.SUB_ORCHESTRATION_INSTANCE_COMPLETED)

    def sub_orchestration_fails(self, name: str, reason: str) -> History:
        return self.failed(self.sub_orchestration_created(name), reason,
                           kind=EventType.SUB_ORCHESTRATION_INSTANCE_FAILED)

    # --- running it ------------------------------------------------------------------------------------

    def context_json(self) -> str:
        return json.dumps({
            "history": self.events, "input": self.input_text, "instanceId": self.instance_id,
            "isReplaying": False, "parentInstanceId": None, "upperSchemaVersion": 1, "upperSchemaVersionNew": 2,
        })

    def replay(self) -> State:
        """The orchestrator's state after this history (also when the orchestrator raised); first checks that
        the orchestrator took the actions the history holds, in order (labels and timers' fire times)."""
        handle = registered_orchestrator(self.orchestrator)
        try:
            text = handle(self.context_json())
        except Exception as exc:
            message = str(exc)
            if OUT_OF_PROC not in message:
                raise
            text = message.split(OUT_OF_PROC, 1)[1]
        state = State(json.loads(text), self.actions)
        taken = [(step.label, step.fire_at) for step in state.recorded_steps if not step.label.startswith("wait:")]
        assert taken == self.expected, (
            f"the orchestrator did not take the history's actions (error: {state.error}):\n"
            + "\n".join(f"  took {t!s:70} history {e}" for t, e in zip_longest(taken, self.expected))
        )
        return state


@dataclass(frozen=True)
class Step:
    """One action, readable: ``label`` is the activity's (or sub-orchestrator's) name, with ``:<script>`` when
    its input names a script, ``timer``, ``wait:<event>`` or ``continue_as_new``; ``input`` the decoded input
    (an envelope's data); ``instance_id`` a sub-orchestration's; ``retry`` an activity's retry options, if any
    (not compared: a test that cares asserts them)."""

    label: str
    input: Any = None
    fire_at: datetime | None = None
    canceled: bool = False
    instance_id: str | None = None
    retry: dict[str, Any] | None = field(default=None, compare=False)


def _decode_input(text: str | None) -> Any:
    value = json.loads(text) if text else None
    if isinstance(value, dict) and "__data__" in value:
        return value["__data__"]
    return value


def _steps(action: dict[str, Any]) -> Iterator[Step]:
    kind = action["actionType"]
    if kind in (ActionType.WHEN_ANY, ActionType.WHEN_ALL):
        for inner in action["compoundActions"]:
            yield from _steps(inner)
    elif kind in (ActionType.CALL_ACTIVITY, ActionType.CALL_ACTIVITY_WITH_RETRY):
        data = _decode_input(action.get("input"))
        script = data.get("script") if isinstance(data, dict) else None
        label = f"{action['functionName']}:{script}" if script else action["functionName"]
        yield Step(label, data, retry=action.get("retryOptions"))
    elif kind == ActionType.CALL_SUB_ORCHESTRATOR:
        yield Step(action["functionName"], _decode_input(action.get("input")), instance_id=action.get("instanceId"))
    elif kind == ActionType.CONTINUE_AS_NEW:
        yield Step("continue_as_new", _decode_input(action.get("input")))
    elif kind == ActionType.CREATE_TIMER:
        yield Step("timer", fire_at=parse_time(action["fireAt"]), canceled=action.get("isCanceled", False))
    elif kind == ActionType.WAIT_FOR_EXTERNAL_EVENT:
        yield Step(f"wait:{action['externalEventName']}")
    else:
        yield Step(f"action_type_{kind}", action)


class State:
    """The orchestrator's returned state; ``recorded``: how many top-level actions the history held."""

    def __init__(self, raw: dict[str, Any], recorded: int) -> None:
        self.raw = raw
        self.recorded = recorded
        self._actions = [action for group in raw.get("actions") or [] for action in group]

    @property
    def is_done(self) -> bool:
        return bool(self.raw.get("isDone"))

    @property
    def output(self) -> Any:
        return self.raw.get("output")

    @property
    def error(self) -> str | None:
        return self.raw.get("error")

    @property
    def custom_status(self) -> Any:
        return self.raw.get("customStatus")

    @property
    def steps(self) -> list[Step]:
        """Every action so far, in order."""
        return [step for action in self._actions for step in _steps(action)]

    @property
    def recorded_steps(self) -> list[Step]:
        """The actions the history holds (answered or not)."""
        return [step for action in self._actions[:self.recorded] for step in _steps(action)]

    @property
    def new_steps(self) -> list[Step]:
        """The actions taken after the history ends: what the orchestrator waits for next."""
        return [step for action in self._actions[self.recorded:] for step in _steps(action)]

    @property
    def labels(self) -> list[str]:
        return [step.label for step in self.steps]

    @property
    def new_labels(self) -> list[str]:
        return [step.label for step in self.new_steps]

    @property
    def timers(self) -> list[datetime]:
        return [step.fire_at for step in self.steps if step.fire_at is not None]

    @property
    def continued_with(self) -> Any:
        """The input it continued as new with (None when it did not)."""
        return next((step.input for step in self.new_steps if step.label == "continue_as_new"), None)
