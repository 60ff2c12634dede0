"""Fleet rollout arithmetic (SPEC §3): waves over the machines the rollout changes, the guardrail, summaries. Pure.

Waves are cumulative sizes (``1,10%,100%``) counted over the machines that need a change: a
machine that ends without any (excluded, ineligible, disconnected, already enabled) belongs to
no wave. The number of such machines is known only once every machine has been assessed, so
the arithmetic works on bounds: ``changeable_lo`` (found so far) and ``changeable_hi`` (found so
far plus every machine not assessed yet). A count wave's size needs no total; a percentage needs
the exact total; the final wave takes everything that is left.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .policy import Policy, Wave
from .schedule import next_window_start, parse_utc
from .vocabulary import FinalState, RebootPolicy

# A window reads its machines' new outcomes (and the rollout its windows) every POLL_S after news, backing off
# to MAX_POLL_S while nothing happens: a freed slot is refilled within one interval. Once nothing has happened
# for QUIET_AFTER_S (longer than a machine's path under reboot policy auto, timeouts included), the machines
# are waiting for something slow (a maintenance window days away, an approval): reads back off to QUIET_POLL_S,
# so a wait of days costs hundreds of reads, not thousands, and the first news after it waits at most that.
POLL_S = 30
MAX_POLL_S = 60
QUIET_AFTER_S = 75 * 60
QUIET_POLL_S = 10 * 60


def cumulative_target(wave: Wave, total: int) -> int:
    """How many changed machines the rollout has reached by the end of ``wave``, of ``total`` that need one."""
    if wave.count is not None:
        return min(wave.count, total)
    return min(total, max(1, math.ceil(total * (wave.percent or 0) / 100)))


def is_final(waves: Sequence[Wave], index: int) -> bool:
    """The wave at ``index`` takes every machine left: the last one given, or the implicit one after it."""
    if index >= len(waves):
        return True
    return index == len(waves) - 1 and waves[index].percent == 100.0


def wave_count(waves: Sequence[Wave]) -> int:
    """Waves a rollout runs: the ones given, plus a final one for the rest unless the last is 100%."""
    return len(waves) if is_final(waves, len(waves) - 1) else len(waves) + 1


def wave_end(waves: Sequence[Wave], index: int, total: int) -> int:
    """The cumulative number of changed machines at the end of wave ``index`` if ``total`` need a change."""
    if is_final(waves, index):
        return total
    end = cumulative_target(waves[index], total)
    return max(end, wave_end(waves, index - 1, total)) if index > 0 else end


@dataclass(frozen=True)
class WaveBounds:
    """Wave ``index`` given what is known of the total: it starts after ``start`` changed machines and ends
    somewhere in ``[end_lo, end_hi]`` (the same number once it can be known: a count smaller than what
    was already found, or any wave once every machine has been assessed).

    Grants go up to ``end_lo`` (machines certainly in this wave or before); the guardrail trips once the
    escalations exceed the threshold of the largest size the wave can still have (``end_hi - start``).
    """

    index: int
    start: int
    end_lo: int
    end_hi: int
    final: bool

    @property
    def known(self) -> bool:
        return self.end_lo == self.end_hi

    @property
    def size_hi(self) -> int:
        return self.end_hi - self.start


def wave_bounds(waves: Sequence[Wave], index: int, changeable_lo: int, changeable_hi: int) -> WaveBounds:
    """Bounds of wave ``index`` when between ``changeable_lo`` and ``changeable_hi`` machines need a change."""
    start = wave_end(waves, index - 1, changeable_lo) if index > 0 else 0
    return WaveBounds(
        index=index, start=start, end_lo=max(start, wave_end(waves, index, changeable_lo)),
        end_hi=max(start, wave_end(waves, index, changeable_hi)), final=is_final(waves, index),
    )


def next_poll_s(previous_s: float, news: bool, quiet_for_s: float, window_open: bool = False) -> float:
    """The interval until the next read, after a read that found ``news`` or not, ``quiet_for_s`` after the last
    news (see POLL_S); never the quiet interval while the maintenance window is open (``window_open``): machines
    that waited for it are rebooting, their results and the next waves' starts are due."""
    if news:
        return POLL_S
    ceiling = QUIET_POLL_S if quiet_for_s >= QUIET_AFTER_S and not window_open else MAX_POLL_S
    return min(ceiling, 2 * (previous_s or POLL_S))


def read_cadence(policy: Policy, now: datetime, poll_s: float, news_at: str, news: bool) -> tuple[float, str]:
    """After a read (or a start): the interval until the next read and when news last came (ISO); ``news``: this
    read found some (with no news yet on record, it counts as news)."""
    if news or not news_at:
        return next_poll_s(poll_s, True, 0), now.isoformat()
    quiet_for_s = (now - parse_utc(news_at)).total_seconds()
    return next_poll_s(poll_s, False, quiet_for_s, maintenance_window_open(policy, now)), news_at


def maintenance_window_open(policy: Policy, now: datetime) -> bool:
    """Reboot policy ``window`` and its window open now."""
    return policy.reboot_policy == RebootPolicy.WINDOW and next_window_start(policy.maintenance_window, now) == now


def next_read(policy: Policy, now: datetime, poll_s: float) -> datetime:
    """When to read next: ``poll_s`` from now, or sooner when the maintenance window opens (reboot policy
    ``window``): the machines waiting for it resume then."""
    due = now + timedelta(seconds=poll_s)
    if policy.reboot_policy == RebootPolicy.WINDOW:
        opens = next_window_start(policy.maintenance_window, now)
        if opens > now:
            due = min(due, opens + timedelta(seconds=POLL_S))
    return due


def guardrail_tripped(escalated: int, size: int, threshold: float) -> bool:
    """More escalations in a wave than the threshold allows of its size (``size`` may be an upper bound)."""
    return size > 0 and escalated > threshold * size


def allocate(quota: int, available: Sequence[int]) -> list[int]:
    """Share ``quota`` among subscriptions in proportion to what each has ``available``.

    Largest remainders get the leftover machines, earlier subscriptions first on ties: a
    canary of 1 comes from the subscription with the most machines waiting.
    """
    total = sum(available)
    if total <= quota:
        return list(available)
    exact = [quota * r / total for r in available]
    takes = [int(x) for x in exact]
    leftover = quota - sum(takes)
    by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i] - takes[i]), i))
    for index in by_remainder[:leftover]:
        takes[index] += 1
    return takes


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


@dataclass(frozen=True)
class WindowProgress:
    """What a subscription window reports to its rollout: absolute counters, so a report can be read twice.

    Per wave (lists indexed by wave): change runs started (``granted``; a machine that was assessed and
    changed in one run in the final wave counts there), finished (``members_done``), escalated.
    """

    changeable: int = 0  # machines found to need a change (assessed, queued or changed)
    unassessed: int = 0  # machines whose assessment has not finished (not listed yet, or in flight)
    unstarted: int = 0  # machines not started at all yet (not listed yet)
    queued_waiting: int = 0  # assessed, need a change, no change run started yet
    granted: tuple[int, ...] = ()
    members_done: tuple[int, ...] = ()
    escalated: tuple[int, ...] = ()
    done: bool = False

    def at(self, counters: tuple[int, ...], wave: int) -> int:
        return counters[wave] if wave < len(counters) else 0


@dataclass(frozen=True)
class WaveDecision:
    """Where the rollout stands after a look at its windows' progress."""

    wave: int
    budgets: tuple[int, ...]  # per window: how many change runs it may have started in all (cumulative)
    final: bool  # the current wave is the final one: windows change every machine that needs it
    halted: bool
    detail: str = ""


def decide_waves(
    waves: Sequence[Wave], threshold: float, wave: int, budgets: Sequence[int], windows: Sequence[WindowProgress]
) -> WaveDecision:
    """Advance the waves as far as the windows' progress allows: grant the current wave's machines, wait for
    them, judge the guardrail as results arrive (never waiting for a wave to finish to halt it)."""
    lo = sum(w.changeable for w in windows)
    hi = lo + sum(w.unassessed for w in windows)
    budgets = list(budgets)
    while True:
        bounds = wave_bounds(waves, wave, lo, hi)
        escalated = sum(w.at(w.escalated, wave) for w in windows)
        left = sum(w.unstarted + w.queued_waiting for w in windows)  # a halt stops only what has not started
        if left and guardrail_tripped(escalated, bounds.size_hi, threshold):
            return WaveDecision(wave, tuple(budgets), bounds.final, True,
                                f"wave {wave + 1}: {escalated} escalated, more than {threshold:.0%} of at most "
                                f"{bounds.size_hi} machines")
        if bounds.final:
            return WaveDecision(wave, tuple(budgets), True, False)
        granted = [sum(w.granted) for w in windows]
        outstanding = sum(max(0, b - g) for b, g in zip(budgets, granted, strict=True))
        need = bounds.end_lo - sum(granted) - outstanding
        if need > 0:
            available = [max(0, w.queued_waiting - max(0, b - g))
                         for w, b, g in zip(windows, budgets, granted, strict=True)]
            for index, take in enumerate(allocate(need, available)):
                budgets[index] += take
            return WaveDecision(wave, tuple(budgets), False, False)
        started = sum(w.at(w.granted, wave) for w in windows)
        finished = sum(w.at(w.members_done, wave) for w in windows)
        if not bounds.known or sum(granted) < bounds.end_lo or finished < started:
            return WaveDecision(wave, tuple(budgets), False, False)
        wave += 1  # this wave's machines are all done and it did not trip: the next one
