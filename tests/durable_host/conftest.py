from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from arc_hotpatch.clocks import VirtualClock
from arc_hotpatch.durable_host import DurableHost
from arc_hotpatch.durable_host import history as h

from . import sample_app


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The SDK warns when an event arrives before its task exists (the buffering under test),
    # and the activity converter advises typed decoding: neither is a problem of the host.
    for item in items:
        if "durable_host" in str(item.path):
            item.add_marker(pytest.mark.filterwarnings("ignore:Potential duplicate Task completion"))
            item.add_marker(pytest.mark.filterwarnings("ignore:azure.functions df_loads was called"))


@pytest.fixture(autouse=True)
def _reset_sample_app() -> Iterator[None]:
    sample_app.reset_knobs()
    yield
    sample_app.reset_knobs()


@pytest.fixture
def make_host() -> Iterator[Callable[..., DurableHost]]:
    hosts: list[DurableHost] = []

    def factory(clock: Any = None, **options: Any) -> DurableHost:
        host = DurableHost(sample_app.app, clock or VirtualClock(), **options)
        hosts.append(host)
        return host

    yield factory
    for host in reversed(hosts):
        host.close()


def summarize(history: list[dict[str, Any]]) -> list[Any]:
    """Compact, order-preserving view of a history: event type plus the ids that matter."""
    view: list[Any] = []
    for event in history:
        name = h.event_type_name(event)
        if name == "OrchestratorStarted":
            view.append("OS")
        elif name == "OrchestratorCompleted":
            view.append("OC")
        elif name == "ExecutionStarted":
            view.append(("ExecutionStarted", event["Name"]))
        elif name == "TaskScheduled":
            view.append(("TaskScheduled", event["EventId"], event["Name"]))
        elif name in (
            "TaskCompleted",
            "TaskFailed",
            "SubOrchestrationInstanceCompleted",
            "SubOrchestrationInstanceFailed",
        ):
            view.append((name, event["TaskScheduledId"]))
        elif name == "TimerCreated":
            view.append(("TimerCreated", event["EventId"], event["FireAt"]))
        elif name == "TimerFired":
            view.append(("TimerFired", event["TimerId"]))
        elif name == "EventRaised":
            view.append(("EventRaised", event["Name"]))
        elif name == "SubOrchestrationInstanceCreated":
            view.append((name, event["EventId"], event["Name"], event["InstanceId"]))
        elif name == "ExecutionCompleted":
            view.append(("ExecutionCompleted", event["EventId"], event["OrchestrationStatus"]))
        elif name == "ContinueAsNew":
            view.append(("ContinueAsNew", event["EventId"], event["Result"]))
        else:
            view.append((name,))
    return view


def at(clock_start: Any, **delta: float) -> str:
    """Wire timestamp of ``clock_start + timedelta(**delta)``."""
    from datetime import timedelta

    return h.format_time(clock_start + timedelta(**delta))
