"""The one place production code gets its Azure SDK clients.

``ArmConnection`` is an ARM endpoint plus a credential: ``DefaultAzureCredential`` and the
configured cloud's endpoint in production, the fleet twin's URL and a static token in
development. Clients are the real SDK clients with three adjustments:

- their transport sleeps on ``core.clock.current_clock()``, so retry-after-429 waits follow
  the virtual clock in simulations (and real time in Azure);
- they trust the CA certificate of ``ca_file`` when one is given (development: the fleet twin's
  HTTPS, ``HOTPATCH_ARM_CA_FILE``), as any SDK client does with ``connection_verify``; bearer tokens
  go over TLS only, as azure-core insists.

ARM's retries honour ``Retry-After`` on 429 and 5xx, bounded per request (``ActivityRetryPolicy``).
Connections are cached per (endpoint, token) and clients per (connection, subscription)
and thread: azure-core's ``RequestsTransport`` holds one ``requests.Session``, which is
not documented as thread-safe, and activities run on a thread pool.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlparse

import requests
from azure.core.credentials import AccessToken, AccessTokenInfo, TokenCredential
from azure.core.pipeline.policies import RetryPolicy
from azure.core.pipeline.transport import RequestsTransport
from azure.mgmt.hybridcompute import HybridComputeManagementClient
from azure.mgmt.resource.subscriptions import SubscriptionClient

from .clock import current_clock
from .policy import CLOUD_ARM_ENDPOINTS

HYBRID_COMPUTE_API_VERSION = "2025-01-13"
TOKEN_LIFETIME_SECONDS = 3600
DEVELOPMENT_TOKEN = "fleet-twin"

_AUTHORITY_BY_ENDPOINT = {
    CLOUD_ARM_ENDPOINTS["AzureCloud"]: "login.microsoftonline.com",
    CLOUD_ARM_ENDPOINTS["AzureUSGovernment"]: "login.microsoftonline.us",
    CLOUD_ARM_ENDPOINTS["AzureChinaCloud"]: "login.chinacloudapi.cn",
}

ClientT = TypeVar("ClientT")


class StaticTokenCredential:
    """A credential that always returns the same bearer token (the twin accepts any)."""

    def __init__(self, token: str = DEVELOPMENT_TOKEN) -> None:
        if not token:
            raise ValueError("a static token must not be empty")
        self._token = token

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        # Expiry in wall time: azure-core's token cache compares with time.time(), not our clock.
        return AccessToken(self._token, int(time.time()) + TOKEN_LIFETIME_SECONDS)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        return AccessTokenInfo(self._token, int(time.time()) + TOKEN_LIFETIME_SECONDS)


def is_loopback_url(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, eq=False)
class ArmConnection:
    """An ARM endpoint (no trailing slash) and the credential to call it with."""

    endpoint: str
    credential: TokenCredential
    ca_file: str = ""  # a CA certificate (PEM) to trust besides the system's: the fleet twin's

    def __post_init__(self) -> None:
        parsed = urlparse(self.endpoint)
        if parsed.scheme != "https" or not parsed.netloc:
            raise ValueError(
                f"ARM endpoint {self.endpoint!r} is not an https URL: bearer tokens go over TLS only (the fleet "
                "twin serves https; trust its CA certificate with HOTPATCH_ARM_CA_FILE)"
            )
        object.__setattr__(self, "endpoint", self.endpoint.rstrip("/"))

    @property
    def credential_scopes(self) -> list[str]:
        return [f"{self.endpoint}/.default"]

    @classmethod
    def for_endpoint(cls, endpoint: str, token: str | None = None, ca_file: str = "") -> ArmConnection:
        """An ARM endpoint with a static ``token`` (development) or DefaultAzureCredential.

        One connection per (endpoint, token) per process: activities call this on every run,
        and the credential (with its token cache) and the cached clients should outlive a call.
        A loopback endpoint can only be the fleet twin, which accepts any bearer token: without
        ``token`` it gets a static one rather than a credential that would look for Azure sign-ins.
        """
        endpoint = endpoint.rstrip("/")
        if token is None and is_loopback_url(endpoint):
            token = DEVELOPMENT_TOKEN
        with _connections_lock:
            connection = _connections.get((endpoint, token, ca_file))
            if connection is None:
                connection = cls(endpoint, _credential_for(endpoint, token), ca_file)
                _connections[(endpoint, token, ca_file)] = connection
            return connection


_connections: dict[tuple[str, str | None, str], ArmConnection] = {}
_connections_lock = threading.Lock()


def _credential_for(endpoint: str, token: str | None) -> TokenCredential:
    if token is not None:
        return StaticTokenCredential(token)
    from azure.identity import DefaultAzureCredential

    authority = _AUTHORITY_BY_ENDPOINT.get(endpoint)
    return DefaultAzureCredential(authority=authority) if authority else DefaultAzureCredential()


class ClockSleepingTransport(RequestsTransport):
    """The requests transport, sleeping on the process clock (retry back-off)."""

    def sleep(self, duration: float) -> None:
        current_clock().sleep(duration)


def transport_for(url: str, **options: Any) -> ClockSleepingTransport:
    """The transport for requests to ``url``. A loopback service (the fleet twin, Azurite) is reached without
    proxy or ``.netrc`` settings: requests would look them up in the environment and the home folder on every
    request (a fifth of a request's client CPU), and no proxy stands between a process and its own host."""
    if is_loopback_url(url):
        session = requests.Session()
        session.trust_env = False
        return ClockSleepingTransport(session=session, session_owner=True, **options)
    return ClockSleepingTransport(**options)


MAX_SDK_WAIT_S = 20  # an activity waits at most this long in the SDK's own retries (see ActivityRetryPolicy)


class ActivityRetryPolicy(RetryPolicy):
    """ARM's retries of 429 and 5xx, honouring ``Retry-After``, but never sleeping more than ``MAX_SDK_WAIT_S``
    for one request: a longer wait belongs to the orchestration's durable timers (the activity fails and
    the orchestration retries it later), not to an activity holding a worker."""

    def _wait_for(self, settings: dict[str, Any], response: Any = None) -> float:
        return float((self.get_retry_after(response) if response is not None else None)
                     or self.get_backoff_time(settings))

    def is_retry(self, settings: dict[str, Any], response: Any) -> bool:
        if not super().is_retry(settings, response):
            return False
        return settings.get("slept_s", 0.0) + self._wait_for(settings, response) <= MAX_SDK_WAIT_S

    def sleep(self, settings: dict[str, Any], transport: Any, response: Any = None) -> None:
        settings["slept_s"] = settings.get("slept_s", 0.0) + self._wait_for(settings, response)
        super().sleep(settings, transport, response)

    def increment(self, settings: dict[str, Any], response: Any = None, error: Exception | None = None) -> bool:
        # A certificate that does not verify will not verify on the next try, nor will a token be sent over plain
        # http: fail now, with the error.
        if error is not None and any(sign in str(error) for sign in ("CERTIFICATE_VERIFY_FAILED", "non-TLS")):
            return False
        return super().increment(settings, response, error)


def _client_options(connection: ArmConnection) -> dict[str, Any]:
    options: dict[str, Any] = {
        "base_url": connection.endpoint,
        "credential_scopes": connection.credential_scopes,
        # The transport is ours, so the CA goes to it (a client's own connection_verify reaches only its default one).
        "transport": transport_for(connection.endpoint,
                                   **{"connection_verify": connection.ca_file} if connection.ca_file else {}),
        "retry_policy": ActivityRetryPolicy(),
    }
    return options


_local = threading.local()
_all_caches: list[dict[tuple[Any, ...], Any]] = []
_all_caches_lock = threading.Lock()


def _cached(key: tuple[Any, ...], build: Callable[[], ClientT]) -> ClientT:
    cache: dict[tuple[Any, ...], Any] | None = getattr(_local, "clients", None)
    if cache is None:
        cache = _local.clients = {}
        with _all_caches_lock:
            _all_caches.append(cache)
    client = cache.get(key)
    if client is None:
        client = cache[key] = build()
    return client


def close_clients() -> None:
    """Close every cached client on every thread (end of a simulation or test)."""
    with _all_caches_lock:
        caches = list(_all_caches)
    for cache in caches:
        for client in list(cache.values()):
            client.close()
        cache.clear()


def hybrid_compute_client(connection: ArmConnection, subscription_id: str) -> HybridComputeManagementClient:
    """The HybridCompute client (api-version 2025-01-13) for one subscription, cached per thread."""

    def build() -> HybridComputeManagementClient:
        return HybridComputeManagementClient(
            connection.credential,
            subscription_id,
            api_version=HYBRID_COMPUTE_API_VERSION,
            **_client_options(connection),
        )

    # The key holds the connection itself (compared by identity): a new credential gets new clients.
    return _cached(("hybridcompute", connection, subscription_id.lower()), build)


def subscription_client(connection: ArmConnection) -> SubscriptionClient:
    """The subscriptions client (its default api-version, 2022-12-01), cached per thread."""
    return _cached(
        ("subscriptions", connection),
        lambda: SubscriptionClient(connection.credential, **_client_options(connection)),
    )
