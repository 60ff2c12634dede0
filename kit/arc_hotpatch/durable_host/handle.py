"""Calling an app's orchestrator handle, in the host's process or in worker processes.

The handle is a pure function of the context JSON: the registered orchestrator's user function
takes the context the extension sends and returns the state JSON, or raises with the state after
``$OutOfProcData$`` when user code raised. ``call_handle`` turns that into a ``HandleOutcome``;
``OrchestratorProcesses`` runs the same function in worker processes that imported the app
themselves, as the Functions host runs the Python worker in a process of its own, so replays
can use another core than the host's own bookkeeping and the activities.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import math
import multiprocessing
import threading
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from azure.functions._durable_functions import OrchestrationContext

from arc_hotpatch.heap import HEAP_TRIM_INTERVAL_S, HeapTrimmer, widen_collector
from arc_hotpatch.procname import ORCHESTRATOR_WORKER_PROCESS, name_this_process

from .functions import FunctionRegistry, load_app

_OUT_OF_PROC_MARKER = "$OutOfProcData$:"


def _memoize_sdk_timestamp_parsing() -> None:
    """Every replay re-parses every history timestamp with dateutil (the bulk of replay time).

    The strings repeat from replay to replay and datetimes are immutable, so memoizing the
    SDK's own parser changes no result, only the cost of long-running local simulations.
    """
    history_event_module = importlib.import_module("azure.durable_functions.models.history.HistoryEvent")

    parse = history_event_module.dt_parse
    if not hasattr(parse, "cache_info"):
        history_event_module.dt_parse = functools.lru_cache(maxsize=1 << 16)(parse)


def _memoize_sdk_executor_payload_type() -> None:
    """Every handle call builds a ``TaskOrchestrationExecutor``, whose ``__init__`` defines the same
    ``namedtuple`` class anew (a tenth of replay time). The class is immutable and depends on its
    arguments alone, so handing back the one made first changes no result."""
    executor_module = importlib.import_module("azure.durable_functions.models.TaskOrchestrationExecutor")
    make = executor_module.namedtuple
    if not hasattr(make, "cache_info"):
        executor_module.namedtuple = functools.lru_cache(maxsize=16)(make)


# Applied wherever handles are called: the host's process, and each worker process, which imports
# this module to run ``_call_in_worker``.
_memoize_sdk_timestamp_parsing()
_memoize_sdk_executor_payload_type()


class _OrchestratorCrash(Exception):
    """The orchestrator handle raised something that is not the SDK's $OutOfProcData$ failure."""


@dataclass
class HandleOutcome:
    """What one call of an orchestrator handle produced (picklable: it comes back from worker processes).

    ``state``: the state the handle returned, or the one the SDK put after ``$OutOfProcData$`` when
    user code raised (``stack`` is then the user exception's traceback). ``failure``: (reason,
    details) when the handle itself failed, for which the extension fails the instance.
    """

    state: dict[str, Any] | None = None
    failure: tuple[str, str] | None = None
    stack: str | None = None


def call_handle(user_function: Callable[[Any], Any], orchestrator_name: str, context_json: str) -> HandleOutcome:
    """Call the orchestrator handle with ``context_json`` and read its answer as the extension does."""
    outcome = HandleOutcome()
    try:
        state_json = user_function(OrchestrationContext(context_json))
        if not isinstance(state_json, str):
            raise _OrchestratorCrash(
                f"orchestrator handle returned {type(state_json).__name__}, expected the state JSON string "
                "(is the function registered with @app.orchestration_trigger?)"
            )
        outcome.state = json.loads(state_json)
    except _OrchestratorCrash as exc:
        outcome.failure = (f"Orchestrator function '{orchestrator_name}' failed: {exc}", "")
    except Exception as exc:
        message = str(exc)
        marker = message.find(_OUT_OF_PROC_MARKER)
        if marker < 0:
            outcome.failure = (
                f"Orchestrator function '{orchestrator_name}' failed: {message or type(exc).__name__}",
                "".join(traceback.format_exception(exc)),
            )
        else:
            # User code raised: the SDK's state (with "error") follows the marker.
            outcome.state = json.loads(message[marker + len(_OUT_OF_PROC_MARKER) :])
            cause = exc.__cause__ or exc
            outcome.stack = "".join(traceback.format_exception(cause))
    return outcome


# ---------------------------------------------------------------------- worker processes
_worker_registry: FunctionRegistry | None = None  # in a worker process: the functions of the app it imported
_worker_heap: HeapTrimmer | None = None  # in a worker process: replays free what they parsed, give it back


def _start_worker(app_spec: str) -> None:
    """Initializer of a worker process: import the app the host runs."""
    global _worker_registry, _worker_heap
    name_this_process(ORCHESTRATOR_WORKER_PROCESS)
    _worker_registry = FunctionRegistry(load_app(app_spec))
    _worker_heap = HeapTrimmer(HEAP_TRIM_INTERVAL_S)
    widen_collector()


def _call_in_worker(orchestrator_name: str, context_json: str) -> HandleOutcome:
    """One episode's handle call in a worker process."""
    if _worker_registry is None:
        raise RuntimeError("the orchestrator worker process has not imported the app")
    info = _worker_registry.orchestrator(orchestrator_name)
    if info is None:
        raise LookupError(f"the app imported by the worker process has no orchestrator '{orchestrator_name}'")
    return call_handle(info.user_function, orchestrator_name, context_json)


def _call_chunk_in_worker(calls: Sequence[tuple[str, str]]) -> list[HandleOutcome | BaseException]:
    """Several episodes' handle calls; a call that raised gives its exception, the others still run."""
    results: list[HandleOutcome | BaseException] = []
    for orchestrator_name, context_json in calls:
        try:
            results.append(_call_in_worker(orchestrator_name, context_json))
        except Exception as exc:  # raised again by the driver at that episode's turn, as in process
            results.append(exc)
    if _worker_heap is not None:
        _worker_heap.maybe_trim()
    return results


# Calls per work item sent to a worker, at most: fewer round trips through the executor (its feeding
# threads wait for the host's busy interpreter lock), yet the first results of a pass come back early.
MAX_CALLS_PER_CHUNK = 16


class OrchestratorProcesses:
    """``processes`` worker processes that import ``app_spec`` and call orchestrator handles.

    Started on the first call ("spawn": the host has threads, a forked child could inherit a held
    lock); ``close()`` shuts them down.
    """

    def __init__(self, processes: int, app_spec: str) -> None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        self.processes = processes
        self.app_spec = app_spec
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()  # the driver submits, close() may come from another thread
        self._closed = False

    def submit(self, orchestrator_name: str, context_json: str) -> Future[HandleOutcome]:
        """Start one handle call in a worker; the future holds its ``HandleOutcome``."""
        return self.submit_all([(orchestrator_name, context_json)])[0]

    def submit_all(self, calls: Sequence[tuple[str, str]]) -> list[Future[HandleOutcome]]:
        """Start the handle calls ``(orchestrator name, context JSON)``; one future per call, in order.

        The calls travel in chunks, two per worker (the executor queues that many at once) and
        each of at most ``MAX_CALLS_PER_CHUNK``: the driver commits the first chunk while the
        worker runs the second, and a worker always has its next chunk queued.
        """
        executor = self._executor_started()
        size = max(1, min(MAX_CALLS_PER_CHUNK, math.ceil(len(calls) / (2 * self.processes))))
        futures: list[Future[HandleOutcome]] = []
        for start in range(0, len(calls), size):
            chunk = list(calls[start : start + size])
            mine: list[Future[HandleOutcome]] = [Future() for _ in chunk]
            executor.submit(_call_chunk_in_worker, chunk).add_done_callback(functools.partial(_settle, mine))
            futures.extend(mine)
        return futures

    def _executor_started(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise RuntimeError("the orchestrator worker processes are shut down")
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    max_workers=self.processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_worker,
                    initargs=(self.app_spec,),
                )
            return self._executor

    def close(self) -> None:
        """Shut the worker processes down (calls not started yet are cancelled)."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


def _settle(futures: list[Future[HandleOutcome]], chunk: Future[list[HandleOutcome | BaseException]]) -> None:
    """Hand a chunk's results (or its failure, e.g. a worker that died) to the futures of its calls."""
    if chunk.cancelled():
        for future in futures:
            future.cancel()
        return
    error = chunk.exception()
    results = chunk.result() if error is None else [error] * len(futures)
    for future, result in zip(futures, results, strict=True):
        # The driver may have cancelled a call's future meanwhile (an abandoned pass): nothing to hand over.
        with contextlib.suppress(InvalidStateError):
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
