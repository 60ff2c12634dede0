"""The audit ledger (pure): one entity per change made to a machine, before (``requested``) and after (``done`` /
``failed``) it is made, on Azure Table storage.

This module decides what an entry is and how it maps to a table entity; it does no I/O. The activities
``ledger_write`` / ``ledger_read`` (activities/ledger_calls.py) and the ``GET /api/ledger`` route
(orchestrators/ledger_route.py) do the calls, with the settings resolved here (``ledger_settings``).

Keys: the PartitionKey is a hash of the case-folded machine id (table keys forbid ``/``, which every ARM id
has), so one machine's entries across rollouts are one partition; the RowKey is the entry's time (fixed
width, so row keys sort by time) and a hash of (instance, change, phase): the same write repeated (an
activity runs at least once) upserts the same entity, and a re-run of the orchestration episode, which sees
the same ``current_utc_datetime``, writes the same keys again. At one instant a ``requested`` sorts before
the outcomes (``done`` / ``failed``); entries of different changes at the same instant in hash order.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlparse

from .contracts import Contract, ContractError
from .facts import MachinePayloadError, parse_machine_id

# --- function names -----------------------------------------------------------------------------------

LEDGER_WRITE = "ledger_write"
LEDGER_READ = "ledger_read"
LEDGER_WRITE_ALL = "ledger_write_all"  # a machine's entries of one step, in one table transaction
LEDGER_ACTIVITY_NAMES = (LEDGER_WRITE, LEDGER_WRITE_ALL, LEDGER_READ)

# --- vocabulary -----------------------------------------------------------------------------------------

REQUESTED = "requested"
DONE = "done"
FAILED = "failed"
PHASES = (REQUESTED, DONE, FAILED)

# The changes the machine workflow makes (others are accepted: a short snake_case name).
APPLY_CHANGES = "apply_changes"
LICENSING_WORKAROUND = "licensing_workaround"
ENABLE_VSM = "enable_vsm"
REBOOT = "reboot"
ENABLE_HOTPATCH = "enable_hotpatch"
INSTALL_HOTPATCHES = "install_hotpatches"
CHANGES = (APPLY_CHANGES, LICENSING_WORKAROUND, ENABLE_VSM, REBOOT, ENABLE_HOTPATCH)

_CHANGE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# Parameter names that would carry a secret: the ledger never stores one (webhook URLs carry their key).
_SECRET_NAME = re.compile(r"secret|passw|token|webhook|credential|signature|connection|(^|_)(key|code|sas|sig)$",
                          re.IGNORECASE)
_SECRET_QUERY = re.compile(r"[?&](sig|code|key|token|secret)=", re.IGNORECASE)

MAX_DETAIL_CHARS = 2000  # a property holds at most 32K UTF-16 characters; details are summaries
MAX_PARAMETERS_CHARS = 16000
MAX_ID_CHARS = 1000

# --- settings -------------------------------------------------------------------------------------------

CONNECTION_SETTING = "HOTPATCH_LEDGER_CONNECTION"  # a storage connection string (locally: Azurite's)
ENDPOINT_SETTING = "HOTPATCH_LEDGER_ENDPOINT"  # a table endpoint URL, reached with the managed identity
TABLE_SETTING = "HOTPATCH_LEDGER_TABLE"
DEFAULT_TABLE = "hotpatchledger"
HOST_STORAGE_SETTING = "AzureWebJobsStorage"
HOST_STORAGE_TABLE_URI_SETTING = "AzureWebJobsStorage__tableServiceUri"
HOST_STORAGE_ACCOUNT_SETTING = "AzureWebJobsStorage__accountName"

DEVELOPMENT_TABLE_ENDPOINT = "http://127.0.0.1:10002/devstoreaccount1"  # UseDevelopmentStorage=true

_TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}$")
_ACCOUNT_NAME = re.compile(r"^[a-z0-9]{3,24}$")


class LedgerError(RuntimeError):
    """The ledger cannot be reached or written (a setting, the table service)."""


class LedgerSettingError(LedgerError, ValueError):
    """A missing or bad ledger setting; the message names the setting."""


# --- the entry ------------------------------------------------------------------------------------------


def canonical_at(value: datetime | str) -> str:
    """A moment as fixed-width ISO UTC with microseconds (``2026-01-05T08:00:00.000000Z``): sorts as text.

    A naive datetime is UTC (the durable SDK's ``current_utc_datetime``); an ISO string may carry ``Z`` or an
    offset. Pure: the orchestrator passes its ``current_utc_datetime``, never a clock read.
    """
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ContractError(f"LedgerEntry.at: not an ISO time: {value[:40]!r}") from None
    elif isinstance(value, datetime):
        moment = value
    else:
        raise ContractError(f"LedgerEntry.at: expected an ISO time, got {type(value).__name__}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _check_parameters(parameters: Any) -> None:
    if not isinstance(parameters, dict):
        raise ContractError(f"LedgerEntry.parameters: expected a JSON object, got {type(parameters).__name__}")

    def walk(value: Any, where: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise ContractError(f"LedgerEntry.parameters{where}: keys must be strings")
                if _SECRET_NAME.search(key):
                    raise ContractError(f"LedgerEntry.parameters{where}.{key}: looks like a secret; the ledger "
                                        "never stores secrets")
                walk(item, f"{where}.{key}")
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                walk(item, f"{where}[{index}]")
        elif isinstance(value, str) and _SECRET_QUERY.search(value):
            raise ContractError(f"LedgerEntry.parameters{where}: a URL with a key in its query string; the ledger "
                                "never stores secrets")

    walk(parameters, "")


@dataclass(frozen=True)
class LedgerEntry(Contract):
    """One change to one machine at one phase: ``requested`` before it is made, ``done`` / ``failed`` after.

    ``at`` is the orchestrator's ``current_utc_datetime`` (normalised by ``canonical_at``); ``parameters``
    what the change was made with (never a secret: rejected); ``detail`` a short result or error (truncated).
    """

    REQUESTED: ClassVar[str] = REQUESTED
    DONE: ClassVar[str] = DONE
    FAILED: ClassVar[str] = FAILED

    machine_id: str
    rollout_id: str
    instance_id: str
    change: str
    phase: str
    at: str
    parameters: dict[str, Any] = field(default_factory=dict)
    detail: str = ""

    def __post_init__(self) -> None:
        for name in ("machine_id", "rollout_id", "instance_id", "change", "phase", "detail"):
            if not isinstance(getattr(self, name), str):
                raise ContractError(f"LedgerEntry.{name}: expected a string, got {type(getattr(self, name)).__name__}")
        try:
            parse_machine_id(self.machine_id)
        except MachinePayloadError as exc:
            raise ContractError(f"LedgerEntry.machine_id: {exc}") from None
        if not self.instance_id or len(self.instance_id) > MAX_ID_CHARS or len(self.rollout_id) > MAX_ID_CHARS:
            raise ContractError("LedgerEntry.instance_id: required (the orchestration instance), at most "
                                f"{MAX_ID_CHARS} characters (rollout_id too)")
        if not _CHANGE.match(self.change):
            raise ContractError(f"LedgerEntry.change: {self.change[:40]!r} is not a change name (snake_case, e.g. "
                                f"{', '.join(CHANGES)})")
        if self.phase not in PHASES:
            raise ContractError(f"LedgerEntry.phase: {self.phase[:40]!r} is not one of {', '.join(PHASES)}")
        _check_parameters(self.parameters)
        if len(parameters_text(self.parameters)) > MAX_PARAMETERS_CHARS:
            raise ContractError(f"LedgerEntry.parameters: more than {MAX_PARAMETERS_CHARS} characters as JSON")
        object.__setattr__(self, "at", canonical_at(self.at))
        if len(self.detail) > MAX_DETAIL_CHARS:
            object.__setattr__(self, "detail", self.detail[: MAX_DETAIL_CHARS - 1] + "…")

    @classmethod
    def of(cls, machine_id: str, rollout_id: str, instance_id: str, change: str, phase: str,
           at: datetime | str, parameters: Mapping[str, Any] | None = None, detail: str = "") -> LedgerEntry:
        """An entry from an orchestrator's values (``at``: its ``current_utc_datetime``)."""
        return cls(machine_id, rollout_id, instance_id, change, phase, canonical_at(at), dict(parameters or {}),
                   detail)

    def outcome(self, phase: str, at: datetime | str, detail: str = "") -> LedgerEntry:
        """The ``done`` / ``failed`` entry of this ``requested`` one (same machine, rollout, instance, change)."""
        return LedgerEntry.of(self.machine_id, self.rollout_id, self.instance_id, self.change, phase, at,
                              self.parameters, detail)

    @property
    def partition_key(self) -> str:
        return partition_key(self.machine_id)

    @property
    def row_key(self) -> str:
        return row_key(self.at, self.instance_id, self.change, self.phase)

    def view(self) -> dict[str, Any]:
        """What ``GET /api/ledger`` shows of an entry."""
        return {"at": self.at, "rollout_id": self.rollout_id, "instance_id": self.instance_id,
                "change": self.change, "phase": self.phase, "detail": self.detail, "parameters": self.parameters}


def parameters_text(parameters: Mapping[str, Any]) -> str:
    return json.dumps(parameters, sort_keys=True, separators=(",", ":"), default=str)


# --- the table entity -----------------------------------------------------------------------------------


def partition_key(machine_id: str) -> str:
    """One partition per machine: the sha256 hex of its case-folded ARM id (table keys forbid ``/``)."""
    return hashlib.sha256(machine_id.strip().lower().encode()).hexdigest()


def row_key(at: str, instance_id: str, change: str, phase: str) -> str:
    """``<at>_<phase rank>_<hash>``: sorts by time, a ``requested`` before its outcome at the same instant (a
    virtual clock, or one episode); the same (at, instance, change, phase) is the same entity."""
    digest = hashlib.sha256(f"{instance_id}\n{change}\n{phase}".encode()).hexdigest()[:24]
    return f"{canonical_at(at)}_{0 if phase == REQUESTED else 1}_{digest}"


ENTITY_PROPERTIES = ("machine_id", "rollout_id", "instance_id", "change", "phase", "at", "parameters", "detail")


def to_entity(entry: LedgerEntry) -> dict[str, str]:
    """The table entity of an entry: keys, every field as a string property (parameters as JSON text)."""
    return {
        "PartitionKey": entry.partition_key, "RowKey": entry.row_key,
        "machine_id": entry.machine_id, "rollout_id": entry.rollout_id, "instance_id": entry.instance_id,
        "change": entry.change, "phase": entry.phase, "at": entry.at,
        "parameters": parameters_text(entry.parameters), "detail": entry.detail,
    }


def from_entity(entity: Mapping[str, Any]) -> LedgerEntry:
    """The entry a table entity holds (extra properties, e.g. Timestamp, are ignored)."""
    try:
        parameters = json.loads(entity.get("parameters") or "{}")
    except (TypeError, json.JSONDecodeError):
        raise ContractError(f"ledger entity {entity.get('RowKey')!r}: parameters are not JSON") from None
    values = {name: entity.get(name, "") for name in ENTITY_PROPERTIES if name != "parameters"}
    return LedgerEntry.from_json({**values, "parameters": parameters})


@dataclass(frozen=True)
class LedgerBatch(Contract):
    """Entries of one machine written together (one step's changes: one table transaction)."""

    entries: list[LedgerEntry]


# The changes a report row lists, as the ledger names them (apply_changes is the script that makes them).
REPORTED_CHANGES = (ENABLE_VSM, LICENSING_WORKAROUND, REBOOT, ENABLE_HOTPATCH, INSTALL_HOTPATCHES)


def run_of(entry: LedgerEntry) -> str:
    """Which run of an orchestration wrote ``entry`` (an instance id is reused by the next run of the machine)."""
    return str(entry.parameters.get("run") or entry.instance_id)


def changes_made(entries: Iterable[LedgerEntry], instance_id: str, run: str | None = None) -> tuple[list[str], int]:
    """The actions and reboots a run of an orchestration instance (default: its latest) really made, from its
    entries: every change it requested that did not fail before it was made (a terminated or crashed run is
    reported with these)."""
    instance = [e for e in ordered(entries) if e.instance_id == instance_id and e.change in REPORTED_CHANGES]
    run = run or (run_of(instance[-1]) if instance else "")
    # Changes requested together (one apply_changes) in the order a report lists them.
    mine = sorted((e for e in instance if run_of(e) == run),
                  key=lambda e: (e.at, REPORTED_CHANGES.index(e.change)))
    failed = {(e.change, e.parameters.get("request_id")) for e in mine if e.phase == FAILED and
              e.parameters.get("made") is False}
    actions = [e.change for e in mine if e.phase == REQUESTED
               and (e.change, e.parameters.get("request_id")) not in failed]
    return actions, actions.count(REBOOT)


def unsettled_change(entries: Iterable[LedgerEntry], own_run: str) -> LedgerEntry | None:
    """The latest apply_changes another run requested and never saw the end of (it was terminated or crashed
    while the script ran, or it still runs): the machine may still be changing or about to reboot."""
    entries = ordered(entries)
    ended = {(run_of(e), e.parameters.get("request_id")) for e in entries
             if e.change == APPLY_CHANGES and e.phase in (DONE, FAILED)}
    open_requests = [e for e in entries if e.change == APPLY_CHANGES and e.phase == REQUESTED
                     and run_of(e) != own_run and (run_of(e), e.parameters.get("request_id")) not in ended]
    return open_requests[-1] if open_requests else None


def ordered(entries: Iterable[LedgerEntry]) -> list[LedgerEntry]:
    """By time, then row key (the table's own order within a partition)."""
    return sorted(entries, key=lambda e: (e.at, e.row_key))


def partition_filter(machine_id: str) -> tuple[str, dict[str, str]]:
    """The OData query (and its parameters) of one machine's entries."""
    return "PartitionKey eq @pk", {"pk": partition_key(machine_id)}


# --- settings -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerSettings:
    """Where the ledger is: a connection string, or a table endpoint reached with the managed identity."""

    table: str
    connection_string: str = ""
    endpoint: str = ""
    source: str = ""  # the setting it came from (named in errors)

    def __repr__(self) -> str:  # never print an account key
        where = self.endpoint or connection_endpoint(self.connection_string)
        return f"LedgerSettings(table={self.table!r}, where={where!r}, source={self.source!r})"


def _connection_parts(connection_string: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for piece in connection_string.split(";"):
        if "=" in piece:
            key, _, value = piece.partition("=")
            parts[key.strip().lower()] = value.strip()
    return parts


def connection_endpoint(connection_string: str) -> str:
    """The table endpoint a connection string names (for messages; never the key)."""
    if connection_string.strip().lower() == "usedevelopmentstorage=true":
        return DEVELOPMENT_TABLE_ENDPOINT
    parts = _connection_parts(connection_string)
    if parts.get("tableendpoint"):
        return parts["tableendpoint"]
    if parts.get("accountname"):
        suffix = parts.get("endpointsuffix") or "core.windows.net"
        return f"{parts.get('defaultendpointsprotocol') or 'https'}://{parts['accountname']}.table.{suffix}"
    return ""


def _check_connection_string(value: str, setting: str) -> str:
    parts = _connection_parts(value)
    if value.strip().lower() == "usedevelopmentstorage=true":  # Azurite on its default port (the SDK knows it)
        return value
    if not connection_endpoint(value) or not (parts.get("accountkey") or parts.get("sharedaccesssignature")):
        raise LedgerSettingError(
            f"{setting}: not a storage connection string (expected AccountName=...;AccountKey=...[;TableEndpoint=...])")
    return value


def _check_endpoint(value: str, setting: str) -> str:
    parsed = urlparse(value)
    host = parsed.hostname or ""
    if parsed.scheme not in ("http", "https") or not host:
        raise LedgerSettingError(f"{setting}: {value[:80]!r} is not a table endpoint URL "
                                 "(expected https://<account>.table.core.windows.net)")
    if parsed.scheme == "http" and host not in ("127.0.0.1", "localhost", "::1"):
        raise LedgerSettingError(f"{setting}: {value[:80]!r}: tokens go over https only (http: loopback only)")
    return value.rstrip("/")


def ledger_settings(environ: Mapping[str, str]) -> LedgerSettings:
    """The ledger's settings from app settings; raises ``LedgerSettingError`` naming the setting.

    First ``HOTPATCH_LEDGER_CONNECTION`` (a connection string), then ``HOTPATCH_LEDGER_ENDPOINT`` (a table
    endpoint, with the managed identity), then the host's own storage: ``AzureWebJobsStorage`` if it is a
    connection string, else ``AzureWebJobsStorage__tableServiceUri`` or ``AzureWebJobsStorage__accountName``
    (identity-based). The table: ``HOTPATCH_LEDGER_TABLE`` (default ``hotpatchledger``).
    """
    table = (environ.get(TABLE_SETTING) or "").strip() or DEFAULT_TABLE
    if not _TABLE_NAME.match(table):
        raise LedgerSettingError(f"{TABLE_SETTING}: {table[:80]!r} is not a table name (3-63 letters and digits, "
                                 "starting with a letter)")
    connection = (environ.get(CONNECTION_SETTING) or "").strip()
    if connection:
        return LedgerSettings(table, connection_string=_check_connection_string(connection, CONNECTION_SETTING),
                              source=CONNECTION_SETTING)
    endpoint = (environ.get(ENDPOINT_SETTING) or "").strip()
    if endpoint:
        return LedgerSettings(table, endpoint=_check_endpoint(endpoint, ENDPOINT_SETTING), source=ENDPOINT_SETTING)
    host_storage = (environ.get(HOST_STORAGE_SETTING) or "").strip()
    if host_storage and "=" in host_storage:
        return LedgerSettings(table, connection_string=_check_connection_string(host_storage, HOST_STORAGE_SETTING),
                              source=HOST_STORAGE_SETTING)
    table_uri = (environ.get(HOST_STORAGE_TABLE_URI_SETTING) or "").strip()
    if table_uri:
        return LedgerSettings(table, endpoint=_check_endpoint(table_uri, HOST_STORAGE_TABLE_URI_SETTING),
                              source=HOST_STORAGE_TABLE_URI_SETTING)
    account = (environ.get(HOST_STORAGE_ACCOUNT_SETTING) or "").strip()
    if account:
        if not _ACCOUNT_NAME.match(account):
            raise LedgerSettingError(f"{HOST_STORAGE_ACCOUNT_SETTING}: {account[:40]!r} is not a storage account "
                                     "name (3-24 lowercase letters and digits)")
        return LedgerSettings(table, endpoint=f"https://{account}.table.core.windows.net",
                              source=HOST_STORAGE_ACCOUNT_SETTING)
    raise LedgerSettingError(
        f"the audit ledger has no storage: set {CONNECTION_SETTING} (a connection string; locally Azurite's, which "
        f"./dev simulate and serve set) or {ENDPOINT_SETTING} (https://<account>.table.core.windows.net, reached "
        f"with the managed identity); {HOST_STORAGE_SETTING} is used when it is a connection string")
