"""Timer-trigger schedules: six-field NCRONTAB expressions (and the ``hh:mm:ss`` TimeSpan form).

``{second} {minute} {hour} {day} {month} {day-of-week}``, each field ``*``, a number,
a name (``Jan``, ``Mon``), a range ``a-b``, a step ``*/n`` or ``a-b/n``, or a list of
those. As in NCrontab (the library the Functions host uses), a time matches when
every field matches, day-of-month and day-of-week included. Times are UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

_MONTH_NAMES = {
    name: index
    for index, name in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], start=1
    )
}
_DAY_NAMES = {name: index for index, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}

# (field name, low, high, names)
_FIELDS = (
    ("second", 0, 59, {}),
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day", 1, 31, {}),
    ("month", 1, 12, _MONTH_NAMES),
    ("day-of-week", 0, 6, _DAY_NAMES),
)


class ScheduleError(ValueError):
    pass


def _parse_value(text: str, low: int, high: int, names: dict[str, int], field: str, expression: str) -> int:
    key = text.lower()
    if key in names:
        return names[key]
    if not text.isdigit():
        raise ScheduleError(f"invalid {field} value {text!r} in schedule {expression!r}")
    value = int(text)
    if field == "day-of-week" and value == 7:
        value = 0  # Sunday written as 7
    if not low <= value <= high:
        raise ScheduleError(f"{field} value {value} out of range {low}-{high} in schedule {expression!r}")
    return value


def _parse_field(text: str, low: int, high: int, names: dict[str, int], field: str, expression: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        range_text, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"invalid step {step_text!r} in {field} of schedule {expression!r}")
            step = int(step_text)
        if range_text == "*":
            start, end = low, high
        elif "-" in range_text:
            first, _, last = range_text.partition("-")
            start = _parse_value(first, low, high, names, field, expression)
            end = _parse_value(last, low, high, names, field, expression)
            if end < start:
                raise ScheduleError(f"empty range {range_text!r} in {field} of schedule {expression!r}")
        else:
            start = _parse_value(range_text, low, high, names, field, expression)
            end = high if step_text else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class CronSchedule:
    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        fields = expression.split()
        if len(fields) != 6:
            raise ScheduleError(
                f"schedule {expression!r} must have 6 fields (second minute hour day month day-of-week), "
                f"got {len(fields)}"
            )
        parsed = [
            _parse_field(text, low, high, names, name, expression)
            for text, (name, low, high, names) in zip(fields, _FIELDS, strict=True)
        ]
        return cls(expression, *parsed)

    def matches(self, moment: datetime) -> bool:
        return (
            moment.second in self.seconds
            and moment.minute in self.minutes
            and moment.hour in self.hours
            and moment.day in self.days
            and moment.month in self.months
            and (moment.isoweekday() % 7) in self.weekdays
        )

    def next_after(self, moment: datetime) -> datetime:
        """First matching whole second strictly after ``moment``."""
        candidate = moment.replace(microsecond=0) + timedelta(seconds=1)
        limit = candidate + timedelta(days=366 * 5)
        while candidate < limit:
            if candidate.month not in self.months:
                start_of_month = candidate.replace(day=1, hour=0, minute=0, second=0)
                candidate = (start_of_month + timedelta(days=32)).replace(day=1)
            elif candidate.day not in self.days or (candidate.isoweekday() % 7) not in self.weekdays:
                candidate = (candidate + timedelta(days=1)).replace(hour=0, minute=0, second=0)
            elif candidate.hour not in self.hours:
                candidate = (candidate + timedelta(hours=1)).replace(minute=0, second=0)
            elif candidate.minute not in self.minutes:
                candidate = (candidate + timedelta(minutes=1)).replace(second=0)
            elif candidate.second not in self.seconds:
                candidate += timedelta(seconds=1)
            else:
                return candidate
        raise ScheduleError(f"schedule {self.expression!r} never fires in the next five years")


@dataclass(frozen=True)
class IntervalSchedule:
    """The ``hh:mm:ss`` (or ``d.hh:mm:ss``) form: every interval, counted from the previous run."""

    expression: str
    interval: timedelta

    def next_after(self, moment: datetime) -> datetime:
        return moment + self.interval


_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})$")


def parse_schedule(expression: str) -> CronSchedule | IntervalSchedule:
    match = _TIMESPAN.match(expression.strip())
    if match:
        days, hours, minutes, seconds = (int(group or 0) for group in match.groups())
        interval = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        if interval <= timedelta(0):
            raise ScheduleError(f"schedule interval {expression!r} must be positive")
        return IntervalSchedule(expression, interval)
    return CronSchedule.parse(expression.strip())
