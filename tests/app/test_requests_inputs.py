"""Client-function input rules without a host: JSON bodies (size, depth, duplicate keys), CloudEvent objects in
the Event Grid trigger, rollout instance ids, and the escalation contract that carries no webhook URL."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import azure.functions as func
import pytest

from core.contracts import Escalation, MachineCall
from orchestrators.instances import FLEET_ROLLOUT_ID, is_run_of, new_rollout_id, subscription_rollout_id
from orchestrators.triggers import MAX_BODY_BYTES, RequestRejected, json_object_body, machine_from_event

SUB = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"
MACHINE_ID = f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/web-1"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{" * 40 + b"}" * 40, 400, "nests deeper than 32 levels"),
        (b"[" * 60_000, 400, "nests deeper than 32 levels"),
        (b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', None, ""),  # brackets in strings do not count
        (b'{"a": 1, "a": 2}', 400, "repeats the key 'a'"),
        (b'{"a": {"b": 1, "b": 2}}', 400, "repeats the key 'b'"),
        (b'{"a": Infinity}', 400, "Infinity is not a JSON number"),
        (b"x" * (MAX_BODY_BYTES + 1), 413, "at most 65536"),
        (b"\xff", 400, "not UTF-8"),
        (b"[]", 400, "must be"),
    ],
)
def test_json_bodies_are_bounded(body: bytes, status: int | None, message: str) -> None:
    if status is None:
        assert json_object_body(body, "an object") == {"a": "[" * 42}
        return
    with pytest.raises(RequestRejected) as caught:
        json_object_body(body, "an object")
    assert caught.value.status == status and message in str(caught.value)
    assert len(str(caught.value)) < 300


def test_a_cloudevent_object_is_understood_by_the_trigger() -> None:
    data = {"operationName": "Microsoft.HybridCompute/machines/write", "resourceUri": MACHINE_ID}
    event = func.CloudEvent(id="c1", source=f"/subscriptions/{SUB}", type="Microsoft.Resources.ResourceWriteSuccess",
                            specversion="1.0", time=datetime(2026, 1, 5, tzinfo=UTC), subject=MACHINE_ID, data=data)
    assert machine_from_event(event) == MACHINE_ID
    other = func.CloudEvent(id="c2", source="s", type="Other", specversion="1.0", time=None, data=data)
    assert machine_from_event(other) is None


def test_every_rollout_run_has_its_own_id() -> None:
    now = datetime(2026, 1, 5, 8, 0, 1, tzinfo=UTC)
    stem = subscription_rollout_id(SUB.upper())
    first, second = new_rollout_id(stem, now), new_rollout_id(stem, now)
    assert first != second
    assert re.fullmatch(rf"rollout-{SUB}-20260105T080001Z-[0-9a-f]{{6}}", first)
    assert is_run_of(first, stem) and is_run_of(stem, stem), "a run from before ids had a time is found too"
    assert not is_run_of(f"{first}:20260105T080001:w0", stem), "a window is not a run"
    assert not is_run_of(new_rollout_id(FLEET_ROLLOUT_ID, now), stem)
    assert is_run_of(new_rollout_id(FLEET_ROLLOUT_ID, now), FLEET_ROLLOUT_ID)


def test_an_escalation_never_carries_a_webhook_url() -> None:
    escalation = Escalation(MachineCall(MACHINE_ID, "https://management.azure.com"), "web-1", "enable_failed", "d",
                            [], escalation_webhook="https://hooks.test/x?sig=S3CR3T")
    assert escalation.to_json()["escalation_webhook"] == ""
    assert "S3CR3T" not in str(escalation.to_json())
