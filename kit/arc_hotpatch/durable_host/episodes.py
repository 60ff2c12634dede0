"""Orchestrator episodes of the local durable host: replay through the SDK handle, then commit the actions.

One episode of an instance takes a batch of its queued messages (as the Azure Storage backend
delivers up to 32 per poll), sends the app's orchestrator handle the context JSON the extension
sends (the DTFx history plus the new events), interprets the returned actions through
``shim.ShimReplay`` and commits the outcome: scheduling events, activity jobs, durable timers,
sub-orchestrations, completion or failure (reported to a parent), continue-as-new, termination.

The handle runs in the host's process, or in worker processes (``handle.OrchestratorProcesses``).
With workers, a pass calls the handles of all its ready instances at once and commits them in
instance-id order, re-running any episode whose batch an earlier commit of the pass would have
grown: the histories are those of the in-process pass, one episode after another.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from . import history as h
from .activities import ActivityJob, ActivityWorkers
from .functions import FunctionInfo, FunctionRegistry
from .handle import HandleOutcome, OrchestratorProcesses, call_handle
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
    # False: an instance's history is dropped once it has finished (and a continued-as-new execution's at once):
    # a simulation of thousands of machines keeps only their outcomes (statuses and outputs), not every event.
    keep_finished_histories: bool = True


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


@dataclass
class _Episode:
    """An episode taken from an instance's inbox: its batch and what the handle gets, or the terminate it ends on."""

    instance: Instance
    batch: list[Message]
    now: datetime
    terminate: Message | None = None  # the batch holds a terminate request: no handle call
    new_events: list[HistoryEvent] | None = None
    history: list[HistoryEvent] | None = None  # the played history plus ``new_events``
    context_json: str = ""
    info: FunctionInfo | None = None


class EpisodeRunner:
    """Runs the episodes of instances with queued messages and commits what their orchestrators decided.

    The SDK call runs outside the lock (marked runnable on the clock); taking the batch and
    committing the outcome hold it. With ``processes`` the handles run in those worker processes.
    """

    def __init__(
        self,
        store: InstanceStore,
        workers: ActivityWorkers,
        registry: FunctionRegistry,
        settings: EpisodeSettings,
        processes: OrchestratorProcesses | None = None,
    ) -> None:
        self.store = store
        self.sync = store.sync
        self.workers = workers
        self.registry = registry
        self.settings = settings
        self.processes = processes
        self.log: list[EpisodeRecord] = []
        self.reruns = 0  # episodes of a concurrent pass run again because an earlier commit grew their batch
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
            if self.processes is None:
                for instance_id in ready:
                    self._run_episode(instance_id)
            else:
                self._run_pass_concurrently(ready)

    # ------------------------------------------------------------------ one episode
    def _run_episode(self, instance_id: str) -> None:
        with self.sync.lock:
            episode = self._take_episode(instance_id)
            if episode is None:
                return
            if episode.terminate is not None:
                self._terminate_now(episode)
                return
        with self.sync.runnable():
            handled = self._submit_all([episode])[0].result()
            outcome = self._interpret(episode, handled)
        self._commit(episode, outcome)

    def _run_pass_concurrently(self, ready: list[str]) -> None:
        """The episodes of ``ready`` with their handles called all at once, committed in id order.

        An in-process pass takes each batch just before its episode, so it includes what the
        commits before it in the pass queued. Here every batch is taken first: an episode whose
        batch had room and whose inbox gained messages meanwhile is put back and run again at
        its turn, as the in-process pass would have run it.
        """
        with self.sync.lock:
            episodes = {iid: self._take_episode(iid) for iid in ready}
        with self.sync.runnable():
            called = {iid: e for iid, e in episodes.items() if e is not None and e.terminate is None}
            futures = dict(zip(called, self._submit_all(list(called.values())), strict=True))
            try:
                for iid, episode in episodes.items():
                    handled = futures[iid].result() if iid in futures else None
                    with self.sync.lock:
                        episodes[iid] = None  # from here this turn owns the batch
                        current = episode is not None and self._still_current(episode)
                        if episode is not None and not current:
                            self.store.requeue_front(episode.instance, episode.batch)
                            self.reruns += 1
                        elif episode is not None and episode.terminate is not None:
                            self._terminate_now(episode)
                            continue
                    if current and episode is not None and handled is not None:
                        self._commit(episode, self._interpret(episode, handled))
                    else:
                        # What the in-process pass does at this turn (nothing when no message is queued).
                        self._run_episode(iid)
            except BaseException:
                # The pass is abandoned (a worker failed): what was taken and not committed stays queued.
                with self.sync.lock:
                    for episode in episodes.values():
                        if episode is not None:
                            self.store.requeue_front(episode.instance, episode.batch)
                for future in futures.values():
                    future.cancel()
                raise

    def _still_current(self, episode: _Episode) -> bool:
        """Whether the batch taken at the start of the pass is the one the in-process pass would take now."""
        instance = episode.instance
        if self.store.instances.get(instance.instance_id) is not instance:
            return False
        return len(episode.batch) >= self.settings.batch_size or not instance.inbox

    def _take_episode(self, instance_id: str) -> _Episode | None:
        """The instance's next batch and its context (None: nothing to run; a finished instance's inbox is dropped)."""
        instance = self.store.instances.get(instance_id)
        if instance is None:
            return None
        if instance.status in TERMINAL_STATUSES:
            self.store.replace_inbox(instance)
            return None
        batch = self.store.take_batch(instance, self.settings.batch_size)
        if not batch:
            return None
        now = self.sync.clock.now()
        terminate = next((m for m in batch if m.kind == "terminate"), None)
        if terminate is not None:
            return _Episode(instance, batch, now, terminate=terminate)
        new_events = [h.orchestrator_started(now)] + [m.event for m in batch if m.event is not None]
        return _Episode(
            instance,
            batch,
            now,
            new_events=new_events,
            history=instance.history + new_events,
            context_json=self._context_json(instance, new_events),
            info=self.registry.orchestrator(instance.name),
        )

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

    def _submit_all(self, episodes: list[_Episode]) -> list[Future[HandleOutcome]]:
        """The handle calls of ``episodes``, in order: started in the worker processes, or made here (done futures).

        An orchestrator the app does not register needs no call: the failure is known here.
        """
        processes = self.processes
        remote = [e for e in episodes if e.info is not None] if processes is not None else []
        started = iter(processes.submit_all([(e.instance.name, e.context_json) for e in remote]) if remote else ())
        futures: list[Future[HandleOutcome]] = []
        for episode in episodes:
            if processes is not None and episode.info is not None:
                futures.append(next(started))
                continue
            future: Future[HandleOutcome] = Future()
            future.set_result(self._call_here(episode))
            futures.append(future)
        return futures

    def _call_here(self, episode: _Episode) -> HandleOutcome:
        """The handle call in this process (today's path without worker processes)."""
        instance, info = episode.instance, episode.info
        if info is None:
            reason = f"The orchestrator function '{instance.name}' is not registered in this app."
            return HandleOutcome(failure=(reason, ""))
        return call_handle(info.user_function, instance.name, episode.context_json)

    def _interpret(self, episode: _Episode, handled: HandleOutcome) -> _EpisodeOutcome:
        """Check the state's actions against the history (``ShimReplay``): what the episode commits."""
        instance = episode.instance
        outcome = _EpisodeOutcome(state=handled.state, failure=handled.failure, stack=handled.stack)
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
                outcome.replay = replay.run(episode.history or [])
            except ShimFailure as exc:
                outcome.failure = (f"Orchestrator function '{instance.name}' failed: {exc}", "")
        return outcome

    # ------------------------------------------------------------------ committing
    def _commit(self, episode: _Episode, outcome: _EpisodeOutcome) -> None:
        with self.sync.lock:
            self._commit_episode(episode.instance, episode.new_events or [], outcome, episode.now, episode.context_json)
            self.sync.signal()

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
        elif instance.status in TERMINAL_STATUSES:
            self._forget_if_told(instance)
        for effect in side_effects:
            effect()

    def _forget_if_told(self, instance: Instance) -> None:
        """A finished instance's events, dropped when the host keeps no finished histories (its outcome stays,
        packed; no previous histories were kept either: ``_continue_as_new`` keeps them only when told)."""
        if not self.settings.keep_finished_histories:
            instance.history, instance.history_json = [], []
            instance.pack()

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
        # Events of finished episodes are sent with IsPlayed=true from now on. Serialized, their payloads live in
        # history_json alone: the parsed copy keeps what replays check (thousands of machines in flight each held
        # their inputs and results twice).
        history = instance.history
        for index in range(len(instance.history_json), len(history)):
            event = history[index]
            event["IsPlayed"] = True
            instance.history_json.append(h.dumps_event(event))
            history[index] = h.without_payload(event)

    def _terminate_now(self, episode: _Episode) -> None:
        instance, message, now = episode.instance, episode.terminate, episode.now
        reason = message.reason if message is not None else None
        events = [h.orchestrator_started(now)]
        events += [m.event for m in episode.batch if m.kind == "start" and m.event is not None]
        events.append(h.execution_terminated(now, reason))
        events.append(h.execution_completed(now, -1, TERMINATED, reason))
        events.append(h.orchestrator_completed(now))
        self._append(instance, events)
        self._mark_played(instance)
        self.store.replace_inbox(instance)
        instance.last_updated_time = now
        self._finish(instance, TERMINATED, now, output=reason)
        self._forget_if_told(instance)
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
        self.store.enqueue(parent_instance, Message("completion", event, parent.execution_id))

    def _continue_as_new(
        self, instance: Instance, input_text: str | None, carryover: list[HistoryEvent], now: datetime
    ) -> None:
        instance.execution_id = self.store.next_execution_id(instance.instance_id)
        instance.status = CONTINUED_AS_NEW
        instance.input_text = input_text
        if self.settings.keep_finished_histories:
            instance.keep_previous(instance.recorded_history())
        instance.history = []
        instance.history_json = []
        instance.waiting_on = []
        self.store.set_created_time(instance, now)
        self.store.metrics.record_continue_as_new(instance.instance_id)
        # Messages for the old execution are dropped; queued raised events (no execution id) stay,
        # behind the events DTFx carries over from the last episode.
        carried = [Message("event", dict(event, IsPlayed=False)) for event in carryover]
        queued = [m for m in instance.inbox if m.execution_id is None]
        self.store.replace_inbox(instance, [self.store.start_message(instance, now), *carried, *queued])

    def _start_child(
        self, name: str, instance_id: str, input_text: str | None, parent: ParentLink, now: datetime
    ) -> None:
        existing = self.store.instances.get(instance_id)
        if existing is not None and existing.status in ACTIVE_STATUSES:
            parent_instance = self.store.instances[parent.instance_id]
            reason = f"An Orchestration instance with the status {existing.status} already exists."
            event = h.sub_orchestration_failed(now, parent.task_id, reason, "")
            self.store.enqueue(parent_instance, Message("completion", event, parent.execution_id))
            return
        info = self.registry.orchestrator(name)
        self.store.create_instance(instance_id, info.durable_name if info else name, input_text, parent=parent)
