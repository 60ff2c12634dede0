"""A small Durable Functions app (Python v2 model) exercising every primitive the local host supports."""

from __future__ import annotations

import contextlib
import json
import threading
from collections import Counter
from datetime import timedelta
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from arc_hotpatch.clocks import current_clock

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)

# Test knobs. Orchestrators read them to simulate a code change between episodes.
NONDETERMINISM: dict[str, Any] = {"activity": "echo", "skip_activity": False}
_attempts: Counter[str] = Counter()
_attempts_lock = threading.Lock()


def reset_knobs() -> None:
    NONDETERMINISM.update(activity="echo", skip_activity=False)
    with _attempts_lock:
        _attempts.clear()


# ---------------------------------------------------------------------------- activities
@app.activity_trigger(input_name="value")
def add_one(value: int) -> int:
    return value + 1


@app.activity_trigger(input_name="value")
def echo(value: Any) -> Any:
    return value


@app.activity_trigger(input_name="key")
def flaky(key: str) -> str:
    """Fails on the first two calls for a key, succeeds on the third."""
    with _attempts_lock:
        _attempts[key] += 1
        attempt = _attempts[key]
    if attempt < 3:
        raise RuntimeError(f"transient failure {attempt} for {key}")
    return f"ok after {attempt} attempts"


@app.activity_trigger(input_name="key")
def bump(key: str) -> int:
    with _attempts_lock:
        _attempts[key] += 1
        return _attempts[key]


@app.activity_trigger(input_name="value")
def boom(value: Any) -> None:
    raise ValueError("kaboom")


@app.activity_trigger(input_name="text")
async def shout(text: str) -> str:
    return text.upper() + "!"


@app.activity_trigger(input_name="seconds")
def sleeper(seconds: float) -> str:
    """Sleeps on the host's clock (parked, not runnable, on a VirtualClock)."""
    clock = current_clock()
    clock.sleep(seconds)
    return clock.now().isoformat()


# ------------------------------------------------------------------------- orchestrators
@app.orchestration_trigger(context_name="context")
def sequence(context: df.DurableOrchestrationContext):
    first = yield context.call_activity("add_one", context.get_input() or 0)
    second = yield context.call_activity(add_one, first)
    return [first, second]


@app.orchestration_trigger(context_name="context")
def async_activity(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("shout", context.get_input()))


@app.orchestration_trigger(context_name="context")
def fan_out(context: df.DurableOrchestrationContext):
    count = context.get_input()
    results = yield context.task_all([context.call_activity("add_one", i) for i in range(count)])
    return sum(results)


@app.orchestration_trigger(context_name="context")
def nested_compound(context: df.DurableOrchestrationContext):
    """WhenAll of (activity, WhenAny(timer, activity), activity): ids depth first."""
    timer = context.create_timer(context.current_utc_datetime + timedelta(minutes=10))
    race = context.task_any([timer, context.call_activity("echo", "race")])
    results = yield context.task_all([context.call_activity("echo", "a"), race, context.call_activity("echo", "b")])
    return [results[0], results[2]]


@app.orchestration_trigger(context_name="context")
def approval_with_timeout(context: df.DurableOrchestrationContext):
    """WhenAny(external event, 1 h timer); the loser timer is cancelled; optionally wait 2 h more."""
    options = context.get_input() or {}
    timer = context.create_timer(context.current_utc_datetime + timedelta(hours=1))
    approval = context.wait_for_external_event("Approval")
    winner = yield context.task_any([approval, timer])
    if winner == approval:
        timer.cancel()
        if options.get("linger"):
            yield context.create_timer(context.current_utc_datetime + timedelta(hours=2))
        result = yield context.call_activity("echo", approval.result)
        return {"approved": result}
    return {"timed_out": True}


@app.orchestration_trigger(context_name="context")
def wait_event(context: df.DurableOrchestrationContext):
    yield context.call_activity("echo", "first")
    data = yield context.wait_for_external_event("Go")
    return data


@app.orchestration_trigger(context_name="context")
def retry_activity(context: df.DurableOrchestrationContext):
    options = df.RetryOptions(first_retry_interval_in_milliseconds=60_000, max_number_of_attempts=3)
    return (yield context.call_activity_with_retry("flaky", options, context.get_input()))


@app.orchestration_trigger(context_name="context")
def retry_exhausted(context: df.DurableOrchestrationContext):
    options = df.RetryOptions(first_retry_interval_in_milliseconds=1_000, max_number_of_attempts=2)
    try:
        yield context.call_activity_with_retry("boom", options, None)
    except Exception as exc:
        return f"gave up: {exc}"
    return "unexpected success"


@app.orchestration_trigger(context_name="context")
def thirty_days(context: df.DurableOrchestrationContext):
    for _ in range(30):
        yield context.create_timer(context.current_utc_datetime + timedelta(days=1))
    return context.current_utc_datetime.isoformat()


@app.orchestration_trigger(context_name="context")
def one_long_timer(context: df.DurableOrchestrationContext):
    yield context.create_timer(context.current_utc_datetime + timedelta(days=30))
    return context.current_utc_datetime.isoformat()


@app.orchestration_trigger(context_name="context")
def child(context: df.DurableOrchestrationContext):
    value = yield context.call_activity("add_one", context.get_input())
    return {"value": value * 10, "parent": context.parent_instance_id, "me": context.instance_id}


@app.orchestration_trigger(context_name="context")
def parent(context: df.DurableOrchestrationContext):
    explicit = yield context.call_sub_orchestrator("child", 1, "child-explicit")
    generated = yield context.call_sub_orchestrator(child, 2)
    return [explicit, generated]


@app.orchestration_trigger(context_name="context")
def failing_child(context: df.DurableOrchestrationContext):
    yield context.call_activity("echo", "before failing")
    raise ValueError("child broke")


@app.orchestration_trigger(context_name="context")
def parent_catches_child(context: df.DurableOrchestrationContext):
    try:
        yield context.call_sub_orchestrator("failing_child", None, "doomed-child")
    except Exception as exc:
        return f"caught: {exc}"
    return "unexpected success"


@app.orchestration_trigger(context_name="context")
def parent_propagates_child(context: df.DurableOrchestrationContext):
    return (yield context.call_sub_orchestrator("failing_child", None, "doomed-child-2"))


@app.orchestration_trigger(context_name="context")
def parent_of_waiter(context: df.DurableOrchestrationContext):
    try:
        return (yield context.call_sub_orchestrator("wait_event", None, "waiting-child"))
    except Exception as exc:
        return f"child ended: {exc}"


@app.orchestration_trigger(context_name="context")
def flaky_child(context: df.DurableOrchestrationContext):
    attempt = yield context.call_activity("bump", context.get_input())
    if attempt < 2:
        raise ValueError(f"child attempt {attempt} failed")
    return attempt


@app.orchestration_trigger(context_name="context")
def sub_with_retry(context: df.DurableOrchestrationContext):
    options = df.RetryOptions(first_retry_interval_in_milliseconds=5_000, max_number_of_attempts=3)
    return (yield context.call_sub_orchestrator_with_retry("flaky_child", options, context.get_input()))


@app.orchestration_trigger(context_name="context")
def counter(context: df.DurableOrchestrationContext):
    n = context.get_input() or 0
    yield context.call_activity("echo", n)
    if n < 2:
        context.continue_as_new(n + 1)
        return None
    return n


@app.orchestration_trigger(context_name="context")
def eternal_events(context: df.DurableOrchestrationContext):
    """Continue-as-new per received event; stops after the value 'stop'."""
    seen = context.get_input() or []
    value = yield context.wait_for_external_event("Item")
    seen = [*seen, value]
    if value == "stop":
        return seen
    context.continue_as_new(seen)
    return None


@app.orchestration_trigger(context_name="context")
def custom_status(context: df.DurableOrchestrationContext):
    context.set_custom_status({"stage": "waiting"})
    data = yield context.wait_for_external_event("Go")
    context.set_custom_status({"stage": "done", "data": data})
    return data


@app.orchestration_trigger(context_name="context")
def changing_code(context: df.DurableOrchestrationContext):
    first = None
    if not NONDETERMINISM["skip_activity"]:
        first = yield context.call_activity(NONDETERMINISM["activity"], "x")
    second = yield context.wait_for_external_event("Continue")
    return [first, second]


@app.orchestration_trigger(context_name="context")
def activity_fails(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("boom", 1))


@app.orchestration_trigger(context_name="context")
def activity_failure_caught(context: df.DurableOrchestrationContext):
    try:
        yield context.call_activity("boom", 1)
    except Exception as exc:
        return str(exc)
    return "unexpected success"


@app.orchestration_trigger(context_name="context")
def when_all_failure(context: df.DurableOrchestrationContext):
    """The SDK raises at the first failure of a task_all; the extension's shim awaits the whole WhenAll."""
    with contextlib.suppress(Exception):  # the failure is thrown into the generator at the yield
        yield context.task_all([context.call_activity("boom", 1), context.call_activity("sleeper", 60)])
    return (yield context.call_activity("echo", context.current_utc_datetime.isoformat()))


@app.orchestration_trigger(context_name="context")
def unknown_activity(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("does_not_exist", 1))


@app.orchestration_trigger(context_name="context")
def sleepers(context: df.DurableOrchestrationContext):
    return (yield context.task_all([context.call_activity("sleeper", s) for s in context.get_input()]))


@app.orchestration_trigger(context_name="context")
def child_beside_activity(context: df.DurableOrchestrationContext):
    """A sub-orchestration (its id is the input) and an activity at once: both can answer in one driver pass."""
    tasks = [context.call_sub_orchestrator("child", 1, context.get_input()), context.call_activity("echo", 2)]
    return (yield context.task_all(tasks))


@app.orchestration_trigger(context_name="context")
def batched_parent(context: df.DurableOrchestrationContext):
    """Fan out ``total`` activities as sub-orchestrations of ``batch`` activities each."""
    spec = context.get_input()
    total, batch = spec["total"], spec["batch"]
    children = [context.call_sub_orchestrator("fan_out", min(batch, total - start)) for start in range(0, total, batch)]
    sums = yield context.task_all(children)
    return sum(sums)


@app.orchestration_trigger(context_name="context")
def approval_flow(context: df.DurableOrchestrationContext):
    """Used over HTTP: waits for 'Approval' (or 1 h), returns the raw event payload and its type."""
    timer = context.create_timer(context.current_utc_datetime + timedelta(hours=1))
    approval = context.wait_for_external_event("Approval")
    winner = yield context.task_any([approval, timer])
    if winner != approval:
        return {"timed_out": True, "input": context.get_input()}
    timer.cancel()
    payload = approval.result
    return {"payload": payload, "payload_type": type(payload).__name__, "input": context.get_input()}


# ---------------------------------------------------------------------- client functions
@app.route(route="start/{orchestrator}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def http_start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    body = req.get_body()
    payload = json.loads(body) if body else None
    instance_id = await client.start_new(req.route_params["orchestrator"], None, payload)
    return client.create_check_status_response(req, instance_id)


@app.route(route="instances/{instanceId}/approve", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@app.durable_client_input(client_name="client")
async def http_approve(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    await client.raise_event(req.route_params["instanceId"], "Approval", req.get_json())
    return func.HttpResponse(status_code=202)


@app.route(route="instances/{instanceId}", methods=["GET", "DELETE"])
@app.durable_client_input(client_name="client")
async def http_instance(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    instance_id = req.route_params["instanceId"]
    if req.method == "DELETE":
        result = await client.purge_instance_history(instance_id)
        return func.HttpResponse(json.dumps({"deleted": result.instances_deleted}), mimetype="application/json")
    status = await client.get_status(instance_id)
    if not status:
        return func.HttpResponse(json.dumps({"found": False}), status_code=404, mimetype="application/json")
    return func.HttpResponse(json.dumps(status.to_json()), mimetype="application/json")


@app.route(route="instances", methods=["GET"])
@app.durable_client_input(client_name="client")
async def http_list(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    statuses = await client.get_status_all()
    return func.HttpResponse(json.dumps(sorted(s.instance_id for s in statuses)), mimetype="application/json")


@app.route(route="instances/{instanceId}/terminate", methods=["POST"])
@app.durable_client_input(client_name="client")
async def http_terminate(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    await client.terminate(req.route_params["instanceId"], "stopped by test")
    return func.HttpResponse(status_code=202)


@app.route(route="hello/{name:alpha}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def hello(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(f"hello {req.route_params['name']} ({req.params.get('greeting', 'hi')})")


@app.route(route="admin-only", auth_level=func.AuthLevel.ADMIN)
def admin_only(req: func.HttpRequest) -> str:
    return "admin ok"


@app.timer_trigger(schedule="%NIGHTLY_SCHEDULE%", arg_name="timer")
@app.durable_client_input(client_name="client")
async def nightly(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    instance_id = "nightly-" + current_clock().now().strftime("%Y%m%dT%H%M%S")
    await client.start_new("sequence", instance_id, 41)


@app.event_grid_trigger(arg_name="event")
@app.durable_client_input(client_name="client")
async def on_machine_write(event: func.EventGridEvent, client: df.DurableOrchestrationClient) -> None:
    data = event.get_json()
    if event.event_type != "Microsoft.Resources.ResourceWriteSuccess":
        return
    if data.get("operationName") != "Microsoft.HybridCompute/machines/write":
        return
    machine = event.subject.rsplit("/", 1)[-1]
    await client.start_new("sequence", f"onboard-{machine}", len(machine))


@app.route(route="instances/{instanceId}/unsupported/{operation}", methods=["POST"],
           auth_level=func.AuthLevel.ANONYMOUS)
@app.durable_client_input(client_name="client")
async def http_unsupported(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """What an SDK user sees of an operation the local host does not implement: the exception's message."""
    operation = getattr(client, req.route_params["operation"])
    try:
        await operation(req.route_params["instanceId"], "test")
    except Exception as exc:
        return func.HttpResponse(str(exc), status_code=200)
    return func.HttpResponse("no error", status_code=200)
