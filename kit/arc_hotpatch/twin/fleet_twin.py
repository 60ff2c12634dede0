"""``FleetTwin``: the fleet twin's public face, an offline ARM for the subset the app uses, on loopback.

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
faults. The pieces: ``state`` (the fleet, without HTTP), ``handlers`` (one module per
resource type), ``routes`` (the route table), ``middleware`` (the chain before a
handler), ``dispatch`` (request in, response out) and ``server`` (the event-loop thread);
this module wires them together and offers the Python inspection API, which hops onto
the server loop where every state change happens.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from core.azure_clients import HYBRID_COMPUTE_API_VERSION  # the spec version the app's clients ask for

from ..clocks import Clock
from .calls import ExchangeRecord
from .dispatch import Dispatcher
from .faults import Faults, load_faults
from .fleet import Fleet, MachineSpec
from .inspection import MachineSnapshot, snapshot
from .middleware import build_middleware_chain
from .server import LoopServer
from .state import FleetState
from .tls import twin_tls

__all__ = ["HYBRID_COMPUTE_API_VERSION", "ExchangeRecord", "FleetTwin"]


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
        tls: bool = True,
        ca_file: str | Path | None = None,
    ) -> None:
        """``tls``: serve HTTPS (the default: ARM clients send bearer tokens over TLS only), its CA certificate
        written to ``ca_file`` (default a file in the temp folder); ``ca_file`` then names it."""
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        self.clock = clock
        self._throttling = throttling
        self._response_observer = response_observer
        loaded = load_faults(faults)
        self._state = FleetState(fleet, loaded, clock.now(), page_size=page_size)
        middleware = build_middleware_chain(self._state, throttling=throttling)
        self._server = LoopServer(Dispatcher(self._state, clock, middleware, response_observer).handle)
        self.base_url: str | None = None
        self._tls = tls
        self._ca_file = ca_file
        self.ca_file: str | None = None  # the CA certificate clients trust (PEM), once started with TLS

    # --- configuration (read-only: the server is wired from it) -------------------------------

    @property
    def fleet(self) -> Fleet:
        return self._state.fleet

    @property
    def faults(self) -> Faults:
        return self._state.faults

    @property
    def started_at(self) -> datetime:
        return self._state.started_at

    @property
    def throttling(self) -> bool:
        return self._throttling

    @property
    def page_size(self) -> int:
        return self._state.page_size

    @property
    def response_observer(self) -> Callable[[ExchangeRecord], None] | None:
        return self._response_observer

    @property
    def subscription_ids(self) -> tuple[str, ...]:
        return self._state.fleet.subscription_ids

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, port: int = 0, host: str = "127.0.0.1") -> str:
        """Serve on ``host:port`` (0: any free port) from a background thread; returns the base URL."""
        certificate = twin_tls(self._ca_file) if self._tls else None
        bound_port = self._server.start(host, port, certificate.context if certificate else None)
        self.ca_file = str(certificate.ca_file) if certificate else None
        self.base_url = f"{'https' if certificate else 'http'}://{host}:{bound_port}"
        return self.base_url

    def stop(self) -> None:
        """Stop serving and join the server thread (idempotent)."""
        self._server.stop()
        self.base_url = None

    def __enter__(self) -> FleetTwin:
        if not self._server.running:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- inspection API (Python, for tests and reports) ------------------------------------

    def resource_id(self, name: str) -> str:
        return self._state.lookup(name).resource_id

    def machine(self, name_or_id: str) -> MachineSnapshot:
        """A machine's simulated state now (name if unique in the fleet, else resource id)."""

        def read() -> MachineSnapshot:
            now = self.clock.now()
            machine = self._state.lookup(name_or_id)
            machine.advance(now)
            return snapshot(machine, now)

        return self._server.on_loop(read)

    def machines(self) -> list[MachineSnapshot]:
        def read() -> list[MachineSnapshot]:
            now = self.clock.now()
            result = []
            for machine in sorted(self._state.machines.values(), key=lambda m: m.key):
                machine.advance(now)
                result.append(snapshot(machine, now))
            return result

        return self._server.on_loop(read)

    def add_machine(self, spec: MachineSpec, subscription_id: str | None = None) -> str:
        """Onboard a new machine at runtime (for Event Grid scenarios); returns its resource id."""
        return self._server.on_loop(lambda: self._state.add_machine(spec, subscription_id).resource_id)

    def metrics(self) -> dict[str, Any]:
        """Request counts for the simulation report (SPEC §5 metrics)."""
        return self._server.on_loop(self._state.metrics.report)
