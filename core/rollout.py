"""Fleet rollout arithmetic (SPEC §3): waves over the fleet, guardrail, report summary. Pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .policy import Wave
from .vocabulary import FinalState


def wave_quotas(fleet_size: int, waves: Sequence[Wave]) -> list[int]:
    """Machines per wave from cumulative ring sizes; the last wave takes whatever is left.

    ``1,10%,100%`` over 200 machines → [1, 19, 180]. Empty waves are dropped.
    """
    quotas: list[int] = []
    done = 0
    for wave in waves:
        size = max(wave.cumulative_size(fleet_size), done)
        if size > done:
            quotas.append(size - done)
            done = size
    if done < fleet_size:
        quotas.append(fleet_size - done)
    return quotas


def allocate(quota: int, remaining_by_subscription: Sequence[int]) -> list[int]:
    """Share a wave's ``quota`` among subscriptions in proportion to what each has left.

    Concurrency is per subscription, so a wave spread over every subscription runs them all
    at once. Largest remainders get the leftover machines, earlier subscriptions first on
    ties: a canary of 1 comes from the largest subscription.
    """
    total = sum(remaining_by_subscription)
    if total <= quota:
        return list(remaining_by_subscription)
    exact = [quota * r / total for r in remaining_by_subscription]
    takes = [int(x) for x in exact]
    leftover = quota - sum(takes)
    by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i] - takes[i]), i))
    for index in by_remainder[:leftover]:
        takes[index] += 1
    return takes


def guardrail_tripped(escalated: int, machines: int, threshold: float) -> bool:
    """The share of escalated machines in a finished wave exceeds the threshold."""
    return machines > 0 and escalated / machines > threshold


def summarize(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The report's ``summary`` from its machine rows."""
    rows = list(rows)
    by_state = Counter(str(r["state"]) for r in rows)
    return {
        "machines": len(rows),
        "by_state": dict(sorted(by_state.items())),
        "reboots": sum(int(r.get("reboots") or 0) for r in rows),
        "escalations": by_state.get(FinalState.ESCALATED.value, 0),
    }


def merge_counts(total: Mapping[str, Any], part: Mapping[str, Any]) -> dict[str, Any]:
    """Add two summaries (orchestrations carry summaries, never rows, across waves)."""
    by_state = Counter(total.get("by_state") or {})
    by_state.update(part.get("by_state") or {})
    return {
        "machines": int(total.get("machines", 0)) + int(part.get("machines", 0)),
        "by_state": dict(sorted(by_state.items())),
        "reboots": int(total.get("reboots", 0)) + int(part.get("reboots", 0)),
        "escalations": int(total.get("escalations", 0)) + int(part.get("escalations", 0)),
    }
