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
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import cache
from typing import Any, ClassVar, TypeVar, Union

from .facts import parse_machine_id
from .policy import Policy
from .vocabulary import BaselineFlag, FinalState, NextUpdate, Reason

# --- function names: the registration and every call use these -------------------------------------

MACHINE_ORCHESTRATOR = "machine_orchestrator"
INSTALL_ORCHESTRATOR = "install_orchestrator"  # a machine's hotpatch installation (orchestrators/installs.py)
ENROLL, INSTALL = "enroll", "install"  # what a rollout does to its machines
ROLLOUT_ORCHESTRATOR = "rollout_orchestrator"
ROLLOUT_WINDOW = "rollout_window"
ROLLOUT_RECORD = "rollout_record"
ORCHESTRATOR_NAMES = (MACHINE_ORCHESTRATOR, ROLLOUT_ORCHESTRATOR, ROLLOUT_WINDOW, ROLLOUT_RECORD)

LIST_SUBSCRIPTIONS = "list_subscriptions"
COUNT_MACHINES = "count_machines"
LIST_MACHINES_FROM = "list_machines_from"
GET_MACHINE = "get_machine"
START_SCRIPT = "start_script"
READ_SCRIPT = "read_script"
ENABLE_HOTPATCH = "enable_hotpatch"
ESCALATE = "escalate"
START_ASSESSMENT = "start_patch_assessment"
START_INSTALL = "start_patch_install"
READ_PATCH_OPERATION = "read_patch_operation"
START_MACHINES = "start_machines"
READ_MACHINE_WORKFLOWS = "read_machine_workflows"
START_WINDOWS = "start_windows"
READ_INSTANCES = "read_instances"
READ_RECORDS = "read_records"
ACTIVITY_NAMES = (
    LIST_SUBSCRIPTIONS, COUNT_MACHINES, LIST_MACHINES_FROM, GET_MACHINE, START_SCRIPT, READ_SCRIPT, ENABLE_HOTPATCH,
    ESCALATE, START_MACHINES, READ_MACHINE_WORKFLOWS, START_WINDOWS, READ_INSTANCES, READ_RECORDS,
)


# --- the serialization protocol ---------------------------------------------------------------------


class ContractError(ValueError):
    """A payload that does not fit its contract; names the contract and the field."""


C = TypeVar("C", bound="Contract")


class Contract:
    """Dataclass mixin: ``to_json`` gives plain JSON, ``from_json`` rebuilds it, nested contracts included.

    Orchestrators rebuild their inputs and activity results on every replay, so each class compiles its
    field converters once (``_codec``) instead of walking its type hints on every call.
    """

    def to_json(self) -> dict[str, Any]:
        return {name: dump(getattr(self, name)) for name, dump, _ in _codec(type(self))}

    @classmethod
    def from_json(cls: type[C], data: Any) -> C:
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise ContractError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        loaders = _loaders(cls)
        unknown = [key for key in data if key not in loaders]
        if unknown:
            raise ContractError(f"{cls.__name__}: unknown field {unknown[0]!r} (known: {', '.join(loaders)})")
        try:
            return cls(**{name: loaders[name](value) for name, value in data.items()})
        except TypeError as exc:  # a required field is missing
            raise ContractError(f"{cls.__name__}: {exc}") from None


Converter = Callable[[Any], Any]


def _identity(value: Any) -> Any:
    return value


@cache
def _codec(cls: type) -> tuple[tuple[str, Converter, Converter], ...]:
    """(field name, dump, load) per field of a contract class, from its type hints."""
    hints = typing.get_type_hints(cls)
    return tuple((f.name, *_converters(hints[f.name], f"{cls.__name__}.{f.name}")) for f in fields(cls))


@cache
def _loaders(cls: type) -> dict[str, Converter]:
    return {name: load for name, _, load in _codec(cls)}


def _converters(kind: Any, where: str) -> tuple[Converter, Converter]:
    """(dump, load) for values of type ``kind``: nested contracts and policies converted, plain JSON kept."""
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        dump, load = _converters(options[0], where)
        if dump is _identity and load is _identity:
            return _identity, _identity
        return (lambda v: None if v is None else dump(v)), (lambda v: None if v is None else load(v))
    if origin in (list, tuple):
        item_dump, item_load = _converters(typing.get_args(kind)[0] if typing.get_args(kind) else Any, where)
        make = tuple if origin is tuple else list

        def load_items(value: Any) -> Any:
            if not isinstance(value, list | tuple):
                raise ContractError(f"{where}: expected a list, got {type(value).__name__}")
            return make(value) if item_load is _identity else make(item_load(v) for v in value)

        return (lambda v: [item_dump(i) for i in v]), load_items
    if isinstance(kind, type) and issubclass(kind, (Contract, Policy)):
        return (lambda v: v.to_json()), kind.from_json
    if origin is dict or kind is dict:
        return (lambda v: dict(v)), _identity
    return _identity, _identity


# --- machines ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MachineCarry(Contract):
    """What a machine orchestration carries into its next phase when it continues as new (its history starts
    afresh at each phase: assess, change and reboot, enable, the reactive workaround)."""

    phase: str
    plan: dict[str, bool]
    facts: dict[str, Any]
    readiness: dict[str, Any]
    baseline: str
    actions: list[str] = field(default_factory=list)
    reboots: int = 0
    member: bool = False
    workaround_done: bool = False
    run_seq: int = 0
    started_at: str = ""
    ledger: list[dict[str, Any]] = field(default_factory=list)  # the audit ledger entries this run wrote
    baseline_detail: str = ""
    licensing_issue: bool = False
    assessed_reboot_pending: bool | None = None


@dataclass(frozen=True)
class MachineInput(Contract):
    """A machine orchestration's input (whoever starts it: rollout, HTTP, Event Grid)."""

    machine_id: str
    policy: Policy
    rollout_id: str = ""
    record_under: str = ""  # the rollout window that waits for it: its outcome is recorded under that id
    assess_only: bool = False  # a wave not open yet: read and plan, change nothing, end queued if changes are due
    carry: MachineCarry | None = None  # set when it continued as new into a later phase
    recheck: bool = False  # read again after a Disconnected read: this time a Disconnected agent is final
    wave: int = 0  # the wave (1, 2, ...) a change run belongs to; 0: not started for a wave
    kind: str = ENROLL  # enroll (machine_orchestrator) or install (install_orchestrator)


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
    baseline_detail: str = ""  # why (core.baselines.standing), for the report's next_update_detail


@dataclass(frozen=True)
class ScriptRequest(Contract):
    """One Run Command execution of one of our scripts, started by ``start_script``, read by ``read_script``.

    One run command resource per script per machine (``run_name``), re-run by PUT; ``request_id`` (a
    script parameter too) tells this execution from earlier ones under the same name.
    """

    machine: MachineCall
    script: str
    run_name: str
    request_id: str
    parameters: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 600.0


@dataclass(frozen=True)
class ScriptResult(Contract):
    """``running``, ``succeeded`` (with ``result``: the script's JSON line, parsed), ``failed`` (``error``),
    or ``lost`` (never reported before its timeout: expected of a script that stops himds or reboots).

    ``baseline`` is the readiness script's baseline flag (build + installed KBs), computed where
    the data file may be read: in the activity, never during replay.
    """

    RUNNING: ClassVar[str] = "running"
    SUCCEEDED: ClassVar[str] = "succeeded"
    FAILED: ClassVar[str] = "failed"
    LOST: ClassVar[str] = "lost"

    status: str
    result: dict[str, Any] | None = None
    error: str = ""
    baseline: str = BaselineFlag.UNKNOWN.value
    baseline_detail: str = ""
    licensing_issue: bool = False  # the revision is in the October 2025 licensing issue's range (baselines data)

    @property
    def succeeded(self) -> bool:
        return self.status == self.SUCCEEDED


@dataclass(frozen=True)
class PatchRequest(Contract):
    """An Update Manager operation on one machine, long-running POSTs of the 2025-01-13 spec: ``assessPatches`` or
    ``installPatches`` (the month's hotpatches: ``maximum_duration``, never rebooting, Critical and Security, no KB
    that needs a reboot). Started by one activity; its operation (``operation_url``, the 202's Location) read by
    another on durable timers."""

    machine: MachineCall
    operation_url: str = ""
    maximum_duration: str = "PT2H"  # installPatches' maximumDuration (ISO 8601)


@dataclass(frozen=True)
class PatchResult(Contract):
    """``running`` (with the operation to read), ``succeeded`` (what the operation reports), or ``failed``
    (``error``). Assessment: ``reboot_pending``. Installation: ``installed``, ``pending`` (left: they need a
    reboot), ``failed_count``, ``reboot_status``."""

    RUNNING: ClassVar[str] = "running"
    SUCCEEDED: ClassVar[str] = "succeeded"
    FAILED: ClassVar[str] = "failed"

    status: str
    operation_url: str = ""
    reboot_pending: bool | None = None
    installed: int = 0
    pending: int = 0
    failed_count: int = 0
    reboot_status: str = ""
    error: str = ""


@dataclass(frozen=True)
class EnableRequest(Contract):
    """Enable Hotpatch: the machine, and its license profile's product features as its last read showed them
    (the merge needs them; reading the profile again would only repeat that read)."""

    machine: MachineCall
    features: list[dict[str, Any]] = field(default_factory=list)
    create: bool = False  # the profile holds nothing to keep: PUT a new one instead of merging into it


@dataclass(frozen=True)
class Escalation(Contract):
    """Hand a machine to a human (log line + webhook).

    The webhook URL is not part of it: the ``escalate`` activity reads the app setting
    ``HOTPATCH_ESCALATION_WEBHOOK`` when it runs, so the URL (and any secret in its query string)
    never enters an orchestration's history. ``escalation_webhook`` is deprecated and ignored: kept
    so older callers still build, always written empty."""

    machine: MachineCall
    name: str
    reason: str
    detail: str
    actions: list[str]
    escalation_webhook: str = ""  # deprecated, ignored, never serialized with a value

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "escalation_webhook": ""}


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
    started_at: str = ""  # when this machine's (last) orchestration started; UTC, whole seconds
    finished_at: str = ""
    next_update: str = NextUpdate.UNKNOWN.value  # what the next monthly update will do (core.forecast)
    next_update_detail: str = ""
    wave: int = 0  # the wave that changed the machine (1, 2, ...); 0: no change of a wave (settled, dry run)

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


@dataclass(frozen=True)
class Counts(Contract):
    """A report summary (SPEC §5 ``summary``)."""

    machines: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    reboots: int = 0
    escalations: int = 0

    def plus(self, rows: list[ReportRow]) -> Counts:
        by_state = dict(self.by_state)
        for row in rows:
            by_state[row.state] = by_state.get(row.state, 0) + 1
        return Counts(
            machines=self.machines + len(rows), by_state=dict(sorted(by_state.items())),
            reboots=self.reboots + sum(row.reboots for row in rows),
            escalations=self.escalations + sum(row.state == FinalState.ESCALATED.value for row in rows),
        )

    def __add__(self, other: Counts) -> Counts:
        by_state = dict(self.by_state)
        for state, count in other.by_state.items():
            by_state[state] = by_state.get(state, 0) + count
        return Counts(self.machines + other.machines, dict(sorted(by_state.items())), self.reboots + other.reboots,
                      self.escalations + other.escalations)


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
    """Start (or attach to) the orchestrations of the given machines."""

    template: MachineInput  # policy, rollout, record and mode; its machine_id is left empty
    machine_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StartedMachines(Contract):
    started: list[StartedMachine]
    cursor: Cursor | None = None  # with a listing: where the next one starts


@dataclass(frozen=True)
class ReadMachines(Contract):
    instances: list[StartedMachine]


@dataclass(frozen=True)
class MachinesRead(Contract):
    """The rows of finished machine orchestrations and those still running."""

    rows: list[ReportRow]
    pending: list[StartedMachine]


@dataclass(frozen=True)
class MachineDone(Contract):
    """A machine orchestration's outcome, recorded for the window that started it (a ``rollout_record``).

    ``member``: its plan had changes (it belongs to a wave); ``queued``: it was only assessed and waits for
    its wave (its row is not final).
    """

    instance_id: str
    machine_id: str
    row: ReportRow
    member: bool
    queued: bool = False
    assess_only: bool = False  # the run only assessed (tells its outcome from a later change run's)
    deferred: bool = False  # read Disconnected: the window starts it again after the grace period (row not final)


def record_content(input_value: Any, output: Any) -> Any:
    """What a ``rollout_record`` holds: its input (records of earlier versions also returned it as output)."""
    return input_value if input_value is not None else output


@dataclass(frozen=True)
class RecordQuery(Contract):
    """The records under ``prefix`` created at or after ``since`` (ISO; empty: all of them)."""

    prefix: str
    since: str = ""


@dataclass(frozen=True)
class InstanceView(Contract):
    instance_id: str
    runtime_status: str | None  # None: no such instance
    custom_status: Any = None
    output: Any = None
    created_time: str = ""


@dataclass(frozen=True)
class SubscriptionError(Contract):
    subscription_id: str
    error: str


@dataclass(frozen=True)
class Progress(Contract):
    """A window's absolute counters (see ``core.rollout.WindowProgress``), and its summary of finished rows."""

    changeable: int = 0
    unassessed: int = 0
    unstarted: int = 0
    queued_waiting: int = 0
    granted: list[int] = field(default_factory=list)
    members_done: list[int] = field(default_factory=list)
    escalated: list[int] = field(default_factory=list)
    done: bool = False
    finished: Counts = field(default_factory=Counts)
    halted: str = ""  # why the window halted itself (the guardrail, judged on its own newest results)


@dataclass(frozen=True)
class Grant(Contract):
    """The rollout's word to a window (in the rollout's custom status, which the windows read): how many change
    runs it may have started in all, the wave, whether the final wave is open, halt; and what the window needs
    to judge the guardrail itself before the rollout has read its newest escalations."""

    wave: int = 0
    budget: int = 0
    final: bool = False
    halted: bool = False
    detail: str = ""
    escalated_elsewhere: int = 0  # the wave's escalations the rollout knows of in the other windows
    size_hi: int = 0  # the most machines the wave can have


@dataclass(frozen=True)
class InFlight(Contract):
    """A machine orchestration a window waits for; ``kind``: assess (only), full (assess and change) or change
    (a granted change run); ``attached``: it found the machine's orchestration already running (someone else
    started it: it will not tell this window when it ends)."""

    instance_id: str
    machine_id: str
    kind: str
    wave: int = 0
    attached: bool = False


@dataclass(frozen=True)
class RecordPage(Contract):
    """Rows a window writes itself (a ``rollout_record`` instance): the machines a halt left unstarted."""

    rows: list[ReportRow] = field(default_factory=list)


@dataclass(frozen=True)
class WindowState(Contract):
    """One subscription's rolling window (a ``rollout_window`` instance's continue-as-new input).

    Bounded whatever the fleet size: the machines in flight (at most ``concurrency``), cursors, counters.
    Outcomes and the queue of machines waiting for their wave are records in the durable store.
    """

    policy: Policy
    run_key: str
    rollout_id: str
    index: int
    subscription_id: str
    total: int  # machines the subscription had when the rollout counted them
    cursor: Cursor = field(default_factory=Cursor)
    grant: Grant = field(default_factory=Grant)
    final: bool = False  # the final wave: new machines are assessed and changed in one run
    halted: bool = False
    halt_detail: str = ""
    in_flight: list[InFlight] = field(default_factory=list)
    seen_since: str = ""  # records older than this were all read
    queued: int = 0  # machines assessed that wait for their wave, in the order of their records
    queue_taken: int = 0  # ... the first of them whose change run was started
    halted_pages: int = 0
    assessed: int = 0
    changeable: int = 0  # needed a change: queued, or assessed and changed in one run (final wave)
    granted: list[int] = field(default_factory=list)  # change runs per wave (final wave: members found)
    members_done: list[int] = field(default_factory=list)
    escalated: list[int] = field(default_factory=list)
    finished: Counts = field(default_factory=Counts)
    looked_at: str = ""  # the last look at machines someone else started
    reconciled_at: str = ""  # the last look at every machine in flight
    poll_s: float = 0.0  # the current interval between reads: short after news, longer while nothing happens
    news_at: str = ""  # the last read that found news, or the last start (ISO)
    # Machines read Disconnected, to start again at their time: [machine id, ISO time] (no slot while waiting).
    deferred: list[list[str]] = field(default_factory=list)
    kind: str = ENROLL  # what its machines' orchestrations do: enroll or install


@dataclass(frozen=True)
class WindowView(Contract):
    """The rollout's view of one window."""

    index: int
    subscription_id: str
    instance_id: str
    total: int
    progress: Progress = field(default_factory=Progress)


@dataclass(frozen=True)
class RolloutPlan(Contract):
    subscriptions: list[str]
    counts: list[int]
    errors: list[SubscriptionError] = field(default_factory=list)


@dataclass(frozen=True)
class RolloutState(Contract):
    """The rollout orchestrator's continue-as-new input: its plan, its windows, where the waves stand."""

    policy: Policy
    run_key: str = ""
    plan: RolloutPlan | None = None
    kind: str = ENROLL  # enroll (the default) or install (this month's hotpatches)
    windows: list[WindowView] = field(default_factory=list)
    wave: int = 0
    budgets: list[int] = field(default_factory=list)
    final: bool = False
    halted: bool = False
    halt_detail: str = ""
    size_hi: int = 0  # the current wave's most machines
    poll_s: float = 0.0  # the current interval between reads of the windows
    news_at: str = ""  # the last read of the windows that found news (ISO)
