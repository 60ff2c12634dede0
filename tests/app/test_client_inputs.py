"""Input validation of the client functions: rollout requests, Event Grid events, approvals."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import azure.functions as func
import pytest

from core.policy import Policy, SettingError
from orchestrators.machine import approval_payload
from orchestrators.triggers import machine_from_event, parse_rollout_request
from tests.reference import EVENT_GRID_EXAMPLE

SUB = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"
MACHINE_ID = f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/web-1"


def event(event_type: str = "Microsoft.Resources.ResourceWriteSuccess", data: object = None,
          subject: str = MACHINE_ID) -> func.EventGridEvent:
    if data is None:
        data = {"operationName": "Microsoft.HybridCompute/machines/write", "resourceUri": subject,
                "subscriptionId": SUB, "status": "Succeeded"}
    return func.EventGridEvent(id="e1", data=data, topic=f"/subscriptions/{SUB}", subject=subject,
                               event_type=event_type, event_time=datetime(2026, 1, 5, tzinfo=UTC),
                               data_version="2")


def test_machine_write_event_names_the_machine() -> None:
    assert machine_from_event(event()) == MACHINE_ID


@pytest.mark.parametrize(
    "bad",
    [
        event(event_type="Microsoft.Resources.ResourceDeleteSuccess"),
        event(data={"operationName": "Microsoft.HybridCompute/machines/licenseProfiles/write",
                    "resourceUri": MACHINE_ID + "/licenseProfiles/default"}),
        event(data={"operationName": "Microsoft.HybridCompute/machines/runCommands/write"}),
        event(data={"operationName": "Microsoft.Compute/virtualMachines/write",
                    "resourceUri": "/subscriptions/x/resourceGroups/r/providers/Microsoft.Compute/virtualMachines/v"}),
        event(data="not an object"),
        event(data={"operationName": "Microsoft.HybridCompute/machines/write", "resourceUri": "garbage"},
              subject="garbage"),
        # Names ARM does not allow (HybridCompute's machineName pattern, a GUID subscription): never started.
        *(event(subject=MACHINE_ID.replace(part, bad))
          for part, bad in (("web-1", ".."), ("web-1", "a b"), ("web-1", "a%2Fb"), ("web-1", "a'b"),
                            ("web-1", "w" * 55), ("rg1", "r'g"), ("rg1", "rg."), (SUB, "xyz"))),
        func.EventGridEvent(id=None, data={"operationName": "Microsoft.HybridCompute/machines/write",  # type: ignore[arg-type]
                                           "resourceUri": MACHINE_ID},
                            topic="", subject=MACHINE_ID, event_type="Microsoft.Resources.ResourceWriteSuccess",
                            event_time=None, data_version="2"),
    ],
)
def test_other_events_are_ignored_with_a_log_line(bad: func.EventGridEvent, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    assert machine_from_event(bad) is None
    assert sum("event_ignored" in r.message for r in caplog.records) == 1


def test_the_resource_uri_names_the_machine_before_the_subject() -> None:
    data = {"operationName": "Microsoft.HybridCompute/machines/write", "resourceUri": MACHINE_ID}
    other = MACHINE_ID.replace("web-1", "web-2")
    assert machine_from_event(event(data=data, subject=other)) == MACHINE_ID
    assert machine_from_event(event(data={"operationName": data["operationName"]}, subject=other)) == other


def test_the_spec_example_event_shape_is_understood() -> None:
    example = json.loads(EVENT_GRID_EXAMPLE.read_text())
    raw = example[0] if isinstance(example, list) else example
    data = dict(raw["data"], operationName="Microsoft.HybridCompute/machines/write", resourceUri=MACHINE_ID)
    ev = event(data=data, subject=MACHINE_ID)
    assert machine_from_event(ev) == MACHINE_ID


def test_rollout_request_defaults_and_overrides() -> None:
    policy = parse_rollout_request(SUB.upper(), b"", Policy())
    assert policy.subscriptions == (SUB,)
    policy = parse_rollout_request(SUB, b'{"dry_run": true, "reboot_policy": "never", "waves": "1,100%"}', Policy())
    assert policy.dry_run and policy.reboot_policy == "never" and len(policy.waves) == 2


@pytest.mark.parametrize(
    ("subscription", "body", "message"),
    [
        ("not-a-guid", b"", "invalid subscriptionId 'not-a-guid'"),
        (SUB, b"{", "not valid JSON"),
        (SUB, b"[1]", "must be a JSON object"),
        (SUB, b'{"reboot_policy": "yolo"}', "reboot_policy='yolo'"),
        (SUB, b'{"rebootPolicy": "auto"}', "rebootPolicy"),
        (SUB, b'{"subscriptions": ["x"]}', "subscriptions cannot be set"),
    ],
)
def test_bad_rollout_requests_name_the_problem(subscription: str, body: bytes, message: str) -> None:
    with pytest.raises((ValueError, SettingError), match=message.replace("(", r"\(")):
        parse_rollout_request(subscription, body, Policy())


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"approved": True, "by": "alice"}, {"approved": True, "by": "alice"}),
        ('{"approved": false}', {"approved": False}),
        (json.dumps(json.dumps({"by": "bob"})), {"by": "bob"}),  # the client's double encoding
        (None, {}),
        ("", {}),
        ("alice", {"by": "alice"}),
    ],
)
def test_approval_payload_accepts_object_or_json_string(raw: object, expected: dict) -> None:
    assert approval_payload(raw) == expected


def test_a_misspelt_app_setting_is_warned_about_once(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    from orchestrators import triggers

    monkeypatch.setenv("HOTPATCH_CONCURENCY", "5")
    monkeypatch.setattr(triggers, "_warned_unknown", set())
    caplog.set_level("WARNING")
    assert triggers.app_policy().concurrency == Policy().concurrency, "the typo leaves the default in force"
    triggers.app_policy()
    warned = [r.getMessage() for r in caplog.records if "unknown_setting" in r.getMessage()]
    assert len(warned) == 1 and "HOTPATCH_CONCURENCY" in warned[0]
