"""Orchestrator episodes of the local durable host: replay through the SDK handle, then commit the actions.

One episode of an instance takes a batch of its queued messages (as the Azure Storage backend
delivers up to 32 per poll), sends the app's orchestrator handle the context JSON the extension
sends (the DTFx history plus the new events), interprets the returned actions through
``shim.ShimReplay`` and commits the outcome: scheduling events, activity jobs, durable timers,
sub-orchestrations, completion or failure (reported to a parent), continue-as-new, termination.
"""

from __future__ import annotations

import functools
import importlib
import json
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from azure.functions._durable_functions import OrchestrationContext

from . import history as h
from .activities import ActivityJob, ActivityWorkers
from .functions import FunctionInfo, FunctionRegistry
from .history import HistoryEvent
from .shim import ScheduledWork, ShimFailure, ShimReplay, ShimResult
from .store import (
    ACTIVE_STATUSES,
    COMPLETED,
    CONTINUED_AS_NEW,
    FAILED,
    PENDING,
    RUNNING,
    TERMINAL_STATUSES,
    TERMINATED,
    Instance,
    InstanceStore,
    Message,
    ParentLink,
    PendingTimer,
)


def _memoize_sdk_timestamp_parsing() -> None:
    """Every replay re-parses every history timestamp with dateutil (the bulk of replay time).

    The strings repeat from replay to replay and datetimes are immutable, so memoizing the
    SDK's own parser changes no result, only the cost of long-running local simulations.
    """
    history_event_module = importlib.import_module("azure.durable_functions.models.history.HistoryEvent")

    parse = history_event_module.dt_parse
    if not hasattr(parse, "cache_info"):
        history_event_module.dt_parse = functools.lru_cache(maxsize=1 << 16)(parse)


_memoize_sdk_timestamp_parsing()

_OUT_OF_PROC_MARKER = "$OutOfProcData$:"

# Azure Storage's timer limits, sent to the SDK so it splits long timers (replay schema V3).
AZURE_STORAGE_MAX_SHORT_TIMER = timedelta(days=6)
AZURE_STORAGE_LONG_TIMER_INTERVAL = timedelta(days=3)


def _timespan(delta: timedelta) -> str:
    """.NET TimeSpan "c" format, e.g. ``6.00:00:00``."""
    total = int(delta.total_seconds())
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    return f"{days}.{text}" if days else text


@dataclass(frozen=True)
class EpisodeSettings:
    """How episodes run: messages per episode, the timer limits sent to the SDK, the action cap, recording."""

    batch_size: int
    max_short_timer: timedelta | None  # None: the SDK gets no long-timer limits (one timer, however long)
    long_timer_interval: timedelta
    max_orchestration_actions: int
    record_episodes: bool


@dataclass
class EpisodeRecord:
    """What one episode exchanged with the SDK (kept when ``record_episodes=True``)."""

    instance_id: str
    execution_id: str
    context_json: str
    state: dict[str, Any] | None
    error: str | None


@dataclass
class _EpisodeOutcome:
    """What calling the orchestrator handle produced, before it is committed."""

    state: dict[str, Any] | None = None
    replay: ShimResult | None = None
    failure: tuple[str, str] | None = None  # (reason, details): the extension fails the instance
    stack: str | None = None


class _OrchestratorCrash(Exception):
    """The orchestrator handle raised something that is not the SDK's $OutOfProcData$ failure."""


class EpisodeRunner:
    """Runs the episodes of instances with queued messages and commits what their orchestrators decided.

    The SDK call runs outside the lock (marked runnable on the clock); taking the batch and
    committing the outcome hold it.
    """

    def __init__(
        self, store: InstanceStore, workers: ActivityWorkers, registry: FunctionRegistry, settings: EpisodeSettings
    ) -> None:
        self.store = store
        self.sync = store.sync
        self.workers = workers
        self.registry = registry
        self.settings = settings
        self.log: list[EpisodeRecord] = []
        self._activity_names = registry.activity_names()
        self._orchestrator_names = registry.orchestrator_names()

    def episode_log(self, instance_id: str | None = None) -> list[EpisodeRecord]:
        with self.sync.lock:
            return [r for r in self.log if instance_id is None or r.instance_id == instance_id]

    def run_ready_episodes(self) -> None:
        """One episode per instance with queued messages, in id order, until no inbox holds any."""
        while True:
            ready = self.store.ready_instance_ids()
            if not ready:
                return
            for instance_id in ready:
                self._run_episode(instance_id)

    # ------------------------------------------------------------------ one episode
    def _take_batch(self, instance: Instance) -> list[Message]:
        batch: list[Message] = []
        limit = self.settings.batch_size
        while instance.inbox and len(batch) < limit:
            message = instance.inbox.popleft()
            if message.execution_id is not None and message.execution_id != instance.execution_id:
                continue  # addressed to an execution that no longer exists (DTFx discards it)
            batch.append(message)
        return batch

    def _run_episode(self, instance_id: str) -> None:
        with self.sync.lock:
            instance = self.store.instances.get(instance_id)
            if instance is None:
                return
            if instance.status in TERMINAL_STATUSES:
                instance.inbox.clear()
                return
            batch = self._take_batch(instance)
            if not batch:
                return
            now = self.sync.clock.now()
            terminate = next((m for m in batch if m.kind == "terminate"), None)
            if terminate is not None:
                self._terminate_now(instance, batch, terminate, now)
                return
            new_events = [h.orchestrator_started(now)] + [m.event for m in batch if m.event is not None]
            history = instance.history + new_events
            context_json = self._context_json(instance, new_events)
            info = self.registry.orchestrator(instance.name)
        with self.sync.runnable():
            outcome = self._execute_orchestrator(instance, info, context_json, history)
        with self.sync.lock:
            self._commit_episode(instance, new_events, outcome, now, context_json)
            self.sync.signal()

    def _context_json(self, instance: Instance, new_events: list[HistoryEvent]) -> str:
        fields: dict[str, Any] = {
            "input": instance.input_text,
            "instanceId": instance.instance_id,
            "isReplaying": bool(instance.history),
            "parentInstanceId": instance.parent.instance_id if instance.parent else None,
            "upperSchemaVersion": 1,
            "upperSchemaVersionNew": 2,
        }
        settings = self.settings
        if settings.max_short_timer is not None:
            fields["maximumShortTimerDuration"] = _timespan(settings.max_short_timer)
            fields["longRunningTimerIntervalDuration"] = _timespan(settings.long_timer_interval)
        # Played events are serialized once (history_json); only this episode's new ones are dumped here.
        parts = instance.history_json + [h.dumps_event(event) for event in new_events]
        return '{"history":[' + ",".join(parts) + "]," + json.dumps(fields)[1:]

    def _execute_orchestrator(
        self, instance: Instance, info: FunctionInfo | None, context_json: str, history: list[HistoryEvent]
    ) -> _EpisodeOutcome:
        outcome = _EpisodeOutcome()
        if info is None:
            outcome.failure = (f"The orchestrator function '{instance.name}' is not registered in this app.", "")
            return outcome
        try:
            state_json = info.user_function(OrchestrationContext(context_json))
            if not isinstance(state_json, str):
                raise _OrchestratorCrash(
                    f"orchestrator handle returned {type(state_json).__name__}, expected the state JSON string "
                    "(is the function registered with @app.orchestration_trigger?)"
                )
            outcome.state = json.loads(state_json)
        except _OrchestratorCrash as exc:
            outcome.failure = (f"Orchestrator function '{instance.name}' failed: {exc}", "")
        except Exception as exc:
            message = str(exc)
            marker = message.find(_OUT_OF_PROC_MARKER)
            if marker < 0:
                outcome.failure = (
                    f"Orchestrator function '{instance.name}' failed: {message or type(exc).__name__}",
                    "".join(traceback.format_exception(exc)),
                )
            else:
                # User code raised: the SDK's state (with "error") follows the marker.
                outcome.state = json.loads(message[marker + len(_OUT_OF_PROC_MARKER) :])
                cause = exc.__cause__ or exc
                outcome.stack = "".join(traceback.format_exception(cause))
        if outcome.state is not None:
            actions_outer = outcome.state.get("actions") or [[]]
            if len(actions_outer) != 1:
                outcome.failure = (
                    f"With OOProc schema V3, expected actions array to be of length 1 in outer layer but got "
                    f"size: {len(actions_outer)}",
                    "",
                )
                return outcome
            replay = ShimReplay(
                instance_id=instance.instance_id,
                execution_id=instance.execution_id,
                orchestrator_name=instance.name,
                parent_instance_id=instance.parent.instance_id if instance.parent else None,
                actions=actions_outer[0],
                activity_names=self._activity_names,
                orchestrator_names=self._orchestrator_names,
                max_actions=self.settings.max_orchestration_actions,
            )
            try:
                outcome.replay = replay.run(history)
            except ShimFailure as exc:
                outcome.failure = (f"Orchestrator function '{instance.name}' failed: {exc}", "")
        return outcome

    # ------------------------------------------------------------------ committing
    def _commit_episode(
        self,
        instance: Instance,
        new_events: list[HistoryEvent],
        outcome: _EpisodeOutcome,
        now: datetime,
        context_json: str,
    ) -> None:
        if self.settings.record_episodes:
            error = outcome.failure[0] if outcome.failure else None
            self.log.append(
                EpisodeRecord(instance.instance_id, instance.execution_id, context_json, outcome.state, error)
            )
        self.store.metrics.record_episode(instance.instance_id, len(instance.history) + len(new_events))

        self._append(instance, new_events)
        state = outcome.state or {}
        if "customStatus" in state:
            instance.custom_status = state["customStatus"]
        # Work is handed out only after the whole episode is recorded (as the extension commits first).
        side_effects: list[Callable[[], None]] = []
        replay = outcome.replay
        if outcome.failure is None and replay is not None:
            scheduling = [self._schedule(instance, work, now, side_effects) for work in replay.new_work]
            self._append(instance, scheduling)
            instance.waiting_on = replay.waiting_on
        next_id = replay.next_task_id if replay is not None else 0
        error = state.get("error")
        if outcome.failure is None and error:
            details = f"Message: {error}, StackTrace: {outcome.stack or ''}"
            outcome.failure = (f"Orchestrator function '{instance.name}' failed: {error}", details)
        continued_as_new = False
        if outcome.failure is not None:
            reason, details = outcome.failure
            self._append(instance, [h.execution_completed(now, next_id, FAILED, reason, details or None)])
            self._finish(instance, FAILED, now, output=reason, details=details)
        elif state.get("isDone"):
            continued_as_new = replay is not None and replay.continued_as_new
            if continued_as_new:
                self._append(instance, [h.continue_as_new(now, next_id, replay.continue_as_new_input)])
            else:
                output = state.get("output")
                self._append(instance, [h.execution_completed(now, next_id, COMPLETED, json.dumps(output))])
                self._finish(instance, COMPLETED, now, output=output)
        elif instance.status in (PENDING, CONTINUED_AS_NEW):
            instance.status = RUNNING
        self._append(instance, [h.orchestrator_completed(now)])
        self._mark_played(instance)
        instance.last_updated_time = now
        if continued_as_new:
            self._continue_as_new(instance, replay.continue_as_new_input, replay.carryover_events, now)
        for effect in side_effects:
            effect()

    def _schedule(
        self, instance: Instance, work: ScheduledWork, now: datetime, side_effects: list[Callable[[], None]]
    ) -> HistoryEvent:
        """The scheduling event for ``work``; what starts it goes to ``side_effects``."""
        if work.kind == "activity":
            job = ActivityJob(instance.instance_id, instance.execution_id, work.task_id, work.name, work.input_text)
            side_effects.append(lambda: self.workers.submit(job))
            return h.task_scheduled(now, work.task_id, work.name, work.input_text)
        if work.kind == "timer":
            fire_at = h.parse_time(work.fire_at)
            pending = PendingTimer(fire_at, instance.instance_id, work.task_id, instance.execution_id, work.fire_at)
            side_effects.append(lambda: self.store.add_timer(pending))
            return h.timer_created(now, work.task_id, work.fire_at)
        link = ParentLink(instance.instance_id, instance.execution_id, work.task_id, instance.name)
        side_effects.append(lambda: self._start_child(work.name, work.instance_id, work.input_text, link, now))
        return h.sub_orchestration_created(now, work.task_id, work.name, work.instance_id, work.input_text)

    def _append(self, instance: Instance, events: list[HistoryEvent]) -> None:
        instance.history.extend(events)

    def _mark_played(self, instance: Instance) -> None:
        # Events of finished episodes are sent with IsPlayed=true from now on.
        start = len(instance.history_json)
        for event in instance.history[start:]:
            event["IsPlayed"] = True
            instance.history_json.append(h.dumps_event(event))

    def _terminate_now(self, instance: Instance, batch: list[Message], message: Message, now: datetime) -> None:
        events = [h.orchestrator_started(now)]
        events += [m.event for m in batch if m.kind == "start" and m.event is not None]
        events.append(h.execution_terminated(now, message.reason))
        events.append(h.execution_completed(now, -1, TERMINATED, message.reason))
        events.append(h.orchestrator_completed(now))
        self._append(instance, events)
        self._mark_played(instance)
        instance.inbox.clear()
        instance.last_updated_time = now
        self._finish(instance, TERMINATED, now, output=message.reason)
        self.sync.signal()

    def _finish(
        self, instance: Instance, status: str, now: datetime, *, output: Any, details: str | None = None
    ) -> None:
        """End the execution with ``status``; a sub-orchestration reports to its parent's execution."""
        instance.status = status
        instance.output = output
        instance.waiting_on = []
        parent = instance.parent
        if parent is None:
            return
        parent_instance = self.store.active_execution(parent.instance_id, parent.execution_id)
        if parent_instance is None:
            return
        if status == COMPLETED:
            event = h.sub_orchestration_completed(now, parent.task_id, json.dumps(output))
        else:
            event = h.sub_orchestration_failed(now, parent.task_id, str(output), details or "")
        parent_instance.inbox.append(Message("completion", event, parent.execution_id))

    def _continue_as_new(
        self, instance: Instance, input_text: str | None, carryover: list[HistoryEvent], now: datetime
    ) -> None:
        instance.execution_id = self.store.next_execution_id(instance.instance_id)
        instance.status = CONTINUED_AS_NEW
        instance.input_text = input_text
        instance.previous_histories.append(instance.history)
        instance.history = []
        instance.history_json = []
        instance.waiting_on = []
        instance.created_time = now
        self.store.metrics.counts["executions"] += 1
        # Messages for the old execution are dropped; queued raised events (no execution id) stay,
        # behind the events DTFx carries over from the last episode.
        carried = [Message("event", dict(event, IsPlayed=False)) for event in carryover]
        queued = [m for m in instance.inbox if m.execution_id is None]
        instance.inbox = deque([self.store.start_message(instance, now), *carried, *queued])

    def _start_child(
        self, name: str, instance_id: str, input_text: str | None, parent: ParentLink, now: datetime
    ) -> None:
        existing = self.store.instances.get(instance_id)
        if existing is not None and existing.status in ACTIVE_STATUSES:
            parent_instance = self.store.instances[parent.instance_id]
            reason = f"An Orchestration instance with the status {existing.status} already exists."
            event = h.sub_orchestration_failed(now, parent.task_id, reason, "")
            parent_instance.inbox.append(Message("completion", event, parent.execution_id))
            return
        info = self.registry.orchestrator(name)
        self.store.create_instance(instance_id, info.durable_name if info else name, input_text, parent=parent)
