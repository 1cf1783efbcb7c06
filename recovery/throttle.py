"""Bandwidth throttling for recovery writes: one rate, or a work-hours schedule.

A ``Throttle`` is the callable the engine's restore and item-level copy accept as
``throttle``: it is called with the number of bytes just written and sleeps long
enough to keep the average at the rate in force. MABS/DPM lets administrators
throttle recovery harder during work hours than at night, hence the schedule.
No Django imports: the recovery job builds one from the policy's settings.
"""

from __future__ import annotations

import math
import threading
import time as _time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from backupsite.core.timeofday import parse_time_of_day

Now = Callable[[], datetime]
Sleep = Callable[[float], None]

WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_BURST_SECONDS = 0.25
# Never sleep longer than this in one go, so a schedule change (or a clock that
# jumped) is noticed soon even inside a long wait.
MAX_SLEEP_SLICE = 5.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


def validate_rate(rate: object, what: str = "rate") -> float | None:
    """A rate in bytes per second; ``None`` or 0 mean unthrottled."""
    if rate is None:
        return None
    if isinstance(rate, bool) or not isinstance(rate, int | float):
        raise ValueError(f"{what} must be a number of bytes per second, not {rate!r}")
    if math.isnan(rate) or math.isinf(rate) or rate < 0:
        raise ValueError(
            f"{what} must be a positive number of bytes per second (0 = unthrottled), not {rate!r}"
        )
    return float(rate) if rate else None


def _parse_time(value: object, what: str) -> time:
    if isinstance(value, time):
        if value.tzinfo is not None:
            raise ValueError(f"{what} must be a time of day without a time zone (the schedule has one)")
        return value
    if isinstance(value, str):
        try:
            return parse_time_of_day(value)
        except ValueError:
            raise ValueError(f"{what} must look like HH:MM, not {value!r}") from None
    raise ValueError(f"{what} must be a time of day like '08:00', not {value!r}")


def _parse_weekdays(values: Iterable[int | str]) -> frozenset[int]:
    if isinstance(values, str | bytes):
        raise ValueError("weekdays must be a list such as [0, 1, 2, 3, 4] or ['mon', 'tue']")
    days: set[int] = set()
    for v in values:
        if isinstance(v, str) and v.strip().lower()[:3] in WEEKDAY_NAMES:
            days.add(WEEKDAY_NAMES.index(v.strip().lower()[:3]))
        elif isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 6:
            days.add(v)
        else:
            raise ValueError(f"weekday {v!r} is not 0-6 (Monday = 0) or a day name such as 'mon'")
    if not days:
        raise ValueError("work hours need at least one weekday")
    return frozenset(days)


def _parse_zone(value: object) -> ZoneInfo:
    if isinstance(value, ZoneInfo):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"time zone must be a name such as 'Europe/Amsterdam', not {value!r}")
    try:
        return ZoneInfo(value.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r} (use an IANA name such as 'Europe/Amsterdam')"
        ) from None


@dataclass(frozen=True)
class WorkHours:
    """Work hours: ``start`` to ``end`` (local time in ``zone``) on ``weekdays`` (Monday = 0).

    When ``end`` is before ``start`` the window runs past midnight and belongs to
    the weekday on which it starts (Friday 22:00-06:00 ends Saturday 06:00).
    """

    start: time
    end: time
    weekdays: frozenset[int]
    zone: ZoneInfo

    @classmethod
    def parse(
        cls,
        start: time | str,
        end: time | str,
        weekdays: Iterable[int | str] = (0, 1, 2, 3, 4),
        timezone: str | ZoneInfo = "UTC",
    ) -> WorkHours:
        s = _parse_time(start, "work hours start")
        e = _parse_time(end, "work hours end")
        if s == e:
            raise ValueError("work hours start and end must differ")
        return cls(s, e, _parse_weekdays(weekdays), _parse_zone(timezone))

    def contains(self, when: datetime) -> bool:
        local = _aware(when).astimezone(self.zone)
        t, day = local.time().replace(tzinfo=None), local.weekday()
        if self.start < self.end:
            return day in self.weekdays and self.start <= t < self.end
        return (day in self.weekdays and t >= self.start) or ((day - 1) % 7 in self.weekdays and t < self.end)

    def next_change(self, when: datetime) -> datetime:
        """The first start or end of work hours strictly after ``when`` (aware, UTC)."""
        when = _aware(when)
        local_day = when.astimezone(self.zone).date()
        best: datetime | None = None
        for offset in range(-1, 9):
            d = local_day + timedelta(days=offset)
            if d.weekday() not in self.weekdays:
                continue
            end_day = d if self.start < self.end else d + timedelta(days=1)
            for candidate in (
                _local_instant(d, self.start, self.zone),
                _local_instant(end_day, self.end, self.zone),
            ):
                if candidate > when and (best is None or candidate < best):
                    best = candidate
        assert best is not None  # some weekday starts a window within any 8 days
        return best


def _local_instant(d: date, t: time, zone: ZoneInfo) -> datetime:
    # A wall time skipped by a DST change maps to the instant just after the gap.
    return datetime.combine(d, t, tzinfo=zone).astimezone(UTC)


def _aware(when: datetime) -> datetime:
    if when.tzinfo is None:
        raise ValueError("the clock must return aware datetimes (e.g. datetime.now(UTC))")
    return when


@dataclass(frozen=True)
class RateSchedule:
    """``work_rate`` during work hours, ``off_rate`` outside them (bytes/s; None = unthrottled)."""

    work_rate: float | None
    off_rate: float | None
    hours: WorkHours

    def __post_init__(self) -> None:
        object.__setattr__(self, "work_rate", validate_rate(self.work_rate, "work-hours rate"))
        object.__setattr__(self, "off_rate", validate_rate(self.off_rate, "non-work-hours rate"))
        if not isinstance(self.hours, WorkHours):
            raise ValueError("hours must be a WorkHours (use WorkHours.parse)")

    def rate_at(self, when: datetime) -> float | None:
        return self.work_rate if self.hours.contains(when) else self.off_rate

    def next_change(self, when: datetime) -> datetime:
        return self.hours.next_change(when)


class Throttle:
    """Token bucket: call it with the bytes just written; it sleeps to hold the average rate.

    The bucket starts empty, so a transfer never beats the rate on average; while
    the writer pauses it refills up to ``burst_seconds`` worth of bytes. Under a
    schedule the rate in force is re-read as time passes, also in the middle of a
    long sleep, so crossing into non-work hours speeds the copy up at once.
    """

    def __init__(
        self,
        rate: float | None = None,
        *,
        schedule: RateSchedule | None = None,
        burst_seconds: float = DEFAULT_BURST_SECONDS,
        now: Now = _utcnow,
        sleep: Sleep = _time.sleep,
    ) -> None:
        if schedule is not None and rate is not None:
            raise ValueError("give either a single rate or a schedule, not both")
        if schedule is not None and not isinstance(schedule, RateSchedule):
            raise ValueError("schedule must be a RateSchedule")
        if isinstance(burst_seconds, bool) or not isinstance(burst_seconds, int | float):
            raise ValueError(f"burst_seconds must be a number, not {burst_seconds!r}")
        if not 0 <= burst_seconds <= 60 or math.isnan(burst_seconds):
            raise ValueError("burst_seconds must be between 0 and 60")
        self.rate = validate_rate(rate)
        self.schedule = schedule
        self.burst_seconds = float(burst_seconds)
        self._now = now
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = 0.0
        self._last: datetime | None = None
        self._last_rate: float | None = None
        self.slept = 0.0  # total seconds slept, for reports and tests

    def rate_at(self, when: datetime) -> float | None:
        return self.schedule.rate_at(when) if self.schedule is not None else self.rate

    def current_rate(self) -> float | None:
        return self.rate_at(_aware(self._now()))

    @property
    def unthrottled(self) -> bool:
        if self.schedule is None:
            return self.rate is None
        return self.schedule.work_rate is None and self.schedule.off_rate is None

    def _refill(self, now: datetime, rate: float | None) -> None:
        if rate != self._last_rate:
            # A new rate starts a fresh bucket: credit built at another rate must not
            # leak into this one.
            self._tokens = 0.0
            self._last_rate = rate
        elif self._last is not None and rate is not None:
            self._credit(now, rate)
        self._last = now

    def _credit(self, now: datetime, rate: float) -> None:
        elapsed = (now - self._last).total_seconds() if self._last is not None else 0.0
        if elapsed > 0:  # a clock that stepped back adds nothing
            self._tokens = min(self._tokens + elapsed * rate, rate * self.burst_seconds)
        self._last = now

    def __call__(self, nbytes: int) -> None:
        if nbytes <= 0 or self.unthrottled:
            return
        with self._lock:
            now = _aware(self._now())
            rate = self.rate_at(now)
            self._refill(now, rate)
            if rate is None:
                return
            self._tokens -= nbytes
            while self._tokens < 0:
                wait = -self._tokens / rate
                if wait < 1e-5:  # below the clock's resolution: waiting could never pay it off
                    self._tokens = 0.0
                    break
                if self.schedule is not None:
                    until_change = (self.schedule.next_change(now) - now).total_seconds()
                    wait = min(wait, max(until_change, 1e-3))
                wait = min(wait, MAX_SLEEP_SLICE)
                self._sleep(wait)
                self.slept += wait
                now = _aware(self._now())
                self._credit(now, rate)
                new_rate = self.rate_at(now)
                if new_rate != rate:
                    self._last_rate = new_rate
                    if new_rate is None:
                        self._tokens = 0.0
                        return
                    # What is still owed is counted in bytes, so it carries over to the new rate.
                    self._tokens = min(self._tokens, 0.0)
                    rate = new_rate
