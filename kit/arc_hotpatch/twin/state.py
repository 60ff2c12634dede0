"""The simulated ARM's state, without HTTP: the fleet's machines and their indexes, async operations, metrics.

``FleetState`` is what the handlers read and change and what the inspection API reports
on. It lives on the server's event loop: the HTTP layer calls it from there, and
``FleetTwin`` hops onto that loop for its Python API. Nothing here knows about requests,
responses or ARM's error shape; the handlers translate a miss into ARM's answer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .faults import Faults
from .fleet import Fleet, MachineSpec
from .machine import RunCommand, SimulatedMachine
from .seeding import stable_uuid


@dataclass(slots=True)  # slots: every write of a large simulation starts one, and each is kept
class AsyncOperation:
    """An ARM async operation: its status is computed from the clock and the resource."""

    op_id: str
    operation: str
    machine: SimulatedMachine
    started_at: datetime
    completes_at: datetime | None = None  # fixed-length operations
    run: RunCommand | None = None  # a run command PUT completes with the run's provisioning
    request: dict[str, Any] | None = None  # what the operation was asked (installPatches' settings)
    result: dict[str, Any] | None = None  # its result, made once when it is first read done

    def status(self, now: datetime) -> tuple[str, dict[str, str] | None, datetime | None]:
        """(status, error, end time) as of ``now``."""
        run = self.run
        if run is not None:
            if not self.machine.is_current_run(run):
                return (
                    "Canceled",
                    {"code": "OperationCanceled", "message": "The run command was deleted or replaced."},
                    None,
                )
            state = run.provisioning_state_at(now)
            if state == "Succeeded":
                return "Succeeded", None, run.end_time or run.start_time
            if state == "Failed":
                return "Failed", run.provisioning_error_at(now), run.end_time or now
            return "InProgress", None, None
        assert self.completes_at is not None
        if now >= self.completes_at:
            return "Succeeded", None, self.completes_at
        return "InProgress", None, None


class OperationStore:
    """The async operations ARM has started, by id (a stable GUID: the fleet seed and a sequence number)."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._operations: dict[str, AsyncOperation] = {}
        self._counter = 0

    def start(
        self,
        operation: str,
        machine: SimulatedMachine,
        now: datetime,
        *,
        seconds: float | None = None,
        run: RunCommand | None = None,
    ) -> AsyncOperation:
        """A new operation on ``machine``: done after ``seconds``, or when ``run`` is provisioned."""
        self._counter += 1
        op_id = stable_uuid(self._seed, "operation", self._counter)
        completes_at = now + timedelta(seconds=seconds) if seconds is not None else None
        pending = self._operations[op_id] = AsyncOperation(op_id, operation, machine, now, completes_at, run)
        return pending

    def get(self, op_id: str) -> AsyncOperation | None:
        return self._operations.get(op_id.lower())


@dataclass
class RequestMetrics:
    """What the twin has answered, for request ids and the simulation report (SPEC §5 metrics)."""

    requests: int = 0  # every request; numbers the request ids
    by_operation: Counter[str] = field(default_factory=Counter)
    throttled: int = 0  # 429s from the token buckets
    injected: Counter[str] = field(default_factory=Counter)  # injected faults by status
    # Per subscription (lower-cased) and ARM throttling category: what the budget of each was asked for.
    by_subscription: dict[str, Counter[str]] = field(default_factory=dict)

    def count_subscription(self, subscription: str, category: str) -> None:
        key = subscription.lower()
        counter = self.by_subscription.get(key)
        if counter is None:
            counter = self.by_subscription[key] = Counter()
        counter[category] += 1

    def report(self) -> dict[str, Any]:
        return {
            "arm_requests": sum(self.by_operation.values()),
            "arm_requests_by_operation": dict(sorted(self.by_operation.items())),
            "throttled_responses": self.throttled + self.injected["429"],
            "injected_faults": dict(sorted(self.injected.items())),
            "arm_requests_by_subscription": {key: dict(sorted(counts.items()))
                                             for key, counts in sorted(self.by_subscription.items())},
        }


class FleetState:
    """The fleet as ARM holds it: machines by key, by subscription and by resource group, plus operations.

    ``page_size`` is how many items one list page carries; ``fault_seed`` keys every fault
    draw (the faults' own seed, else the fleet's).
    """

    def __init__(self, fleet: Fleet, faults: Faults, started_at: datetime, *, page_size: int) -> None:
        self.fleet = fleet
        self.faults = faults
        self.started_at = started_at
        self.page_size = page_size
        self.fault_seed = faults.seed if faults.seed is not None else fleet.seed
        self.subscriptions = {s.lower(): s for s in fleet.subscription_ids}  # lower-cased -> as the fleet spells it
        self.machines: dict[str, SimulatedMachine] = {}  # by key (the lower-cased resource id)
        self.by_subscription: dict[str, list[SimulatedMachine]] = {s: [] for s in self.subscriptions}
        self.by_resource_group: dict[tuple[str, str], list[SimulatedMachine]] = {}
        for spec in fleet.machines:
            self._add(spec, fleet.subscription_of(spec))
        self._sort_indexes()
        self.operations = OperationStore(fleet.seed)
        self.metrics = RequestMetrics()

    def _add(self, spec: MachineSpec, subscription_id: str) -> SimulatedMachine:
        machine = SimulatedMachine(
            spec,
            subscription_id=subscription_id,
            tenant_id=self.fleet.tenant_id,
            seed=self.fleet.seed,
            started_at=self.started_at,
            faults=self.faults,
            fault_seed=self.fault_seed,
        )
        if machine.key in self.machines:
            raise ValueError(f"machine {machine.resource_id} already exists")
        self.machines[machine.key] = machine
        self.by_subscription[subscription_id.lower()].append(machine)
        group = (subscription_id.lower(), spec.resource_group.lower())
        self.by_resource_group.setdefault(group, []).append(machine)
        return machine

    def _sort_indexes(self) -> None:
        # Lists page in key order, whatever order the machines were onboarded in.
        for machines in (*self.by_subscription.values(), *self.by_resource_group.values()):
            machines.sort(key=lambda m: m.key)

    def add_machine(self, spec: MachineSpec, subscription_id: str | None = None) -> SimulatedMachine:
        """Onboard ``spec`` into ``subscription_id`` (default: the spec's subscription index)."""
        target = subscription_id or self.fleet.subscription_ids[spec.subscription]
        if target.lower() not in self.subscriptions:
            raise KeyError(f"subscription {target} is not part of the fleet")
        machine = self._add(spec, self.subscriptions[target.lower()])
        self._sort_indexes()
        return machine

    def lookup(self, name_or_id: str) -> SimulatedMachine:
        """A machine by resource id, or by name when the name is unique in the fleet (else ``KeyError``)."""
        key = name_or_id.lower()
        machine = self.machines.get(key)
        if machine is not None:
            return machine
        matches = [m for m in self.machines.values() if m.name.lower() == key]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise KeyError(f"no simulated machine named {name_or_id!r}")
        raise KeyError(f"machine name {name_or_id!r} is ambiguous; use its resource id")
