"""The modelled extension fails an orchestration (not the host) on an action it cannot carry out."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from arc_hotpatch.durable_host import history as h
from arc_hotpatch.durable_host.shim import ShimFailure, ShimReplay

NOW = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize("fire_at", ["not a time", None, 42])
def test_a_timer_without_a_valid_fire_time_fails_the_orchestration(fire_at: object) -> None:
    replay = ShimReplay(
        instance_id="i", execution_id="e", orchestrator_name="o", parent_instance_id=None,
        actions=[{"actionType": 5, "fireAt": fire_at, "isCanceled": False}],
        activity_names=frozenset(), orchestrator_names=frozenset({"o"}),
    )
    history = [h.orchestrator_started(NOW),
               h.execution_started(NOW, name="o", instance_id="i", execution_id="e", input_text=None)]
    with pytest.raises(ShimFailure, match="CreateTimer action without a valid fireAt"):
        replay.run(history)
