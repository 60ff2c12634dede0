"""The local durable host: runs a FunctionApp's orchestrators, activities and client functions.

It plays the part of the Functions host plus the Durable extension (Azure Storage
flavour): every orchestrator episode calls the app's registered orchestrator handle
with the context JSON the extension sends (DTFx history included) and interprets the
returned actions through ``shim.ShimReplay``; activities run on a worker pool with
their JSON-decoded input; completions, timers, external events and sub-orchestration
results are delivered to instances in batches of up to ``batch_size`` messages per
episode, as the Azure Storage backend delivers queue messages.

Time comes from the host's clock. With a ``VirtualClock`` the driver runs all
runnable work, then jumps the clock to the next durable timer or sleeping thread;
ready work is ordered by instance id and task id so a run is reproducible. With a
``ScaledClock`` or ``SystemClock`` it runs in real time.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import inspect
import json
import logging
import threading
import time
import traceback
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from azure.durable_functions.models.utils.df_serialization import df_dumps
from azure.functions import meta
from azure.functions._durable_functions import OrchestrationContext
from azure.functions.durable_functions import ActivityTriggerConverter

from arc_hotpatch.clocks import Clock, VirtualClock, install_clock

from . import history as h
from .errors import (
    DeadlockError,
    HostTimeoutError,
    InstanceAlreadyExists,
    InstanceGone,
    InstanceNotFound,
    InstanceNotTerminal,
    OrchestratorNotFound,
)
from .functions import FunctionInfo, FunctionRegistry, build_kwargs
from .history import HistoryEvent
from .shim import (
    DEFAULT_MAX_ORCHESTRATION_ACTIONS,
    ShimFailure,
    ShimReplay,
    ShimResult,
    unknown_function_message,
)


def _memoize_sdk_timestamp_parsing() -> None:
    """Every replay re-parses every history timestamp with dateutil (the bulk of replay time).

    The strings repeat from replay to replay and datetimes are immutable, so memoizing the
    SDK's own parser changes no result, only the cost of long-running local simulations.
    """
    import importlib

    history_event_module = importlib.import_module("azure.durable_functions.models.history.HistoryEvent")

    parse = history_event_module.dt_parse
    if not hasattr(parse, "cache_info"):
        history_event_module.dt_parse = functools.lru_cache(maxsize=1 << 16)(parse)


_memoize_sdk_timestamp_parsing()

log = logging.getLogger(__name__)

PENDING = "Pending"
RUNNING = "Running"
COMPLETED = "Completed"
FAILED = "Failed"
TERMINATED = "Terminated"
CONTINUED_AS_NEW = "ContinuedAsNew"
TERMINAL_STATUSES = frozenset({COMPLETED, FAILED, TERMINATED})
ACTIVE_STATUSES = frozenset({PENDING, RUNNING, CONTINUED_AS_NEW})
RUNTIME_STATUSES = (PENDING, RUNNING, COMPLETED, FAILED, TERMINATED, CONTINUED_AS_NEW)

_OUT_OF_PROC_MARKER = "$OutOfProcData$:"
_ID_NAMESPACE = uuid.UUID("0d4c3f2a-7a51-4f7e-9a43-2f1e8c6b5d90")

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


@dataclass
class _Message:
    """A queued message for an instance; ``execution_id`` None means "whatever execution is current"."""

    kind: str  # "start" | "event" | "completion" | "terminate"
    event: HistoryEvent | None
    execution_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class _ParentLink:
    instance_id: str
    execution_id: str
    task_id: int
    name: str


@dataclass
class _ActivityJob:
    instance_id: str
    execution_id: str
    task_id: int
    name: str
    input_text: str | None


@dataclass(order=True)
class _PendingTimer:
    fire_at: datetime
    instance_id: str
    timer_id: int
    execution_id: str = field(compare=False)
    fire_at_text: str = field(compare=False)


@dataclass
class EpisodeRecord:
    """What one episode exchanged with the SDK (kept when ``record_episodes=True``)."""

    instance_id: str
    execution_id: str
    context_json: str
    state: dict[str, Any] | None
    error: str | None


@dataclass
class _Instance:
    instance_id: str
    name: str
    input_text: str | None
    execution_id: str
    parent: _ParentLink | None
    created_time: datetime
    status: str = PENDING
    last_updated_time: datetime | None = None
    output: Any = None
    custom_status: Any = None
    history: list[HistoryEvent] = field(default_factory=list)
    history_json: list[str] = field(default_factory=list)
    inbox: deque[_Message] = field(default_factory=deque)
    waiting_on: list[str] = field(default_factory=list)
    previous_histories: deque[list[HistoryEvent]] = field(default_factory=lambda: deque(maxlen=10))


class _OrchestratorCrash(Exception):
    """The orchestrator handle raised something that is not the SDK's $OutOfProcData$ failure."""


class DurableHost:
    """Run the orchestrators, activities and client functions of ``app`` offline."""

    def __init__(
        self,
        app: Any,
        clock: Clock,
        *,
        activity_workers: int = 8,
        hub_name: str = "TestHubName",
        batch_size: int = 32,
        max_short_timer: timedelta | None = AZURE_STORAGE_MAX_SHORT_TIMER,
        long_timer_interval: timedelta = AZURE_STORAGE_LONG_TIMER_INTERVAL,
        max_orchestration_actions: int = DEFAULT_MAX_ORCHESTRATION_ACTIONS,
        record_episodes: bool = False,
        route_prefix: str = "api",
        install: bool = True,
    ) -> None:
        if activity_workers < 1:
            raise ValueError(f"activity_workers must be >= 1, got {activity_workers}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.app = app
        self.clock = clock
        self.hub_name = hub_name
        self.batch_size = batch_size
        self.activity_workers = activity_workers
        self.max_short_timer = max_short_timer
        self.long_timer_interval = long_timer_interval
        self.max_orchestration_actions = max_orchestration_actions
        self.record_episodes = record_episodes
        self.registry = FunctionRegistry(app, route_prefix=route_prefix)
        self._activity_names = self.registry.activity_names()
        self._orchestrator_names = self.registry.orchestrator_names()
        self._virtual = isinstance(clock, VirtualClock)
        self._previous_clock: Clock | None = install_clock(clock) if install else None
        self._installed = install

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._jobs_available = threading.Condition(self._lock)
        self._instances: dict[str, _Instance] = {}
        self._timers: list[_PendingTimer] = []
        self._jobs: deque[_ActivityJob] = deque()
        self._jobs_waiting_to_start = 0
        self._jobs_running = 0
        self._completions: list[tuple[_ActivityJob, HistoryEvent]] = []
        self._generations: Counter[str] = Counter()
        self._instance_seq = 0
        self._closing = False
        self._driver_lock = threading.Lock()
        self._background: threading.Thread | None = None
        self._stop = threading.Event()
        self.background_errors: list[BaseException] = []
        self._episode_log: list[EpisodeRecord] = []
        self._http: Any = None  # http_server.HttpRuntime, created on demand

        self._metrics = Counter[str]()
        self._activity_calls: Counter[str] = Counter()
        self._activity_failures: Counter[str] = Counter()
        self._history_stats: dict[str, dict[str, int]] = {}

        self._workers = [
            threading.Thread(target=self._worker_main, name=f"durable-activity-{n}", daemon=True)
            for n in range(activity_workers)
        ]
        for worker in self._workers:
            worker.start()

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> DurableHost:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the background driver, HTTP servers and workers; restore the previous clock."""
        self.stop()
        if self._http is not None:
            self._http.close()
            self._http = None
        with self._lock:
            self._closing = True
            self._jobs_waiting_to_start -= len(self._jobs)
            self._jobs.clear()  # queued activities of a closed host never start
            self._jobs_available.notify_all()
        for worker in self._workers:
            worker.join(timeout=1.0)  # a worker parked on a virtual-clock sleep stays (daemon)
        if self._installed and self._previous_clock is not None:
            install_clock(self._previous_clock)
            self._installed = False

    # ------------------------------------------------------------------ client API
    def start_new(self, name: str, instance_id: str | None = None, input: Any = None) -> str:
        """Start orchestrator ``name`` (the DurableOrchestrationClient.start_new of this host)."""
        # Encoded as the SDK's client encodes it (custom objects with ``to_json`` in their envelope).
        return self.start_new_raw(name, instance_id, None if input is None else df_dumps(input))

    def start_new_raw(self, name: str, instance_id: str | None, input_text: str | None) -> str:
        """Start with the input already JSON-encoded (what an HTTP client sent)."""
        info = self.registry.orchestrator(name)
        if info is None:
            raise OrchestratorNotFound(unknown_function_message(name, "orchestrator", self._orchestrator_names))
        if input_text is not None:
            json.loads(input_text)  # reject what the extension could not deserialize either
        with self._lock:
            if instance_id is None:
                instance_id = self._new_instance_id()
            elif not instance_id or instance_id.startswith("@") or any(c in instance_id for c in "/\\#?"):
                raise ValueError(f"invalid instance id {instance_id!r}")
            existing = self._instances.get(instance_id)
            if existing is not None and existing.status in ACTIVE_STATUSES:
                raise InstanceAlreadyExists(
                    f"An Orchestration instance with the status {existing.status} already exists."
                )
            self._create_instance(instance_id, info.durable_name, input_text, parent=None)
            self._signal()
        return instance_id

    def raise_event(self, instance_id: str, name: str, data: Any = None) -> None:
        """Send external event ``name`` with ``data`` (serialized to JSON) to an instance."""
        self.raise_event_raw(instance_id, name, json.dumps(data))

    def raise_event_raw(self, instance_id: str, name: str, input_text: str | None) -> None:
        if not name:
            raise ValueError("event name must be a non-empty string")
        with self._lock:
            instance = self._require(instance_id)
            if instance.status in TERMINAL_STATUSES:
                raise InstanceGone(f"Instance with ID {instance_id} is gone: either completed or failed")
            instance.inbox.append(_Message("event", h.event_raised(self.clock.now(), name, input_text)))
            self._metrics["events_raised"] += 1
            self._signal()

    def terminate(self, instance_id: str, reason: str | None = None) -> None:
        with self._lock:
            instance = self._require(instance_id)
            if instance.status in TERMINAL_STATUSES:
                raise InstanceGone(f"Instance with ID {instance_id} is already in a terminal state ({instance.status})")
            instance.inbox.append(_Message("terminate", None, reason=reason))
            self._signal()

    def get_status(self, instance_id: str, *, show_history: bool = False, show_input: bool = True) -> dict[str, Any]:
        with self._lock:
            return self._status(self._require(instance_id), show_history=show_history, show_input=show_input)

    def find_status(self, instance_id: str) -> dict[str, Any] | None:
        with self._lock:
            instance = self._instances.get(instance_id)
            return None if instance is None else self._status(instance)

    def list_instances(
        self,
        *,
        runtime_status: Iterable[str] | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        instance_id_prefix: str | None = None,
        show_input: bool = True,
    ) -> list[dict[str, Any]]:
        with self._lock:
            selected = self._select(runtime_status, created_from, created_to, instance_id_prefix)
            return [self._status(instance, show_input=show_input) for instance in selected]

    def purge(self, instance_id: str) -> int:
        """Delete a finished instance's state and history; returns the number deleted (0 or 1)."""
        with self._lock:
            instance = self._instances.get(instance_id)
            if instance is None:
                return 0
            if instance.status not in TERMINAL_STATUSES:
                raise InstanceNotTerminal(
                    "Only orchestrations in a terminal state can be purged, but the orchestration with "
                    f"instance ID {instance_id} has status {instance.status}"
                )
            del self._instances[instance_id]
            return 1

    def purge_instances(
        self,
        *,
        created_from: datetime,
        created_to: datetime | None = None,
        runtime_status: Iterable[str] | None = None,
    ) -> int:
        statuses = set(runtime_status) if runtime_status else set(TERMINAL_STATUSES)
        with self._lock:
            selected = self._select(statuses & TERMINAL_STATUSES, created_from, created_to, None)
            for instance in selected:
                del self._instances[instance.instance_id]
            return len(selected)

    def history(self, instance_id: str) -> list[HistoryEvent]:
        """The current execution's history (copies of the DTFx events, as sent to the SDK)."""
        with self._lock:
            return [dict(event) for event in self._require(instance_id).history]

    def execution_histories(self, instance_id: str) -> list[list[HistoryEvent]]:
        """Histories of the last executions (continue-as-new), oldest first, the current one last."""
        with self._lock:
            instance = self._require(instance_id)
            return [[dict(e) for e in past] for past in instance.previous_histories] + [
                [dict(e) for e in instance.history]
            ]

    def episode_log(self, instance_id: str | None = None) -> list[EpisodeRecord]:
        with self._lock:
            return [r for r in self._episode_log if instance_id is None or r.instance_id == instance_id]

    def instance_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._instances)

    def progress_snapshot(self) -> dict[str, Any]:
        """Small summary for a progress line: virtual time, instances per status, work done."""
        with self._lock:
            by_status = Counter(instance.status for instance in self._instances.values())
            return {
                "virtual_time": h.status_time(self.clock.now()),
                "instances": dict(sorted(by_status.items())),
                "episodes": self._metrics["episodes"],
                "activity_calls": sum(self._activity_calls.values()),
                "pending_timers": len(self._timers),
            }

    def metrics(self) -> dict[str, Any]:
        with self._lock:
            per_instance = {iid: dict(stats) for iid, stats in sorted(self._history_stats.items())}
            return {
                "orchestrations": self._metrics["orchestrations"],
                "executions": self._metrics["executions"],
                "episodes": self._metrics["episodes"],
                "history_events_replayed": self._metrics["history_events_replayed"],
                "max_history_events": max((s["max"] for s in per_instance.values()), default=0),
                "history_events": per_instance,
                "activity_calls": dict(sorted(self._activity_calls.items())),
                "activity_calls_total": sum(self._activity_calls.values()),
                "activity_failures": dict(sorted(self._activity_failures.items())),
                "timers_fired": self._metrics["timers_fired"],
                "events_raised": self._metrics["events_raised"],
            }

    # ------------------------------------------------------------------ driving
    def run_until_complete(
        self,
        instance_ids: Iterable[str] | None = None,
        *,
        timeout_real_s: float = 300.0,
        progress: Callable[[dict[str, Any]], None] | None = None,
        progress_interval_s: float = 0.5,
    ) -> dict[str, dict[str, Any]]:
        """Drive until the given instances (default: all) reach Completed, Failed or Terminated.

        Raises ``DeadlockError`` when nothing can progress any more (e.g. an instance waits
        for an external event and no timer is pending), ``HostTimeoutError`` when the
        real-time budget runs out. ``progress`` receives ``progress_snapshot()`` at most every
        ``progress_interval_s`` real seconds, and once at the end.
        """
        targets = list(instance_ids) if instance_ids is not None else None
        with self._lock:
            for instance_id in targets or []:
                self._require(instance_id)
        last_report = time.monotonic()

        def done() -> bool:
            nonlocal last_report
            with self._lock:
                ids = targets if targets is not None else list(self._instances)
                finished = all(
                    iid not in self._instances or self._instances[iid].status in TERMINAL_STATUSES for iid in ids
                )
            if progress is not None and (finished or time.monotonic() - last_report >= progress_interval_s):
                last_report = time.monotonic()
                progress(self.progress_snapshot())
            return finished

        self._drive_or_wait(done, targets, horizon=None, timeout_real_s=timeout_real_s)
        with self._lock:
            ids = targets if targets is not None else sorted(self._instances)
            return {iid: self._status(self._instances[iid]) for iid in ids if iid in self._instances}

    def run_until_idle(self, *, timeout_real_s: float = 300.0) -> None:
        """Process everything runnable without moving a virtual clock; returns when idle."""
        self._drive_or_wait(lambda: False, None, horizon=self.clock.now(), timeout_real_s=timeout_real_s)

    def run_until(self, when: datetime, *, timeout_real_s: float = 300.0) -> None:
        """Process work and fire timers up to virtual time ``when`` (the clock ends at ``when``)."""
        if not self._virtual:
            raise TypeError("run_until needs a VirtualClock; real-time clocks cannot be moved")
        self._drive_or_wait(lambda: False, None, horizon=when, timeout_real_s=timeout_real_s)

    def start(
        self,
        *,
        port: int | None = None,
        no_auth: bool = False,
        run_timer_triggers: bool = False,
        keys: Any = None,
    ) -> None:
        """Run the driver in a background thread; with ``port`` also serve the app over HTTP."""
        if port is not None:
            self.http.start_public(port=port, no_auth=no_auth, keys=keys)
        if run_timer_triggers:
            self.http.enable_timer_triggers()
        if self._background is not None:
            return
        self._stop.clear()
        self._background = threading.Thread(target=self._background_main, name="durable-driver", daemon=True)
        self._background.start()

    def stop(self) -> None:
        thread, self._background = self._background, None
        if thread is not None:
            self._stop.set()
            self._signal()
            thread.join(timeout=10.0)

    # -------------------------------------------------------- client functions
    def invoke_timer(self, name: str, *, past_due: bool = False) -> Any:
        """Run timer-trigger function ``name`` once now (like POST /admin/functions/{name})."""
        return self.http.invoke_timer(name, past_due=past_due)

    def deliver_event_grid(self, name: str, events: list[dict[str, Any]]) -> list[Any]:
        """Invoke Event Grid trigger function ``name`` once per event (Event Grid schema dicts)."""
        return self.http.deliver_event_grid(name, events)

    def run_client_coroutine(self, coroutine: Any, timeout: float | None = 120.0) -> Any:
        """Run durable-client code (e.g. ``DurableOrchestrationClient`` calls) on the loop client functions use.

        The SDK keeps one process-wide aiohttp session bound to that loop, as the worker does.
        """
        from .http_server import client_loop

        return client_loop().run(coroutine, timeout)

    def client_binding_json(self, task_hub: str | None = None) -> str:
        """The durableClient binding JSON a client function receives (rpcBaseUrl points at this host)."""
        return self.http.client_binding_json(task_hub)

    @property
    def base_url(self) -> str | None:
        """Origin of the public server (``start(port=...)``), or None when not serving."""
        return None if self._http is None else self._http.public_base_url

    @property
    def keys(self) -> Any:
        """The HostKeys of the public server (function, master and system keys)."""
        return self.http.keys

    @property
    def http(self) -> Any:
        """The HTTP side (RPC endpoint for durable clients, public app server), started on demand."""
        with self._lock:
            if self._http is None:
                from .http_server import HttpRuntime

                self._http = HttpRuntime(self)
            return self._http

    def _background_main(self) -> None:
        while not self._stop.is_set():
            try:
                with self._driver_lock:
                    self._drive(
                        done=self._stop.is_set,
                        targets=None,
                        horizon=None,
                        deadline=None,
                        background=True,
                    )
            except Exception as exc:  # keep serving; the error is reported and kept for inspection
                log.exception("durable host driver error")
                self.background_errors.append(exc)
                time.sleep(0.05)

    def _drive_or_wait(
        self,
        done: Callable[[], bool],
        targets: list[str] | None,
        *,
        horizon: datetime | None,
        timeout_real_s: float,
    ) -> None:
        deadline = time.monotonic() + timeout_real_s
        if self._background is not None:
            # The background driver is running: just wait for the condition.
            with self._changed:
                while not done():
                    if horizon is not None and self._reached(horizon):
                        return
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise HostTimeoutError(self._timeout_message(targets, timeout_real_s))
                    self._changed.wait(min(remaining, 0.05))
            return
        with self._driver_lock:
            self._drive(done=done, targets=targets, horizon=horizon, deadline=deadline, background=False)

    def _drive(
        self,
        *,
        done: Callable[[], bool],
        targets: list[str] | None,
        horizon: datetime | None,
        deadline: float | None,
        background: bool,
    ) -> None:
        budget_s = None if deadline is None else deadline - time.monotonic()
        while True:
            self._fire_due_timers()
            if background and self._http is not None:
                self._http.fire_due_triggers()
            if not self._virtual:
                self._collect_completions()
            self._run_ready_episodes()
            if done():
                return
            if deadline is not None and time.monotonic() > deadline:
                raise HostTimeoutError(self._timeout_message(targets, budget_s))
            if self._virtual:
                if not self._wait_quiescent(deadline, background):
                    continue
                if self._collect_completions() or self._has_inbox_work():
                    continue
                if done():
                    return
                next_due = self._next_due(include_triggers=background)
                if horizon is not None and (next_due is None or next_due > horizon):
                    if self.clock.now() < horizon:
                        self.clock.advance_to(horizon)  # type: ignore[attr-defined]
                        continue
                    return
                if next_due is None:
                    if background:
                        self._wait_signal(0.05)
                        continue
                    waiting = self._waiting_report(targets)
                    raise DeadlockError(self._deadlock_message(waiting), waiting)
                if next_due > self.clock.now():
                    self.clock.advance_to(next_due)  # type: ignore[attr-defined]
                continue
            # Real time: sleep until the next durable timer (or trigger) is due or work arrives.
            if horizon is not None and not self._has_inbox_work() and self._idle_real_time():
                return
            with self._changed:
                if self._has_inbox_work() or self._completions:
                    continue
                self._changed.wait(self._real_wait_seconds(include_triggers=background))

    # -------------------------------------------------------------- driver helpers
    def _reached(self, horizon: datetime) -> bool:
        """Nothing left to do before ``horizon`` (used while a background driver runs)."""
        if self._has_inbox_work():
            return False
        if self._virtual:
            return self.clock.now() >= horizon and self._quiescent() and not self._completions
        return self._idle_real_time()

    def _signal(self) -> None:
        with self._changed:
            self._changed.notify_all()
        if self._virtual:
            self.clock.notify()  # type: ignore[attr-defined]

    def _wait_signal(self, seconds: float) -> None:
        if self._virtual:
            self.clock.wait_change(seconds)  # type: ignore[attr-defined]
        else:
            with self._changed:
                self._changed.wait(seconds)

    def _has_inbox_work(self) -> bool:
        with self._lock:
            return any(instance.inbox for instance in self._instances.values())

    def _idle_real_time(self) -> bool:
        with self._lock:
            return not self._jobs and self._jobs_running == 0 and not self._completions

    def _runnable(self) -> contextlib.AbstractContextManager[None]:
        """Mark the enclosed work runnable: a VirtualClock does not jump while it runs."""
        running = getattr(self.clock, "running", None)
        return running() if running is not None else contextlib.nullcontext()

    def _clock_settled(self) -> bool:
        """Nothing runnable on the clock (a VirtualClock also counts released-but-not-awake sleepers)."""
        return bool(self.clock.idle())  # type: ignore[attr-defined]

    def _quiescent(self) -> bool:
        if self._http is not None and self._http.inflight:
            return False  # a client function is still running (it may start or signal instances)
        with self._lock:
            waiting, running = self._jobs_waiting_to_start, self._jobs_running
        # Queued jobs that cannot start because every worker is parked on a clock sleep count as idle.
        return self._clock_settled() and (waiting == 0 or running >= self.activity_workers)

    def _wait_quiescent(self, deadline: float | None, background: bool) -> bool:
        while not self._quiescent():
            if deadline is not None and time.monotonic() > deadline:
                return False
            if background and self._stop.is_set():
                return False
            self._wait_signal(0.01)
        return True

    def _next_due(self, *, include_triggers: bool) -> datetime | None:
        candidates: list[datetime] = []
        with self._lock:
            self._drop_dead_timers()
            if self._timers:
                candidates.append(self._timers[0].fire_at)
        wakeup = self.clock.next_wakeup() if self._virtual else None  # type: ignore[attr-defined]
        if wakeup is not None:
            candidates.append(wakeup)
        if include_triggers and self._http is not None:
            trigger_due = self._http.next_trigger_due()
            if trigger_due is not None:
                candidates.append(trigger_due)
        return min(candidates) if candidates else None

    def _real_wait_seconds(self, *, include_triggers: bool) -> float:
        due = self._next_due(include_triggers=include_triggers)
        if due is None:
            return 0.2
        simulated = (due - self.clock.now()).total_seconds()
        speed = float(getattr(self.clock, "speed", 1.0))
        return max(0.0, min(0.2, simulated / speed))

    def _active_execution(self, instance_id: str, execution_id: str) -> _Instance | None:
        """The instance if ``execution_id`` is its current, still active execution.

        Messages addressed to a purged, finished or continued-as-new execution are dropped (DTFx discards them).
        """
        instance = self._instances.get(instance_id)
        if instance is None or instance.execution_id != execution_id or instance.status not in ACTIVE_STATUSES:
            return None
        return instance

    def _drop_dead_timers(self) -> None:
        # Timers of finished executions would be discarded on delivery anyway.
        while self._timers:
            timer = self._timers[0]
            if self._active_execution(timer.instance_id, timer.execution_id) is not None:
                return
            heapq.heappop(self._timers)

    def _fire_due_timers(self) -> None:
        now = self.clock.now()
        with self._lock:
            fired = False
            while self._timers and self._timers[0].fire_at <= now:
                timer = heapq.heappop(self._timers)
                instance = self._active_execution(timer.instance_id, timer.execution_id)
                if instance is None:
                    continue
                event = h.timer_fired(now, timer.timer_id, timer.fire_at_text)
                instance.inbox.append(_Message("completion", event, timer.execution_id))
                self._metrics["timers_fired"] += 1
                fired = True
            if fired:
                self._signal()

    def _collect_completions(self) -> bool:
        with self._lock:
            completed, self._completions = self._completions, []
            if self._virtual:
                # Deterministic delivery order whatever order the worker threads finished in.
                completed.sort(key=lambda item: (item[0].instance_id, item[0].execution_id, item[0].task_id))
            for job, event in completed:
                instance = self._active_execution(job.instance_id, job.execution_id)
                if instance is not None:
                    instance.inbox.append(_Message("completion", event, job.execution_id))
            return bool(completed)

    def _run_ready_episodes(self) -> None:
        while True:
            with self._lock:
                ready = sorted(iid for iid, instance in self._instances.items() if instance.inbox)
            if not ready:
                return
            for instance_id in ready:
                self._run_episode(instance_id)

    # ------------------------------------------------------------------ episodes
    def _take_batch(self, instance: _Instance) -> list[_Message]:
        batch: list[_Message] = []
        while instance.inbox and len(batch) < self.batch_size:
            message = instance.inbox.popleft()
            if message.execution_id is not None and message.execution_id != instance.execution_id:
                continue  # addressed to an execution that no longer exists (DTFx discards it)
            batch.append(message)
        return batch

    def _run_episode(self, instance_id: str) -> None:
        with self._lock:
            instance = self._instances.get(instance_id)
            if instance is None:
                return
            if instance.status in TERMINAL_STATUSES:
                instance.inbox.clear()
                return
            batch = self._take_batch(instance)
            if not batch:
                return
            now = self.clock.now()
            terminate = next((m for m in batch if m.kind == "terminate"), None)
            if terminate is not None:
                self._terminate_now(instance, batch, terminate, now)
                return
            new_events = [h.orchestrator_started(now)] + [m.event for m in batch if m.event is not None]
            history = instance.history + new_events
            context_json = self._context_json(instance, new_events)
            info = self.registry.orchestrator(instance.name)
        with self._runnable():
            outcome = self._execute_orchestrator(instance, info, context_json, history)
        with self._lock:
            self._commit_episode(instance, new_events, outcome, now, context_json)
            self._signal()

    def _context_json(self, instance: _Instance, new_events: list[HistoryEvent]) -> str:
        fields: dict[str, Any] = {
            "input": instance.input_text,
            "instanceId": instance.instance_id,
            "isReplaying": bool(instance.history),
            "parentInstanceId": instance.parent.instance_id if instance.parent else None,
            "upperSchemaVersion": 1,
            "upperSchemaVersionNew": 2,
        }
        if self.max_short_timer is not None:
            fields["maximumShortTimerDuration"] = _timespan(self.max_short_timer)
            fields["longRunningTimerIntervalDuration"] = _timespan(self.long_timer_interval)
        parts = instance.history_json + [h.dumps_event(event) for event in new_events]
        return '{"history":[' + ",".join(parts) + "]," + json.dumps(fields)[1:]

    def _execute_orchestrator(
        self, instance: _Instance, info: FunctionInfo | None, context_json: str, history: list[HistoryEvent]
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
                max_actions=self.max_orchestration_actions,
            )
            try:
                outcome.replay = replay.run(history)
            except ShimFailure as exc:
                outcome.failure = (f"Orchestrator function '{instance.name}' failed: {exc}", "")
        return outcome

    def _commit_episode(
        self,
        instance: _Instance,
        new_events: list[HistoryEvent],
        outcome: _EpisodeOutcome,
        now: datetime,
        context_json: str,
    ) -> None:
        if self.record_episodes:
            error = outcome.failure[0] if outcome.failure else None
            self._episode_log.append(
                EpisodeRecord(instance.instance_id, instance.execution_id, context_json, outcome.state, error)
            )
        replayed = len(instance.history) + len(new_events)
        self._metrics["episodes"] += 1
        self._metrics["history_events_replayed"] += replayed
        stats = self._history_stats.setdefault(instance.instance_id, {"max": 0, "replayed": 0, "episodes": 0})
        stats["max"] = max(stats["max"], replayed)
        stats["replayed"] += replayed
        stats["episodes"] += 1

        self._append(instance, new_events)
        state = outcome.state or {}
        if "customStatus" in state:
            instance.custom_status = state["customStatus"]
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
        self, instance: _Instance, work: Any, now: datetime, side_effects: list[Callable[[], None]]
    ) -> HistoryEvent:
        if work.kind == "activity":
            job = _ActivityJob(instance.instance_id, instance.execution_id, work.task_id, work.name, work.input_text)
            side_effects.append(lambda: self._submit(job))
            return h.task_scheduled(now, work.task_id, work.name, work.input_text)
        if work.kind == "timer":
            fire_at = h.parse_time(work.fire_at)
            pending = _PendingTimer(fire_at, instance.instance_id, work.task_id, instance.execution_id, work.fire_at)
            side_effects.append(lambda: heapq.heappush(self._timers, pending))
            return h.timer_created(now, work.task_id, work.fire_at)
        link = _ParentLink(instance.instance_id, instance.execution_id, work.task_id, instance.name)
        side_effects.append(lambda: self._start_child(work.name, work.instance_id, work.input_text, link, now))
        return h.sub_orchestration_created(now, work.task_id, work.name, work.instance_id, work.input_text)

    def _append(self, instance: _Instance, events: list[HistoryEvent]) -> None:
        instance.history.extend(events)

    def _mark_played(self, instance: _Instance) -> None:
        # Events of finished episodes are sent with IsPlayed=true from now on.
        start = len(instance.history_json)
        for event in instance.history[start:]:
            event["IsPlayed"] = True
            instance.history_json.append(h.dumps_event(event))

    def _terminate_now(self, instance: _Instance, batch: list[_Message], message: _Message, now: datetime) -> None:
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
        self._signal()

    def _finish(
        self, instance: _Instance, status: str, now: datetime, *, output: Any, details: str | None = None
    ) -> None:
        instance.status = status
        instance.output = output
        instance.waiting_on = []
        parent = instance.parent
        if parent is None:
            return
        parent_instance = self._active_execution(parent.instance_id, parent.execution_id)
        if parent_instance is None:
            return
        if status == COMPLETED:
            event = h.sub_orchestration_completed(now, parent.task_id, json.dumps(output))
        else:
            event = h.sub_orchestration_failed(now, parent.task_id, str(output), details or "")
        parent_instance.inbox.append(_Message("completion", event, parent.execution_id))

    def _continue_as_new(
        self, instance: _Instance, input_text: str | None, carryover: list[HistoryEvent], now: datetime
    ) -> None:
        self._generations[instance.instance_id] += 1
        instance.execution_id = self._execution_id(instance.instance_id)
        instance.status = CONTINUED_AS_NEW
        instance.input_text = input_text
        instance.previous_histories.append(instance.history)
        instance.history = []
        instance.history_json = []
        instance.waiting_on = []
        instance.created_time = now
        self._metrics["executions"] += 1
        # Messages for the old execution are dropped; queued raised events (no execution id) stay,
        # behind the events DTFx carries over from the last episode.
        carried = [_Message("event", dict(event, IsPlayed=False)) for event in carryover]
        queued = [m for m in instance.inbox if m.execution_id is None]
        instance.inbox = deque([self._start_message(instance, now), *carried, *queued])

    def _start_child(
        self, name: str, instance_id: str, input_text: str | None, parent: _ParentLink, now: datetime
    ) -> None:
        existing = self._instances.get(instance_id)
        if existing is not None and existing.status in ACTIVE_STATUSES:
            parent_instance = self._instances[parent.instance_id]
            reason = f"An Orchestration instance with the status {existing.status} already exists."
            event = h.sub_orchestration_failed(now, parent.task_id, reason, "")
            parent_instance.inbox.append(_Message("completion", event, parent.execution_id))
            return
        info = self.registry.orchestrator(name)
        self._create_instance(instance_id, info.durable_name if info else name, input_text, parent=parent)

    def _create_instance(
        self, instance_id: str, name: str, input_text: str | None, *, parent: _ParentLink | None
    ) -> _Instance:
        now = self.clock.now()
        self._generations[instance_id] += 1
        instance = _Instance(
            instance_id=instance_id,
            name=name,
            input_text=input_text,
            execution_id=self._execution_id(instance_id),
            parent=parent,
            created_time=now,
            last_updated_time=now,
        )
        instance.inbox.append(self._start_message(instance, now))
        self._instances[instance_id] = instance
        self._history_stats.pop(instance_id, None)
        self._metrics["orchestrations"] += 1
        self._metrics["executions"] += 1
        return instance

    def _start_message(self, instance: _Instance, now: datetime) -> _Message:
        parent = None
        if instance.parent is not None:
            parent = {
                "Name": instance.parent.name,
                "Version": "",
                "OrchestrationInstance": {
                    "InstanceId": instance.parent.instance_id,
                    "ExecutionId": instance.parent.execution_id,
                },
                "TaskScheduleId": instance.parent.task_id,
            }
        event = h.execution_started(
            now,
            name=instance.name,
            instance_id=instance.instance_id,
            execution_id=instance.execution_id,
            input_text=instance.input_text,
            parent=parent,
        )
        return _Message("start", event, instance.execution_id)

    def _new_instance_id(self) -> str:
        # Deterministic GUID-like ids (the extension uses Guid.NewGuid().ToString("N")).
        self._instance_seq += 1
        return uuid.uuid5(_ID_NAMESPACE, f"{self.hub_name}/instance/{self._instance_seq}").hex

    def _execution_id(self, instance_id: str) -> str:
        generation = self._generations[instance_id]
        return uuid.uuid5(_ID_NAMESPACE, f"{self.hub_name}/{instance_id}/execution/{generation}").hex

    # ------------------------------------------------------------------ activities
    def _submit(self, job: _ActivityJob) -> None:
        self._jobs.append(job)
        self._jobs_waiting_to_start += 1
        self._activity_calls[job.name] += 1
        self._jobs_available.notify()

    def _worker_main(self) -> None:
        while True:
            with self._jobs_available:
                while not self._jobs and not self._closing:
                    self._jobs_available.wait()
                if not self._jobs:
                    return
                job = self._jobs.popleft()
            with self._runnable():
                with self._lock:
                    self._jobs_waiting_to_start -= 1
                    self._jobs_running += 1
                try:
                    event = self._execute_activity(job)
                finally:
                    with self._lock:
                        self._jobs_running -= 1
                with self._lock:
                    self._completions.append((job, event))
            self._signal()  # after leaving running(), so the driver sees the clock idle

    def _execute_activity(self, job: _ActivityJob) -> HistoryEvent:
        info = self.registry.activity(job.name)
        try:
            if info is None:
                raise LookupError(f"activity function '{job.name}' is not registered")
            # The worker decodes the trigger payload with the SDK's ActivityTriggerConverter.
            value = None
            if job.input_text is not None:
                value = ActivityTriggerConverter.decode(meta.Datum(job.input_text, "json"), trigger_metadata=None)
            # An activity may also declare a durable client binding (e.g. to start other orchestrations).
            bindings = self.http._client_bindings(info) if info.durable_clients else None
            result = info.user_function(**build_kwargs(info, value, bindings))
            if inspect.isawaitable(result):
                # As in the Python worker, async functions share one event loop (the SDK's aiohttp
                # session is process-wide and bound to the loop that created it).
                from .http_server import client_loop

                result = client_loop().run(_await(result))
            encoded = ActivityTriggerConverter.encode(result, expected_type=None)
            return h.task_completed(self.clock.now(), job.task_id, encoded.value)
        except Exception as exc:
            with self._lock:
                self._activity_failures[job.name] += 1
            reason = f"Activity function '{job.name}' failed: {type(exc).__name__}: {exc}"
            details = _user_traceback(exc)
            return h.task_failed(self.clock.now(), job.task_id, reason, details)

    # ------------------------------------------------------------------ status
    def _require(self, instance_id: str) -> _Instance:
        instance = self._instances.get(instance_id)
        if instance is None:
            raise InstanceNotFound(f"No instance with ID {instance_id} found.")
        return instance

    def _select(
        self,
        runtime_status: Iterable[str] | None,
        created_from: datetime | None,
        created_to: datetime | None,
        prefix: str | None,
    ) -> list[_Instance]:
        statuses = {s.lower() for s in runtime_status} if runtime_status else None
        selected = []
        for instance_id in sorted(self._instances):
            instance = self._instances[instance_id]
            if statuses is not None and instance.status.lower() not in statuses:
                continue
            if created_from is not None and instance.created_time < created_from:
                continue
            if created_to is not None and instance.created_time > created_to:
                continue
            if prefix and not instance_id.startswith(prefix):
                continue
            selected.append(instance)
        return selected

    def _status(self, instance: _Instance, *, show_history: bool = False, show_input: bool = True) -> dict[str, Any]:
        status: dict[str, Any] = {
            "name": instance.name,
            "instanceId": instance.instance_id,
            "runtimeStatus": instance.status,
            "input": json.loads(instance.input_text) if show_input and instance.input_text is not None else None,
            "customStatus": instance.custom_status,
            "output": instance.output,
            "createdTime": h.status_time(instance.created_time),
            "lastUpdatedTime": h.status_time(instance.last_updated_time or instance.created_time),
        }
        if show_history:
            status["historyEvents"] = [
                {"EventType": h.event_type_name(e)}
                | {key: value for key, value in e.items() if key not in ("EventType", "IsPlayed")}
                for e in instance.history
            ]
        return status

    def _waiting_report(self, targets: list[str] | None) -> dict[str, list[str]]:
        with self._lock:
            ids = targets if targets is not None else sorted(self._instances)
            report: dict[str, list[str]] = {}
            for instance_id in ids:
                instance = self._instances.get(instance_id)
                if instance is None or instance.status in TERMINAL_STATUSES:
                    continue
                report[instance_id] = list(instance.waiting_on) or [
                    "nothing the host can complete (the orchestrator is not done but scheduled no pending work)"
                ]
            return report

    def _deadlock_message(self, waiting: dict[str, list[str]]) -> str:
        lines = []
        with self._lock:
            for instance_id, items in waiting.items():
                instance = self._instances[instance_id]
                lines.append(
                    f"instance '{instance_id}' (orchestrator '{instance.name}', {instance.status}) waits for: "
                    + "; ".join(items)
                )
        return (
            f"no progress possible at {h.status_time(self.clock.now())}: no runnable work, no pending durable "
            "timer and no sleeping activity, but " + " | ".join(lines)
        )

    def _timeout_message(self, targets: list[str] | None, budget_s: float | None) -> str:
        waiting = self._waiting_report(targets)
        names = ", ".join(f"'{iid}'" for iid in waiting) or "(none)"
        return f"real-time budget of {budget_s:.1f}s exhausted; unfinished instances: {names}"


@dataclass
class _EpisodeOutcome:
    state: dict[str, Any] | None = None
    replay: ShimResult | None = None
    failure: tuple[str, str] | None = None  # (reason, details): the extension fails the instance
    stack: str | None = None


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _user_traceback(exc: BaseException) -> str:
    """The traceback without the host's own frames (what the worker reports for the function)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__ and tb.tb_next is not None:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))
