"""HTTP side of the local durable host.

- The Durable extension's RPC endpoint (``rpcBaseUrl``, ``http://127.0.0.1:<port>/durabletask/``)
  that ``DurableOrchestrationClient`` calls: start, status (one, list, query), raise
  event, terminate, purge. No authentication, loopback only, as in the extension.
- The public server of ``serve`` (like ``func start``): the app's HTTP routes under
  ``/api``, the durable management API under ``/runtime/webhooks/durabletask``
  (the URLs ``create_check_status_response`` builds), Event Grid deliveries at
  ``/runtime/webhooks/eventgrid?functionName=NAME`` and ``/admin/functions/{name}``.
- Event Grid deliveries in the Event Grid schema (a JSON array, header ``aeg-event-type``) or in the
  CloudEvents 1.0 schema, structured mode (``application/cloudevents+json``: one object with
  ``specversion`` "1.0") or batch (``application/cloudevents-batch+json``: an array of them), which
  are mapped to Event Grid schema events (``type`` -> eventType, ``source`` -> topic, ``time`` ->
  eventTime); anything else is a 400 naming the schemas expected. The CloudEvents abuse-protection
  handshake (``OPTIONS`` with ``WebHook-Request-Origin``) is answered with ``WebHook-Allowed-Origin``.
- The access log of the public server never shows keys: ``code=`` query values and key headers
  are written ``***`` (``redact``).
- Client functions (HTTP, timer and Event Grid triggers with a ``durableClient``
  binding) run on one process-wide event loop, as the Python worker runs them on its
  loop: the SDK keeps a module-level aiohttp session bound to that loop.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import inspect
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from azure.functions import HttpResponse as FuncHttpResponse
from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.http import HttpRequest, HttpResponseConverter
from azure.functions.timer import TimerRequestConverter

from core.ncrontab import CronSchedule, IntervalSchedule, parse_schedule

from . import history as h
from .errors import DurableHostError, InstanceNotFound
from .functions import (
    EVENT_GRID_TRIGGER,
    HTTP_TRIGGER,
    TIMER_TRIGGER,
    FunctionAppError,
    FunctionInfo,
    build_kwargs,
    resolve_setting,
)

if TYPE_CHECKING:
    from .host import DurableHost

log = logging.getLogger(__name__)

DEFAULT_ORIGIN = "http://localhost:7071"  # what the extension uses when no host name is known
WEBHOOK_PATH = "/runtime/webhooks/durabletask"
RPC_PATH = "/durabletask/"
INSTANCE_PLACEHOLDER = "INSTANCEID"
CLOUDEVENTS_JSON = "application/cloudevents+json"
CLOUDEVENTS_BATCH_JSON = "application/cloudevents-batch+json"
EXPECTED_SCHEMAS = (
    "expected the Event Grid schema (a JSON array of events with id, eventType, subject, eventTime, data, "
    "dataVersion) or CloudEvents 1.0 in structured mode (application/cloudevents+json: one object with "
    'specversion "1.0", id, source, type) or batch mode (application/cloudevents-batch+json: an array of them)'
)
KEY_HEADERS = ("x-functions-key",)
_CODE_QUERY = re.compile(r"(?i)((?:^|[?&;])code=)[^&;#]*")


def redact(text: str) -> str:
    """``text`` (a URL, path or query) with every ``code=`` value written ``***``."""
    return _CODE_QUERY.sub(r"\1***", text)


class RedactingAccessLogger(AbstractAccessLogger):
    """The public server's access log: like aiohttp's, with keys (``code=``, key headers) written ``***``."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        keys = " ".join(f"{name}=***" for name in KEY_HEADERS if name in request.headers)
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %s %.3fs%s', request.remote, request.method, redact(request.path_qs),
            request.version.major, request.version.minor, response.status, response.body_length, time,
            f" {keys}" if keys else "",
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


@dataclass(frozen=True)
class HostKeys:
    """Keys as the Functions host has them: a default function key, the master key, system keys."""

    function_key: str
    master_key: str
    durabletask_key: str
    eventgrid_key: str

    @classmethod
    def generate(cls) -> HostKeys:
        return cls(*(secrets.token_urlsafe(24) for _ in range(4)))


class _LoopThread:
    """An asyncio event loop running forever in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(ready.set)
            self.loop.run_forever()

        self.thread = threading.Thread(target=main, name=name, daemon=True)
        self.thread.start()
        ready.wait()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        return self.submit(coro).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5.0)


_client_loop: _LoopThread | None = None
_client_loop_guard = threading.Lock()


def client_loop() -> _LoopThread:
    """The process-wide loop on which client functions (and the SDK's aiohttp session) run."""
    global _client_loop
    with _client_loop_guard:
        if _client_loop is None:
            _client_loop = _LoopThread("durable-client-functions")
            atexit.register(_close_client_session, _client_loop)
        return _client_loop


def _close_client_session(loop: _LoopThread) -> None:
    # The SDK never closes its shared aiohttp session; do it so interpreter exit stays quiet.
    from azure.durable_functions.models.utils import http_utils

    with contextlib.suppress(Exception):
        loop.run(http_utils._close_session(), timeout=5.0)


def _json_response(status: int, payload: Any = None, headers: dict[str, str] | None = None) -> web.Response:
    if payload is None:
        return web.Response(status=status, headers=headers)
    return web.Response(status=status, text=json.dumps(payload), content_type="application/json", headers=headers)


# The management operations the host does not implement; README "Durable Functions HTTP API" lists them.
UNSUPPORTED_OPERATIONS = ("suspend", "resume", "rewind", "restart")


def _unsupported(feature: str) -> web.Response:
    """501 with the message as a JSON string: the body the Python SDK raises as its exception where it shows one
    (rewind), and what curl shows; the SDK's other calls raise "unexpected status code 501". Logged too."""
    message = (f"The local durable host does not support {feature}; run this app under the Azure Functions host "
               "(func start) to use it")
    log.warning("unsupported: %s", message)
    return _json_response(501, message)


def _error(status: int, message: str) -> web.Response:
    # ASP.NET HttpError shape; the Python client reads ExceptionMessage on 400.
    return _json_response(status, {"Message": message, "ExceptionMessage": message})


def _parse_bool(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    return value.strip().lower() == "true"


def _parse_query_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return h.parse_time(value)


class HttpRuntime:
    """RPC endpoint, public server, client-function invocation and timer triggers for one host."""

    def __init__(self, host: DurableHost) -> None:
        self.host = host
        self.keys = HostKeys.generate()
        self.no_auth = False
        self.public_base_url: str | None = None
        self.inflight = 0  # client-function invocations running (the virtual driver waits for them)
        self._inflight_lock = threading.Lock()
        self._server = _LoopThread(f"durable-http-{host.hub_name}")
        self._runners: list[web.AppRunner] = []
        self._triggers: dict[str, tuple[CronSchedule | IntervalSchedule, datetime]] = {}
        self.trigger_errors: list[BaseException] = []
        rpc_app = web.Application()
        rpc_app.router.add_route("*", "/{tail:.*}", self._handle_rpc)
        rpc_port = self._server.run(self._start_site(rpc_app, 0))
        self.rpc_base_url = f"http://127.0.0.1:{rpc_port}{RPC_PATH}"

    # ------------------------------------------------------------------ lifecycle
    async def _start_site(self, app: web.Application, port: int, access_log: logging.Logger | None = None) -> int:
        runner = web.AppRunner(app, access_log=access_log, access_log_class=RedactingAccessLogger)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise OSError(exc.errno, f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from exc
        self._runners.append(runner)
        return int(runner.addresses[0][1])

    def start_public(self, *, port: int = 0, no_auth: bool = False, keys: HostKeys | None = None) -> str:
        """Serve the app like ``func start`` on 127.0.0.1:``port`` (0 picks a free port)."""
        if self.public_base_url is not None:
            return self.public_base_url
        if keys is not None:
            self.keys = keys
        self.no_auth = no_auth
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle_public)
        bound = self._server.run(self._start_site(app, port, logging.getLogger(f"{__name__}.access")))
        self.public_base_url = f"http://127.0.0.1:{bound}"
        return self.public_base_url

    def close(self) -> None:
        async def cleanup() -> None:
            for runner in self._runners:
                await runner.cleanup()

        try:
            self._server.run(cleanup(), timeout=10.0)
        finally:
            self._server.stop()

    # ------------------------------------------------------------------ binding JSON
    def client_binding_json(self, task_hub: str | None = None, connection_name: str | None = None) -> str:
        """The durableClient binding payload the extension passes to client functions."""
        hub = resolve_setting(task_hub) or self.host.hub_name
        connection = resolve_setting(connection_name) or "Storage"
        base = f"{self.public_base_url or DEFAULT_ORIGIN}{WEBHOOK_PATH}"
        code = quote(self.keys.durabletask_key, safe="")
        query = f"taskHub={quote(hub, safe='')}&connection={quote(connection, safe='')}&code={code}"
        instance = f"{base}/instances/{INSTANCE_PLACEHOLDER}"
        orchestrators = f"{base}/orchestrators/{{functionName}}[/{{instanceId}}]"
        return json.dumps(
            {
                "taskHubName": hub,
                "creationUrls": {
                    "createNewInstancePostUri": f"{orchestrators}?code={code}",
                    "createAndWaitOnNewInstancePostUri": (
                        f"{orchestrators}?timeout={{timeoutInSeconds}}&pollingInterval={{intervalInSeconds}}"
                        f"&code={code}"
                    ),
                },
                "managementUrls": self._management_urls(instance, query, INSTANCE_PLACEHOLDER),
                "baseUrl": base,
                "requiredQueryStringParameters": f"code={code}",
                "rpcBaseUrl": self.rpc_base_url,
                "httpBaseUrl": "",
                "maxGrpcMessageSizeInBytes": 0,
                "grpcHttpClientTimeout": "00:01:40",
            }
        )

    @staticmethod
    def _management_urls(instance_url: str, query: str, instance_id: str) -> dict[str, str]:
        return {
            "id": instance_id,
            "statusQueryGetUri": f"{instance_url}?{query}",
            "sendEventPostUri": f"{instance_url}/raiseEvent/{{eventName}}?{query}",
            "terminatePostUri": f"{instance_url}/terminate?reason={{text}}&{query}",
            "rewindPostUri": f"{instance_url}/rewind?reason={{text}}&{query}",
            "purgeHistoryDeleteUri": f"{instance_url}?{query}",
            "restartPostUri": f"{instance_url}/restart?{query}",
            "suspendPostUri": f"{instance_url}/suspend?reason={{text}}&{query}",
            "resumePostUri": f"{instance_url}/resume?reason={{text}}&{query}",
        }

    def check_status_payload(self, instance_id: str, origin: str | None = None) -> dict[str, str]:
        base = f"{origin or self.public_base_url or DEFAULT_ORIGIN}{WEBHOOK_PATH}"
        query = (
            f"taskHub={quote(self.host.hub_name, safe='')}&connection=Storage"
            f"&code={quote(self.keys.durabletask_key, safe='')}"
        )
        return self._management_urls(f"{base}/instances/{quote(instance_id, safe='')}", query, instance_id)

    # ------------------------------------------------------------------ invocation
    async def _call_user_function(self, info: FunctionInfo, kwargs: dict[str, Any]) -> Any:
        function = info.user_function
        if inspect.iscoroutinefunction(function):
            return await function(**kwargs)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(None, functools.partial(function, **kwargs))
        if inspect.isawaitable(result):
            result = await result
        return result

    def _client_bindings(self, info: FunctionInfo) -> dict[str, str]:
        return {
            client.param_name: self.client_binding_json(client.task_hub, client.connection_name)
            for client in info.durable_clients
        }

    async def invoke_async(self, info: FunctionInfo, trigger_value: Any, *, track: bool = True) -> Any:
        """Invoke a client (non-durable) function on the client loop, from any loop.

        ``track``: a virtual-clock driver waits for the invocation before moving time (host-initiated
        calls: timer triggers, admin calls). Requests from outside (HTTP, Event Grid webhook) are
        not tracked: a function polling for an orchestration's end must not stop the clock.
        """
        kwargs = build_kwargs(info, trigger_value, self._client_bindings(info))
        if track:
            self._begin_invocation()
        try:
            future = client_loop().submit(self._call_user_function(info, kwargs))
            return await asyncio.wrap_future(future)
        finally:
            if track:
                self._end_invocation()

    def invoke(self, info: FunctionInfo, trigger_value: Any, timeout: float | None = 120.0) -> Any:
        """Synchronous invocation (from a thread that is not the client loop)."""
        kwargs = build_kwargs(info, trigger_value, self._client_bindings(info))
        self._begin_invocation()
        try:
            return client_loop().run(self._call_user_function(info, kwargs), timeout)
        finally:
            self._end_invocation()

    def _begin_invocation(self) -> None:
        with self._inflight_lock:
            self.inflight += 1

    def _end_invocation(self) -> None:
        with self._inflight_lock:
            self.inflight -= 1
        self.host._signal()

    def _require_function(self, name: str, trigger_type: str) -> FunctionInfo:
        info = self.host.registry.function(name)
        if info is None:
            raise FunctionAppError(f"no function named '{name}' in the app")
        if info.trigger_type != trigger_type:
            raise FunctionAppError(f"function '{name}' has a {info.trigger_type}, not a {trigger_type}")
        return info

    def invoke_timer(self, name: str, *, past_due: bool = False) -> Any:
        info = self._require_function(name, TIMER_TRIGGER)
        return self.invoke(info, self._timer_request(info, past_due))

    def deliver_event_grid(self, name: str, events: list[dict[str, Any]]) -> list[Any]:
        info = self._require_function(name, EVENT_GRID_TRIGGER)
        return [self.invoke(info, _event_grid_event(event)) for event in events]

    def _timer_request(self, info: FunctionInfo, past_due: bool) -> Any:
        now = self.host.clock.now()
        schedule_state = self._triggers.get(info.name.lower())
        status = {"Last": h.format_time(now), "LastUpdated": h.format_time(now)}
        if schedule_state is not None:
            status["Next"] = h.format_time(schedule_state[1])
        payload = {"IsPastDue": past_due, "ScheduleStatus": status, "Schedule": {"AdjustForDST": True}}
        return TimerRequestConverter.decode(meta.Datum(json.dumps(payload), "json"), trigger_metadata=None)

    # ------------------------------------------------------------------ timer triggers
    def enable_timer_triggers(self) -> None:
        """Fire timer-trigger functions on their NCRONTAB schedule, on the host's clock."""
        now = self.host.clock.now()
        for info in self.host.registry.of_type(TIMER_TRIGGER):
            # The Functions host's switch for one function: the app setting AzureWebJobs.<name>.Disabled.
            if os.environ.get(f"AzureWebJobs.{info.name}.Disabled", "").strip().lower() in ("true", "1"):
                log.info("timer trigger %s disabled (AzureWebJobs.%s.Disabled)", info.name, info.name)
                continue
            expression = resolve_setting(str(info.trigger.get("schedule")))
            if not (expression or "").strip():  # an app setting left empty: this host leaves the timer off
                log.info("timer trigger %s off: its schedule setting is empty", info.name)
                continue
            schedule = parse_schedule(expression or "")
            self._triggers[info.name.lower()] = (schedule, schedule.next_after(now))
            if info.trigger.get("runOnStartup"):
                self._fire_trigger(info, past_due=False)

    @property
    def scheduled_timers(self) -> list[str]:
        """The timer-trigger functions on a schedule (lower-cased names): not the disabled or unscheduled ones."""
        return sorted(self._triggers)

    def next_trigger_due(self) -> datetime | None:
        return min((due for _, due in self._triggers.values()), default=None)

    def fire_due_triggers(self) -> None:
        now = self.host.clock.now()
        for key, (schedule, due) in list(self._triggers.items()):
            if due > now:
                continue
            info = self.host.registry.function(key)
            if info is None:
                continue
            following = schedule.next_after(due if isinstance(schedule, CronSchedule) else now)
            if following <= now:  # several periods missed at once: run once, as the host does
                following = schedule.next_after(now)
            self._triggers[key] = (schedule, following)
            self._fire_trigger(info, past_due=(now - due).total_seconds() > 60)

    def _fire_trigger(self, info: FunctionInfo, *, past_due: bool) -> None:
        async def run() -> None:
            try:
                await self.invoke_async(info, self._timer_request(info, past_due))
            except Exception as exc:  # a failing timer function must not stop the host
                log.exception("timer trigger %s failed", info.name)
                self.trigger_errors.append(exc)

        self._begin_invocation()
        future = self._server.submit(run())
        future.add_done_callback(lambda _f: self._end_invocation())

    # ------------------------------------------------------------------ RPC endpoint
    async def _handle_rpc(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if not path.startswith(RPC_PATH):
            return _error(404, f"unknown path {path}: the durable RPC API lives under {RPC_PATH}")
        return await self._management(request, path[len(RPC_PATH) :], public=False)

    # --------------------------------------------------- management API (shared)
    async def _management(self, request: web.Request, subpath: str, *, public: bool) -> web.StreamResponse:
        segments = subpath.split("/")
        while segments and segments[-1] == "":
            segments.pop()
        hub = request.query.get("taskHub")
        if hub and resolve_setting(hub) != self.host.hub_name:
            return _error(404, f"task hub '{hub}' is not served by this host (it serves '{self.host.hub_name}')")
        try:
            if segments and segments[0] == "orchestrators" and len(segments) in (2, 3):
                if request.method != "POST":
                    return _error(405, "use POST to start an orchestration")
                return await self._start(request, segments[1], segments[2] if len(segments) == 3 else None, public)
            if segments and segments[0] == "instances":
                if len(segments) == 1:
                    if request.method == "GET":
                        return self._list(request)
                    if request.method == "DELETE":
                        return self._purge_by_filter(request)
                    return _error(405, "use GET to list instances or DELETE to purge them")
                instance_id = segments[1]
                if len(segments) == 2:
                    if request.method == "GET":
                        return self._get_status(request, instance_id, public)
                    if request.method == "DELETE":
                        return self._purge(instance_id)
                    return _error(405, "use GET for the status or DELETE to purge the instance")
                if request.method != "POST":
                    return _error(405, f"use POST for instance operation '{segments[2]}'")
                operation = segments[2].lower()
                if operation == "raiseevent" and len(segments) == 4:
                    return await self._raise_event(request, instance_id, segments[3])
                if operation == "terminate" and len(segments) == 3:
                    return self._terminate(request, instance_id)
                if operation in UNSUPPORTED_OPERATIONS and len(segments) == 3:
                    return _unsupported(f"'{operation}' of an orchestration instance")
            if segments and segments[0] == "entities":
                return _unsupported("durable entities (signal, read state, list)")
        except DurableHostError as exc:
            return _error(exc.http_status, str(exc))
        except (ValueError, FunctionAppError) as exc:
            return _error(400, str(exc))
        return _error(404, f"unknown durable API path '{subpath}'")

    async def _start(
        self, request: web.Request, function_name: str, instance_id: str | None, public: bool
    ) -> web.StreamResponse:
        body = await request.text()
        input_text: str | None = None
        if body.strip():
            try:
                value = json.loads(body)
            except json.JSONDecodeError:
                return _error(400, "Invalid JSON content")
            if public:
                input_text = body
            elif isinstance(value, str):
                # DurableOrchestrationClient posts df_dumps(input) as a JSON string: unwrap it once.
                try:
                    json.loads(value)
                    input_text = value
                except json.JSONDecodeError:
                    input_text = json.dumps(value)
            else:
                input_text = json.dumps(value)
        new_id = self.host.start_new_raw(function_name, instance_id or None, input_text)
        origin = _origin(request) if public else None
        timeout = request.query.get("timeout")
        interval = request.query.get("pollingInterval")
        if timeout and interval:
            deadline = time.monotonic() + float(timeout)
            while time.monotonic() < deadline:
                status = self.host.find_status(new_id)
                if status and status["runtimeStatus"] == "Completed":
                    return _json_response(200, status["output"])
                if status and status["runtimeStatus"] in ("Failed", "Terminated"):
                    return _json_response(200, status)
                await asyncio.sleep(min(float(interval), max(0.0, deadline - time.monotonic())))
        payload = self.check_status_payload(new_id, origin)
        return _json_response(202, payload, headers={"Location": payload["statusQueryGetUri"], "Retry-After": "10"})

    def _get_status(self, request: web.Request, instance_id: str, public: bool) -> web.StreamResponse:
        show_history = _parse_bool(request.query.get("showHistory"), False)
        show_output = _parse_bool(request.query.get("showHistoryOutput"), False)
        show_input = _parse_bool(request.query.get("showInput"), True)
        try:
            status = self.host.get_status(instance_id, show_history=show_history, show_input=show_input,
                                          show_history_output=show_output)
        except InstanceNotFound as exc:
            return _json_response(404) if not public else _error(404, str(exc))
        runtime_status = status["runtimeStatus"]
        if runtime_status in ("Pending", "Running", "ContinuedAsNew"):
            return _json_response(202, status, headers={"Location": str(request.url), "Retry-After": "5"})
        if runtime_status == "Failed" and _parse_bool(request.query.get("returnInternalServerErrorOnFailure"), False):
            return _json_response(500, status)
        return _json_response(200, status)

    def _list(self, request: web.Request) -> web.StreamResponse:
        statuses = request.query.get("runtimeStatus")
        instances = self.host.list_instances(
            runtime_status=[s for s in statuses.split(",") if s] if statuses else None,
            created_from=_parse_query_time(request.query.get("createdTimeFrom")),
            created_to=_parse_query_time(request.query.get("createdTimeTo")),
            instance_id_prefix=request.query.get("instanceIdPrefix"),
            show_input=_parse_bool(request.query.get("showInput"), True),
        )
        headers: dict[str, str] = {}
        top = request.query.get("top")
        if top:
            start = int(request.headers.get("x-ms-continuation-token") or 0)
            page = instances[start : start + int(top)]
            if start + int(top) < len(instances):
                headers["x-ms-continuation-token"] = str(start + int(top))
            instances = page
        return _json_response(200, instances, headers=headers)

    def _purge(self, instance_id: str) -> web.StreamResponse:
        deleted = self.host.purge(instance_id)
        if not deleted:
            return _json_response(404)
        return _json_response(200, {"instancesDeleted": deleted})

    def _purge_by_filter(self, request: web.Request) -> web.StreamResponse:
        created_from = _parse_query_time(request.query.get("createdTimeFrom"))
        if created_from is None:
            return _error(400, "Please provide value for 'createdTimeFrom' parameter.")
        statuses = request.query.get("runtimeStatus")
        deleted = self.host.purge_instances(
            created_from=created_from,
            created_to=_parse_query_time(request.query.get("createdTimeTo")),
            runtime_status=[s for s in statuses.split(",") if s] if statuses else None,
        )
        if not deleted:
            return _json_response(404)
        return _json_response(200, {"instancesDeleted": deleted})

    async def _raise_event(self, request: web.Request, instance_id: str, event_name: str) -> web.StreamResponse:
        status = self.host.find_status(instance_id)
        if status is None:
            return _error(404, f"No instance with ID {instance_id} found.")
        if status["runtimeStatus"] in ("Completed", "Failed", "Terminated"):
            return _error(410, f"Instance with ID {instance_id} is gone: it is {status['runtimeStatus']}")
        if request.content_type.lower() != "application/json":
            return _error(400, "Only application/json request content is supported")
        body = await request.text()
        if body.strip():
            try:
                json.loads(body)
            except json.JSONDecodeError:
                return _error(400, "Invalid JSON content")
        # The body is stored as the event input verbatim: a payload the Python client
        # double-encoded reaches the orchestrator as a JSON string (SDK issue #295).
        self.host.raise_event_raw(instance_id, event_name, body if body.strip() else None)
        return _json_response(202)

    def _terminate(self, request: web.Request, instance_id: str) -> web.StreamResponse:
        self.host.terminate(instance_id, request.query.get("reason"))
        return _json_response(202)

    # ------------------------------------------------------------------ public server
    def _authorized(self, request: web.Request, accepted: tuple[str, ...]) -> web.Response | None:
        if self.no_auth or not accepted:
            return None
        key = request.query.get("code") or request.headers.get("x-functions-key")
        if not key:
            return _json_response(401, {"error": "missing key: pass ?code=<key> or the x-functions-key header"})
        if not any(secrets.compare_digest(key, allowed) for allowed in accepted):
            return _json_response(401, {"error": "invalid key for this endpoint"})
        return None

    async def _handle_public(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        prefix = f"/{self.host.registry.route_prefix}" if self.host.registry.route_prefix else ""
        try:
            if path.startswith(WEBHOOK_PATH + "/") or path == WEBHOOK_PATH:
                denied = self._authorized(request, (self.keys.durabletask_key, self.keys.master_key))
                return denied or await self._management(request, path[len(WEBHOOK_PATH) + 1 :], public=True)
            if path.rstrip("/") == "/runtime/webhooks/eventgrid":
                # As `func start` serves it locally, the webhook takes deliveries without a key (Azure
                # requires the eventgrid_extension system key); a key that is given must be a host key.
                given = request.query.get("code") or request.headers.get("x-functions-key")
                host_keys = (self.keys.eventgrid_key, self.keys.master_key, self.keys.function_key)
                denied = self._authorized(request, host_keys) if given else None
                return denied or await self._event_grid(request)
            if path.startswith("/admin/functions/"):
                denied = self._authorized(request, (self.keys.master_key,))
                return denied or await self._admin_invoke(request, path[len("/admin/functions/") :])
            if prefix and (path == prefix or path.startswith(prefix + "/")):
                return await self._http_function(request, path[len(prefix) :] or "/")
            if not prefix:
                return await self._http_function(request, path)
            if path == "/":
                return _json_response(200, self._describe())
        except FunctionAppError as exc:
            return _error(500, str(exc))
        return _error(404, f"no route for {request.method} {path}")

    def _describe(self) -> dict[str, Any]:
        return {
            "host": "arc_hotpatch local durable host",
            "taskHub": self.host.hub_name,
            "functions": sorted(f"{info.name} ({info.trigger_type})" for info in self.host.registry.functions.values()),
        }

    async def _http_function(self, request: web.Request, route_path: str) -> web.StreamResponse:
        matches = self.host.registry.match_route(route_path)
        if not matches:
            return _error(404, f"no HTTP function route matches {request.method} {request.path}")
        allowed = [
            (route, params) for route, params in matches if route.methods is None or request.method in route.methods
        ]
        if not allowed:
            methods = sorted({m for route, _ in matches for m in (route.methods or ())})
            return web.Response(
                status=405,
                text=json.dumps({"error": f"{request.method} is not allowed here; allowed: {', '.join(methods)}"}),
                content_type="application/json",
                headers={"Allow": ", ".join(methods)},
            )
        route, params = allowed[0]
        accepted: tuple[str, ...]
        if route.auth_level == "anonymous":
            accepted = ()
        elif route.auth_level == "admin":
            accepted = (self.keys.master_key,)
        else:
            accepted = (self.keys.function_key, self.keys.master_key)
        denied = self._authorized(request, accepted)
        if denied is not None:
            return denied
        body = await request.read()
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        func_request = HttpRequest(
            method=request.method,
            url=str(request.url),
            headers=headers,
            params={key: request.query[key] for key in request.query},
            route_params=params,
            body_type="bytes",
            body=body,
        )
        try:
            result = await self.invoke_async(route.function, func_request, track=False)
        except FunctionAppError:
            raise
        except Exception as exc:
            log.exception("HTTP function %s failed", route.function.name)
            error = f"Exception while executing function: Functions.{route.function.name}"
            return _json_response(500, {"error": error, "detail": repr(exc)})
        return _to_web_response(route.function, result)

    async def _event_grid(self, request: web.Request) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return _cloudevents_handshake(request)
        if request.method != "POST":
            return _error(405, "Event Grid deliveries must use POST (or OPTIONS for the CloudEvents handshake)")
        name = request.query.get("functionName")
        if not name:
            return _error(400, "missing query parameter functionName")
        info = self.host.registry.function(name)
        if info is None or info.trigger_type != EVENT_GRID_TRIGGER:
            return _error(404, f"no Event Grid trigger function named '{name}'")
        event_type = request.headers.get("aeg-event-type", "")
        content_type = request.content_type.lower()
        if "ce-specversion" in request.headers and content_type not in (CLOUDEVENTS_JSON, CLOUDEVENTS_BATCH_JSON):
            return _error(400, f"CloudEvents binary mode is not supported: {EXPECTED_SCHEMAS}")
        try:
            body = json.loads((await request.read()).decode("utf-8-sig"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            return _error(400, f"malformed Event Grid body: not JSON ({type(exc).__name__}); {EXPECTED_SCHEMAS}")
        if _is_cloudevents(body, content_type):
            if event_type not in ("", "Notification"):
                return _error(400, f"a CloudEvents delivery cannot be aeg-event-type {event_type[:60]!r}")
            try:
                now = self.host.clock.now()
                events = [_from_cloudevent(e, now) for e in (body if isinstance(body, list) else [body])]
            except ValueError as exc:
                return _error(400, f"malformed CloudEvents body: {exc}; {EXPECTED_SCHEMAS}")
            event_type = "Notification"
        else:
            events = body
        if not isinstance(events, list) or not all(isinstance(event, dict) for event in events):
            return _error(400, f"malformed Event Grid body: {EXPECTED_SCHEMAS}")
        if event_type == "SubscriptionValidation":
            code = next(
                (e.get("data", {}).get("validationCode") for e in events if isinstance(e.get("data"), dict)), None
            )
            if not code or not isinstance(code, str):  # Event Grid sends a GUID string
                return _error(400, "SubscriptionValidation event without a string data.validationCode")
            return _json_response(200, {"validationResponse": code})
        if event_type == "Unsubscribe":
            return _json_response(202)
        if event_type != "Notification":
            return _error(400, "header aeg-event-type must be Notification, SubscriptionValidation or Unsubscribe")
        try:
            decoded = [_event_grid_event(event) for event in events]
        except ValueError as exc:
            return _error(400, f"malformed Event Grid body: {exc}; {EXPECTED_SCHEMAS}")
        failures = []
        for event, value in zip(events, decoded, strict=True):
            try:
                await self.invoke_async(info, value, track=False)
            except Exception as exc:
                log.exception("Event Grid function %s failed for event %s", name, str(event.get("id"))[:100])
                failures.append(f"event {event.get('id')!r}: {type(exc).__name__}: {exc}")
        if failures:
            return _json_response(500, {"error": f"function '{name}' failed", "failures": failures})
        return _json_response(202)

    async def _admin_invoke(self, request: web.Request, name: str) -> web.StreamResponse:
        if request.method != "POST":
            return _error(405, "use POST to invoke a function")
        info = self.host.registry.function(name.strip("/"))
        if info is None:
            return _error(404, f"no function named '{name}'")
        text = await request.text()
        try:
            payload = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError:
            return _error(400, 'body must be JSON like {"input": "..."}')
        raw_input = payload.get("input") if isinstance(payload, dict) else None
        if info.trigger_type == TIMER_TRIGGER:
            value: Any = self._timer_request(info, past_due=False)
        elif info.trigger_type == EVENT_GRID_TRIGGER:
            try:
                value = _event_grid_event(json.loads(raw_input) if isinstance(raw_input, str) else raw_input)
            except (ValueError, TypeError) as exc:
                return _error(400, f"input must be one Event Grid event as JSON: {exc}")
        elif info.trigger_type == HTTP_TRIGGER:
            return _error(404, f"'{name}' is an HTTP function: call its route instead")
        else:
            return _error(400, f"'{name}' ({info.trigger_type}) cannot be invoked through the admin API")

        async def run() -> None:
            try:
                await self.invoke_async(info, value)
            except Exception:
                log.exception("admin invocation of %s failed", name)

        self._begin_invocation()
        task = asyncio.get_running_loop().create_task(run())
        task.add_done_callback(lambda _t: self._end_invocation())
        return _json_response(202)


def _origin(request: web.Request) -> str:
    parts = urlsplit(str(request.url))
    return f"{parts.scheme}://{parts.netloc}"


def _cloudevents_handshake(request: web.Request) -> web.Response:
    """The CloudEvents webhook abuse-protection handshake: allow the origin that asks."""
    origin = request.headers.get("WebHook-Request-Origin")
    if not origin:
        return _error(400, "an OPTIONS request here is the CloudEvents handshake: it needs WebHook-Request-Origin")
    return web.Response(status=200, headers={"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*",
                                             "Allow": "POST, OPTIONS"})


def _is_cloudevents(body: Any, content_type: str) -> bool:
    """Whether a delivery is in the CloudEvents schema (its content type, or events with ``specversion``)."""
    if content_type in (CLOUDEVENTS_JSON, CLOUDEVENTS_BATCH_JSON):
        return True
    if isinstance(body, dict):
        return "specversion" in body
    return isinstance(body, list) and bool(body) and all(isinstance(e, dict) and "specversion" in e for e in body)


def _from_cloudevent(event: Any, now: datetime) -> dict[str, Any]:
    """A CloudEvents 1.0 event (structured mode) as the Event Grid schema event it stands for (``time``: ``now``
    when it has none)."""
    if not isinstance(event, dict):
        raise ValueError("a CloudEvent must be a JSON object")
    where = f"event {str(event.get('id'))[:60]!r}"
    if event.get("specversion") != "1.0":
        raise ValueError(f"{where}: specversion must be \"1.0\", not {str(event.get('specversion'))[:20]!r}")
    missing = [key for key in ("id", "source", "type") if not isinstance(event.get(key), str) or not event[key]]
    if missing:
        raise ValueError(f"{where} lacks required attribute(s) (non-empty strings): {', '.join(missing)}")
    for key in ("subject", "time", "dataschema"):
        if key in event and event[key] is not None and not isinstance(event[key], str):
            raise ValueError(f"{where}: {key} must be a string")
    if "data_base64" in event:
        raise ValueError(f"{where}: binary data (data_base64) is not supported; send JSON data")
    return {
        "id": event["id"], "eventType": event["type"], "subject": event.get("subject") or "",
        "eventTime": event.get("time") or h.format_time(now),
        "data": event.get("data"), "dataVersion": event.get("dataschema") or "", "topic": event["source"],
        "metadataVersion": "1",
    }


def _event_grid_event(event: Any) -> Any:
    """A func.EventGridEvent (or CloudEvent) built by the SDK's own converter."""
    if not isinstance(event, dict):
        raise ValueError("an Event Grid event must be a JSON object")
    if "specversion" not in event:
        required = ("id", "eventType", "subject", "eventTime", "data", "dataVersion")
        missing = [key for key in required if key not in event]
        if missing:
            raise ValueError(f"event {event.get('id')!r} lacks required field(s): {', '.join(missing)}")
    try:
        return EventGridEventInConverter.decode(meta.Datum(json.dumps(event), "json"), trigger_metadata=None)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"event {event.get('id')!r}: {exc}") from exc


def _to_web_response(info: FunctionInfo, result: Any) -> web.StreamResponse:
    if result is None:
        return web.Response(status=204)
    if not isinstance(result, FuncHttpResponse | str):
        return _json_response(
            500,
            {"error": f"function '{info.name}' returned {type(result).__name__}; expected func.HttpResponse or str"},
        )
    datum = HttpResponseConverter.encode(result, expected_type=None)
    if datum.type == "string":
        return web.Response(status=200, text=datum.value, content_type="text/plain")
    value = datum.value
    headers = {name: item.value for name, item in value["headers"].items()}
    body = value["body"].value or b""
    return web.Response(status=int(value["status_code"].value), headers=headers, body=body)
