"""The activity workers of the local durable host: a job queue, a pool of threads, and their completions.

Episodes submit a job per scheduled activity; a worker decodes the input as the Python worker
does, calls the app's activity function and turns its result or exception into TaskCompleted /
TaskFailed. The driver collects the completions into the instances' inboxes (in a reproducible
order on a VirtualClock, whatever order the threads finished in).
"""

from __future__ import annotations

import inspect
import threading
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azure.functions import meta
from azure.functions.durable_functions import ActivityTriggerConverter

from . import history as h
from .functions import FunctionInfo, FunctionRegistry, build_kwargs
from .history import HistoryEvent
from .store import InstanceStore, Message


@dataclass
class ActivityJob:
    """One scheduled activity call of an execution."""

    instance_id: str
    execution_id: str
    task_id: int
    name: str
    input_text: str | None


class ActivityWorkers:
    """``workers`` threads running the app's activities from one queue; completions wait for the driver.

    The queue shares the host's lock (the store's ``sync.lock``): ``_jobs_available`` is a condition on it.
    """

    def __init__(
        self,
        store: InstanceStore,
        registry: FunctionRegistry,
        *,
        workers: int,
        client_bindings: Callable[[FunctionInfo], dict[str, str]],
    ) -> None:
        self.store = store
        self.sync = store.sync
        self.registry = registry
        self.workers = workers
        self._client_bindings = client_bindings
        self._jobs_available = threading.Condition(self.sync.lock)
        self._jobs: deque[ActivityJob] = deque()
        self._jobs_waiting_to_start = 0
        self._jobs_running = 0
        self._completions: list[tuple[ActivityJob, HistoryEvent]] = []
        self._closing = False
        self._threads = [
            threading.Thread(target=self._worker_main, name=f"durable-activity-{n}", daemon=True)
            for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, job: ActivityJob) -> None:
        """Queue ``job`` (the caller holds the lock)."""
        self._jobs.append(job)
        self._jobs_waiting_to_start += 1
        self.store.metrics.activity_calls[job.name] += 1
        self._jobs_available.notify()

    def close(self) -> None:
        """Drop the queued jobs and let the workers end."""
        with self.sync.lock:
            self._closing = True
            self._jobs_waiting_to_start -= len(self._jobs)
            self._jobs.clear()  # queued activities of a closed host never start
            self._jobs_available.notify_all()
        for thread in self._threads:
            thread.join(timeout=1.0)  # a worker parked on a virtual-clock sleep stays (daemon)

    # ------------------------------------------------------------------ what the driver asks
    def collect_completions(self) -> bool:
        """Deliver the completions so far to their executions' inboxes; whether there were any."""
        with self.sync.lock:
            completed, self._completions = self._completions, []
            if self.sync.virtual:
                # Deterministic delivery order whatever order the worker threads finished in.
                completed.sort(key=lambda item: (item[0].instance_id, item[0].execution_id, item[0].task_id))
            for job, event in completed:
                instance = self.store.active_execution(job.instance_id, job.execution_id)
                if instance is not None:
                    self.store.enqueue(instance, Message("completion", event, job.execution_id))
            return bool(completed)

    @property
    def has_completions(self) -> bool:
        """Completions wait for ``collect_completions`` (read under the lock)."""
        return bool(self._completions)

    def idle(self) -> bool:
        """No job queued or running, no completion waiting."""
        with self.sync.lock:
            return not self._jobs and self._jobs_running == 0 and not self._completions

    def settled(self) -> bool:
        """No job can start: none is waiting, or every worker is busy (e.g. parked on a clock sleep)."""
        with self.sync.lock:
            waiting, running = self._jobs_waiting_to_start, self._jobs_running
        return waiting == 0 or running >= self.workers

    # ------------------------------------------------------------------ workers
    def _worker_main(self) -> None:
        while True:
            with self._jobs_available:
                while not self._jobs and not self._closing:
                    self._jobs_available.wait()
                if not self._jobs:
                    return
                job = self._jobs.popleft()
            with self.sync.runnable():
                with self.sync.lock:
                    self._jobs_waiting_to_start -= 1
                    self._jobs_running += 1
                started = self.sync.clock.now()
                try:
                    event = self._execute(job)
                finally:
                    with self.sync.lock:
                        self._jobs_running -= 1
                        self.store.metrics.record_activity_duration(
                            job.name, (self.sync.clock.now() - started).total_seconds()
                        )
                with self.sync.lock:
                    self._completions.append((job, event))
            self.sync.signal()  # after leaving running(), so the driver sees the clock idle

    def _execute(self, job: ActivityJob) -> HistoryEvent:
        info = self.registry.activity(job.name)
        try:
            if info is None:
                raise LookupError(f"activity function '{job.name}' is not registered")
            # The worker decodes the trigger payload with the SDK's ActivityTriggerConverter.
            value = None
            if job.input_text is not None:
                value = ActivityTriggerConverter.decode(meta.Datum(job.input_text, "json"), trigger_metadata=None)
            # An activity may also declare a durable client binding (e.g. to start other orchestrations).
            bindings = self._client_bindings(info) if info.durable_clients else None
            result = info.user_function(**build_kwargs(info, value, bindings))
            if inspect.isawaitable(result):
                # As in the Python worker, async functions share one event loop (the SDK's aiohttp
                # session is process-wide and bound to the loop that created it).
                from .http_server import client_loop

                result = client_loop().run(_await(result))
            encoded = ActivityTriggerConverter.encode(result, expected_type=None)
            return h.task_completed(self.sync.clock.now(), job.task_id, encoded.value)
        except Exception as exc:
            with self.sync.lock:
                self.store.metrics.activity_failures[job.name] += 1
            reason = f"Activity function '{job.name}' failed: {type(exc).__name__}: {exc}"
            details = _user_traceback(exc)
            return h.task_failed(self.sync.clock.now(), job.task_id, reason, details)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _user_traceback(exc: BaseException) -> str:
    """The traceback without the host's own frames (what the worker reports for the function)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__ and tb.tb_next is not None:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))
