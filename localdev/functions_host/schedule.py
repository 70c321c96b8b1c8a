"""Timer trigger schedules: NCRONTAB (six fields, seconds first) on the local wall clock, and
TimeSpan intervals."""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Mapping

from localdev.functions_host.config import HostConfigError, parse_duration

_MONTH_NAMES = {n.upper(): i for i, n in enumerate(calendar.month_abbr) if n}
_DAY_NAMES = {"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}


class CronSchedule:
    """An NCRONTAB expression as the Functions timer trigger reads it.

    Six fields ``second minute hour day month day-of-week`` (five fields are taken as having
    second 0, as the host does). Each field is ``*``, a value, a range ``a-b``, a step
    ``*/n`` / ``a-b/n`` / ``a/n``, or a comma list of those; months and days of week may be
    named (JAN, MON). Day of week runs 0 (Sunday) to 6. Like NCrontab, a time must match the
    day-of-month AND the day-of-week fields. Times are the local wall clock, second resolution.
    """

    _FIELDS = (
        ("second", 0, 59, None),
        ("minute", 0, 59, None),
        ("hour", 0, 23, None),
        ("day", 1, 31, None),
        ("month", 1, 12, _MONTH_NAMES),
        ("day-of-week", 0, 6, _DAY_NAMES),
    )

    def __init__(self, expression: str) -> None:
        self.expression = expression
        parts = expression.split()
        if len(parts) == 5:
            parts = ["0", *parts]
        if len(parts) != 6:
            raise HostConfigError(
                f"schedule {expression!r}: an NCRONTAB expression has six fields "
                "(second minute hour day month day-of-week)"
            )
        sets = [self._parse_field(text, *spec) for text, spec in zip(parts, self._FIELDS, strict=True)]
        self.seconds, self.minutes, self.hours, self.days, self.months, self.days_of_week = sets

    def _parse_field(
        self, text: str, name: str, low: int, high: int, names: Mapping[str, int] | None
    ) -> frozenset[int]:
        def value(token: str) -> int:
            upper = token.upper()
            if names and upper in names:
                return names[upper]
            if not token.isdigit():
                raise HostConfigError(f"schedule {self.expression!r}: {token!r} is not a valid {name}")
            number = int(token)
            if not low <= number <= high:
                raise HostConfigError(f"schedule {self.expression!r}: {name} {number} is outside {low}-{high}")
            return number

        result: set[int] = set()
        for item in text.split(","):
            if not item:
                raise HostConfigError(f"schedule {self.expression!r}: empty list item in the {name} field")
            base, _, step_text = item.partition("/")
            step = 1
            if step_text:
                if not step_text.isdigit() or int(step_text) == 0:
                    raise HostConfigError(f"schedule {self.expression!r}: bad step {step_text!r} in {name}")
                step = int(step_text)
            if base == "*":
                start, end = low, high
            elif "-" in base:
                first, _, last = base.partition("-")
                start, end = value(first), value(last)
                if start > end:
                    raise HostConfigError(f"schedule {self.expression!r}: range {base!r} runs backwards")
            else:
                start = value(base)
                end = high if step_text else start
            result.update(range(start, end + 1, step))
        return frozenset(result)

    def next_after(self, after: dt.datetime) -> dt.datetime:
        """The first matching time strictly after ``after`` (naive or aware; same kind back)."""
        t = after.replace(microsecond=0) + dt.timedelta(seconds=1)
        limit_year = t.year + 5
        while t.year <= limit_year:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0, second=0) + dt.timedelta(days=32)).replace(day=1)
                continue
            if t.day not in self.days or (t.weekday() + 1) % 7 not in self.days_of_week:
                t = t.replace(hour=0, minute=0, second=0) + dt.timedelta(days=1)
                continue
            if t.hour not in self.hours:
                t = t.replace(minute=0, second=0) + dt.timedelta(hours=1)
                continue
            if t.minute not in self.minutes:
                t = t.replace(second=0) + dt.timedelta(minutes=1)
                continue
            if t.second not in self.seconds:
                t += dt.timedelta(seconds=1)
                continue
            return t
        raise HostConfigError(f"schedule {self.expression!r} never fires")

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r})"


class IntervalSchedule:
    """A TimeSpan schedule (``"00:05:00"``): every interval, counted from the previous tick."""

    def __init__(self, expression: str, interval: float) -> None:
        if interval <= 0:
            raise HostConfigError(f"schedule {expression!r}: the interval must be positive")
        self.expression = expression
        self.interval = interval

    def next_after(self, after: dt.datetime) -> dt.datetime:
        return after + dt.timedelta(seconds=self.interval)

    def __repr__(self) -> str:
        return f"IntervalSchedule({self.expression!r})"


def parse_schedule(expression: str) -> CronSchedule | IntervalSchedule:
    """A timer trigger's schedule: NCRONTAB, or a TimeSpan such as ``"00:05:00"``."""
    text = expression.strip()
    if ":" in text and len(text.split()) == 1:
        return IntervalSchedule(text, parse_duration(text, what=f"schedule {expression!r}"))
    return CronSchedule(text)
