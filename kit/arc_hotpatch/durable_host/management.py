"""The management API of the local durable host: start, status, list, raise event, terminate, purge.

What ``DurableOrchestrationClient`` reaches through the extension's RPC endpoint and what the
public ``/runtime/webhooks/durabletask`` routes serve (both in ``http_server``, through the
``DurableHost`` facade), with the extension's errors and messages.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from azure.durable_functions.models.utils.df_serialization import df_dumps

from . import history as h
from .errors import InstanceAlreadyExists, InstanceGone, OrchestratorNotFound
from .functions import FunctionRegistry
from .history import HistoryEvent
from .shim import unknown_function_message
from .store import ACTIVE_STATUSES, TERMINAL_STATUSES, InstanceStore, Message


class InstanceManagement:
    """Client-facing operations on the instance store; each takes the host's lock, and changes signal the driver."""

    def __init__(self, store: InstanceStore, registry: FunctionRegistry) -> None:
        self.store = store
        self.sync = store.sync
        self.registry = registry
        self._orchestrator_names = registry.orchestrator_names()

    # ------------------------------------------------------------------ changes
    def start_new(self, name: str, instance_id: str | None, input: Any) -> str:
        # Encoded as the SDK's client encodes it (custom objects with ``to_json`` in their envelope).
        return self.start_new_raw(name, instance_id, None if input is None else df_dumps(input))

    def start_new_raw(self, name: str, instance_id: str | None, input_text: str | None) -> str:
        info = self.registry.orchestrator(name)
        if info is None:
            raise OrchestratorNotFound(unknown_function_message(name, "orchestrator", self._orchestrator_names))
        if input_text is not None:
            json.loads(input_text)  # reject what the extension could not deserialize either
        with self.sync.lock:
            if instance_id is None:
                instance_id = self.store.new_instance_id()
            elif not instance_id or instance_id.startswith("@") or any(c in instance_id for c in "/\\#?"):
                raise ValueError(f"invalid instance id {instance_id!r}")
            existing = self.store.instances.get(instance_id)
            if existing is not None and existing.status in ACTIVE_STATUSES:
                raise InstanceAlreadyExists(
                    f"An Orchestration instance with the status {existing.status} already exists."
                )
            self.store.create_instance(instance_id, info.durable_name, input_text, parent=None)
            self.sync.signal()
        return instance_id

    def raise_event(self, instance_id: str, name: str, data: Any) -> None:
        self.raise_event_raw(instance_id, name, json.dumps(data))

    def raise_event_raw(self, instance_id: str, name: str, input_text: str | None) -> None:
        if not name:
            raise ValueError("event name must be a non-empty string")
        with self.sync.lock:
            instance = self.store.require(instance_id)
            if instance.status in TERMINAL_STATUSES:
                raise InstanceGone(f"Instance with ID {instance_id} is gone: either completed or failed")
            self.store.enqueue(instance, Message("event", h.event_raised(self.sync.clock.now(), name, input_text)))
            self.store.metrics.counts["events_raised"] += 1
            self.sync.signal()

    def terminate(self, instance_id: str, reason: str | None) -> None:
        with self.sync.lock:
            instance = self.store.require(instance_id)
            if instance.status in TERMINAL_STATUSES:
                raise InstanceGone(f"Instance with ID {instance_id} is already in a terminal state ({instance.status})")
            self.store.enqueue(instance, Message("terminate", None, reason=reason))
            self.sync.signal()

    def purge(self, instance_id: str) -> int:
        """Delete the instance and its history whatever its status, as the Azure Storage provider's purge by
        instance id does (a running one is gone: its pending timers, activity results and events are dropped)."""
        with self.sync.lock:
            if instance_id not in self.store.instances:
                return 0
            self.store.remove(instance_id)
            return 1

    def purge_instances(
        self, created_from: datetime, created_to: datetime | None, runtime_status: Iterable[str] | None
    ) -> int:
        statuses = set(runtime_status) if runtime_status else set(TERMINAL_STATUSES)
        with self.sync.lock:
            selected = self.store.select(statuses & TERMINAL_STATUSES, created_from, created_to, None)
            for instance in selected:
                self.store.remove(instance.instance_id)
            return len(selected)

    # ------------------------------------------------------------------ queries
    def get_status(self, instance_id: str, show_history: bool, show_input: bool,
                   show_history_output: bool = False) -> dict[str, Any]:
        with self.sync.lock:
            return self.store.status(self.store.require(instance_id), show_history=show_history, show_input=show_input,
                                     show_history_output=show_history_output)

    def find_status(self, instance_id: str) -> dict[str, Any] | None:
        with self.sync.lock:
            instance = self.store.instances.get(instance_id)
            return None if instance is None else self.store.status(instance)

    def list_instances(
        self,
        runtime_status: Iterable[str] | None,
        created_from: datetime | None,
        created_to: datetime | None,
        instance_id_prefix: str | None,
        show_input: bool,
    ) -> list[dict[str, Any]]:
        with self.sync.lock:
            selected = self.store.select(runtime_status, created_from, created_to, instance_id_prefix)
            return [self.store.status(instance, show_input=show_input) for instance in selected]

    def history(self, instance_id: str) -> list[HistoryEvent]:
        with self.sync.lock:
            return self.store.require(instance_id).recorded_history()

    def execution_histories(self, instance_id: str) -> list[list[HistoryEvent]]:
        with self.sync.lock:
            instance = self.store.require(instance_id)
            return [[dict(e) for e in past] for past in instance.previous_histories] + [instance.recorded_history()]

    def instance_ids(self) -> list[str]:
        with self.sync.lock:
            return self.store.sorted_ids()

    def progress_snapshot(self) -> dict[str, Any]:
        with self.sync.lock:
            by_status = Counter(instance.status for instance in self.store.instances.values())
            return {
                "virtual_time": h.status_time(self.sync.clock.now()),
                "instances": dict(sorted(by_status.items())),
                "episodes": self.store.metrics.counts["episodes"],
                "activity_calls": sum(self.store.metrics.activity_calls.values()),
                "pending_timers": len(self.store.timers),
            }
