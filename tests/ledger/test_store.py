"""The ledger on real Azure Table storage semantics: the session's Azurite (tests/conftest.py ``azurite``)."""

from __future__ import annotations

import threading
import time

import pytest

from activities.ledger_calls import ledger_table, ledger_write_all, read_entries, write_entry
from core.facts import MachinePayloadError
from core.ledger import LedgerBatch, LedgerEntry, LedgerSettingError, partition_filter

SUB = "00000000-0000-0000-0000-000000000001"
MACHINE = f"/subscriptions/{SUB}/resourceGroups/rg-a/providers/Microsoft.HybridCompute/machines/web-01"
OTHER = f"/subscriptions/{SUB}/resourceGroups/rg-a/providers/Microsoft.HybridCompute/machines/web-02"


def at(minute: int, second: int = 0) -> str:
    return f"2026-01-05T08:{minute:02d}:{second:02d}Z"


def stored_count(machine_id: str) -> int:
    query, parameters = partition_filter(machine_id)
    return len(list(ledger_table().query_entities(query, parameters=parameters)))


def test_write_read_round_trip(ledger: str) -> None:
    written = LedgerEntry.of(MACHINE, "rollout-1", "machine-web-01", "apply_changes", "requested", at(0),
                             {"enable_vsm": True, "licensing_workaround": True, "reboot": True}, "one script run")
    result = write_entry(written)
    assert result["table"] == ledger and result["row_key"] == written.row_key
    assert read_entries(MACHINE) == [written]
    assert read_entries(OTHER) == []


def test_a_repeated_write_is_one_entity(ledger: str) -> None:
    entry = LedgerEntry.of(MACHINE, "rollout-1", "machine-web-01", "reboot", "requested", at(1))
    write_entry(entry)
    write_entry(entry)  # an activity ran twice
    write_entry(LedgerEntry.from_json(entry.to_json()))
    assert stored_count(MACHINE) == 1
    assert read_entries(MACHINE) == [entry]


def test_entries_come_by_time_then_row_key(ledger: str) -> None:
    entries = [
        LedgerEntry.of(MACHINE, "rollout-1", "machine-web-01", "enable_hotpatch", "done", at(30)),
        LedgerEntry.of(MACHINE, "rollout-1", "machine-web-01", "enable_vsm", "requested", at(0)),
        LedgerEntry.of(MACHINE, "rollout-1", "machine-web-01", "reboot", "requested", at(0)),
        LedgerEntry.of(MACHINE, "rollout-1", "machine-web-01", "reboot", "done", at(12, 30)),
        LedgerEntry.of(MACHINE, "rollout-1", "machine-web-01", "enable_hotpatch", "requested", at(13)),
    ]
    for entry in entries:
        write_entry(entry)
    read = read_entries(MACHINE)
    assert [(e.at, e.row_key) for e in read] == sorted((e.at, e.row_key) for e in entries)
    assert [e.change for e in read][-2:] == ["enable_hotpatch", "enable_hotpatch"]


def test_a_machines_entries_across_rollouts(ledger: str) -> None:
    first = LedgerEntry.of(MACHINE, "rollout-a", "machine-web-01", "reboot", "failed", at(5), detail="timed out")
    second = LedgerEntry.of(MACHINE, "rollout-b", "machine-web-01", "reboot", "done", "2026-01-12T08:05:00Z")
    elsewhere = LedgerEntry.of(OTHER, "rollout-b", "machine-web-02", "reboot", "done", at(6))
    for entry in (second, elsewhere, first):
        write_entry(entry)
    assert read_entries(MACHINE) == [first, second]
    assert read_entries(MACHINE.upper().replace("MICROSOFT.HYBRIDCOMPUTE", "Microsoft.HybridCompute")) == [
        first, second], "machine ids are case-insensitive"
    assert read_entries(OTHER) == [elsewhere]


def test_the_table_is_created_when_missing(ledger: str) -> None:
    assert read_entries(MACHINE) == [], "no table yet: no entries"
    entry = LedgerEntry.of(MACHINE, "rollout-1", "machine-web-01", "reboot", "requested", at(0))
    write_entry(entry)
    ledger_table().delete_table()  # deleted behind this process's back: the next write creates it again
    write_entry(entry)
    assert read_entries(MACHINE) == [entry]


def test_bad_machine_id_and_missing_settings(ledger: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MachinePayloadError):
        read_entries("web-01")
    monkeypatch.delenv("HOTPATCH_LEDGER_CONNECTION")
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    with pytest.raises(LedgerSettingError, match="HOTPATCH_LEDGER_CONNECTION"):
        write_entry(LedgerEntry.of(MACHINE, "r", "i", "reboot", "requested", at(0)))


def test_concurrent_writes_are_fast(ledger: str) -> None:
    """Many activity threads writing at once (a simulation writes a few entries per changed machine)."""
    machines = [MACHINE.replace("web-01", f"web-{n:03d}") for n in range(50)]
    entries = [LedgerEntry.of(m, "rollout-1", f"machine-{i}", change, phase, at(i % 60))
               for i, m in enumerate(machines)
               for change in ("apply_changes", "enable_hotpatch") for phase in ("requested", "done")]
    write_entry(entries[0])  # the table exists
    chunks = [entries[i::8] for i in range(8)]
    errors: list[BaseException] = []

    def work(chunk: list[LedgerEntry]) -> None:
        try:
            for entry in chunk:
                write_entry(entry)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(chunk,)) for chunk in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    assert not errors, errors
    assert sum(len(read_entries(m)) for m in machines[:5]) == 20
    per_write_ms = elapsed / len(entries) * 1000
    print(f"{len(entries)} ledger writes on 8 threads: {elapsed:.2f} s, {per_write_ms:.2f} ms per write")
    assert per_write_ms < 50, "ledger writes must stay cheap"


@pytest.mark.parametrize("changes", [["enable_hotpatch"], ["apply_changes", "enable_vsm", "reboot"]])
def test_write_all_records_one_entry_or_a_transaction_of_several(ledger: str, changes: list[str]) -> None:
    entries = [LedgerEntry.of(MACHINE, "rollout-1", "machine-web-01", change, "requested", at(2)) for change in changes]
    assert ledger_write_all(LedgerBatch(entries).to_json()) == len(entries)
    assert ledger_write_all(LedgerBatch(entries).to_json()) == len(entries)  # the activity ran twice: same entities
    assert sorted(e.change for e in read_entries(MACHINE)) == sorted(changes)
    assert ledger_write_all(LedgerBatch([]).to_json()) == 0
