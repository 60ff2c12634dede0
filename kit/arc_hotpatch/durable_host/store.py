"""The instance store of the local durable host: instances, their histories and inboxes, pending durable timers.

What the Azure Storage backend keeps for a task hub: every instance by id with its current
execution (history, status, output, custom status, queued messages) and the histories of its
last executions, the execution-id generations, and the durable timers not yet fired. Also how
an instance is rendered as the extension renders a status, and what unfinished instances wait for.
"""

from __future__ import annotations

import bisect
import heapq
import json
import uuid
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import Any

from . import history as h
from .errors import InstanceNotFound
from .history import HistoryEvent
from .metrics import HostMetrics
from .sync import HostSync

PENDING = "Pending"
RUNNING = "Running"
COMPLETED = "Completed"
FAILED = "Failed"
TERMINATED = "Terminated"
CONTINUED_AS_NEW = "ContinuedAsNew"
TERMINAL_STATUSES = frozenset({COMPLETED, FAILED, TERMINATED})
ACTIVE_STATUSES = frozenset({PENDING, RUNNING, CONTINUED_AS_NEW})
RUNTIME_STATUSES = (PENDING, RUNNING, COMPLETED, FAILED, TERMINATED, CONTINUED_AS_NEW)

_ID_NAMESPACE = uuid.UUID("0d4c3f2a-7a51-4f7e-9a43-2f1e8c6b5d90")
_MAX_CHAR = chr(0x10FFFF)
_created_of = itemgetter(0)  # the created time of a (created_time, instance_id) index entry
PREVIOUS_HISTORIES_KEPT = 10  # the histories of an instance's last executions that stay (continue-as-new)


@dataclass
class Message:
    """A queued message for an instance; ``execution_id`` None means "whatever execution is current"."""

    kind: str  # "start" | "event" | "completion" | "terminate"
    event: HistoryEvent | None
    execution_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class ParentLink:
    """The execution and task of the orchestration that started a sub-orchestration."""

    instance_id: str
    execution_id: str
    task_id: int
    name: str


@dataclass(order=True)
class PendingTimer:
    """A durable timer not yet fired; the heap orders by due time, then instance id and timer id."""

    fire_at: datetime
    instance_id: str
    timer_id: int
    execution_id: str = field(compare=False)
    fire_at_text: str = field(compare=False)


@dataclass(slots=True)  # slots: one per orchestration, tens of thousands in a large simulation
class Instance:
    """An orchestration instance: its current execution's state and history, and its inbox."""

    instance_id: str
    name: str
    input_text: str | None
    execution_id: str
    parent: ParentLink | None
    created_time: datetime
    status: str = PENDING
    last_updated_time: datetime | None = None
    output: Any = None
    custom_status: Any = None
    history: list[HistoryEvent] = field(default_factory=list)  # played events without payloads (``without_payload``)
    history_json: list[str] = field(default_factory=list)  # the played events, already serialized, whole
    # Lists, not deques: an empty deque costs 760 bytes (a list 56), times every instance of a large fleet; an
    # inbox holds a few messages, so taking a batch off its front costs no more than a deque's.
    inbox: list[Message] = field(default_factory=list)
    waiting_on: list[str] = field(default_factory=list)
    previous_histories: list[list[HistoryEvent]] = field(default_factory=list)
    packed: bytes | None = None  # a finished instance's input, output and custom status, compressed (``pack``)

    def recorded_history(self) -> list[HistoryEvent]:
        """The current execution's events as recorded, payloads included (``history`` keeps them only serialized)."""
        return [json.loads(text) for text in self.history_json]

    def keep_previous(self, history: list[HistoryEvent]) -> None:
        """Keep the history of an execution that continued as new (the last ``PREVIOUS_HISTORIES_KEPT``)."""
        self.previous_histories.append(history)
        del self.previous_histories[:-PREVIOUS_HISTORIES_KEPT]

    def pack(self) -> None:
        """Keep a finished instance's input, output and custom status as one compressed blob (its status query
        unpacks it): thousands of finished machines cost their outcomes' bytes, not their parsed objects."""
        text = json.dumps([self.input_text, self.output, self.custom_status], separators=(",", ":"))
        self.packed = zlib.compress(text.encode("utf-8"), 1)
        self.input_text = self.output = self.custom_status = None

    def outcome(self) -> tuple[str | None, Any, Any]:
        """(input text, output, custom status), packed or not."""
        if self.packed is None:
            return self.input_text, self.output, self.custom_status
        input_text, output, custom_status = json.loads(zlib.decompress(self.packed))
        return input_text, output, custom_status


class InstanceStore:
    """Instances by id, execution ids, and the heap of pending durable timers.

    It carries what every component shares: ``sync`` (the host's one lock, the clock, the driver's
    wake-up) and ``metrics``. Methods that do not take the lock themselves expect the caller to hold it.

    ``instances`` is read freely, but instances are added and removed, messages queued and taken,
    and created times changed only through the store's methods: they keep its indexes, the sorted
    instance ids, the (created time, id) order and the set of instances with queued messages, so
    that status queries and the driver's loop cost what they return, not the size of the task hub.
    """

    def __init__(self, sync: HostSync, metrics: HostMetrics, hub_name: str) -> None:
        self.sync = sync
        self.metrics = metrics
        self.hub_name = hub_name
        self.instances: dict[str, Instance] = {}
        self.timers: list[PendingTimer] = []
        self._generations: Counter[str] = Counter()
        self._instance_seq = 0
        self._sorted_ids: list[str] = []  # every instance id, sorted
        self._by_created: list[tuple[datetime, str]] = []  # (created_time, instance id) of every instance, sorted
        self._ready: set[str] = set()  # instances whose inbox holds messages

    # ------------------------------------------------------------------ instances
    def require(self, instance_id: str) -> Instance:
        instance = self.instances.get(instance_id)
        if instance is None:
            raise InstanceNotFound(f"No instance with ID {instance_id} found.")
        return instance

    def active_execution(self, instance_id: str, execution_id: str) -> Instance | None:
        """The instance if ``execution_id`` is its current, still active execution.

        Messages addressed to a purged, finished or continued-as-new execution are dropped (DTFx discards them).
        """
        instance = self.instances.get(instance_id)
        if instance is None or instance.execution_id != execution_id or instance.status not in ACTIVE_STATUSES:
            return None
        return instance

    def create_instance(
        self, instance_id: str, name: str, input_text: str | None, *, parent: ParentLink | None
    ) -> Instance:
        """A new instance (replacing a finished one of the same id), its start message queued."""
        now = self.sync.clock.now()
        instance = Instance(
            instance_id=instance_id,
            name=name,
            input_text=input_text,
            execution_id=self.next_execution_id(instance_id),
            parent=parent,
            created_time=now,
            last_updated_time=now,
        )
        replaced = self.instances.get(instance_id)
        if replaced is None:
            bisect.insort(self._sorted_ids, instance_id)
        else:
            self._unindex_created(replaced)
        self.instances[instance_id] = instance
        bisect.insort(self._by_created, (now, instance_id))
        self.enqueue(instance, self.start_message(instance, now))
        self.metrics.history_stats.pop(instance_id, None)
        self.metrics.counts["orchestrations"] += 1
        self.metrics.counts["executions"] += 1
        return instance

    def remove(self, instance_id: str) -> None:
        """Delete an instance (purge) and its index entries."""
        instance = self.instances.pop(instance_id)
        del self._sorted_ids[bisect.bisect_left(self._sorted_ids, instance_id)]
        self._unindex_created(instance)
        self._ready.discard(instance_id)

    def set_created_time(self, instance: Instance, created_time: datetime) -> None:
        """Change the created time of an instance (a new execution after continue-as-new), re-indexed."""
        self._unindex_created(instance)
        instance.created_time = created_time
        bisect.insort(self._by_created, (created_time, instance.instance_id))

    def _unindex_created(self, instance: Instance) -> None:
        entry = (instance.created_time, instance.instance_id)
        position = bisect.bisect_left(self._by_created, entry)
        if position == len(self._by_created) or self._by_created[position] != entry:
            # Only set_created_time may change a created time: anything else would leave queries wrong.
            raise RuntimeError(f"instance {instance.instance_id!r} changed its created time behind the store's back")
        del self._by_created[position]

    def start_message(self, instance: Instance, now: datetime) -> Message:
        """The ExecutionStarted message of the instance's current execution."""
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
        return Message("start", event, instance.execution_id)

    def new_instance_id(self) -> str:
        # Deterministic GUID-like ids (the extension uses Guid.NewGuid().ToString("N")).
        self._instance_seq += 1
        return uuid.uuid5(_ID_NAMESPACE, f"{self.hub_name}/instance/{self._instance_seq}").hex

    def next_execution_id(self, instance_id: str) -> str:
        """The id of the next execution of ``instance_id`` (a new instance, or one continuing as new)."""
        self._generations[instance_id] += 1
        generation = self._generations[instance_id]
        return uuid.uuid5(_ID_NAMESPACE, f"{self.hub_name}/{instance_id}/execution/{generation}").hex

    # ------------------------------------------------------------------ inboxes
    def enqueue(self, instance: Instance, message: Message) -> None:
        """Queue ``message`` at the end of the instance's inbox."""
        instance.inbox.append(message)
        self._ready.add(instance.instance_id)

    def requeue_front(self, instance: Instance, messages: list[Message]) -> None:
        """Put ``messages`` (a batch taken earlier) back at the front of the inbox, in their order."""
        if messages:
            instance.inbox[:0] = messages
            self._ready.add(instance.instance_id)

    def take_batch(self, instance: Instance, limit: int) -> list[Message]:
        """Up to ``limit`` messages of the current execution from the front of the inbox."""
        batch: list[Message] = []
        inbox = instance.inbox
        taken = 0
        for message in inbox:
            if len(batch) == limit:
                break
            taken += 1
            if message.execution_id is not None and message.execution_id != instance.execution_id:
                continue  # addressed to an execution that no longer exists (DTFx discards it)
            batch.append(message)
        del inbox[:taken]
        if not inbox:
            self._ready.discard(instance.instance_id)
        return batch

    def replace_inbox(self, instance: Instance, messages: Iterable[Message] = ()) -> None:
        """Drop every queued message of the instance, queueing ``messages`` instead."""
        instance.inbox = list(messages)
        if instance.inbox:
            self._ready.add(instance.instance_id)
        else:
            self._ready.discard(instance.instance_id)

    def has_inbox_work(self) -> bool:
        with self.sync.lock:
            return bool(self._ready)

    def ready_instance_ids(self) -> list[str]:
        """Instances with queued messages, in id order (a reproducible episode order)."""
        with self.sync.lock:
            # Messages put back on an instance that was replaced meanwhile can leave an id whose
            # inbox is empty: checking costs what the ready set holds, and no driver loops on it.
            instances = self.instances
            self._ready = {iid for iid in self._ready if (i := instances.get(iid)) is not None and i.inbox}
            return sorted(self._ready)

    def sorted_ids(self) -> list[str]:
        """Every instance id, in id order (a copy)."""
        return list(self._sorted_ids)

    # ------------------------------------------------------------------ durable timers
    def add_timer(self, timer: PendingTimer) -> None:
        heapq.heappush(self.timers, timer)

    def next_timer_due(self) -> datetime | None:
        with self.sync.lock:
            self._drop_dead_timers()
            return self.timers[0].fire_at if self.timers else None

    def _drop_dead_timers(self) -> None:
        # Timers of finished executions would be discarded on delivery anyway.
        while self.timers:
            timer = self.timers[0]
            if self.active_execution(timer.instance_id, timer.execution_id) is not None:
                return
            heapq.heappop(self.timers)

    def fire_due_timers(self) -> None:
        """Deliver a TimerFired to each instance whose timer is due on the clock."""
        now = self.sync.clock.now()
        with self.sync.lock:
            fired = False
            while self.timers and self.timers[0].fire_at <= now:
                timer = heapq.heappop(self.timers)
                instance = self.active_execution(timer.instance_id, timer.execution_id)
                if instance is None:
                    continue
                event = h.timer_fired(now, timer.timer_id, timer.fire_at_text)
                self.enqueue(instance, Message("completion", event, timer.execution_id))
                self.metrics.counts["timers_fired"] += 1
                fired = True
            if fired:
                self.sync.signal()

    # ------------------------------------------------------------------ queries and status
    def select(
        self,
        runtime_status: Iterable[str] | None,
        created_from: datetime | None,
        created_to: datetime | None,
        prefix: str | None,
    ) -> list[Instance]:
        """The instances matching every given filter, in id order (statuses match case-insensitively).

        The candidates come from the narrower index, the id range of ``prefix`` or the created-time
        range; the other filters are checked on each candidate.
        """
        statuses = {s.lower() for s in runtime_status} if runtime_status else None
        selected = []
        for instance_id in self._candidate_ids(created_from, created_to, prefix):
            instance = self.instances[instance_id]
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

    def _candidate_ids(
        self, created_from: datetime | None, created_to: datetime | None, prefix: str | None
    ) -> list[str]:
        """A superset of the ids matching the prefix and created-time filters, in id order."""
        ids = self._sorted_ids
        first, end = 0, len(ids)
        if prefix:
            first = bisect.bisect_left(ids, prefix)
            end = bisect.bisect_left(ids, _prefix_successor(prefix), lo=first) if _has_successor(prefix) else len(ids)
        if created_from is not None or created_to is not None:
            index = self._by_created
            low = 0 if created_from is None else bisect.bisect_left(index, created_from, key=_created_of)
            high = len(index) if created_to is None else bisect.bisect_right(index, created_to, key=_created_of)
            if high - low < end - first:
                # Fewer instances in the time range than in the id range: sort those into id order.
                return sorted(instance_id for _, instance_id in index[low:high])
        return ids[first:end]

    @staticmethod
    def status(instance: Instance, *, show_history: bool = False, show_input: bool = True,
               show_history_output: bool = False) -> dict[str, Any]:
        """The instance as the extension's status query returns it (``historyEvents`` in the extension's view)."""
        input_text, output, custom_status = instance.outcome()
        status: dict[str, Any] = {
            "name": instance.name,
            "instanceId": instance.instance_id,
            "runtimeStatus": instance.status,
            "input": json.loads(input_text) if show_input and input_text is not None else None,
            "customStatus": custom_status,
            "output": output,
            "createdTime": h.status_time(instance.created_time),
            "lastUpdatedTime": h.status_time(instance.last_updated_time or instance.created_time),
        }
        if show_history and instance.status != "Pending":
            status["historyEvents"] = h.extension_history(instance.recorded_history(),
                                                          show_output=show_history_output)
        return status

    def waiting_report(self, targets: list[str] | None) -> dict[str, list[str]]:
        """What each unfinished instance (of ``targets``, default all) waits for."""
        with self.sync.lock:
            ids = targets if targets is not None else self.sorted_ids()
            report: dict[str, list[str]] = {}
            for instance_id in ids:
                instance = self.instances.get(instance_id)
                if instance is None or instance.status in TERMINAL_STATUSES:
                    continue
                report[instance_id] = list(instance.waiting_on) or [
                    "nothing the host can complete (the orchestrator is not done but scheduled no pending work)"
                ]
            return report

    def deadlock_message(self, waiting: dict[str, list[str]]) -> str:
        lines = []
        with self.sync.lock:
            for instance_id, items in waiting.items():
                instance = self.instances[instance_id]
                lines.append(
                    f"instance '{instance_id}' (orchestrator '{instance.name}', {instance.status}) waits for: "
                    + "; ".join(items)
                )
        return (
            f"no progress possible at {h.status_time(self.sync.clock.now())}: no runnable work, no pending durable "
            "timer and no sleeping activity, but " + " | ".join(lines)
        )


def _has_successor(prefix: str) -> bool:
    return prefix.rstrip(_MAX_CHAR) != ""


def _prefix_successor(prefix: str) -> str:
    """The least string above every string that starts with ``prefix`` (it ends the prefix's id range).

    Trailing U+10FFFF characters cannot be incremented: the successor of the shorter prefix
    bounds the same strings (``_has_successor`` says whether there is one at all).
    """
    stem = prefix.rstrip(_MAX_CHAR)
    return stem[:-1] + chr(ord(stem[-1]) + 1)
