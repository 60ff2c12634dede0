"""Counters of the local durable host's work, and the ``metrics()`` report built from them."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)  # one per instance: 72 bytes, not a 4-key dict's 232, times every instance of a fleet
class HistoryStats:
    """One instance's episodes: the largest history one replayed, the events replayed in all, how many, and how
    many of its executions continued as new."""

    max: int = 0
    replayed: int = 0
    episodes: int = 0
    continued: int = 0


@dataclass
class HostMetrics:
    """What the host has done so far; updated by the components while they hold the host's lock.

    ``counts`` keys: ``orchestrations``, ``executions``, ``episodes``, ``history_events_replayed``,
    ``timers_fired``, ``events_raised``. ``history_stats``: per instance id, the largest history an
    episode replayed (``max``), the events replayed in total, the number of episodes and of executions
    that continued as new (``continued``).
    """

    counts: Counter[str] = field(default_factory=Counter)
    activity_calls: Counter[str] = field(default_factory=Counter)
    activity_failures: Counter[str] = field(default_factory=Counter)
    history_stats: dict[str, HistoryStats] = field(default_factory=dict)
    # Per activity name, the longest execution in the host clock's seconds (virtual time in simulations).
    activity_longest_s: dict[str, float] = field(default_factory=dict)

    def record_activity_duration(self, name: str, seconds: float) -> None:
        self.activity_longest_s[name] = max(self.activity_longest_s.get(name, 0.0), seconds)

    def record_episode(self, instance_id: str, replayed: int) -> None:
        """One episode of ``instance_id`` replayed a history of ``replayed`` events."""
        self.counts["episodes"] += 1
        self.counts["history_events_replayed"] += replayed
        stats = self._stats(instance_id)
        stats.max = max(stats.max, replayed)
        stats.replayed += replayed
        stats.episodes += 1

    def record_continue_as_new(self, instance_id: str) -> None:
        self.counts["executions"] += 1
        self._stats(instance_id).continued += 1

    def _stats(self, instance_id: str) -> HistoryStats:
        stats = self.history_stats.get(instance_id)
        if stats is None:
            stats = self.history_stats[instance_id] = HistoryStats()
        return stats

    def report(self) -> dict[str, Any]:
        """The ``DurableHost.metrics()`` dict (copies: the caller may keep or change it)."""
        per_instance = {iid: asdict(stats) for iid, stats in sorted(self.history_stats.items())}
        return {
            "orchestrations": self.counts["orchestrations"],
            "executions": self.counts["executions"],
            "episodes": self.counts["episodes"],
            "history_events_replayed": self.counts["history_events_replayed"],
            "max_history_events": max((s["max"] for s in per_instance.values()), default=0),
            "history_events": per_instance,
            "activity_calls": dict(sorted(self.activity_calls.items())),
            "activity_calls_total": sum(self.activity_calls.values()),
            "activity_failures": dict(sorted(self.activity_failures.items())),
            "activity_longest_s": {name: round(s, 3) for name, s in sorted(self.activity_longest_s.items())},
            "timers_fired": self.counts["timers_fired"],
            "events_raised": self.counts["events_raised"],
        }
