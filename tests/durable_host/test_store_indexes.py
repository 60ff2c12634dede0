"""The instance store's indexes: ready instances, sorted ids, created times; queries answer as a full scan would."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import datetime, timedelta

import pytest

from arc_hotpatch.clocks import VirtualClock
from arc_hotpatch.durable_host import DurableHost
from arc_hotpatch.durable_host.store import (
    PREVIOUS_HISTORIES_KEPT,
    Instance,
    InstanceStore,
    _has_successor,
    _prefix_successor,
)


def _scan(
    store: InstanceStore,
    runtime_status: Iterable[str] | None,
    created_from: datetime | None,
    created_to: datetime | None,
    prefix: str | None,
) -> list[Instance]:
    """What ``select`` answered before it had indexes: every instance, sorted, filtered one by one."""
    statuses = {s.lower() for s in runtime_status} if runtime_status else None
    selected = []
    for instance_id in sorted(store.instances):
        instance = store.instances[instance_id]
        if statuses is not None and instance.status.lower() not in statuses:
            continue
        if created_from is not None and instance.created_time < created_from:
            continue
        if created_to is not None and instance.created_time > created_to:
            continue
        if prefix and not instance_id.startswith(prefix):
            continue
        selected.append(instance)
    return selected


def _populated_host(make_host) -> tuple[DurableHost, VirtualClock, datetime]:
    """Instances of two runs and windows created over an hour; some continue as new, some finish, one is purged."""
    clock = VirtualClock()
    t0 = clock.now()
    host = make_host(clock)
    for minute, (run, window, n) in enumerate(itertools.product(("run1", "run2"), ("w0", "w1"), range(3))):
        clock.advance_to(t0 + timedelta(minutes=5 * minute))
        host.start_new("sequence", f"{run}:{window}:m{n}", n)
        host.start_new("wait_event", f"{run}:{window}:waiter{n}")
        host.run_until_idle()
    host.start_new("eternal_events", "run1:events")
    host.start_new("sequence", "run10:w0:m0", 1)  # shares the "run1" prefix, not "run1:"
    host.run_until_idle()
    host.purge("run2:w1:m2")
    return host, clock, t0


def test_status_queries_answer_as_a_full_scan(make_host) -> None:
    host, clock, t0 = _populated_host(make_host)
    store = host._store
    times = [None, t0, t0 + timedelta(minutes=12), t0 + timedelta(minutes=31), clock.now(), t0 + timedelta(days=1)]
    prefixes = [None, "", "run1", "run1:", "run1:w0:", "run2:w1:", "run", "r", "zzz", "run1:w0:m0"]
    status_sets = [None, ["Completed"], ["running", "Pending"], ["Failed"]]
    for created_from, created_to, prefix, statuses in itertools.product(times, times, prefixes, status_sets):
        expected = _scan(store, statuses, created_from, created_to, prefix)
        assert store.select(statuses, created_from, created_to, prefix) == expected, (
            created_from, created_to, prefix, statuses,
        )  # fmt: skip
    listed = host.list_instances(instance_id_prefix="run1:w0:", created_from=t0, runtime_status=["Completed"])
    assert [s["instanceId"] for s in listed] == ["run1:w0:m0", "run1:w0:m1", "run1:w0:m2"]


def test_continue_as_new_moves_an_instance_in_the_created_time_index(make_host) -> None:
    host, clock, _ = _populated_host(make_host)
    first_created = clock.now()
    clock.advance(600)
    host.raise_event("run1:events", "Item", "a")  # the execution continues as new, created now
    host.run_until_idle()
    assert host.get_status("run1:events")["createdTime"] == "2026-01-05T09:05:00Z"
    assert [s["instanceId"] for s in host.list_instances(created_from=clock.now())] == ["run1:events"]
    assert "run1:events" not in [s["instanceId"] for s in host.list_instances(created_to=first_created)]
    store = host._store
    assert store.select(None, clock.now(), None, None) == _scan(store, None, clock.now(), None, None)


def test_a_restarted_instance_replaces_its_index_entries(make_host) -> None:
    clock = VirtualClock()
    host = make_host(clock)
    host.start_new("sequence", "again", 1)
    host.run_until_complete(["again"])
    clock.advance(60)
    host.start_new("sequence", "again", 2)  # a finished instance may be started anew under its id
    assert host.instance_ids() == ["again"]
    assert [s["input"] for s in host.list_instances(created_from=clock.now())] == [2]
    assert host.list_instances(created_to=clock.now() - timedelta(seconds=1)) == []
    host.run_until_complete(["again"])
    assert host.purge_instances(created_from=clock.now() - timedelta(days=1)) == 1
    assert host.instance_ids() == [] and host.list_instances(created_from=clock.now()) == []


def test_ready_instances_are_those_with_queued_messages(make_host) -> None:
    host = make_host()
    store = host._store
    host.start_new("wait_event", "b")
    host.start_new("wait_event", "a")
    assert store.ready_instance_ids() == ["a", "b"] and store.has_inbox_work()
    host.run_until_idle()
    assert store.ready_instance_ids() == [] and not store.has_inbox_work()
    host.raise_event("b", "Go", 1)
    assert store.ready_instance_ids() == ["b"]
    host.run_until_complete(["b"])
    host.terminate("a", "done with it")
    assert store.ready_instance_ids() == ["a"]
    host.run_until_complete(["a"])
    assert store.ready_instance_ids() == []
    host.purge("a")
    assert store.ready_instance_ids() == [] and host.instance_ids() == ["b"]


@pytest.mark.parametrize(
    ("prefix", "successor"),
    [("run1:", "run1;"), ("a\U0010ffff", "b"), ("ab\U0010ffff\U0010ffff", "ac"), ("\U0010ffff", None)],
)
def test_the_id_range_of_a_prefix_ends_at_its_successor(prefix: str, successor: str | None) -> None:
    assert _has_successor(prefix) == (successor is not None)
    if successor is not None:
        assert _prefix_successor(prefix) == successor
        assert prefix + "\U0010ffff" * 3 < successor


def test_an_instance_keeps_the_histories_of_its_last_executions_only():
    instance = Instance("i", "orchestrator", None, "e0", None, datetime(2026, 12, 1))
    for execution in range(PREVIOUS_HISTORIES_KEPT + 3):
        instance.keep_previous([{"execution": execution}])
    kept = [history[0]["execution"] for history in instance.previous_histories]
    assert kept == list(range(3, PREVIOUS_HISTORIES_KEPT + 3))  # the oldest three dropped, in order
