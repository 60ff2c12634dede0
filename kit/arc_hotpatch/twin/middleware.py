"""The checks ARM makes before a handler sees a request, as a chain built in one place.

Each middleware takes the ``Call`` and either lets it through (possibly adding response
headers) or refuses it by raising ``ArmError``. ``build_middleware_chain`` puts them in
ARM's order: authentication, throttling, the router's own refusal (404/405), the
api-version, and injected faults.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from core.azure_clients import HYBRID_COMPUTE_API_VERSION

from .arm import ArmError, iso
from .calls import Call
from .faults import Faults
from .routes import SUBSCRIPTIONS_API
from .seeding import stable_choice, stable_uniform, stable_unit, stable_uuid
from .state import FleetState, RequestMetrics
from .throttle import ArmThrottle

Middleware = Callable[[Call], None]

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

_CHALLENGE = {
    "WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/common", '
    'error="invalid_token", error_description="The authentication failed because of missing '
    "'Authorization' header.\""
}


def authenticate(call: Call) -> None:
    """401 without ``Authorization: Bearer <token>``; any token is accepted."""
    authorization = call.request_headers.get("Authorization")
    if authorization is None:
        raise ArmError(
            401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.", _CHALLENGE
        )
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ArmError(
            401,
            "InvalidAuthenticationToken",
            "The access token is invalid: expected 'Authorization: Bearer <token>'.",
            _CHALLENGE,
        )


class Throttling:
    """ARM's token buckets, one set per subscription and principal (and per principal for tenant-level calls),
    on the twin's clock. The principal is the bearer token's holder: any token is accepted, so the token
    itself stands for it (two clients with the same identity share their budget, as in ARM).

    Every request that gets here costs a token and reports what is left; ``enabled=False``
    never answers 429 (benchmarks) but still sends the ``x-ms-ratelimit-remaining-*`` headers.
    """

    def __init__(self, metrics: RequestMetrics, *, enabled: bool) -> None:
        self._buckets = ArmThrottle()
        self._metrics = metrics
        self._enabled = enabled

    def __call__(self, call: Call) -> None:
        subscription = call.params.get("subscription")
        if subscription is None:
            scope, level = "tenant", "tenant"
        else:
            scope, level = subscription.lower(), "subscription"
        category = call.route.category
        principal = call.request_headers.get("Authorization", "")
        bucket = self._buckets.bucket(f"{scope}|{principal}", category, call.now)
        allowed = bucket.try_take(call.now)
        call.headers[f"x-ms-ratelimit-remaining-{level}-{category}"] = str(bucket.remaining)
        if allowed or not self._enabled:
            return
        self._metrics.throttled += 1
        retry_after = bucket.seconds_until_token()
        operation_type = category.rstrip("s")
        raise ArmError(
            429,
            "SubscriptionRequestsThrottled" if level == "subscription" else "TenantRequestsThrottled",
            f"Number of '{operation_type}' requests for {level} '{scope}' exceeded. Please try again after "
            f"'{retry_after}' seconds after additional tokens are available. Refer to https://aka.ms/arm-throttling",
            {"Retry-After": str(retry_after)},
        )


def reject_unrouted(call: Call) -> None:
    """The router's refusal (unknown path or method), once the request has been authenticated and throttled."""
    if call.route.error is not None:
        raise call.route.error


def check_api_version(call: Call) -> None:
    """ARM's api-version rules: required; the subscriptions API's versions; HybridCompute 2025-01-13 or later."""
    version = call.query.get("api-version")
    if not version:
        raise ArmError(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    if call.route.api == SUBSCRIPTIONS_API:
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


class FaultInjection:
    """Injected ARM 429s and 5xx (``Faults.arm_throttle_rate`` / ``arm_server_error_rate``)."""

    def __init__(self, faults: Faults, seed: int, metrics: RequestMetrics) -> None:
        self._faults = faults
        self._seed = seed
        self._metrics = metrics
        self._requests: Counter[str] = Counter()  # per scope: the sequence number of each draw

    def __call__(self, call: Call) -> None:
        faults, seed = self._faults, self._seed
        # Keyed by the machine (or scope) and its own request count: reproducible per machine.
        scope = call.params.get("machine_key") or call.params.get("subscription", "tenant").lower()
        self._requests[scope] += 1
        sequence = self._requests[scope]
        draw = stable_unit(seed, "http", scope, sequence)
        low, high = faults.retry_after_seconds
        retry_after = str(round(stable_uniform(low, high, seed, "retry-after", scope, sequence)))
        if draw < faults.arm_throttle_rate:
            self._metrics.injected["429"] += 1
            raise ArmError(
                429,
                "TooManyRequests",
                "The request is being throttled as the limit has been reached for operation type - "
                f"{call.route.operation}. For more information, see - https://aka.ms/armthrottling",
                {"Retry-After": retry_after},
            )
        if draw < faults.arm_throttle_rate + faults.arm_server_error_rate:
            status = stable_choice((500, 503), seed, "5xx", scope, sequence)
            self._metrics.injected[str(status)] += 1
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
                f"Encountered internal server error. Diagnostic information: timestamp '{iso(call.now)}', "
                f"tracking id '{stable_uuid(seed, 'tracking', scope, sequence)}'.",
                {"Retry-After": retry_after},
            )


def build_middleware_chain(state: FleetState, *, throttling: bool) -> tuple[Middleware, ...]:
    """The chain every request runs through before its handler, in ARM's order.

    Every authenticated request costs a token, even one then refused for its path or
    api-version; faults come last, so an injected 429/5xx only replaces an answer ARM
    would have given.
    """
    chain: list[Middleware] = [
        authenticate,
        Throttling(state.metrics, enabled=throttling),
        reject_unrouted,
        check_api_version,
    ]
    if state.faults.injects_http_faults:  # Faults are frozen: without HTTP faults the check is skipped for good
        chain.append(FaultInjection(state.faults, state.fault_seed, state.metrics))
    return tuple(chain)
