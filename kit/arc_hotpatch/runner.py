"""Running a rollout locally: ``simulate`` (twin + virtual clock) and ``plan`` (real Azure, dry run).

The production code runs unchanged: ``function_app.app``'s orchestrations and
activities on the local durable host, the real ``azure-mgmt-hybridcompute``
clients over HTTP, and the report read through a real ``DurableOrchestrationClient``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

import azure.durable_functions as df

from core.clock import install_clock
from core.policy import Policy

from .azurite import ledger_environment
from .clocks import DEFAULT_START, Clock, SystemClock, VirtualClock
from .durable_host import DurableHost
from .heap import HEAP_TRIM_INTERVAL_S, widened_collector
from .twin import FleetTwin
from .twin.fleet import Fleet
from .twin.process import TwinProcess

LOCAL_ROLLOUT_ID = "rollout-local"
SIMULATION_TOKEN = "simulation-token"
ProgressCallback = Callable[[int, int], None]


def _set_environment(values: Mapping[str, str | None]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextlib.contextmanager
def scoped_environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (a string) or remove (None) these environment variables for the duration, then restore them."""
    saved = {key: os.environ.get(key) for key in values}
    try:
        _set_environment(values)
        yield
    finally:
        _set_environment(saved)


def twin_environment(twin: FleetTwin | TwinProcess) -> contextlib.AbstractContextManager[None]:
    """Point the app's ARM calls at the (started) twin for the duration: its URL, a token, and its CA certificate
    (the activities read these settings)."""
    assert twin.base_url, "the twin is not started"
    return scoped_environment({"HOTPATCH_ARM_ENDPOINT": twin.base_url, "HOTPATCH_ARM_TOKEN": SIMULATION_TOKEN,
                               "HOTPATCH_ARM_CA_FILE": twin.ca_file})


@contextlib.contextmanager
def restored_environment(prefix: str = "HOTPATCH_") -> Iterator[None]:
    """Whatever runs inside may change ``prefix*`` variables (``serve`` writes its app settings): undone after."""
    saved = {key: value for key, value in os.environ.items() if key.startswith(prefix)}
    try:
        yield
    finally:
        for key in [k for k in os.environ if k.startswith(prefix) and k not in saved]:
            del os.environ[key]
        os.environ.update(saved)


def twin_scope(subscriptions: tuple[str, ...], twin_subscriptions: tuple[str, ...]) -> tuple[str, ...]:
    """The subscriptions a rehearsal rolls out to: the configured ones (as the twin spells them), or,
    when none are configured, every subscription of the twin.

    Raises ValueError naming a configured subscription the twin does not have.
    """
    if not subscriptions:
        return tuple(twin_subscriptions)
    known = {s.lower(): s for s in twin_subscriptions}
    missing = [s for s in subscriptions if s.lower() not in known]
    if missing:
        raise ValueError(
            f"subscription {missing[0]} is not one of the fleet twin's subscriptions ({', '.join(twin_subscriptions)})"
        )
    return tuple(known[s.lower()] for s in subscriptions)


def simulation_policy(policy: Policy, twin: FleetTwin | TwinProcess) -> Policy:
    """``policy`` pointed at the twin: its endpoint, and the policy's scope (default: every twin subscription)."""
    return replace(policy, arm_endpoint=twin.base_url or "",
                   subscriptions=twin_scope(policy.subscriptions, tuple(twin.subscription_ids)))


class RolloutFailed(RuntimeError):
    """The rollout orchestration did not complete; ``report`` is what it had finished (may be empty)."""

    def __init__(self, message: str, report: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.report = report or {}


class PlanError(RuntimeError):
    """``plan`` could not authenticate, reach ARM or finish; ``report`` holds what was done before it failed."""

    def __init__(self, message: str, report: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.report = report or {}


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def check_arm_access(policy: Policy) -> list[str]:
    """Before a plan starts: a token for the policy's ARM endpoint, and the subscriptions it can read.

    Raises PlanError (one line) when no token can be had (no sign-in: ``az login``, a managed
    identity, or AZURE_* service principal settings), ARM cannot be reached, or it refuses the
    token. Returns the readable subscription ids; a configured subscription missing from them
    is left to the rollout, which reports it (and ``plan`` then exits non-zero).
    """
    from azure.core.exceptions import AzureError, HttpResponseError

    from core.azure_clients import ArmConnection, subscription_client

    endpoint = policy.resolved_arm_endpoint
    try:
        connection = ArmConnection.for_endpoint(endpoint, token=os.environ.get("HOTPATCH_ARM_TOKEN") or None,
                                                ca_file=os.environ.get("HOTPATCH_ARM_CA_FILE") or "")
    except ValueError as exc:
        raise PlanError(str(exc)) from None
    try:
        connection.credential.get_token(*connection.credential_scopes)
    except Exception as exc:
        raise PlanError(f"cannot authenticate to {endpoint}: {first_line(exc)}") from None
    try:
        readable = [str(s.subscription_id) for s in subscription_client(connection).subscriptions.list()]
    except HttpResponseError as exc:
        status = f"HTTP {exc.status_code}" if exc.status_code else "refused"
        raise PlanError(f"ARM at {endpoint} refused to list subscriptions ({status}): {first_line(exc)}") from None
    except AzureError as exc:
        raise PlanError(f"cannot reach ARM at {endpoint}: {first_line(exc)}") from None
    if not policy.subscriptions and not readable:
        raise PlanError(f"the identity can read no subscription at {endpoint}")
    return readable


def execute_rollout(
    clock: Clock,
    policy: Policy,
    *,
    expected_machines: int,
    progress: ProgressCallback | None = None,
    timeout_real_s: float = 1800.0,
    activity_workers: int = 16,
    rollout_id: str = LOCAL_ROLLOUT_ID,
    kinds: tuple[str, ...] = ("enroll",),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``rollout_orchestrator`` on the local durable host, once per kind in ``kinds`` one after the other (an
    enrollment, then this month's hotpatch installation); returns (the last run's report, host metrics). With
    two runs the report carries the first one's summary as ``enrollment``."""
    import function_app  # the real app object
    from core.contracts import ROLLOUT_ORCHESTRATOR, RolloutState
    from orchestrators.triggers import rollout_report

    # The orchestrator replays run in a worker process of their own, beside the activities and the host.
    with widened_collector(), DurableHost(
        function_app.app,
        clock,
        activity_workers=activity_workers,
        orchestrator_processes=1,
        app_spec="function_app:app",
        keep_finished_histories=False,  # thousands of machines: their outcomes, not every event, stay in memory
        heap_trim_interval_s=HEAP_TRIM_INTERVAL_S,
    ) as host:
        client = df.DurableOrchestrationClient(host.client_binding_json())
        reports: list[dict[str, Any]] = []
        for kind in kinds:
            instance_id = rollout_id if kind == "enroll" else f"{rollout_id}-{kind}"
            host.start_new(ROLLOUT_ORCHESTRATOR, instance_id, RolloutState(policy, kind=kind).to_json())
            reports.append(_finished_report(host, client, instance_id, expected_machines, progress, timeout_real_s,
                                            rollout_report))
        report = reports[-1]
        if len(reports) > 1:
            report["enrollment"] = {"id": reports[0]["rollout"]["id"], "summary": reports[0]["summary"]}
        metrics = host.metrics()
        metrics["history_by_orchestrator"] = history_by_orchestrator(host, metrics["history_events"])
        return report, metrics


def _finished_report(host: DurableHost, client: Any, instance_id: str, expected_machines: int,
                     progress: ProgressCallback | None, timeout_real_s: float, rollout_report: Any) -> dict[str, Any]:
    """Wait for the rollout ``instance_id`` to complete (progress on the way); its report."""
    stop_progress = _progress_thread(host, instance_id, expected_machines, progress)

    def partial() -> dict[str, Any]:
        try:
            return host.run_client_coroutine(rollout_report(client, instance_id)) or {}
        except Exception:
            return {}

    try:
        final = host.run_until_complete([instance_id], timeout_real_s=timeout_real_s)[instance_id]
    except Exception as exc:
        raise RolloutFailed(f"the rollout did not finish: {first_line(exc)}", partial()) from exc
    finally:
        stop_progress()
    if final["runtimeStatus"] != "Completed":
        output = first_line(Exception(str(final.get("output"))))
        raise RolloutFailed(f"the rollout orchestration ended {final['runtimeStatus']}: {output}", partial())
    report = host.run_client_coroutine(rollout_report(client, instance_id))
    if report is None:
        raise RuntimeError("the rollout report could not be read")
    return report


def history_by_orchestrator(host: DurableHost, per_instance: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """History sizes per orchestrator function: instances, largest history, events replayed, episodes.

    ``per_instance`` is ``host.metrics()["history_events"]`` (instance id -> stats); an
    instance that continued as new counts once, with its largest history of any execution.
    """
    names = host.orchestrator_names()
    grouped: dict[str, dict[str, int]] = {}
    for instance_id, stats in per_instance.items():
        entry = grouped.setdefault(
            names.get(instance_id, "?"),
            {"instances": 0, "max_history_events": 0, "history_events_replayed": 0, "episodes": 0},
        )
        entry["instances"] += 1
        entry["max_history_events"] = max(entry["max_history_events"], stats["max"])
        entry["history_events_replayed"] += stats["replayed"]
        entry["episodes"] += stats["episodes"]
    return dict(sorted(grouped.items()))


def run_simulation(
    fleet: Fleet,
    policy: Policy,
    *,
    faults: str | None = None,
    progress: ProgressCallback | None = None,
    timeout_real_s: float = 1800.0,
    throttling: bool = True,
    start: datetime = DEFAULT_START,
    install_hotpatches: bool = False,
) -> dict[str, Any]:
    """Roll ``policy`` out over the twin's ``fleet`` on a virtual clock; the report with metrics.

    ``throttling=False`` turns the twin's ARM token buckets off (the benchmark's critical-path pass);
    ``install_hotpatches``: then install this month's hotpatches (a second run); the report is that run's.
    Raises RolloutFailed (one line; its ``report``: what was finished) when the twin does not start or the
    rollout does not complete.
    """
    # The twin answers from a process of its own (the machine's other core), on this clock's time.
    shared_time = TwinProcess.shared_time()
    clock = VirtualClock(start, on_advance=shared_time.set)
    wall_start = time.perf_counter()
    virtual_start = clock.now()
    twin = TwinProcess(fleet, shared_time, faults, throttling=throttling)
    try:
        twin.start()
    except RuntimeError as exc:  # its one line, as a failed rollout's
        raise RolloutFailed(str(exc)) from exc
    try:
        with twin_environment(twin), ledger_environment():  # the audit ledger: Azurite unless configured
            report, host_metrics = execute_rollout(
                clock, simulation_policy(policy, twin), expected_machines=len(fleet.machines), progress=progress,
                timeout_real_s=timeout_real_s, kinds=("enroll", "install") if install_hotpatches else ("enroll",),
            )
        twin_metrics = twin.metrics()
    finally:
        twin.stop()
    report["metrics"] = {
        "virtual_makespan_s": round((clock.now() - virtual_start).total_seconds(), 1),
        "wall_s": round(time.perf_counter() - wall_start, 3),
        "arm_requests": twin_metrics["arm_requests"],
        "arm_requests_by_operation": twin_metrics["arm_requests_by_operation"],
        "arm_requests_by_subscription": twin_metrics["arm_requests_by_subscription"],
        "throttled_responses": twin_metrics["throttled_responses"],
        "orchestrations": host_metrics["orchestrations"],
        "max_history_events": host_metrics["max_history_events"],
        "episodes": host_metrics["episodes"],
        "history_events_replayed": host_metrics["history_events_replayed"],
        "activity_calls": host_metrics["activity_calls_total"],
        "activity_longest_s": host_metrics["activity_longest_s"],
        "injected_faults": twin_metrics.get("injected_faults", {}),
        "history_by_orchestrator": host_metrics["history_by_orchestrator"],
    }
    return report


def run_plan(
    policy: Policy, *, progress: ProgressCallback | None = None, clock: Clock | None = None
) -> dict[str, Any]:
    """A dry run of the rollout against the ARM endpoint of ``policy`` (real Azure by default).

    ``clock``: the system clock unless given (tests run ``plan`` against a twin on a virtual clock).
    Raises PlanError (its ``report``: what was finished, with the ``error``) when ARM cannot be
    authenticated to or reached (checked before the rollout starts), or the rollout fails;
    subscriptions that cannot be read are in ``report["rollout"]["errors"]``.
    """
    clock = clock or SystemClock()
    previous = install_clock(clock)  # the SDK's retry back-off sleeps on the clock this plan runs on
    try:
        check_arm_access(policy)
    finally:
        install_clock(previous)
    try:
        report, _ = execute_rollout(clock, replace(policy, dry_run=True), expected_machines=0,
                                    progress=progress, timeout_real_s=6 * 3600)
    except RolloutFailed as exc:
        raise PlanError(str(exc), exc.report) from None
    return report


def _progress_thread(
    host: DurableHost, rollout_id: str, total: int, progress: ProgressCallback | None
) -> Callable[[], None]:
    """Report the machines the rollout has finished (its custom status) to ``progress`` every 0.2 s of real time."""
    if progress is None:
        return lambda: None
    stop = threading.Event()

    def read() -> tuple[int, int]:
        status = host.find_status(rollout_id) or {}
        custom = status.get("customStatus") if isinstance(status.get("customStatus"), dict) else {}
        return int(custom.get("done") or 0), int(custom.get("machines") or total)

    def loop() -> None:
        while not stop.wait(0.2):
            progress(*read())

    thread = threading.Thread(target=loop, name="simulation-progress", daemon=True)
    thread.start()

    def finish() -> None:
        stop.set()
        thread.join(timeout=2)
        progress(*read())

    return finish
