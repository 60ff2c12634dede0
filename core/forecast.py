"""Whether the next monthly update will reboot a machine (the report's ``next_update``), from what the workflow
already read: no extra ARM request.

The Windows Server Hotpatch calendar: updates come on the second Tuesday of each month; January, April, July and
October bring a baseline (a cumulative update: a planned reboot); in the two months after each, a machine on the
latest baseline (or a hotpatch of it), enrolled on both levels, its feature license sound and no reboot pending,
installs a hotpatch without a reboot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from .facts import AZURE_EDITION, ENABLEMENT_ENABLED, HOTPATCH_BUILD, MachineFacts
from .readiness import Readiness
from .vocabulary import BaselineFlag, NextUpdate

BASELINE_MONTHS = (1, 4, 7, 10)


def second_tuesday(year: int, month: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(1 - first.weekday()) % 7 + 7)


def current_update_day(now: datetime) -> date:
    """This month's update day: the latest second Tuesday on or before ``now``'s day (what installs now)."""
    today = now.date()
    year, month = today.year, today.month
    while second_tuesday(year, month) > today:
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return second_tuesday(year, month)


def next_update_day(now: datetime) -> date:
    """The first second Tuesday after ``now``'s day (Patch Tuesday)."""
    today = now.date()
    year, month = today.year, today.month
    while True:
        day = second_tuesday(year, month)
        if day > today:
            return day
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


@dataclass(frozen=True)
class Forecast:
    next_update: NextUpdate
    detail: str


def forecast(
    now: datetime, facts: MachineFacts | None, readiness: Readiness | None, baseline: str,
    baseline_detail: str, licensing_issue: bool, assessed_reboot_pending: bool | None = None, day: date | None = None,
) -> Forecast:
    """The machine's next update (or that of ``day``): ``reboot`` with every reason found, ``hotpatch``, or
    ``unknown`` (with why)."""
    day = day or next_update_day(now)
    when = f"{day.isoformat()} update"
    if facts is None:
        return Forecast(NextUpdate.UNKNOWN, f"{when}: the machine was not read")
    version = facts.os_version
    if not facts.is_windows_server or version is None or version.build != HOTPATCH_BUILD:
        return Forecast(NextUpdate.UNKNOWN, f"{when}: Hotpatch does not apply to {facts.os_sku or 'this OS'}")
    if facts.edition == AZURE_EDITION:
        return Forecast(NextUpdate.UNKNOWN, f"{when}: Azure Edition follows the platform's own Hotpatch enrollment")
    reasons: list[str] = []
    if day.month in BASELINE_MONTHS:
        reasons.append(f"{day:%B} brings a baseline (a planned reboot)")
    if baseline == BaselineFlag.OFF.value:
        reasons.append(f"off the hotpatch path: {baseline_detail}")
    if not facts.hotpatch_enabled:
        reasons.append(f"the Hotpatch license is {facts.hotpatch_feature_status or 'not set'}, not Enabled")
    elif facts.enablement != ENABLEMENT_ENABLED:
        reasons.append(f"hotpatchEnablementStatus is {facts.hotpatch_enablement_status}, not Enabled")
    if readiness is not None:
        if licensing_issue and not readiness.workaround_active:
            reasons.append("the October 2025 feature licensing issue can expire the license (workaround not applied)")
        if readiness.reboot_pending:
            reasons.append(f"a reboot is pending ({', '.join(readiness.reboot_pending)})")
    if assessed_reboot_pending:
        reasons.append("Update Manager's patch assessment reports a reboot pending")
    if reasons:
        return Forecast(NextUpdate.REBOOT, f"{when}: " + "; ".join(reasons))
    if baseline != BaselineFlag.ON.value:
        return Forecast(NextUpdate.UNKNOWN, f"{when}: {baseline_detail}")
    if readiness is None and assessed_reboot_pending is None:
        return Forecast(NextUpdate.UNKNOWN, f"{when}: the machine's pending-reboot signals were not read")
    return Forecast(NextUpdate.HOTPATCH, f"{when}: a hotpatch" + (f" ({baseline_detail})" if baseline_detail else ""))
