"""The local durable host: runs a FunctionApp's orchestrators, activities and client functions.

It plays the part of the Functions host plus the Durable extension (Azure Storage
flavour): every orchestrator episode calls the app's registered orchestrator handle
with the context JSON the extension sends (DTFx history included) and interprets the
returned actions through ``shim.ShimReplay``; activities run on a worker pool with
their JSON-decoded input; completions, timers, external events and sub-orchestration
results are delivered to instances in batches of up to ``batch_size`` messages per
episode, as the Azure Storage backend delivers queue messages.

With ``orchestrator_processes=N`` (and ``app_spec``, the ``module:attribute`` the workers import)
the orchestrator handles run in N worker processes, as the Functions host runs the Python worker
in a process of its own; a pass of the driver calls the handles of all its ready instances at
once and commits them in instance-id order, so the histories are the in-process ones.

Time comes from the host's clock. With a ``VirtualClock`` the driver runs all
runnable work, then jumps the clock to the next durable timer or sleeping thread;
ready work is ordered by instance id and task id so a run is reproducible. With a
``ScaledClock`` or ``SystemClock`` it runs in real time.

``DurableHost`` is the facade that wires the parts together and drives them:

- ``store.InstanceStore``: instances, their histories and inboxes, execution ids, durable timers;
- ``episodes.EpisodeRunner``: orchestrator episodes through the SDK handle, committing their actions;
- ``handle.OrchestratorProcesses``: the worker processes that call the handles (opt-in);
- ``activities.ActivityWorkers``: the worker pool that executes activities;
- ``management.InstanceManagement``: start, status, list, raise event, terminate, purge;
- ``http_server.HttpRuntime``: the RPC endpoint, the public server and the timer / Event Grid / HTTP triggers;

all sharing one lock (``sync.HostSync``) and one set of counters (``metrics.HostMetrics``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from arc_hotpatch.clocks import Clock, install_clock
from arc_hotpatch.heap import HeapTrimmer

from .activities import ActivityWorkers
from .episodes import (
    AZURE_STORAGE_LONG_TIMER_INTERVAL,
    AZURE_STORAGE_MAX_SHORT_TIMER,
    EpisodeRecord,
    EpisodeRunner,
    EpisodeSettings,
)
from .errors import DeadlockError, HostTimeoutError
from .functions import FunctionInfo, FunctionRegistry
from .handle import OrchestratorProcesses
from .history import HistoryEvent
from .management import InstanceManagement
from .metrics import HostMetrics
from .shim import DEFAULT_MAX_ORCHESTRATION_ACTIONS
from .store import RUNTIME_STATUSES, TERMINAL_STATUSES, InstanceStore
from .sync import HostSync

__all__ = [
    "AZURE_STORAGE_LONG_TIMER_INTERVAL",
    "AZURE_STORAGE_MAX_SHORT_TIMER",
    "RUNTIME_STATUSES",
    "TERMINAL_STATUSES",
    "DurableHost",
    "EpisodeRecord",
    "EpisodeSettings",
]

log = logging.getLogger(__name__)


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
        orchestrator_processes: int = 0,
        app_spec: str | None = None,
        keep_finished_histories: bool = True,
        heap_trim_interval_s: float | None = None,
    ) -> None:
        if activity_workers < 1:
            raise ValueError(f"activity_workers must be >= 1, got {activity_workers}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if orchestrator_processes < 0:
            raise ValueError(f"orchestrator_processes must be >= 0, got {orchestrator_processes}")
        if orchestrator_processes and not app_spec:
            raise ValueError("orchestrator_processes needs app_spec, the 'module:attribute' the workers import")
        self.app = app
        self.clock = clock
        self.hub_name = hub_name
        self.activity_workers = activity_workers
        self.registry = FunctionRegistry(app, route_prefix=route_prefix)
        self._previous_clock: Clock | None = install_clock(clock) if install else None
        self._installed = install

        self._sync = HostSync(clock)
        self._lock = self._sync.lock
        self._changed = self._sync.changed
        self._virtual = self._sync.virtual
        self._driver_lock = threading.Lock()  # one driver at a time (run_until_* or the background thread)
        self._background: threading.Thread | None = None
        self._stop = threading.Event()
        self.background_errors: list[BaseException] = []
        self._http: Any = None  # http_server.HttpRuntime, created on demand

        self._metrics = HostMetrics()
        self._store = InstanceStore(self._sync, self._metrics, hub_name)
        self._management = InstanceManagement(self._store, self.registry)
        self._workers = ActivityWorkers(
            self._store, self.registry, workers=activity_workers, client_bindings=self._client_bindings
        )
        self._settings = EpisodeSettings(
            batch_size=batch_size,
            max_short_timer=max_short_timer,
            long_timer_interval=long_timer_interval,
            max_orchestration_actions=max_orchestration_actions,
            record_episodes=record_episodes,
            keep_finished_histories=keep_finished_histories,
        )
        # Worker processes start on the first episode, so a host that never runs one costs none.
        self._processes: OrchestratorProcesses | None = None
        if orchestrator_processes and app_spec:
            self._processes = OrchestratorProcesses(orchestrator_processes, app_spec)
        self._episodes = EpisodeRunner(self._store, self._workers, self.registry, self._settings, self._processes)
        # Long runs (simulate, serve) give the C heap's free pages back now and then (heap.py).
        self._heap = HeapTrimmer(heap_trim_interval_s) if heap_trim_interval_s is not None else None

    # The episode settings, readable under the names of the constructor's arguments.
    @property
    def batch_size(self) -> int:
        return self._settings.batch_size

    @property
    def max_short_timer(self) -> timedelta | None:
        return self._settings.max_short_timer

    @property
    def long_timer_interval(self) -> timedelta:
        return self._settings.long_timer_interval

    @property
    def max_orchestration_actions(self) -> int:
        return self._settings.max_orchestration_actions

    @property
    def record_episodes(self) -> bool:
        return self._settings.record_episodes

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
        self._workers.close()
        if self._processes is not None:
            self._processes.close()
        if self._installed and self._previous_clock is not None:
            install_clock(self._previous_clock)
            self._installed = False

    # ------------------------------------------------------------------ client API
    def start_new(self, name: str, instance_id: str | None = None, input: Any = None) -> str:
        """Start orchestrator ``name`` (the DurableOrchestrationClient.start_new of this host)."""
        return self._management.start_new(name, instance_id, input)

    def start_new_raw(self, name: str, instance_id: str | None, input_text: str | None) -> str:
        """Start with the input already JSON-encoded (what an HTTP client sent)."""
        return self._management.start_new_raw(name, instance_id, input_text)

    def raise_event(self, instance_id: str, name: str, data: Any = None) -> None:
        """Send external event ``name`` with ``data`` (serialized to JSON) to an instance."""
        self._management.raise_event(instance_id, name, data)

    def raise_event_raw(self, instance_id: str, name: str, input_text: str | None) -> None:
        self._management.raise_event_raw(instance_id, name, input_text)

    def terminate(self, instance_id: str, reason: str | None = None) -> None:
        self._management.terminate(instance_id, reason)

    def get_status(self, instance_id: str, *, show_history: bool = False, show_input: bool = True,
                   show_history_output: bool = False) -> dict[str, Any]:
        return self._management.get_status(instance_id, show_history, show_input, show_history_output)

    def find_status(self, instance_id: str) -> dict[str, Any] | None:
        return self._management.find_status(instance_id)

    def list_instances(
        self,
        *,
        runtime_status: Iterable[str] | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        instance_id_prefix: str | None = None,
        show_input: bool = True,
    ) -> list[dict[str, Any]]:
        return self._management.list_instances(runtime_status, created_from, created_to, instance_id_prefix, show_input)

    def orchestrator_names(self) -> dict[str, str]:
        """Every instance's orchestrator function name by instance id (no status rendered: cheap for many)."""
        with self._sync.lock:
            return {instance_id: instance.name for instance_id, instance in self._store.instances.items()}

    def purge(self, instance_id: str) -> int:
        """Delete a finished instance's state and history; returns the number deleted (0 or 1)."""
        return self._management.purge(instance_id)

    def purge_instances(
        self,
        *,
        created_from: datetime,
        created_to: datetime | None = None,
        runtime_status: Iterable[str] | None = None,
    ) -> int:
        return self._management.purge_instances(created_from, created_to, runtime_status)

    def history(self, instance_id: str) -> list[HistoryEvent]:
        """The current execution's history (copies of the DTFx events, as sent to the SDK)."""
        return self._management.history(instance_id)

    def execution_histories(self, instance_id: str) -> list[list[HistoryEvent]]:
        """Histories of the last executions (continue-as-new), oldest first, the current one last."""
        return self._management.execution_histories(instance_id)

    def episode_log(self, instance_id: str | None = None) -> list[EpisodeRecord]:
        return self._episodes.episode_log(instance_id)

    def instance_ids(self) -> list[str]:
        return self._management.instance_ids()

    def progress_snapshot(self) -> dict[str, Any]:
        """Small summary for a progress line: virtual time, instances per status, work done."""
        return self._management.progress_snapshot()

    def metrics(self) -> dict[str, Any]:
        with self._lock:
            return self._metrics.report()

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
        instances = self._store.instances
        with self._lock:
            for instance_id in targets or []:
                self._store.require(instance_id)
        last_report = time.monotonic()

        def done() -> bool:
            nonlocal last_report
            with self._lock:
                ids = targets if targets is not None else list(instances)
                finished = all(iid not in instances or instances[iid].status in TERMINAL_STATUSES for iid in ids)
            if progress is not None and (finished or time.monotonic() - last_report >= progress_interval_s):
                last_report = time.monotonic()
                progress(self.progress_snapshot())
            return finished

        self._drive_or_wait(done, targets, horizon=None, timeout_real_s=timeout_real_s)
        with self._lock:
            ids = targets if targets is not None else self._store.sorted_ids()
            return {iid: self._store.status(instances[iid]) for iid in ids if iid in instances}

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

    # -------------------------------------------------------- triggers and client functions (http_server)
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

    def _client_bindings(self, info: FunctionInfo) -> dict[str, str]:
        """The durable client bindings of an activity that declares one (they point at this host's RPC endpoint)."""
        return self.http._client_bindings(info)

    def _signal(self) -> None:
        """Wake the driver: something changed (http_server calls this when a client function ends)."""
        self._sync.signal()

    # ------------------------------------------------------------------ the driver loop
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
        store, workers = self._store, self._workers
        while True:
            store.fire_due_timers()
            if background and self._http is not None:
                self._http.fire_due_triggers()
            if not self._virtual:
                workers.collect_completions()
            self._episodes.run_ready_episodes()
            if done():
                return
            if deadline is not None and time.monotonic() > deadline:
                raise HostTimeoutError(self._timeout_message(targets, budget_s))
            if self._virtual:
                if not self._wait_quiescent(deadline, background):
                    continue
                if workers.collect_completions() or store.has_inbox_work():
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
                        self._sync.wait_signal(0.05)
                        continue
                    waiting = store.waiting_report(targets)
                    raise DeadlockError(store.deadlock_message(waiting), waiting)
                if next_due > self.clock.now():
                    self._trim_heap()
                    self.clock.advance_to(next_due)  # type: ignore[attr-defined]
                continue
            # Real time: sleep until the next durable timer (or trigger) is due or work arrives.
            if horizon is not None and not store.has_inbox_work() and workers.idle():
                return
            self._trim_heap()
            with self._changed:
                if store.has_inbox_work() or workers.has_completions:
                    continue
                self._changed.wait(self._real_wait_seconds(include_triggers=background))

    # -------------------------------------------------------------- driver helpers
    def _trim_heap(self) -> None:
        if self._heap is not None:
            self._heap.maybe_trim()

    def _reached(self, horizon: datetime) -> bool:
        """Nothing left to do before ``horizon`` (used while a background driver runs)."""
        if self._store.has_inbox_work():
            return False
        if self._virtual:
            return self.clock.now() >= horizon and self._quiescent() and not self._workers.has_completions
        return self._workers.idle()

    def _quiescent(self) -> bool:
        if self._http is not None and self._http.inflight:
            return False  # a client function is still running (it may start or signal instances)
        # Queued jobs that cannot start because every worker is parked on a clock sleep count as idle.
        workers_settled = self._workers.settled()
        # A VirtualClock also counts released-but-not-awake sleepers as runnable.
        return bool(self.clock.idle()) and workers_settled  # type: ignore[attr-defined]

    def _wait_quiescent(self, deadline: float | None, background: bool) -> bool:
        while not self._quiescent():
            if deadline is not None and time.monotonic() > deadline:
                return False
            if background and self._stop.is_set():
                return False
            self._sync.wait_signal(0.01)
        return True

    def _next_due(self, *, include_triggers: bool) -> datetime | None:
        candidates: list[datetime] = []
        timer_due = self._store.next_timer_due()
        if timer_due is not None:
            candidates.append(timer_due)
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

    def _timeout_message(self, targets: list[str] | None, budget_s: float | None) -> str:
        waiting = self._store.waiting_report(targets)
        names = ", ".join(f"'{iid}'" for iid in waiting) or "(none)"
        return f"real-time budget of {budget_s:.1f}s exhausted; unfinished instances: {names}"
