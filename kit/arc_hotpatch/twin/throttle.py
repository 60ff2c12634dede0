"""ARM request throttling: token buckets per subscription, refilled on the twin's clock.

Azure Resource Manager "request limits and throttling" (2025): per region, subscription
and principal, reads 250 tokens refilled at 25 per second, writes 200 at 10 per second,
deletes 200 at 10 per second. The twin keeps one set of buckets per (subscription,
principal) scope, and one per principal for tenant-level calls such as listing subscriptions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

# category -> (bucket size, refill per second)
ARM_LIMITS: dict[str, tuple[float, float]] = {
    "reads": (250.0, 25.0),
    "writes": (200.0, 10.0),
    "deletes": (200.0, 10.0),
}


@dataclass
class TokenBucket:
    capacity: float
    refill_per_second: float
    tokens: float
    updated_at: datetime

    def _refill(self, now: datetime) -> None:
        elapsed = (now - self.updated_at).total_seconds()
        if elapsed > 0:
            self.tokens = min(self.capacity, self.tokens + elapsed * self.refill_per_second)
            self.updated_at = now

    def try_take(self, now: datetime) -> bool:
        self._refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def seconds_until_token(self) -> int:
        """Whole seconds until one token is back (ARM's Retry-After)."""
        return max(1, math.ceil((1 - self.tokens) / self.refill_per_second))

    @property
    def remaining(self) -> int:
        return int(self.tokens)


class ArmThrottle:
    """One bucket per (scope, category); ``scope`` names a subscription (or the tenant) and a principal."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def bucket(self, scope: str, category: str, now: datetime) -> TokenBucket:
        key = (scope, category)
        bucket = self._buckets.get(key)
        if bucket is None:
            capacity, rate = ARM_LIMITS[category]
            bucket = self._buckets[key] = TokenBucket(capacity, rate, capacity, now)
        return bucket
