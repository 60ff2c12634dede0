"""Orchestrator episodes in worker processes: the same histories as in the host's process, event by event."""

from __future__ import annotations

import json
from typing import Any

import pytest

from arc_hotpatch.clocks import VirtualClock
from arc_hotpatch.durable_host import DurableHost

from . import sample_app

APP_SPEC = "tests.durable_host.sample_app:app"


def _run(processes: int, *, batch_size: int = 3) -> tuple[str, dict[str, Any], int]:
    """A mixed run of the sample app: (histories and statuses as JSON, metrics, episodes re-run)."""
    app_spec = APP_SPEC if processes else None
    host = DurableHost(
        sample_app.app, VirtualClock(), batch_size=batch_size, orchestrator_processes=processes, app_spec=app_spec
    )
    try:
        host.start_new("fan_out", None, 7)
        host.start_new("retry_activity", None, "det")
        host.start_new("parent")
        host.start_new("sleepers", None, [5, 1, 3])
        host.start_new("parent_catches_child")  # user code raises: $OutOfProcData$ with the user's stack
        host.start_new("parent_propagates_child")
        host.start_new("counter", "counter", 0)  # continue-as-new
        host.start_new("child_beside_activity", "b-parent", "a-child")  # the child commits before its parent
        approval = host.start_new("approval_with_timeout", None, {"linger": True})
        events = host.start_new("eternal_events", "events")
        doomed = host.start_new("wait_event", "doomed")
        host.run_until_idle()
        host.raise_event(approval, "Approval", "yes")
        for item in ("a", "b", "stop"):
            host.raise_event(events, "Item", item)
        host.terminate(doomed, "not needed")
        statuses = host.run_until_complete(timeout_real_s=120)
        histories = {iid: host.execution_histories(iid) for iid in host.instance_ids()}
        return json.dumps([histories, statuses], sort_keys=True), host.metrics(), host._episodes.reruns
    finally:
        host.close()
        sample_app.reset_knobs()


def test_worker_processes_record_the_in_process_histories() -> None:
    in_process, in_process_metrics, _ = _run(0)
    in_workers, in_workers_metrics, reruns = _run(1)
    assert in_workers == in_process
    assert in_workers_metrics == in_process_metrics
    # The parent's batch was taken before its child's commit queued the child's result: run again.
    assert reruns >= 1


@pytest.mark.parametrize("batch_size", [1, 32])
def test_two_worker_processes_and_other_batch_sizes(batch_size: int) -> None:
    assert _run(2, batch_size=batch_size)[:2] == _run(0, batch_size=batch_size)[:2]


def test_a_user_error_reaches_the_parent_with_the_same_stack_from_a_worker() -> None:
    in_process, in_workers = json.loads(_run(0)[0]), json.loads(_run(1)[0])
    failed = [e for e in in_workers[0]["doomed-child-2"][-1] if e.get("OrchestrationStatus") == "Failed"]
    assert failed and "child broke" in failed[0]["Details"] and "sample_app.py" in failed[0]["Details"]
    assert in_workers[0]["doomed-child-2"] == in_process[0]["doomed-child-2"]


def test_worker_processes_need_the_app_spec_and_start_on_the_first_episode() -> None:
    with pytest.raises(ValueError, match="app_spec"):
        DurableHost(sample_app.app, VirtualClock(), orchestrator_processes=1)
    with pytest.raises(ValueError, match="orchestrator_processes"):
        DurableHost(sample_app.app, VirtualClock(), orchestrator_processes=-1, app_spec=APP_SPEC)
    with DurableHost(sample_app.app, VirtualClock(), orchestrator_processes=1, app_spec=APP_SPEC) as host:
        processes = host._processes
        assert processes is not None and processes._executor is None  # nothing ran yet: no process
        instance_id = host.start_new("sequence", "one", 1)
        assert host.run_until_complete([instance_id])[instance_id]["output"] == [2, 3]
        assert processes._executor is not None
        (worker_pid,) = processes._executor._processes  # named for ps and top (and the fleet benchmark)
        with open(f"/proc/{worker_pid}/comm") as comm:
            assert comm.read().strip() == "arc-replays"
    assert processes._executor is None  # close() shut the workers down
    with DurableHost(sample_app.app, VirtualClock()) as host:
        assert host._processes is None  # the default: episodes in the host's process


def test_a_worker_that_cannot_import_the_app_fails_the_run_and_keeps_the_batch() -> None:
    with DurableHost(sample_app.app, VirtualClock(), orchestrator_processes=1, app_spec="no_such_module:app") as host:
        instance_id = host.start_new("sequence", "lost", 1)
        with pytest.raises(Exception, match=r"no_such_module|process pool"):
            host.run_until_complete([instance_id], timeout_real_s=60)
        assert host._store.ready_instance_ids() == [instance_id]  # the start message is queued again
