"""Pure time helpers the orchestrators use (deterministic: no clock reads)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .policy import MaintenanceWindow


def next_window_start(window: MaintenanceWindow, now: datetime) -> datetime:
    """``now`` if it falls inside the weekly window, else the next time the window opens."""
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    length = (window.end_minute - window.start_minute) % (24 * 60)
    # A window may start the day before (when it passes midnight), so look one day back.
    for offset in range(-1, 8):
        day = day_start + timedelta(days=offset)
        if day.weekday() not in window.days:
            continue
        opens = day + timedelta(minutes=window.start_minute)
        closes = opens + timedelta(minutes=length)
        if opens <= now < closes:
            return now
        if opens > now:
            return opens
    raise AssertionError("a weekly window with at least one day always opens within 8 days")


def format_utc(moment: datetime) -> str:
    """An aware datetime as ``2026-01-05T08:00:00Z`` (whole seconds: the report's timestamps)."""
    return moment.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def parse_utc(text: str) -> datetime:
    """``2026-01-05T08:00:00Z`` (or with an offset) as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
