"""The audit ledger's activities and its table client: one Azure Table storage call each.

``ledger_write`` upserts one ``LedgerEntry`` (the same entry written twice is the same entity: activities run
at least once); ``ledger_read`` returns a machine's entries across rollouts, oldest first. The
``GET /api/ledger`` route reads through ``read_entries`` here too.

Where the table is comes from app settings (``core.ledger.ledger_settings``): a connection string
(``HOTPATCH_LEDGER_CONNECTION``; locally Azurite's) or a table endpoint (``HOTPATCH_LEDGER_ENDPOINT``) reached
with the app's managed identity (``DefaultAzureCredential``: ``AZURE_CLIENT_ID`` picks the user-assigned
one), else the host's own storage account. Clients are cached per (settings, thread), like the ARM clients
(azure-core's ``RequestsTransport`` holds one ``requests.Session``, not documented as thread-safe), so a write
is one HTTP request on a kept-alive connection; the table is created once per process, on the first write.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

import azure.durable_functions as df
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from core.azure_clients import transport_for
from core.facts import parse_machine_id
from core.ledger import (
    LEDGER_READ,
    LEDGER_WRITE,
    LEDGER_WRITE_ALL,
    LedgerBatch,
    LedgerEntry,
    LedgerSettings,
    connection_endpoint,
    from_entity,
    ledger_settings,
    ordered,
    partition_filter,
    to_entity,
)

bp = df.Blueprint()
log = logging.getLogger("arc_hotpatch.ledger")

RETRY_TOTAL = 3  # the SDK's own retries of a failed request (5xx, connection errors), then the activity fails
CONNECTION_TIMEOUT_S = 10
READ_TIMEOUT_S = 30

_local = threading.local()
_all_caches: list[dict[Any, TableClient]] = []
_lock = threading.Lock()
_tables_created: set[tuple[str, str]] = set()
_credential: TokenCredential | None = None


def _managed_identity() -> TokenCredential:
    global _credential
    with _lock:
        if _credential is None:
            from azure.identity import DefaultAzureCredential

            _credential = DefaultAzureCredential()
        return _credential


def _build(settings: LedgerSettings) -> TableClient:
    timeouts = {"connection_timeout": CONNECTION_TIMEOUT_S, "read_timeout": READ_TIMEOUT_S}
    transport = transport_for(settings.endpoint or connection_endpoint(settings.connection_string), **timeouts)
    options: dict[str, Any] = {"table_name": settings.table, "transport": transport,
                               "retry_total": RETRY_TOTAL}
    if settings.connection_string:
        return TableClient.from_connection_string(settings.connection_string, **options)
    return TableClient(endpoint=settings.endpoint, credential=_managed_identity(), **options)


def ledger_table(environ: Mapping[str, str] | None = None) -> TableClient:
    """This thread's client of the ledger table the settings name; ``LedgerSettingError`` names a bad setting."""
    settings = ledger_settings(os.environ if environ is None else environ)
    cache: dict[Any, TableClient] | None = getattr(_local, "tables", None)
    if cache is None:
        cache = _local.tables = {}
        with _lock:
            _all_caches.append(cache)
    key = (settings.table, settings.connection_string, settings.endpoint)
    client = cache.get(key)
    if client is None:
        client = cache[key] = _build(settings)
    return client


def close_ledger_clients() -> None:
    """Close every cached ledger client on every thread (end of a simulation or test)."""
    with _lock:
        caches = list(_all_caches)
    for cache in caches:
        for client in list(cache.values()):
            client.close()
        cache.clear()


def _table_key(client: TableClient) -> tuple[str, str]:
    return (client.url, client.table_name)


def _ensure_table(client: TableClient, *, again: bool = False) -> None:
    key = _table_key(client)
    if not again and key in _tables_created:
        return
    try:
        client.create_table()
        log.info("ledger_table_created table=%s", client.table_name)
    except ResourceExistsError:
        pass
    with _lock:
        _tables_created.add(key)


def _in_table(client: TableClient, write: Callable[[], Any]) -> None:
    """Run ``write`` against the ledger's table, created once per process (again if it was deleted since)."""
    _ensure_table(client)
    try:
        write()
    except ResourceNotFoundError:
        _ensure_table(client, again=True)
        write()


def write_entry(entry: LedgerEntry, client: TableClient | None = None) -> dict[str, str]:
    """Upsert ``entry`` (replace: the same entry written again is the same entity); creates the table once."""
    client = client or ledger_table()
    entity = to_entity(entry)
    _in_table(client, lambda: client.upsert_entity(entity, mode=UpdateMode.REPLACE))
    return {"table": client.table_name, "partition_key": entity["PartitionKey"], "row_key": entity["RowKey"]}


def read_entries(machine_id: str, client: TableClient | None = None) -> list[LedgerEntry]:
    """A machine's entries across rollouts, by time then row key ([] when the table does not exist yet)."""
    parse_machine_id(machine_id)  # MachinePayloadError (a ValueError) names a bad id
    client = client or ledger_table()
    query, parameters = partition_filter(machine_id)
    try:
        entities = list(client.query_entities(query, parameters=parameters))
    except ResourceNotFoundError:
        return []
    return ordered(from_entity(entity) for entity in entities)


# --- the activities -----------------------------------------------------------------------------------


@bp.function_name(LEDGER_WRITE)
@bp.activity_trigger(input_name="entry")
def ledger_write(entry: LedgerEntry) -> dict[str, str]:
    """Record one entry; returns ``{"table", "partition_key", "row_key"}``. Idempotent."""
    return write_entry(LedgerEntry.from_json(entry))


@bp.function_name(LEDGER_WRITE_ALL)
@bp.activity_trigger(input_name="batch")
def ledger_write_all(batch: LedgerBatch) -> int:
    """Record one machine's entries of one step in one table transaction (idempotent: upserts); their count.

    A single entry is one upsert: the same write, without the transaction's multipart body (about a third of
    the client's CPU per write)."""
    entries = LedgerBatch.from_json(batch).entries
    if not entries:
        return 0
    if len(entries) == 1:
        write_entry(entries[0])
        return 1
    client = ledger_table()
    operations = [("upsert", to_entity(entry), {"mode": UpdateMode.REPLACE}) for entry in entries]
    _in_table(client, lambda: client.submit_transaction(operations))
    return len(entries)


@bp.function_name(LEDGER_READ)
@bp.activity_trigger(input_name="machine_id")
def ledger_read(machine_id: str) -> list[dict[str, Any]]:
    """A machine's entries (``LedgerEntry.to_json()`` each) across rollouts, oldest first."""
    return [entry.to_json() for entry in read_entries(machine_id)]
