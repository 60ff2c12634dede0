"""Deterministic draws keyed by names instead of by call order.

The twin answers requests from many threads, so a shared ``random.Random`` would
make a run depend on thread scheduling. Every random quantity is instead a hash
of (seed, what it is for, whose it is, its sequence number): the k-th run on a
machine gets the same duration whatever else happens concurrently.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def stable_unit(*parts: object) -> float:
    """A number in [0, 1) that depends only on ``parts``."""
    key = "\x1f".join(str(p) for p in parts).encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def stable_uniform(low: float, high: float, *parts: object) -> float:
    return low + (high - low) * stable_unit(*parts)


def stable_choice(options: Sequence[T], *parts: object) -> T:
    return options[int(stable_unit(*parts) * len(options))]


def stable_uuid(*parts: object) -> str:
    """A random-looking (version 4 layout) GUID that depends only on ``parts``."""
    key = "\x1f".join(str(p) for p in parts).encode()
    digest = hashlib.blake2b(key, digest_size=16).digest()
    return str(uuid.UUID(bytes=digest, version=4))
