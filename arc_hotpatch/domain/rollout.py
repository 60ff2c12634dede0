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
    """Take ``quota`` machines subscription by subscription in order (the canary comes from the first)."""
    takes: list[int] = []
    for remaining in remaining_by_subscription:
        take = min(quota, remaining)
        takes.append(take)
        quota -= take
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
