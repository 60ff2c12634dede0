"""The official azure-functions-durable-python samples' patterns (Python v2 programming model), as a user's own
app that ``serve --app samples_app:app`` runs: function chaining, fan-out/fan-in, human interaction, monitor,
sub-orchestrations and retries, each started by the samples' HTTP starter."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
_attempts: dict[str, int] = {}


@app.route(route="orchestrators/{functionName}")
@app.durable_client_input(client_name="client")
async def http_start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    body = req.get_body()
    instance_id = await client.start_new(req.route_params["functionName"], None, req.get_json() if body else None)
    return client.create_check_status_response(req, instance_id)


@app.activity_trigger(input_name="city")
def say_hello(city: str) -> str:
    return f"{os.environ.get('SAMPLE_GREETING', 'Hello')} {city}!"  # an app setting from local.settings.json


@app.orchestration_trigger(context_name="context")
def function_chaining(context: df.DurableOrchestrationContext) -> Any:
    result1 = yield context.call_activity("say_hello", "Tokyo")
    result2 = yield context.call_activity("say_hello", "Seattle")
    result3 = yield context.call_activity("say_hello", "London")
    return [result1, result2, result3]


@app.activity_trigger(input_name="count")
def get_work_batch(count: int) -> list[int]:
    return list(range(1, count + 1))


@app.activity_trigger(input_name="item")
def process_item(item: int) -> int:
    return item * item


@app.orchestration_trigger(context_name="context")
def fan_out_fan_in(context: df.DurableOrchestrationContext) -> Any:
    work = yield context.call_activity("get_work_batch", (context.get_input() or {}).get("count", 5))
    results = yield context.task_all([context.call_activity("process_item", item) for item in work])
    return sum(results)


@app.orchestration_trigger(context_name="context")
def human_interaction(context: df.DurableOrchestrationContext) -> Any:
    deadline = context.current_utc_datetime + timedelta(hours=1)
    approval = context.wait_for_external_event("Approval")
    timeout = context.create_timer(deadline)
    winner = yield context.task_any([approval, timeout])
    if winner is approval:
        timeout.cancel()
        return {"approved": approval.result}
    return {"approved": False, "reason": "timed out"}


@app.activity_trigger(input_name="job")
def check_job(job: dict[str, Any]) -> str:
    _attempts[job["id"]] = _attempts.get(job["id"], 0) + 1
    return "Completed" if _attempts[job["id"]] >= job["done_after"] else "Running"


@app.orchestration_trigger(context_name="context")
def monitor(context: df.DurableOrchestrationContext) -> Any:
    job = context.get_input()
    expiry = context.current_utc_datetime + timedelta(hours=2)
    polls = 0
    while context.current_utc_datetime < expiry:
        polls += 1
        status = yield context.call_activity("check_job", job)
        if status == "Completed":
            return {"status": status, "polls": polls}
        yield context.create_timer(context.current_utc_datetime + timedelta(minutes=5))
    return {"status": "expired", "polls": polls}


@app.orchestration_trigger(context_name="context")
def child_orchestrator(context: df.DurableOrchestrationContext) -> Any:
    name = context.get_input()
    greeting = yield context.call_activity("say_hello", name)
    return greeting.upper()


@app.orchestration_trigger(context_name="context")
def sub_orchestrations(context: df.DurableOrchestrationContext) -> Any:
    children = [context.call_sub_orchestrator("child_orchestrator", city) for city in ("Oslo", "Lima")]
    return (yield context.task_all(children))


@app.activity_trigger(input_name="key")
def flaky_activity(key: str) -> str:
    _attempts[key] = _attempts.get(key, 0) + 1
    if _attempts[key] < 3:
        raise RuntimeError(f"attempt {_attempts[key]} failed")
    return f"succeeded on attempt {_attempts[key]}"


@app.orchestration_trigger(context_name="context")
def retries(context: df.DurableOrchestrationContext) -> Any:
    options = df.RetryOptions(first_retry_interval_in_milliseconds=5000, max_number_of_attempts=3)
    return (yield context.call_activity_with_retry("flaky_activity", options, context.instance_id))
