"""What crosses a layer: the names of every orchestrator and activity, and the typed inputs and results.

Triggers start orchestrators, orchestrators call activities and sub-orchestrators, and the
report reads orchestration outputs, all through the names and dataclasses below. Each dataclass
has the ``to_json`` / ``from_json`` pair that Durable Functions uses to serialize custom objects
(``azure.functions`` wraps them in a ``{"__class__", "__module__", "__data__"}`` envelope), so an
orchestrator passes a ``ScriptRequest`` to ``call_activity`` and the activity receives a
``ScriptRequest``.

What an orchestration takes and returns (start, sub-orchestration and continue-as-new inputs,
outputs) travels as plain ``to_json()``: the durable status API shows it to people as it is,
and the SDK checks orchestrator outputs with plain ``json.dumps``. Every reader rebuilds it with
``from_json``, which accepts the plain form and the object alike.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field, fields
from functools import cache
from typing import Any, ClassVar, TypeVar, Union

from .facts import parse_machine_id
from .policy import Policy
from .vocabulary import BaselineFlag, FinalState, Reason

# --- function names: the registration and every call use these -------------------------------------

MACHINE_ORCHESTRATOR = "machine_orchestrator"
ROLLOUT_ORCHESTRATOR = "rollout_orchestrator"
ROLLOUT_SLICE = "rollout_slice"
ROLLOUT_CHUNK = "rollout_chunk"
ORCHESTRATOR_NAMES = (MACHINE_ORCHESTRATOR, ROLLOUT_ORCHESTRATOR, ROLLOUT_SLICE, ROLLOUT_CHUNK)

LIST_SUBSCRIPTIONS = "list_subscriptions"
COUNT_MACHINES = "count_machines"
LIST_MACHINES_FROM = "list_machines_from"
GET_MACHINE = "get_machine"
RUN_SCRIPT = "run_script"
ENABLE_HOTPATCH = "enable_hotpatch"
GET_HOTPATCH_STATUS = "get_hotpatch_status"
ESCALATE = "escalate"
START_MACHINE_WORKFLOWS = "start_machine_workflows"
READ_MACHINE_WORKFLOWS = "read_machine_workflows"
ACTIVITY_NAMES = (
    LIST_SUBSCRIPTIONS, COUNT_MACHINES, LIST_MACHINES_FROM, GET_MACHINE, RUN_SCRIPT, ENABLE_HOTPATCH,
    GET_HOTPATCH_STATUS, ESCALATE, START_MACHINE_WORKFLOWS, READ_MACHINE_WORKFLOWS,
)


# --- the serialization protocol ---------------------------------------------------------------------


class ContractError(ValueError):
    """A payload that does not fit its contract; names the contract and the field."""


C = TypeVar("C", bound="Contract")


class Contract:
    """Dataclass mixin: ``to_json`` gives plain JSON, ``from_json`` rebuilds it, nested contracts included."""

    def to_json(self) -> dict[str, Any]:
        return {f.name: _dump(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_json(cls: type[C], data: Any) -> C:
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise ContractError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        known = _field_types(cls)
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ContractError(f"{cls.__name__}: unknown field {unknown[0]!r} (known: {', '.join(known)})")
        try:
            return cls(**{name: _load(known[name], value, f"{cls.__name__}.{name}") for name, value in data.items()})
        except TypeError as exc:  # a required field is missing
            raise ContractError(f"{cls.__name__}: {exc}") from None


@cache
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _dump(value: Any) -> Any:
    if isinstance(value, (Contract, Policy)):
        return value.to_json()
    if isinstance(value, (list, tuple)):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


def _load(kind: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        return None if value is None else _load(options[0], value, where)
    if value is None:
        return None
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ContractError(f"{where}: expected a list, got {type(value).__name__}")
        item_kind = typing.get_args(kind)[0] if typing.get_args(kind) else Any
        loaded = [_load(item_kind, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(loaded) if origin is tuple else loaded
    if isinstance(kind, type) and issubclass(kind, (Contract, Policy)):
        return kind.from_json(value)
    return value


# --- machines ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MachineInput(Contract):
    """A machine orchestration's input (whoever starts it: rollout, HTTP, Event Grid)."""

    machine_id: str
    policy: Policy
    rollout_id: str = ""


@dataclass(frozen=True)
class MachineCall(Contract):
    """An activity that reads or changes one machine: which machine, through which ARM endpoint, for whom."""

    machine_id: str
    arm_endpoint: str
    rollout_id: str = ""
    location: str = ""  # the machine's Azure region (a Run Command or license profile body needs it)
    baselines_file: str = ""  # extra baselines data (HOTPATCH_BASELINES_FILE) for the baseline flag


@dataclass(frozen=True)
class MachineRead(Contract):
    """``get_machine``: the ARM facts (``MachineFacts.to_json``) and their baseline flag, or not found."""

    found: bool
    facts: dict[str, Any] | None = None
    baseline: str = BaselineFlag.UNKNOWN.value


@dataclass(frozen=True)
class ScriptRequest(Contract):
    """One Run Command execution of one of our scripts."""

    machine: MachineCall
    script: str
    run_name: str  # unique per step and attempt: a reused name while running is a 409
    parameters: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 600.0


@dataclass(frozen=True)
class ScriptResult(Contract):
    """``succeeded`` (with ``result``: the script's JSON line, parsed), ``failed`` (``error``) or ``lost``.

    ``baseline`` is the readiness script's baseline flag (build + installed KBs), computed where
    the data file may be read: in the activity, never during replay.
    """

    SUCCEEDED: ClassVar[str] = "succeeded"
    FAILED: ClassVar[str] = "failed"
    LOST: ClassVar[str] = "lost"

    status: str
    result: dict[str, Any] | None = None
    error: str = ""
    baseline: str = BaselineFlag.UNKNOWN.value

    @property
    def succeeded(self) -> bool:
        return self.status == self.SUCCEEDED


@dataclass(frozen=True)
class Escalation(Contract):
    """Hand a machine to a human (log line + webhook)."""

    machine: MachineCall
    name: str
    reason: str
    detail: str
    actions: list[str]
    escalation_webhook: str = ""


@dataclass(frozen=True)
class ReportRow(Contract):
    """One machine's line of the report (SPEC §5), built only here."""

    id: str
    subscription_id: str
    name: str
    state: str
    reason: str
    actions: list[str] = field(default_factory=list)
    reboots: int = 0
    os_version: str = ""
    baseline: str = BaselineFlag.UNKNOWN.value
    detail: str = ""

    @classmethod
    def untouched(cls, machine_id: str, state: FinalState, reason: str, detail: str) -> ReportRow:
        subscription_id, _, name = parse_machine_id(machine_id)
        return cls(id=machine_id, subscription_id=subscription_id, name=name, state=state.value, reason=reason,
                   detail=detail)

    @classmethod
    def halted(cls, machine_id: str) -> ReportRow:
        """A machine the guardrail stopped the rollout before: nothing was read or changed."""
        return cls.untouched(machine_id, FinalState.HALTED, Reason.GUARDRAIL.value,
                             "the rollout guardrail stopped before this machine")

    @classmethod
    def failed(cls, machine_id: str, detail: str) -> ReportRow:
        """A machine whose orchestration crashed (a bug or an unexpected payload): reported, not lost."""
        return cls.untouched(machine_id, FinalState.ESCALATED, Reason.ORCHESTRATION_FAILED.value, detail[:500])


# --- the fleet --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cursor(Contract):
    """A position in a subscription's machine listing: a page's continuation (nextLink) and an offset in it."""

    page: str | None = None
    skip: int = 0
    done: bool = False


@dataclass(frozen=True)
class Discovery(Contract):
    """Where to list machines: a subscription (or one of its resource groups) through an ARM endpoint."""

    subscription_id: str
    arm_endpoint: str
    resource_group: str = ""


@dataclass(frozen=True)
class MachineCount(Contract):
    """``count_machines``: how many, or the ARM error that made the subscription unreadable."""

    count: int
    error: str = ""


@dataclass(frozen=True)
class ListingRequest(Contract):
    where: Discovery
    cursor: Cursor
    take: int


@dataclass(frozen=True)
class Listing(Contract):
    machine_ids: list[str]
    cursor: Cursor


@dataclass(frozen=True)
class StartedMachine(Contract):
    """A machine orchestration started (or attached to: one was already running)."""

    machine_id: str
    instance_id: str
    started: bool


@dataclass(frozen=True)
class StartMachines(Contract):
    machine_ids: list[str]
    policy: Policy
    rollout_id: str = ""


@dataclass(frozen=True)
class ReadMachines(Contract):
    instances: list[StartedMachine]


@dataclass(frozen=True)
class MachinesRead(Contract):
    """The rows of finished machine orchestrations and those still running."""

    rows: list[ReportRow]
    pending: list[StartedMachine]


@dataclass(frozen=True)
class Counts(Contract):
    """A report summary (SPEC §5 ``summary``), carried across waves instead of rows."""

    machines: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    reboots: int = 0
    escalations: int = 0


@dataclass(frozen=True)
class SubscriptionError(Contract):
    subscription_id: str
    error: str


@dataclass(frozen=True)
class RolloutPlan(Contract):
    subscriptions: list[str]
    counts: list[int]
    quotas: list[int]
    errors: list[SubscriptionError] = field(default_factory=list)


@dataclass(frozen=True)
class RolloutState(Contract):
    """The rollout orchestrator's continue-as-new input: the plan and where each subscription stands."""

    policy: Policy
    run_key: str = ""
    plan: RolloutPlan | None = None
    wave: int = 0
    remaining: list[int] = field(default_factory=list)
    cursors: list[Cursor] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)
    totals: Counts = field(default_factory=Counts)
    waves_done: list[Counts] = field(default_factory=list)
    halted: bool = False
    halt_wave: int | None = None


@dataclass(frozen=True)
class SliceState(Contract):
    """One subscription's share of a wave (continue-as-new input of ``rollout_slice``)."""

    run_key: str
    rollout_id: str
    subscription_index: int
    subscription_id: str
    take: int
    cursor: Cursor
    chunk: int
    policy: Policy
    halted: bool = False
    counts: Counts = field(default_factory=Counts)


@dataclass(frozen=True)
class SliceResult(Contract):
    subscription_index: int
    cursor: Cursor
    chunk: int
    counts: Counts


@dataclass(frozen=True)
class ChunkInput(Contract):
    rollout_id: str
    subscription_id: str
    cursor: Cursor
    policy: Policy
    take: int
    halted: bool = False


@dataclass(frozen=True)
class ChunkResult(Contract):
    rows: list[ReportRow]
    cursor: Cursor
