"""What passes between the twin's HTTP layer, its middleware and its handlers.

A ``Call`` is one request on its way through: the dispatcher builds it, each middleware
may refuse it (raising ``ArmError``) or add response headers, a handler answers it with
a ``Reply``. An ``ExchangeRecord`` is the request and answer as a test's response
observer sees them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .routes import Route


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
class Reply:
    """A handler's answer: status, JSON body (None: no body) and headers beyond the ones every answer gets."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class Call:
    """One request: what the client asked, the route it matched, and the answer's headers so far.

    ``origin`` and ``body`` are filled in once the middleware has let the request through,
    so a refused request never pays for them.
    """

    # Slots: one of these is built for every request.
    __slots__ = ("body", "headers", "method", "now", "origin", "params", "path", "query", "request_headers", "route")

    def __init__(
        self,
        now: datetime,
        method: str,
        path: str,
        query: dict[str, str],
        route: Route,
        params: dict[str, str],
        request_headers: Mapping[str, str],
        headers: dict[str, str],
    ) -> None:
        self.now = now
        self.method = method
        self.path = path
        self.query = query  # keys lower-cased
        self.route = route
        self.params = params  # the path's named segments (see routes.py)
        self.request_headers = request_headers
        self.headers = headers  # response headers every answer carries
        self.origin = ""  # scheme://host:port, for the links in an answer
        self.body: Any = None  # the parsed JSON body of a PUT or PATCH
