"""A model of the Durable extension's out-of-process orchestration shim on top of DTFx.

The Python SDK returns, every episode, the whole list of actions its orchestrator has
scheduled so far (replay schema V2/V3). The Durable extension replays that list through
its ``OutOfProcOrchestrationShim`` on a .NET DTFx orchestration context: each top-level
action is invoked and awaited in turn (exceptions ignored), compound ``WhenAll`` /
``WhenAny`` actions invoke their children depth first, ``*WithRetry`` actions go
through DTFx's ``RetryInterceptor`` (failure -> durable timer -> call again), and every
activity, timer and sub-orchestration takes the next sequence number (task id) at
the moment it is invoked. DTFx matches those ids against the scheduling events
already in the history and fails the orchestration when they differ
(``NonDeterministicOrchestrationException``).

``ShimReplay`` re-implements that procedure over a history and an action list, so
the host assigns ids, creates retry timers and detects non-determinism exactly where
the real extension would, independently of the SDK's own bookkeeping.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from . import history as h
from .history import EventType, HistoryEvent

# OutOfProcOrchestrationShim.AsyncActionType
CALL_ACTIVITY = 0
CALL_ACTIVITY_WITH_RETRY = 1
CALL_SUB_ORCHESTRATOR = 2
CALL_SUB_ORCHESTRATOR_WITH_RETRY = 3
CONTINUE_AS_NEW = 4
CREATE_TIMER = 5
WAIT_FOR_EXTERNAL_EVENT = 6
CALL_ENTITY = 7
CALL_HTTP = 8
SIGNAL_ENTITY = 9
SCHEDULED_SIGNAL_ENTITY = 10
WHEN_ANY = 11
WHEN_ALL = 12

ACTION_TYPE_NAMES = {
    CALL_ACTIVITY: "CallActivity",
    CALL_ACTIVITY_WITH_RETRY: "CallActivityWithRetry",
    CALL_SUB_ORCHESTRATOR: "CallSubOrchestrator",
    CALL_SUB_ORCHESTRATOR_WITH_RETRY: "CallSubOrchestratorWithRetry",
    CONTINUE_AS_NEW: "ContinueAsNew",
    CREATE_TIMER: "CreateTimer",
    WAIT_FOR_EXTERNAL_EVENT: "WaitForExternalEvent",
    CALL_ENTITY: "CallEntity",
    CALL_HTTP: "CallHttp",
    SIGNAL_ENTITY: "SignalEntity",
    SCHEDULED_SIGNAL_ENTITY: "ScheduledSignalEntity",
    WHEN_ANY: "WhenAny",
    WHEN_ALL: "WhenAll",
}

# Durable Functions defaults (DurableTaskOptions.MaxOrchestrationActions, RetryOptions.MaxRetryInterval).
DEFAULT_MAX_ORCHESTRATION_ACTIONS = 100_000
DEFAULT_MAX_RETRY_INTERVAL = timedelta(days=6)


def unknown_function_message(name: object, kind: str, known: Iterable[str]) -> str:
    """The extension's ThrowIfFunctionDoesNotExist message; ``kind`` is "activity" or "orchestrator"."""
    listed = ", ".join(f"'{n}'" for n in sorted(known)) or "(none)"
    return (
        f"The function '{name}' doesn't exist, is disabled, or is not an {kind} function. "
        f"Additional info: The following are the known {kind} functions: {listed}."
    )


class ShimFailure(Exception):
    """The extension itself fails the orchestration (invalid action, unknown function...)."""


class NonDeterminismError(ShimFailure):
    """Replay scheduled something other than what the history recorded."""


@dataclass
class ScheduledWork:
    """One activity, timer or sub-orchestration the replay invoked, with its task id."""

    task_id: int
    kind: str  # "activity" | "timer" | "suborchestration"
    name: str | None
    input_text: str | None = None
    fire_at: str | None = None
    instance_id: str | None = None

    def describe(self) -> str:
        if self.kind == "activity":
            return f"activity '{self.name}'"
        if self.kind == "timer":
            return f"timer firing at {self.fire_at}"
        return f"sub-orchestration '{self.name}' (instance '{self.instance_id}')"


@dataclass
class ShimResult:
    new_work: list[ScheduledWork]  # invoked ids that the history does not record yet, in id order
    next_task_id: int
    continue_as_new_input: str | None
    continued_as_new: bool
    carryover_events: list[HistoryEvent]  # EventRaised processed after ContinueAsNew: go to the next execution
    waiting_on: list[str]


_PENDING, _SUCCEEDED, _FAILED, _CANCELED = "pending", "succeeded", "failed", "canceled"

# ScheduledWork.kind recorded by each scheduling event type (h.SCHEDULING_EVENT_TYPES).
_RECORDED_KIND = {
    EventType.TASK_SCHEDULED: "activity",
    EventType.TIMER_CREATED: "timer",
    EventType.SUB_ORCHESTRATION_INSTANCE_CREATED: "suborchestration",
}


class _Task:
    """A .NET Task as far as the shim can observe it: pending until it completes once."""

    __slots__ = ("callbacks", "label", "state")

    def __init__(self, label: str) -> None:
        self.state = _PENDING
        self.label = label
        self.callbacks: list[Callable[[_Task], None]] = []

    @property
    def done(self) -> bool:
        return self.state != _PENDING

    def on_done(self, callback: Callable[[_Task], None]) -> None:
        if self.done:
            callback(self)
        else:
            self.callbacks.append(callback)

    def finish(self, state: str) -> None:
        if self.done:
            return
        self.state = state
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:  # continuations run synchronously, as DTFx's scheduler does
            callback(self)


def _completed(label: str) -> _Task:
    task = _Task(label)
    task.state = _SUCCEEDED
    return task


class _WhenAll(_Task):
    """``Task.WhenAll``: completes when every child has completed (a failure does not end it early)."""

    __slots__ = ("remaining",)

    def __init__(self, children: list[_Task]) -> None:
        super().__init__("WhenAll")
        self.remaining = sum(1 for child in children if not child.done)
        for child in children:
            if not child.done:
                child.on_done(self._child_done)
        if self.remaining == 0:
            self.state = _FAILED if any(c.state == _FAILED for c in children) else _SUCCEEDED

    def _child_done(self, _child: _Task) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            self.finish(_SUCCEEDED)


class _WhenAny(_Task):
    """``Task.WhenAny``: completes (successfully) with the first child to complete, whatever its state."""

    def __init__(self, children: list[_Task]) -> None:
        super().__init__("WhenAny")
        if not children or any(child.done for child in children):
            self.state = _SUCCEEDED
            return
        for child in children:
            child.on_done(lambda _c: self.finish(_SUCCEEDED))


@dataclass
class _RetryPolicy:
    first_interval: timedelta
    max_attempts: int
    backoff: float = 1.0
    max_interval: timedelta = DEFAULT_MAX_RETRY_INTERVAL
    timeout: timedelta | None = None

    @classmethod
    def from_action(cls, options: dict[str, Any] | None, label: str) -> _RetryPolicy:
        if not options or "firstRetryIntervalInMilliseconds" not in options:
            raise ShimFailure(f"{label}: retryOptions.firstRetryIntervalInMilliseconds is required")
        first_ms = options["firstRetryIntervalInMilliseconds"]
        attempts = options.get("maxNumberOfAttempts")
        if not isinstance(first_ms, int | float) or first_ms <= 0:
            raise ShimFailure(f"{label}: retryOptions.firstRetryIntervalInMilliseconds must be > 0, got {first_ms!r}")
        if not isinstance(attempts, int) or attempts < 1:
            # DTFx's RetryInterceptor would never make the call and rethrow a null exception.
            raise ShimFailure(f"{label}: retryOptions.maxNumberOfAttempts must be >= 1, got {attempts!r}")
        policy = cls(timedelta(milliseconds=first_ms), attempts)
        # The Python SDK sends only the two fields above; other SDKs may send the rest.
        if "backoffCoefficient" in options:
            policy.backoff = float(options["backoffCoefficient"])
        if "maxRetryIntervalInMilliseconds" in options:
            policy.max_interval = timedelta(milliseconds=options["maxRetryIntervalInMilliseconds"])
        if "retryTimeoutInMilliseconds" in options:
            policy.timeout = timedelta(milliseconds=options["retryTimeoutInMilliseconds"])
        return policy

    def next_delay(self, attempt: int, first_attempt_at: datetime, now: datetime) -> timedelta:
        """RetryInterceptor.ComputeNextDelay: first x backoff^attempt, capped; zero once the timeout passed."""
        if self.timeout is not None and now >= first_attempt_at + self.timeout:
            return timedelta(0)
        delay_ms = self.first_interval.total_seconds() * 1000 * (self.backoff**attempt)
        delay = timedelta(milliseconds=delay_ms)
        return min(delay, self.max_interval)


class ShimReplay:
    """Replay one execution's history through the modelled shim and the action list."""

    def __init__(
        self,
        *,
        instance_id: str,
        execution_id: str,
        orchestrator_name: str,
        parent_instance_id: str | None,
        actions: Sequence[dict[str, Any]],
        activity_names: frozenset[str],
        orchestrator_names: frozenset[str],
        max_actions: int = DEFAULT_MAX_ORCHESTRATION_ACTIONS,
    ) -> None:
        self.instance_id = instance_id
        self.execution_id = execution_id
        self.orchestrator_name = orchestrator_name
        self.parent_instance_id = parent_instance_id
        self.actions = list(actions)
        self.activity_names = activity_names
        self.activity_names_folded = {name.lower(): name for name in activity_names}
        self.orchestrator_names_folded = {name.lower(): name for name in orchestrator_names}
        self.max_actions = max_actions

        self.now: datetime | None = None
        self.next_task_id = 0
        self.action_count = 0
        self.scheduled: dict[int, ScheduledWork] = {}
        self.recorded_ids: set[int] = set()
        self.open_tasks: dict[int, _Task] = {}
        self.waiters: dict[str, list[_Task]] = defaultdict(list)  # per event name, a stack (LIFO)
        self.buffered_events: dict[str, deque[str | None]] = defaultdict(deque)  # per event name, FIFO
        self.cursor = 0
        self.started = False
        self.continue_as_new_input: str | None = None
        self.continued_as_new = False
        self.carryover_events: list[HistoryEvent] = []
        self._advancing = False

    # ----------------------------------------------------------------- replay loop
    def run(self, history: Sequence[HistoryEvent]) -> ShimResult:
        for event in history:
            self._process(event)
        recorded = self.recorded_ids
        new_work = [work for task_id, work in sorted(self.scheduled.items()) if task_id not in recorded]
        return ShimResult(
            new_work=new_work,
            next_task_id=self.next_task_id,
            continue_as_new_input=self.continue_as_new_input,
            continued_as_new=self.continued_as_new,
            carryover_events=self.carryover_events,
            waiting_on=self._waiting_on(),
        )

    def _process(self, event: HistoryEvent) -> None:
        event_type = event["EventType"]
        if event_type == EventType.ORCHESTRATOR_STARTED:
            self.now = h.parse_time(event["Timestamp"])
        elif event_type == EventType.EXECUTION_STARTED:
            if not self.started:
                self.started = True
                self._advance()
        elif event_type in h.SCHEDULING_EVENT_TYPES:
            self._check_recorded(event)
        elif event_type in (EventType.TASK_COMPLETED, EventType.SUB_ORCHESTRATION_INSTANCE_COMPLETED):
            self._complete(event["TaskScheduledId"], _SUCCEEDED)
        elif event_type in (EventType.TASK_FAILED, EventType.SUB_ORCHESTRATION_INSTANCE_FAILED):
            self._complete(event["TaskScheduledId"], _FAILED)
        elif event_type == EventType.TIMER_FIRED:
            self._complete(event["TimerId"], _SUCCEEDED)
        elif event_type == EventType.EVENT_RAISED:
            if self.continued_as_new:
                # BehaviorOnContinueAsNew.Carryover (all DTFx backends): events that arrive after
                # ContinueAsNew was called are handed to the next execution.
                self.carryover_events.append(event)
            else:
                self._raise(event["Name"], event.get("Input"))

    def _complete(self, task_id: int, state: str) -> None:
        task = self.open_tasks.pop(task_id, None)
        if task is not None:  # else a duplicate or canceled-timer completion, which DTFx ignores
            task.finish(state)

    def _raise(self, name: str, input_text: str | None) -> None:
        # DurableOrchestrationContext.RaiseEvent: the newest waiter wins, else buffer (FIFO).
        stack = self.waiters.get(name)
        if stack:
            stack.pop().finish(_SUCCEEDED)
        else:
            self.buffered_events[name].append(input_text)

    def _advance(self) -> None:
        """ProcessAsyncActionsV2: invoke top-level actions one after another, awaiting each."""
        if self._advancing:
            return
        self._advancing = True
        try:
            while self.cursor < len(self.actions):
                action = self.actions[self.cursor]
                self.cursor += 1
                task = self._invoke(action)
                if not task.done:
                    task.on_done(self._on_top_level_done)
                    return
        finally:
            self._advancing = False

    def _on_top_level_done(self, _task: _Task) -> None:
        self._advance()

    # --------------------------------------------------------------- action invocation
    def _invoke(self, action: dict[str, Any]) -> _Task:
        action_type = action.get("actionType")
        label = ACTION_TYPE_NAMES.get(action_type, f"action type {action_type!r}")
        if action_type == CALL_ACTIVITY:
            name = self._activity_name(action)
            self._count_action()
            return self._schedule_activity(name, action.get("input"))
        if action_type == CALL_ACTIVITY_WITH_RETRY:
            name = self._activity_name(action)
            policy = _RetryPolicy.from_action(action.get("retryOptions"), f"{label} '{name}'")
            self._count_action()
            return self._retry(policy, lambda: self._schedule_activity(name, action.get("input")))
        if action_type == CALL_SUB_ORCHESTRATOR:
            name, instance_id = self._sub_orchestration_target(action)
            self._count_action()
            return self._schedule_sub_orchestration(name, instance_id, action.get("input"))
        if action_type == CALL_SUB_ORCHESTRATOR_WITH_RETRY:
            name, instance_id = self._sub_orchestration_target(action)
            policy = _RetryPolicy.from_action(action.get("retryOptions"), f"{label} '{name}'")
            self._count_action()
            return self._retry(policy, lambda: self._schedule_sub_orchestration(name, instance_id, action.get("input")))
        if action_type == CONTINUE_AS_NEW:
            self.continue_as_new_input = action.get("input")
            self.continued_as_new = True
            return _completed(label)
        if action_type == CREATE_TIMER:
            fire_at = action.get("fireAt")
            if not isinstance(fire_at, str):
                raise ShimFailure(f"CreateTimer action without a valid fireAt: {action!r}")
            try:
                fire_at = h.format_time(h.parse_time(fire_at))
            except ValueError:
                raise ShimFailure(f"CreateTimer action without a valid fireAt: {action!r}") from None
            self._count_action()
            task = self._schedule_timer(fire_at)
            if action.get("isCanceled"):
                # The shim cancels the CancellationToken right away: the task ends, the
                # timer message stays scheduled, and its TimerFired is later ignored.
                self.open_tasks.pop(self.next_task_id - 1, None)
                task.finish(_CANCELED)
            return task
        if action_type == WAIT_FOR_EXTERNAL_EVENT:
            name = action.get("externalEventName")
            if not name:
                raise ShimFailure(f"WaitForExternalEvent action without externalEventName: {action!r}")
            task = _Task(f"external event '{name}'")
            buffered = self.buffered_events.get(name)
            if buffered:
                buffered.popleft()
                task.state = _SUCCEEDED
            else:
                self.waiters[name].append(task)
            return task
        if action_type == WHEN_ALL:
            return _WhenAll([self._invoke(child) for child in action.get("compoundActions") or []])
        if action_type == WHEN_ANY:
            return _WhenAny([self._invoke(child) for child in action.get("compoundActions") or []])
        if action_type in (CALL_ENTITY, SIGNAL_ENTITY, SCHEDULED_SIGNAL_ENTITY):
            raise ShimFailure(f"{label}: durable entities are not supported by the local durable host")
        if action_type == CALL_HTTP:
            raise ShimFailure("CallHttp: durable HTTP calls are not supported by the local durable host")
        raise ShimFailure(f"Received an unexpected action type from the out-of-proc function: {action_type!r}")

    def _activity_name(self, action: dict[str, Any]) -> str:
        name = action.get("functionName")
        if not name:
            raise ShimFailure(f"activity action without functionName: {action!r}")
        # ThrowIfFunctionDoesNotExist (function names are case-insensitive in Functions).
        registered = self.activity_names_folded.get(str(name).lower())
        if registered is None:
            raise ShimFailure(unknown_function_message(name, "activity", self.activity_names))
        return str(name)

    def _sub_orchestration_target(self, action: dict[str, Any]) -> tuple[str, str | None]:
        name = action.get("functionName")
        if not name or str(name).lower() not in self.orchestrator_names_folded:
            raise ShimFailure(unknown_function_message(name, "orchestrator", self.orchestrator_names_folded.values()))
        instance_id = action.get("instanceId")
        if instance_id is not None:
            folded = str(instance_id).lower()
            if folded == self.instance_id.lower() or (
                self.parent_instance_id is not None and folded == self.parent_instance_id.lower()
            ):
                raise ShimFailure(
                    "The instance ID of a sub-orchestration must be different than the instance ID "
                    "of a parent orchestration."
                )
            if str(instance_id).startswith("@"):
                raise ShimFailure("Orchestration instance ids must not start with @")
        return str(name), instance_id

    def _count_action(self) -> None:
        self.action_count += 1
        if self.action_count > self.max_actions:
            raise ShimFailure(
                f"Maximum amount of orchestration actions ({self.max_actions:,}) has been reached. "
                "This value can be configured in host.json file as MaxOrchestrationActions."
            )

    def _new_task_id(self) -> int:
        task_id = self.next_task_id
        self.next_task_id += 1
        return task_id

    def _open(self, work: ScheduledWork, label: str) -> _Task:
        """Record scheduled work under its task id and return the task awaiting its completion."""
        self.scheduled[work.task_id] = work
        task = _Task(label)
        self.open_tasks[work.task_id] = task
        return task

    def _schedule_activity(self, name: str, input_text: str | None) -> _Task:
        task_id = self._new_task_id()
        work = ScheduledWork(task_id, "activity", name, input_text=input_text)
        return self._open(work, f"activity '{name}' (task {task_id})")

    def _schedule_timer(self, fire_at: str) -> _Task:
        task_id = self._new_task_id()
        work = ScheduledWork(task_id, "timer", None, fire_at=fire_at)
        return self._open(work, f"timer {task_id} firing at {fire_at}")

    def _schedule_sub_orchestration(self, name: str, instance_id: str | None, input_text: str | None) -> _Task:
        task_id = self._new_task_id()
        # DTFx TaskOrchestrationContext: a missing id becomes "<parent execution id>:<task id>".
        actual_id = instance_id if instance_id and instance_id.strip() else f"{self.execution_id}:{task_id}"
        work = ScheduledWork(task_id, "suborchestration", name, input_text=input_text, instance_id=actual_id)
        return self._open(work, f"sub-orchestration '{name}' instance '{actual_id}' (task {task_id})")

    def _retry(self, policy: _RetryPolicy, call: Callable[[], _Task]) -> _Task:
        """RetryInterceptor.Invoke: call; on failure wait a durable timer and call again. After the last attempt
        a timer that fires at once (DurableTask.Core keeps that timer for replay compatibility, and the Python
        SDK waits for it), so the failure surfaces without a further interval."""
        outer = _Task("retry")
        first_attempt_at = self._require_now()
        attempt = 0

        def start_attempt() -> None:
            call().on_done(attempt_done)

        def attempt_done(inner: _Task) -> None:
            if inner.state == _SUCCEEDED:
                outer.finish(_SUCCEEDED)
                return
            if attempt + 1 >= policy.max_attempts:
                self._schedule_timer(h.format_time(self._require_now())).on_done(timer_done)
                return
            delay = policy.next_delay(attempt, first_attempt_at, self._require_now())
            if delay <= timedelta(0):
                outer.finish(_FAILED)
                return
            fire_at = h.format_time(self._require_now() + delay)
            self._schedule_timer(fire_at).on_done(timer_done)

        def timer_done(_timer: _Task) -> None:
            nonlocal attempt
            attempt += 1
            if attempt < policy.max_attempts:
                start_attempt()
            else:
                outer.finish(_FAILED)

        start_attempt()
        return outer

    def _require_now(self) -> datetime:
        if self.now is None:
            raise ShimFailure("history does not start with an OrchestratorStarted event")
        return self.now

    # ---------------------------------------------------------- non-determinism check
    def _check_recorded(self, event: HistoryEvent) -> None:
        task_id = event["EventId"]
        kind = _RECORDED_KIND[event["EventType"]]
        self.recorded_ids.add(task_id)
        work = self.scheduled.get(task_id)
        if work is None:
            raise NonDeterminismError(self._non_determinism(event, "has not (yet?) scheduled this task."))
        if work.kind != kind or (kind != "timer" and str(work.name).lower() != str(event.get("Name")).lower()):
            found = f"instead scheduled {work.describe()} at this sequence number."
            raise NonDeterminismError(self._non_determinism(event, found))

    def _non_determinism(self, event: HistoryEvent, found: str) -> str:
        event_type = event["EventType"]
        if event_type == EventType.TASK_SCHEDULED:
            recorded = f"activity '{event.get('Name')}'"
        elif event_type == EventType.TIMER_CREATED:
            recorded = f"timer firing at {event.get('FireAt')}"
        else:
            recorded = f"sub-orchestration '{event.get('Name')}' (instance '{event.get('InstanceId')}')"
        return (
            f"Non-deterministic orchestration: instance '{self.instance_id}' (orchestrator "
            f"'{self.orchestrator_name}'): a previous execution scheduled {recorded} with sequence number "
            f"{event['EventId']}, but the current replay {found} Was the orchestrator code changed after "
            "the instance started, or does it depend on non-deterministic values (current time, random "
            "numbers, I/O)?"
        )

    # --------------------------------------------------------------- diagnostics
    def _waiting_on(self) -> list[str]:
        waiting = [task.label for _task_id, task in sorted(self.open_tasks.items())]
        for name, stack in sorted(self.waiters.items()):
            if stack:
                waiting.append(f"external event '{name}'")
        return waiting
