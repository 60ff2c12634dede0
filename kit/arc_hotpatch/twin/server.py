"""The fleet twin's HTTP server: the ARM subset the app uses, on loopback.

``FleetTwin(fleet, clock, faults)`` serves, for api-version 2025-01-13 of
Microsoft.HybridCompute (and 2022-12-01 of the subscriptions API):

- ``GET /subscriptions`` and ``/subscriptions/{id}``
- machines list by subscription and by resource group (paged with ``nextLink``),
  machine GET (``$expand=instanceView`` adds the license profile instance view and
  ``hotpatchEnablementStatus``)
- ``licenseProfiles/default`` GET / PUT / PATCH / DELETE (long-running) and list
- ``runCommands/{name}`` PUT (long-running) / GET / PATCH (tags) / DELETE
  (long-running) and list (``$expand=instanceView``)
- the operation status (``Azure-AsyncOperation``) and operation result
  (``Location``) endpoints the SDK polls

with ARM's error shape, 401 without a bearer token (any bearer token is accepted),
per-subscription token-bucket throttling on the twin's clock, and optional injected
faults. The aiohttp server runs on its own event loop in a background thread; every
state change happens on that loop, and the Python inspection API hops onto it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from aiohttp import web

from core.azure_clients import HYBRID_COMPUTE_API_VERSION  # the spec version the app's clients ask for

from ..clocks import Clock
from .arm import (
    ArmError,
    invalid_content,
    iso,
    license_profile_resource,
    machine_resource,
    parse_license_profile,
    parse_run_command,
    parse_tags,
    run_command_resource,
    subscription_resource,
)
from .faults import Faults, load_faults
from .fleet import Fleet, MachineSpec
from .inspection import MachineSnapshot, snapshot
from .machine import ABSENT, RunCommand, SimulatedMachine
from .seeding import stable_choice, stable_uniform, stable_unit, stable_uuid
from .throttle import ArmThrottle

SUBSCRIPTIONS_API_VERSIONS = frozenset(
    {
        "2014-04-01",
        "2015-11-01",
        "2016-06-01",
        "2018-06-01",
        "2019-06-01",
        "2019-11-01",
        "2020-01-01",
        "2021-01-01",
        "2022-01-01",
        "2022-09-01",
        "2022-12-01",
    }
)
API_VERSION_FORMAT = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview|-beta|-alpha|-privatepreview)?$", re.IGNORECASE)
RUN_COMMAND_NAME = re.compile(r"^[a-zA-Z0-9\-_.]{1,80}$")
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

LICENSE_OPERATION_SECONDS = 15
DELETE_OPERATION_SECONDS = 5
LICENSE_RETRY_AFTER = 5
RUN_COMMAND_RETRY_AFTER = 10

T = TypeVar("T")


@dataclass(frozen=True)
class ExchangeRecord:
    """One request and the twin's answer, for a test's response observer."""

    operation: str
    method: str
    path: str
    query: dict[str, str]
    status: int
    headers: dict[str, str]
    body: Any  # parsed JSON, or None when the response has no body
    request_body: Any


@dataclass
class _Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Call:
    now: datetime
    method: str
    origin: str
    path: str
    query: dict[str, str]
    params: dict[str, str]
    body: Any


_Handler = Callable[[_Call], _Reply]


@dataclass(frozen=True)
class _Route:
    operation: str  # request counting name, e.g. "machines.get"
    handler: _Handler | None
    api: str  # "subscriptions" | "hybridcompute" | "none"
    category: str  # throttling bucket: reads | writes | deletes
    params: dict[str, str]
    error: ArmError | None = None


@dataclass
class _AsyncOperation:
    """An ARM async operation: its status is computed from the clock and the resource."""

    op_id: str
    operation: str
    machine: SimulatedMachine
    started_at: datetime
    completes_at: datetime | None = None  # fixed-length operations
    run: RunCommand | None = None  # a run command PUT completes with the run's provisioning

    def status(self, now: datetime) -> tuple[str, dict[str, str] | None, datetime | None]:
        """(status, error, end time) as of ``now``."""
        run = self.run
        if run is not None:
            if not self.machine.is_current_run(run):
                return (
                    "Canceled",
                    {"code": "OperationCanceled", "message": "The run command was deleted or replaced."},
                    None,
                )
            state = run.provisioning_state_at(now)
            if state == "Succeeded":
                return "Succeeded", None, run.end_time or run.start_time
            if state == "Failed":
                return "Failed", run.provisioning_error_at(now), run.end_time or now
            return "InProgress", None, None
        assert self.completes_at is not None
        if now >= self.completes_at:
            return "Succeeded", None, self.completes_at
        return "InProgress", None, None


_CATEGORY_BY_METHOD = {"GET": "reads", "HEAD": "reads", "DELETE": "deletes"}


def _request_category(method: str) -> str:
    return _CATEGORY_BY_METHOD.get(method, "writes")


class FleetTwin:
    """An offline ARM + simulated Arc fleet. ``start()`` it, point an SDK client at ``base_url``.

    ``throttling=False`` disables 429s from the token buckets (benchmarks); the
    ``x-ms-ratelimit-remaining-*`` headers are still sent. ``response_observer`` is
    called on the server thread with an ``ExchangeRecord`` for every response (tests
    validate bodies against the REST spec with it).
    """

    def __init__(
        self,
        fleet: Fleet,
        clock: Clock,
        faults: Faults | str | None = None,
        *,
        throttling: bool = True,
        page_size: int = 100,
        response_observer: Callable[[ExchangeRecord], None] | None = None,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        self.fleet = fleet
        self.clock = clock
        self.faults = load_faults(faults)
        self.throttling = throttling
        self.page_size = page_size
        self.response_observer = response_observer
        self.started_at = clock.now()
        self._fault_seed = self.faults.seed if self.faults.seed is not None else fleet.seed
        self._subscriptions = {s.lower(): s for s in fleet.subscription_ids}
        self._machines: dict[str, SimulatedMachine] = {}
        self._by_subscription: dict[str, list[SimulatedMachine]] = {s: [] for s in self._subscriptions}
        self._by_resource_group: dict[tuple[str, str], list[SimulatedMachine]] = {}
        for spec in fleet.machines:
            self._add(spec, fleet.subscription_of(spec))
        self._sort_indexes()
        self._throttle = ArmThrottle()
        self._operations: dict[str, _AsyncOperation] = {}
        self._operation_counter = 0
        self._request_counter = 0
        self._fault_counters: Counter[str] = Counter()
        self._requests_by_operation: Counter[str] = Counter()
        self._throttled = 0
        self._injected: Counter[str] = Counter()
        # A machine's child resource types (path segment, lower-cased): (type name, list handler, handlers by method).
        self._child_routes: dict[str, tuple[str, _Handler, dict[str, _Handler]]] = {
            "licenseprofiles": (
                "licenseProfiles",
                self._list_license_profiles,
                {
                    "GET": self._get_license_profile,
                    "PUT": self._put_license_profile,
                    "PATCH": self._patch_license_profile,
                    "DELETE": self._delete_license_profile,
                },
            ),
            "runcommands": (
                "runCommands",
                self._list_run_commands,
                {
                    "GET": self._get_run_command,
                    "PUT": self._put_run_command,
                    "PATCH": self._patch_run_command,
                    "DELETE": self._delete_run_command,
                },
            ),
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.base_url: str | None = None

    # --- fleet bookkeeping -----------------------------------------------------------------

    def _add(self, spec: MachineSpec, subscription_id: str) -> SimulatedMachine:
        machine = SimulatedMachine(
            spec,
            subscription_id=subscription_id,
            tenant_id=self.fleet.tenant_id,
            seed=self.fleet.seed,
            started_at=self.started_at,
            faults=self.faults,
            fault_seed=self._fault_seed,
        )
        if machine.key in self._machines:
            raise ValueError(f"machine {machine.resource_id} already exists")
        self._machines[machine.key] = machine
        self._by_subscription[subscription_id.lower()].append(machine)
        group = (subscription_id.lower(), spec.resource_group.lower())
        self._by_resource_group.setdefault(group, []).append(machine)
        return machine

    def _sort_indexes(self) -> None:
        for machines in (*self._by_subscription.values(), *self._by_resource_group.values()):
            machines.sort(key=lambda m: m.key)

    @property
    def subscription_ids(self) -> tuple[str, ...]:
        return self.fleet.subscription_ids

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, port: int = 0, host: str = "127.0.0.1") -> str:
        """Serve on ``host:port`` (0: any free port) from a background thread; returns the base URL."""
        if self._thread is not None:
            raise RuntimeError("the twin is already running")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="fleet-twin", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            bound_port = asyncio.run_coroutine_threadsafe(self._serve(host, port), loop).result(timeout=30)
        except BaseException:
            self._shutdown_loop()
            raise
        self.base_url = f"http://{host}:{bound_port}"
        return self.base_url

    async def _serve(self, host: str, port: int) -> int:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        server = site._server
        assert server is not None and server.sockets
        return int(server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        """Stop serving and join the server thread (idempotent)."""
        if self._loop is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
            self._runner = None
        self._shutdown_loop()
        self.base_url = None

    def _shutdown_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=30)
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> FleetTwin:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _on_loop(self, function: Callable[[], T]) -> T:
        """Run ``function`` where the state lives: on the server loop when it is serving."""
        loop = self._loop
        if loop is None or threading.current_thread() is self._thread:
            return function()

        async def call() -> T:
            return function()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=60)

    # --- inspection API (Python, for tests and reports) ------------------------------------

    def _lookup(self, name_or_id: str) -> SimulatedMachine:
        key = name_or_id.lower()
        machine = self._machines.get(key)
        if machine is not None:
            return machine
        matches = [m for m in self._machines.values() if m.name.lower() == key]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise KeyError(f"no simulated machine named {name_or_id!r}")
        raise KeyError(f"machine name {name_or_id!r} is ambiguous; use its resource id")

    def resource_id(self, name: str) -> str:
        return self._lookup(name).resource_id

    def machine(self, name_or_id: str) -> MachineSnapshot:
        """A machine's simulated state now (name if unique in the fleet, else resource id)."""

        def read() -> MachineSnapshot:
            now = self.clock.now()
            machine = self._lookup(name_or_id)
            machine.advance(now)
            return snapshot(machine, now)

        return self._on_loop(read)

    def machines(self) -> list[MachineSnapshot]:
        def read() -> list[MachineSnapshot]:
            now = self.clock.now()
            result = []
            for machine in sorted(self._machines.values(), key=lambda m: m.key):
                machine.advance(now)
                result.append(snapshot(machine, now))
            return result

        return self._on_loop(read)

    def add_machine(self, spec: MachineSpec, subscription_id: str | None = None) -> str:
        """Onboard a new machine at runtime (for Event Grid scenarios); returns its resource id."""

        def add() -> str:
            target = subscription_id or self.fleet.subscription_ids[spec.subscription]
            if target.lower() not in self._subscriptions:
                raise KeyError(f"subscription {target} is not part of the fleet")
            machine = self._add(spec, self._subscriptions[target.lower()])
            self._sort_indexes()
            return machine.resource_id

        return self._on_loop(add)

    def metrics(self) -> dict[str, Any]:
        """Request counts for the simulation report (SPEC §5 metrics)."""

        def read() -> dict[str, Any]:
            return {
                "arm_requests": sum(self._requests_by_operation.values()),
                "arm_requests_by_operation": dict(sorted(self._requests_by_operation.items())),
                "throttled_responses": self._throttled + self._injected["429"],
                "injected_faults": dict(sorted(self._injected.items())),
            }

        return self._on_loop(read)

    # --- HTTP ------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        now = self.clock.now()
        self._request_counter += 1
        method = request.method.upper()
        segments = [s for s in request.path.split("/") if s]
        route = self._route(method, segments)
        self._requests_by_operation[route.operation] += 1
        query = {key.lower(): value for key, value in request.query.items()}
        headers = {
            "x-ms-request-id": stable_uuid(self.fleet.seed, "request", self._request_counter),
            "x-ms-correlation-request-id": request.headers.get("x-ms-client-request-id")
            or stable_uuid(self.fleet.seed, "correlation", self._request_counter),
        }
        request_body: Any = None
        try:
            self._authenticate(request)
            self._take_token(route, now, headers)  # every authenticated request costs a token
            if route.error is not None:
                raise route.error
            self._check_api_version(route, query)
            self._maybe_inject_fault(route, now)
            if method in ("PUT", "PATCH"):
                raw = await request.read()
                try:
                    request_body = json.loads(raw) if raw else None
                except (ValueError, UnicodeDecodeError) as exc:
                    raise invalid_content(str(exc)) from None
            assert route.handler is not None
            call = _Call(
                now,
                method,
                request.url.origin().human_repr().rstrip("/"),
                request.path,
                query,
                route.params,
                request_body,
            )
            reply = route.handler(call)
        except ArmError as error:
            reply = _Reply(error.status, error.body(), error.headers)
        except Exception as exc:  # a twin bug must look like ARM's 500, not hang the client
            reply = _Reply(500, {"error": {"code": "InternalServerError", "message": f"fleet twin: {exc!r}"}})
        headers.update(reply.headers)
        if self.response_observer is not None:
            self.response_observer(
                ExchangeRecord(
                    operation=route.operation,
                    method=method,
                    path=request.path,
                    query=query,
                    status=reply.status,
                    headers=dict(headers),
                    body=reply.body,
                    request_body=request_body,
                )
            )
        if reply.body is None:
            return web.Response(status=reply.status, headers=headers)
        payload = json.dumps(reply.body, separators=(",", ":")).encode()
        return web.Response(status=reply.status, body=payload, headers=headers, content_type="application/json")

    def _authenticate(self, request: web.Request) -> None:
        authorization = request.headers.get("Authorization")
        challenge = {
            "WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/common", '
            'error="invalid_token", error_description="The authentication failed because of missing '
            "'Authorization' header.\""
        }
        if authorization is None:
            raise ArmError(
                401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.", challenge
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ArmError(
                401,
                "InvalidAuthenticationToken",
                "The access token is invalid: expected 'Authorization: Bearer <token>'.",
                challenge,
            )

    def _check_api_version(self, route: _Route, query: dict[str, str]) -> None:
        version = query.get("api-version")
        if not version:
            raise ArmError(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        if route.api == "subscriptions":
            if version not in SUBSCRIPTIONS_API_VERSIONS:
                supported = ",".join(sorted(SUBSCRIPTIONS_API_VERSIONS))
                raise ArmError(
                    400,
                    "InvalidApiVersionParameter",
                    f"The api-version '{version}' is invalid. The supported versions are '{supported}'.",
                )
            return
        if version == HYBRID_COMPUTE_API_VERSION:
            return
        if API_VERSION_FORMAT.match(version) and "-" not in version[10:] and version > HYBRID_COMPUTE_API_VERSION:
            # A later stable version (e.g. an SDK's newer default): served with the 2025-01-13 shapes,
            # which later versions extend, so "any Azure SDK client" can talk to the twin.
            return
        if not API_VERSION_FORMAT.match(version):
            raise ArmError(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{version}' is invalid. The supported versions are '{HYBRID_COMPUTE_API_VERSION}'.",
            )
        # A well-formed version the resource provider does not serve: ARM's provider lookup fails.
        raise ArmError(
            400,
            "NoRegisteredProviderFound",
            f"No registered resource provider found for API version '{version}' and namespace "
            f"'Microsoft.HybridCompute'. The supported api-versions are '{HYBRID_COMPUTE_API_VERSION}'.",
        )

    def _throttle_scope(self, route: _Route) -> tuple[str, str]:
        subscription = route.params.get("subscription")
        if subscription is None:
            return "tenant", "tenant"
        return subscription.lower(), "subscription"

    def _take_token(self, route: _Route, now: datetime, headers: dict[str, str]) -> None:
        scope, level = self._throttle_scope(route)
        bucket = self._throttle.bucket(scope, route.category, now)
        allowed = bucket.try_take(now)
        headers[f"x-ms-ratelimit-remaining-{level}-{route.category}"] = str(bucket.remaining)
        if allowed or not self.throttling:
            return
        self._throttled += 1
        retry_after = bucket.seconds_until_token()
        operation_type = route.category.rstrip("s")
        raise ArmError(
            429,
            "SubscriptionRequestsThrottled" if level == "subscription" else "TenantRequestsThrottled",
            f"Number of '{operation_type}' requests for {level} '{scope}' exceeded. Please try again after "
            f"'{retry_after}' seconds after additional tokens are available. Refer to https://aka.ms/arm-throttling",
            {"Retry-After": str(retry_after)},
        )

    def _maybe_inject_fault(self, route: _Route, now: datetime) -> None:
        faults = self.faults
        if not faults.injects_http_faults:
            return
        # Keyed by the machine (or scope) and its own request count: reproducible per machine.
        scope = route.params.get("machine_key") or route.params.get("subscription", "tenant").lower()
        self._fault_counters[scope] += 1
        sequence = self._fault_counters[scope]
        draw = stable_unit(self._fault_seed, "http", scope, sequence)
        low, high = faults.retry_after_seconds
        retry_after = str(round(stable_uniform(low, high, self._fault_seed, "retry-after", scope, sequence)))
        if draw < faults.arm_throttle_rate:
            self._injected["429"] += 1
            raise ArmError(
                429,
                "TooManyRequests",
                "The request is being throttled as the limit has been reached for operation type - "
                f"{route.operation}. For more information, see - https://aka.ms/armthrottling",
                {"Retry-After": retry_after},
            )
        if draw < faults.arm_throttle_rate + faults.arm_server_error_rate:
            status = stable_choice((500, 503), self._fault_seed, "5xx", scope, sequence)
            self._injected[str(status)] += 1
            if status == 503:
                raise ArmError(
                    503,
                    "ServiceUnavailable",
                    "The service is temporarily unavailable. Please retry later.",
                    {"Retry-After": retry_after},
                )
            raise ArmError(
                500,
                "InternalServerError",
                f"Encountered internal server error. Diagnostic information: timestamp '{iso(now)}', "
                f"tracking id '{stable_uuid(self._fault_seed, 'tracking', scope, sequence)}'.",
                {"Retry-After": retry_after},
            )

    # --- routing -----------------------------------------------------------------------------

    def _route(self, method: str, segments: list[str]) -> _Route:
        lower = [s.lower() for s in segments]
        category = _request_category(method)

        def route(
            operation: str,
            handler: _Handler | None,
            api: str = "hybridcompute",
            allowed: Iterable[str] = ("GET",),
            **params: str,
        ) -> _Route:
            if method not in allowed:
                error = ArmError(
                    405, "MethodNotAllowed", f"The requested resource does not support http method '{method}'."
                )
                return _Route(f"{operation.rsplit('.', 1)[0]}.{method.lower()}", None, api, category, params, error)
            return _Route(operation, handler, api, category, params)

        def not_found(code: str, message: str, **params: str) -> _Route:
            return _Route("unknown", None, "none", category, params, ArmError(404, code, message))

        if not lower or lower[0] != "subscriptions":
            return not_found("NotFound", f"The fleet twin serves no resource at '/{'/'.join(segments)}'.")
        if len(lower) == 1:
            return route("subscriptions.list", self._list_subscriptions, api="subscriptions")
        subscription = segments[1]
        if len(lower) == 2:
            return route("subscriptions.get", self._get_subscription, api="subscriptions", subscription=subscription)
        if len(lower) >= 4 and lower[2] == "providers":
            if lower[3] != "microsoft.hybridcompute":
                return not_found(
                    "InvalidResourceNamespace",
                    f"The resource namespace '{segments[3]}' is invalid "
                    "(the fleet twin serves Microsoft.HybridCompute only).",
                    subscription=subscription,
                )
            rest = lower[4:]
            if rest == ["machines"]:
                return route("machines.list_by_subscription", self._list_machines, subscription=subscription)
            if len(rest) == 4 and rest[0] == "locations" and rest[2] in ("operationstatus", "operationresults"):
                kind = "operationStatus.get" if rest[2] == "operationstatus" else "operationResults.get"
                handler = self._operation_status if rest[2] == "operationstatus" else self._operation_result
                return route(kind, handler, subscription=subscription, operation_id=segments[7])
            return self._unknown_type(category, segments[4:], subscription)
        if len(lower) >= 6 and lower[2] == "resourcegroups" and lower[4] == "providers":
            if lower[5] != "microsoft.hybridcompute":
                return not_found(
                    "InvalidResourceNamespace",
                    f"The resource namespace '{segments[5]}' is invalid "
                    "(the fleet twin serves Microsoft.HybridCompute only).",
                    subscription=subscription,
                )
            group = segments[3]
            rest, lrest = segments[6:], lower[6:]
            if lrest == ["machines"]:
                return route(
                    "machines.list_by_resource_group",
                    self._list_machines,
                    subscription=subscription,
                    resource_group=group,
                )
            if len(lrest) >= 2 and lrest[0] == "machines":
                machine = rest[1]
                key = (
                    f"/subscriptions/{subscription}/resourcegroups/{group}"
                    f"/providers/microsoft.hybridcompute/machines/{machine}"
                ).lower()
                common = {"subscription": subscription, "resource_group": group, "machine": machine, "machine_key": key}
                if len(lrest) == 2:
                    return route("machines.get", self._get_machine, **common)
                child = self._child_routes.get(lrest[2]) if len(lrest) in (3, 4) else None
                if child is not None:
                    child_type, list_handler, handlers = child
                    if len(lrest) == 3:
                        return route(f"{child_type}.list", list_handler, **common)
                    return route(
                        f"{child_type}.{method.lower()}", handlers.get(method), allowed=handlers, name=rest[3], **common
                    )
            return self._unknown_type(category, segments[6:], subscription)
        return not_found(
            "NotFound", f"The fleet twin serves no resource at '/{'/'.join(segments)}'.", subscription=subscription
        )

    @staticmethod
    def _unknown_type(category: str, rest: list[str], subscription: str) -> _Route:
        type_name = "/".join(rest[0::2]) or "(none)"
        error = ArmError(
            404,
            "InvalidResourceType",
            f"The resource type '{type_name}' could not be found in the namespace 'Microsoft.HybridCompute' "
            f"for api version '{HYBRID_COMPUTE_API_VERSION}'.",
        )
        return _Route("unknown", None, "hybridcompute", category, {"subscription": subscription}, error)

    # --- lookups -------------------------------------------------------------------------------

    def _subscription(self, call: _Call) -> str:
        raw = call.params["subscription"]
        if not GUID.match(raw):
            raise ArmError(
                400, "InvalidSubscriptionId", f"The provided subscription identifier '{raw}' is malformed or invalid."
            )
        subscription = self._subscriptions.get(raw.lower())
        if subscription is None:
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{raw}' could not be found.")
        return subscription

    def _resource_group_machines(self, call: _Call) -> list[SimulatedMachine]:
        subscription = self._subscription(call)
        group = call.params["resource_group"]
        machines = self._by_resource_group.get((subscription.lower(), group.lower()))
        if machines is None:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{group}' could not be found.")
        return machines

    def _machine(self, call: _Call, *, parent_of: str | None = None) -> SimulatedMachine:
        self._resource_group_machines(call)
        machine = self._machines.get(call.params["machine_key"])
        if machine is None:
            name, group = call.params["machine"], call.params["resource_group"]
            if parent_of is not None:
                raise ArmError(
                    404,
                    "ParentResourceNotFound",
                    f"Can not perform requested operation on nested resource. Parent resource '{name}' not found.",
                )
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.HybridCompute/machines/{name}' under resource group '{group}' was not "
                "found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
            )
        machine.advance(call.now)
        return machine

    @staticmethod
    def _child_not_found(call: _Call, child_type: str, name: str) -> ArmError:
        return ArmError(
            404,
            "ResourceNotFound",
            f"The Resource 'Microsoft.HybridCompute/machines/{call.params['machine']}/{child_type}/{name}' under "
            f"resource group '{call.params['resource_group']}' was not found. For more details please go to "
            "https://aka.ms/ARMResourceNotFoundFix",
        )

    @staticmethod
    def _expand_instance_view(call: _Call) -> bool:
        expand = call.query.get("$expand")
        if expand is None:
            return False
        if expand.lower() != "instanceview":
            raise ArmError(
                400,
                "InvalidParameter",
                f"The value '{expand}' of the $expand parameter is invalid; supported: instanceView.",
            )
        return True

    # --- paging ----------------------------------------------------------------------------------

    def _page(self, call: _Call, items: list[Any], render: Callable[[Any], dict[str, Any]]) -> _Reply:
        token = call.query.get("$skiptoken")
        offset = 0
        if token:
            try:
                offset = int(base64.urlsafe_b64decode(token.encode()).decode())
            except (ValueError, binascii.Error):
                raise ArmError(400, "InvalidSkipToken", f"The skip token '{token}' is invalid.") from None
        page = items[offset : offset + self.page_size]
        body: dict[str, Any] = {"value": [render(item) for item in page]}
        if offset + self.page_size < len(items):
            next_token = base64.urlsafe_b64encode(str(offset + self.page_size).encode()).decode()
            expand = call.query.get("$expand")
            extra = "" if expand is None else f"&$expand={expand}"
            body["nextLink"] = (
                f"{call.origin}{call.path}?api-version={call.query['api-version']}{extra}&$skiptoken={next_token}"
            )
        return _Reply(200, body)

    # --- subscriptions ----------------------------------------------------------------------------

    def _list_subscriptions(self, call: _Call) -> _Reply:
        tenant = self.fleet.tenant_id
        value = [subscription_resource(s, tenant, i) for i, s in enumerate(self.fleet.subscription_ids)]
        return _Reply(200, {"value": value})

    def _get_subscription(self, call: _Call) -> _Reply:
        subscription = self._subscription(call)
        index = self.fleet.subscription_ids.index(subscription)
        return _Reply(200, subscription_resource(subscription, self.fleet.tenant_id, index))

    # --- machines ------------------------------------------------------------------------------------

    def _list_machines(self, call: _Call) -> _Reply:
        if "resource_group" in call.params:
            machines = self._resource_group_machines(call)
            instance_view = self._expand_instance_view(call)
        else:
            machines = self._by_subscription[self._subscription(call).lower()]
            instance_view = False  # Machines_ListBySubscription has no $expand in 2025-01-13

        def render(machine: SimulatedMachine) -> dict[str, Any]:
            machine.advance(call.now)
            return machine_resource(machine, call.now, instance_view=instance_view)

        return self._page(call, machines, render)

    def _get_machine(self, call: _Call) -> _Reply:
        machine = self._machine(call)
        return _Reply(200, machine_resource(machine, call.now, instance_view=self._expand_instance_view(call)))

    # --- async operations ---------------------------------------------------------------------------

    def _new_operation(
        self,
        call: _Call,
        operation: str,
        machine: SimulatedMachine,
        *,
        seconds: float | None = None,
        run: RunCommand | None = None,
    ) -> dict[str, str]:
        self._operation_counter += 1
        op_id = stable_uuid(self.fleet.seed, "operation", self._operation_counter)
        completes_at = call.now + timedelta(seconds=seconds) if seconds is not None else None
        pending = self._operations[op_id] = _AsyncOperation(op_id, operation, machine, call.now, completes_at, run)
        base = (
            f"{call.origin}/subscriptions/{machine.subscription_id}/providers/Microsoft.HybridCompute"
            f"/locations/{machine.location}"
        )
        version = f"?api-version={HYBRID_COMPUTE_API_VERSION}"
        return {
            "Azure-AsyncOperation": f"{base}/operationStatus/{op_id}{version}",
            "Location": f"{base}/operationResults/{op_id}{version}",
            "Retry-After": self._retry_after(pending),
        }

    def _find_operation(self, call: _Call) -> _AsyncOperation:
        subscription = self._subscription(call)
        operation = self._operations.get(call.params["operation_id"].lower())
        if operation is None or operation.machine.subscription_id != subscription:
            raise ArmError(404, "OperationNotFound", f"The operation '{call.params['operation_id']}' was not found.")
        operation.machine.advance(call.now)
        return operation

    @staticmethod
    def _retry_after(operation: _AsyncOperation) -> str:
        return str(RUN_COMMAND_RETRY_AFTER if operation.run is not None else LICENSE_RETRY_AFTER)

    def _operation_status(self, call: _Call) -> _Reply:
        operation = self._find_operation(call)
        status, error, ended_at = operation.status(call.now)
        machine = operation.machine
        body: dict[str, Any] = {
            "id": f"/subscriptions/{machine.subscription_id}/providers/Microsoft.HybridCompute/locations/"
            f"{machine.location}/operationStatus/{operation.op_id}",
            "name": operation.op_id,
            "status": status,
            "startTime": iso(operation.started_at),
        }
        headers: dict[str, str] = {}
        if status == "InProgress":
            headers["Retry-After"] = self._retry_after(operation)
        else:
            body["endTime"] = iso(ended_at or call.now)
            body["percentComplete"] = 100
        if error is not None:
            body["error"] = dict(error)
        return _Reply(200, body, headers)

    def _operation_result(self, call: _Call) -> _Reply:
        operation = self._find_operation(call)
        status, error, _ = operation.status(call.now)
        if status == "InProgress":
            location = f"{call.origin}{call.path}?api-version={HYBRID_COMPUTE_API_VERSION}"
            return _Reply(202, None, {"Location": location, "Retry-After": self._retry_after(operation)})
        if status != "Succeeded":
            assert error is not None
            raise ArmError(409 if status == "Canceled" else 400, error["code"], error["message"])
        machine = operation.machine
        if operation.run is not None:
            return _Reply(200, run_command_resource(machine, operation.run, call.now))
        if operation.operation in ("licenseProfiles.put", "licenseProfiles.patch") and machine.license_profile:
            return _Reply(200, license_profile_resource(machine, call.now))
        return _Reply(204)

    # --- license profiles ------------------------------------------------------------------------------

    def _license_machine(self, call: _Call) -> SimulatedMachine:
        name = call.params["name"]
        if name.lower() != "default":
            raise ArmError(
                400, "InvalidParameter", f"The license profile name '{name}' is invalid; it must be 'default'."
            )
        machine = self._machine(call, parent_of="licenseProfiles")
        if not machine.spec.is_windows and call.method in ("PUT", "PATCH"):
            raise ArmError(400, "InvalidParameter", "License profiles are supported for Windows machines only.")
        return machine

    def _get_license_profile(self, call: _Call) -> _Reply:
        machine = self._license_machine(call)
        if machine.license_profile is None:
            raise self._child_not_found(call, "licenseProfiles", "default")
        return _Reply(200, license_profile_resource(machine, call.now))

    def _list_license_profiles(self, call: _Call) -> _Reply:
        machine = self._machine(call)
        value = [license_profile_resource(machine, call.now)] if machine.license_profile else []
        return _Reply(200, {"value": value})

    def _check_product_type(self, machine: SimulatedMachine, change: Any, replace: bool) -> None:
        features = change.features if change.features is not ABSENT else []
        enrolling = [name for name, status in features if (status or "").lower().startswith("enabl")]
        if change.product_subscription_status not in (ABSENT, None):
            enrolling.append("(product)")
        if not enrolling:
            return
        product_type = change.product_type
        if product_type is ABSENT and not replace and machine.license_profile is not None:
            product_type = machine.license_profile.product_type
        if product_type != "WindowsServer":
            raise ArmError(
                400,
                "InvalidParameter",
                "properties.productProfile.productType must be 'WindowsServer' to enroll Windows Server product "
                "features or subscriptions.",
            )

    def _put_license_profile(self, call: _Call) -> _Reply:
        machine = self._license_machine(call)
        change = parse_license_profile(call.body, partial=False)
        self._check_product_type(machine, change, replace=True)
        created = machine.write_license_profile("PUT", change, call.body, call.now)
        headers = self._new_operation(call, "licenseProfiles.put", machine, seconds=LICENSE_OPERATION_SECONDS)
        return _Reply(201 if created else 200, license_profile_resource(machine, call.now), headers)

    def _patch_license_profile(self, call: _Call) -> _Reply:
        machine = self._license_machine(call)
        if machine.license_profile is None:
            raise self._child_not_found(call, "licenseProfiles", "default")
        change = parse_license_profile(call.body, partial=True)
        self._check_product_type(machine, change, replace=False)
        machine.write_license_profile("PATCH", change, call.body, call.now)
        headers = self._new_operation(call, "licenseProfiles.patch", machine, seconds=LICENSE_OPERATION_SECONDS)
        return _Reply(202, None, headers)

    def _delete_license_profile(self, call: _Call) -> _Reply:
        machine = self._license_machine(call)
        if not machine.delete_license_profile(call.now):
            return _Reply(204)
        return _Reply(
            202, None, self._new_operation(call, "licenseProfiles.delete", machine, seconds=DELETE_OPERATION_SECONDS)
        )

    # --- run commands ----------------------------------------------------------------------------------

    def _run_name(self, call: _Call) -> str:
        name = call.params["name"]
        if not RUN_COMMAND_NAME.match(name):
            raise ArmError(
                400, "InvalidResourceName", f"The resource name '{name}' is invalid. It must match [a-zA-Z0-9-_.]+."
            )
        return name

    def _current_run(self, call: _Call) -> tuple[SimulatedMachine, RunCommand]:
        name = self._run_name(call)
        machine = self._machine(call, parent_of="runCommands")
        run = machine.runs.get(name.lower())
        if run is None:
            raise self._child_not_found(call, "runCommands", name)
        return machine, run

    def _get_run_command(self, call: _Call) -> _Reply:
        machine, run = self._current_run(call)
        return _Reply(200, run_command_resource(machine, run, call.now))

    def _list_run_commands(self, call: _Call) -> _Reply:
        machine = self._machine(call)
        instance_view = self._expand_instance_view(call)
        runs = sorted(machine.runs.values(), key=lambda r: r.name.lower())
        return self._page(
            call, runs, lambda run: run_command_resource(machine, run, call.now, instance_view=instance_view)
        )

    def _put_run_command(self, call: _Call) -> _Reply:
        name = self._run_name(call)
        machine = self._machine(call, parent_of="runCommands")
        request = parse_run_command(call.body)
        existing = machine.runs.get(name.lower())
        if existing is not None and not existing.terminal:
            raise ArmError(
                409,
                "Conflict",
                f"Run command '{existing.name}' cannot be updated: its execution is in progress "
                f"(executionState {existing.execution_state}). Use a new name or wait until it finishes.",
            )
        run, replaced = machine.create_run(name, request, call.now)
        headers = self._new_operation(call, "runCommands.put", machine, run=run)
        body = run_command_resource(machine, run, call.now, instance_view=False)
        return _Reply(200 if replaced else 201, body, headers)

    def _patch_run_command(self, call: _Call) -> _Reply:
        machine, run = self._current_run(call)
        body = call.body if isinstance(call.body, dict) else None
        if body is None:
            raise ArmError(400, "InvalidRequestContent", "The request content was invalid: expected a JSON object.")
        if "tags" in body:
            run.tags = parse_tags(body["tags"])
        return _Reply(200, run_command_resource(machine, run, call.now))

    def _delete_run_command(self, call: _Call) -> _Reply:
        name = self._run_name(call)
        machine = self._machine(call, parent_of="runCommands")
        if not machine.delete_run(name, call.now):
            return _Reply(204)
        return _Reply(
            202, None, self._new_operation(call, "runCommands.delete", machine, seconds=DELETE_OPERATION_SECONDS)
        )
