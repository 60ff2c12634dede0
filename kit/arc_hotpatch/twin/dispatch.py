"""The twin's request pipeline: an aiohttp request in, route, middleware chain, handler, ARM's response out.

Every request is counted under its route's operation and gets ARM's request and
correlation ids; an ``ArmError`` from the middleware or a handler becomes ARM's error
response, and any other exception a 500 in ARM's shape (a twin bug must not hang the
client). The response observer, if any, sees every exchange.

Paths under ``/_twin`` are the twin's own namespace (``handlers/truth.py``: the machines'
truth, e.g. ``boot_count``): answered before routing, without ARM's middleware (no
authentication, throttling or faults), not counted in the ARM metrics nor observed.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from aiohttp import web

from ..clocks import Clock
from .arm import ArmError, invalid_content
from .calls import Call, ExchangeRecord, Reply
from .handlers import truth
from .middleware import Middleware
from .routes import resolve
from .seeding import stable_uuid
from .state import FleetState


class Dispatcher:
    """Answers every request for ``state``; runs on the server's event loop."""

    def __init__(
        self,
        state: FleetState,
        clock: Clock,
        middleware: tuple[Middleware, ...],
        observer: Callable[[ExchangeRecord], None] | None = None,
    ) -> None:
        self._state = state
        self._clock = clock
        self._middleware = middleware
        self._observer = observer

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The response to one request (aiohttp wants the handler to be a coroutine function)."""
        now = self._clock.now()
        if truth.is_twin_path(request.path):
            query = {key.lower(): value for key, value in request.query.items()}
            return _response(truth.answer(self._state, now, request.method.upper(), request.path, query), {})
        state, metrics = self._state, self._state.metrics
        metrics.requests += 1
        sequence = metrics.requests
        method = request.method.upper()
        path = request.path
        route, params = resolve(method, path)
        metrics.by_operation[route.operation] += 1
        subscription = params.get("subscription")
        if subscription is not None:
            metrics.count_subscription(subscription, route.category)
        query = {key.lower(): value for key, value in request.query.items()}
        seed = state.fleet.seed
        headers = {
            "x-ms-request-id": stable_uuid(seed, "request", sequence),
            "x-ms-correlation-request-id": request.headers.get("x-ms-client-request-id")
            or stable_uuid(seed, "correlation", sequence),
        }
        call = Call(now, method, path, query, route, params, request.headers, headers)
        try:
            for middleware in self._middleware:
                middleware(call)
            if method in ("PUT", "PATCH", "POST"):
                raw = await request.read()
                try:
                    call.body = json.loads(raw) if raw else None
                except (ValueError, UnicodeDecodeError) as exc:
                    raise invalid_content(str(exc)) from None
            call.origin = request.url.origin().human_repr().rstrip("/")
            assert route.handler is not None  # reject_unrouted refused the routes without one
            reply = route.handler(state, call)
        except ArmError as error:
            reply = Reply(error.status, error.body(), error.headers)
        except Exception as exc:  # a twin bug must look like ARM's 500, not hang the client
            reply = Reply(500, {"error": {"code": "InternalServerError", "message": f"fleet twin: {exc!r}"}})
        headers.update(reply.headers)
        if self._observer is not None:
            self._observer(_record(call, reply))
        return _response(reply, headers)


def _response(reply: Reply, headers: dict[str, str]) -> web.Response:
    if reply.body is None:
        return web.Response(status=reply.status, headers=headers)
    payload = json.dumps(reply.body, separators=(",", ":")).encode()
    return web.Response(status=reply.status, body=payload, headers=headers, content_type="application/json")


def _record(call: Call, reply: Reply) -> ExchangeRecord:
    return ExchangeRecord(
        operation=call.route.operation,
        method=call.method,
        path=call.path,
        query=call.query,
        status=reply.status,
        headers=dict(call.headers),
        body=reply.body,
        request_body=call.body,
    )
