"""The ledger's pure parts: entries, table keys, settings."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from azure.functions._durable_functions import _deserialize_custom_object, _serialize_custom_object

from core.contracts import ContractError
from core.ledger import (
    CONNECTION_SETTING,
    DEFAULT_TABLE,
    ENDPOINT_SETTING,
    TABLE_SETTING,
    LedgerEntry,
    LedgerSettingError,
    canonical_at,
    from_entity,
    ledger_settings,
    partition_key,
    to_entity,
)

MACHINE = ("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-a/providers/"
           "Microsoft.HybridCompute/machines/web-01")
FORBIDDEN_KEY_CHARS = set("/\\#?") | {chr(c) for c in range(32)} | {chr(127)}


def entry(**overrides: object) -> LedgerEntry:
    values = {"machine_id": MACHINE, "rollout_id": "rollout-1", "instance_id": "machine-web-01-abc",
              "change": "reboot", "phase": "requested", "at": "2026-01-05T08:00:00Z",
              "parameters": {"run_name": "hotpatch-apply"}, "detail": ""}
    return LedgerEntry.from_json({**values, **overrides})


def test_json_round_trip_and_the_functions_envelope() -> None:
    original = entry(detail="scheduled by apply_changes")
    assert LedgerEntry.from_json(json.loads(json.dumps(original.to_json()))) == original
    # What call_activity(LEDGER_WRITE, entry) sends and the activity trigger rebuilds.
    envelope = _serialize_custom_object(original)
    assert envelope["__module__"] == "core.ledger"
    assert _deserialize_custom_object(json.loads(json.dumps(envelope))) == original


def test_at_is_canonical_fixed_width_utc() -> None:
    naive = datetime(2026, 1, 5, 8, 0, 0)  # the durable SDK's current_utc_datetime
    aware = datetime(2026, 1, 5, 9, 0, 0, tzinfo=timezone(timedelta(hours=1)))
    assert canonical_at(naive) == canonical_at(aware) == canonical_at("2026-01-05T08:00:00Z") == (
        "2026-01-05T08:00:00.000000Z")
    assert LedgerEntry.of(MACHINE, "r", "i", "reboot", "done", naive).at == "2026-01-05T08:00:00.000000Z"
    assert canonical_at(datetime(2026, 1, 5, 8, 0, 0, 5, tzinfo=UTC)) > canonical_at(naive)
    with pytest.raises(ContractError, match="at"):
        entry(at="yesterday")


def test_keys_are_table_safe_and_deterministic() -> None:
    one = to_entity(entry())
    assert not set(one["PartitionKey"] + one["RowKey"]) & FORBIDDEN_KEY_CHARS
    assert to_entity(entry()) == one, "the same write is the same entity"
    assert partition_key(MACHINE.upper()) == partition_key(MACHINE), "one partition per machine, any case"
    assert to_entity(entry(phase="done"))["RowKey"] != one["RowKey"]
    assert to_entity(entry(change="enable_vsm"))["RowKey"] != one["RowKey"]
    assert to_entity(entry(instance_id="other"))["RowKey"] != one["RowKey"]
    later = to_entity(entry(at="2026-01-05T08:00:01Z"))
    assert later["RowKey"] > one["RowKey"], "row keys sort by time"
    assert one["parameters"] == '{"run_name":"hotpatch-apply"}'
    assert from_entity({**one, "Timestamp": "ignored"}) == entry()


@pytest.mark.parametrize("overrides, field", [
    ({"phase": "started"}, "phase"),
    ({"change": "Reboot Now"}, "change"),
    ({"machine_id": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm"},
     "machine_id"),
    ({"instance_id": ""}, "instance_id"),
    ({"parameters": {"escalation_webhook": "https://example.test/hook"}}, "escalation_webhook"),
    ({"parameters": {"nested": {"client_secret": "x"}}}, "client_secret"),
    ({"parameters": {"url": "https://example.test/api?code=abc"}}, "url"),
    ({"parameters": {"blob": "x" * 20000}}, "parameters"),
    ({"parameters": "run"}, "parameters"),
])
def test_bad_entries_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ContractError, match=field):
        entry(**overrides)


def test_long_details_are_truncated() -> None:
    assert len(entry(detail="x" * 10_000).detail) == 2000


def test_outcome_keeps_the_change() -> None:
    requested = entry()
    done = requested.outcome("done", "2026-01-05T08:20:00Z", "rebooted")
    assert (done.change, done.phase, done.parameters, done.instance_id) == ("reboot", "done", requested.parameters,
                                                                           requested.instance_id)


AZURITE = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
           "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;")


def test_settings_order_and_defaults() -> None:
    both = ledger_settings({CONNECTION_SETTING: AZURITE, ENDPOINT_SETTING: "https://st1.table.core.windows.net/"})
    assert (both.connection_string, both.source, both.table) == (AZURITE, CONNECTION_SETTING, DEFAULT_TABLE)
    assert "a2V5" not in repr(both), "the key is never printed"
    endpoint = ledger_settings({ENDPOINT_SETTING: "https://st1.table.core.windows.net/", TABLE_SETTING: "audit"})
    assert (endpoint.endpoint, endpoint.table) == ("https://st1.table.core.windows.net", "audit")
    assert ledger_settings({"AzureWebJobsStorage": AZURITE}).source == "AzureWebJobsStorage"
    assert ledger_settings({"AzureWebJobsStorage": "UseDevelopmentStorage=true"}).connection_string
    identity = ledger_settings({"AzureWebJobsStorage__accountName": "sthotpatch1"})
    assert identity.endpoint == "https://sthotpatch1.table.core.windows.net"
    uri = ledger_settings({"AzureWebJobsStorage__tableServiceUri": "https://sthp.table.core.windows.net/"})
    assert uri.endpoint == "https://sthp.table.core.windows.net"


@pytest.mark.parametrize("environ, setting", [
    ({}, CONNECTION_SETTING),
    ({CONNECTION_SETTING: "not a connection string"}, CONNECTION_SETTING),
    ({ENDPOINT_SETTING: "st1.table.core.windows.net"}, ENDPOINT_SETTING),
    ({ENDPOINT_SETTING: "http://st1.table.core.windows.net"}, ENDPOINT_SETTING),
    ({ENDPOINT_SETTING: "https://st1.table.core.windows.net", TABLE_SETTING: "no-dashes"}, TABLE_SETTING),
    ({"AzureWebJobsStorage__accountName": "Not_An_Account"}, "AzureWebJobsStorage__accountName"),
])
def test_bad_settings_name_the_setting(environ: dict[str, str], setting: str) -> None:
    with pytest.raises(LedgerSettingError, match=setting):
        ledger_settings(environ)


def test_changes_made_are_the_requested_changes_of_one_instance_that_did_not_fail_unmade() -> None:
    from core.ledger import LedgerEntry, changes_made, unsettled_change

    machine = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/" \
              "Microsoft.HybridCompute/machines/m1"

    def entry(instance: str, change: str, phase: str, second: int, **parameters: object) -> LedgerEntry:
        return LedgerEntry.of(machine, "r", instance, change, phase, f"2026-01-05T08:00:{second:02d}Z", parameters)

    entries = [
        entry("a", "apply_changes", "requested", 1, request_id="a:1"),
        entry("a", "enable_vsm", "requested", 1, request_id="a:1"),
        entry("a", "reboot", "requested", 1, request_id="a:1"),
        entry("b", "apply_changes", "requested", 5, request_id="b:1"),
        entry("b", "reboot", "requested", 5, request_id="b:1"),
        entry("b", "reboot", "failed", 9, request_id="b:1", made=False),
        entry("b", "apply_changes", "failed", 9, request_id="b:1", made=False),
    ]
    # a was terminated after requesting: its changes (and its reboot) count; b's failed before it made any.
    assert changes_made(entries, "a") == (["enable_vsm", "reboot"], 1)
    assert changes_made(entries, "b") == ([], 0)
    assert unsettled_change(entries, "c").instance_id == "a"
    assert unsettled_change(entries, "a") is None, "its own requests are not an earlier run's"
    assert unsettled_change([*entries, entry("a", "apply_changes", "done", 30, request_id="a:1")], "c") is None
    # The next run of instance a (same instance id, another run) sees a's first run as unsettled.
    rerun = [entry("a", "reboot", "requested", 40, request_id="a2:1", run="a@2")]
    assert unsettled_change([*entries, *rerun], "a@2").instance_id == "a"
    assert changes_made([*entries, *rerun], "a") == (["reboot"], 1), "the latest run of the instance"
    assert changes_made([*entries, *rerun], "a", run="a") == (["enable_vsm", "reboot"], 1)
