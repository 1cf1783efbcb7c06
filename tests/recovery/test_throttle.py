"""Recovery bandwidth throttling: token bucket, work-hours schedule, validation."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from datetime import time as time_of_day
from zoneinfo import ZoneInfo

import pytest

from recovery.throttle import RateSchedule, Throttle, WorkHours

MiB = 1024 * 1024
AMS = ZoneInfo("Europe/Amsterdam")


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self.t

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.t += timedelta(seconds=seconds)

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)

    @property
    def slept(self) -> float:
        return sum(self.sleeps)


def local(year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=AMS).astimezone(UTC)


def make(clock: FakeClock, *args: object, **kwargs: object) -> Throttle:
    return Throttle(*args, now=clock.now, sleep=clock.sleep, **kwargs)  # type: ignore[arg-type]


def office() -> WorkHours:
    return WorkHours.parse("08:00", "18:00", ["mon", "tue", "wed", "thu", "fri"], "Europe/Amsterdam")


def test_single_rate_holds_the_average() -> None:
    clock = FakeClock(datetime(2024, 1, 1, tzinfo=UTC))
    t = make(clock, 1 * MiB)
    for _ in range(8):
        t(256 * 1024)
    assert clock.slept == pytest.approx(2.0, abs=1e-3)
    assert t.slept == pytest.approx(2.0, abs=1e-3)


def test_time_spent_writing_counts() -> None:
    clock = FakeClock(datetime(2024, 1, 1, tzinfo=UTC))
    t = make(clock, 1 * MiB)
    for _ in range(4):
        clock.advance(0.2)  # the write itself took 0.2 s of the 0.25 s the bytes are worth
        t(256 * 1024)
    # The first write finds an empty bucket that the 0.2 s refilled only at the next call.
    assert clock.slept == pytest.approx(4 * 0.25 - 3 * 0.2, abs=1e-3)


def test_small_burst_after_a_pause() -> None:
    clock = FakeClock(datetime(2024, 1, 1, tzinfo=UTC))
    t = make(clock, 1 * MiB, burst_seconds=0.25)
    t(1)  # starts the bucket
    clock.advance(60)  # a long pause refills at most 0.25 s worth
    before = clock.slept
    t(256 * 1024)
    assert clock.slept == pytest.approx(before, abs=1e-3)
    t(256 * 1024)
    assert clock.slept - before == pytest.approx(0.25, abs=1e-3)


@pytest.mark.parametrize("rate", [None, 0, 0.0])
def test_unthrottled(rate: float | None) -> None:
    clock = FakeClock(datetime(2024, 1, 1, tzinfo=UTC))
    t = make(clock, rate)
    for _ in range(100):
        t(100 * MiB)
    assert clock.sleeps == [] and t.unthrottled


def test_schedule_picks_the_rate_in_force() -> None:
    sched = RateSchedule(1 * MiB, 10 * MiB, office())
    assert sched.rate_at(local(2024, 6, 3, 10, 0)) == 1 * MiB  # Monday 10:00
    assert sched.rate_at(local(2024, 6, 3, 7, 59)) == 10 * MiB
    assert sched.rate_at(local(2024, 6, 3, 18, 0)) == 10 * MiB  # the end is exclusive
    assert sched.rate_at(local(2024, 6, 3, 8, 0)) == 1 * MiB
    assert sched.rate_at(local(2024, 6, 8, 10, 0)) == 10 * MiB  # Saturday
    # 10:00 UTC is 12:00 in Amsterdam in summer: the zone matters
    assert sched.rate_at(datetime(2024, 6, 3, 17, 30, tzinfo=UTC)) == 10 * MiB
    unthrottled_nights = RateSchedule(1 * MiB, None, office())
    assert unthrottled_nights.rate_at(local(2024, 6, 3, 23, 0)) is None


def test_rate_changes_in_the_middle_of_a_long_wait() -> None:
    clock = FakeClock(local(2024, 6, 3, 17, 59, 59))  # Monday, one second before work hours end
    t = make(clock, schedule=RateSchedule(1 * MiB, 10 * MiB, office()))
    t(10 * MiB)
    # 1 s at 1 MiB/s, then the remaining 9 MiB at 10 MiB/s: 1.9 s, not 10 s.
    assert clock.slept == pytest.approx(1.9, abs=0.01)
    assert t.current_rate() == 10 * MiB


def test_into_an_unthrottled_period_stops_waiting() -> None:
    clock = FakeClock(local(2024, 6, 3, 17, 59, 58))
    t = make(clock, schedule=RateSchedule(1 * MiB, None, office()))
    t(100 * MiB)
    assert clock.slept == pytest.approx(2.0, abs=0.01)
    t(100 * MiB)
    assert clock.slept == pytest.approx(2.0, abs=0.01)


def test_work_hours_start_slows_down() -> None:
    clock = FakeClock(local(2024, 6, 3, 7, 59, 59))
    t = make(clock, schedule=RateSchedule(1 * MiB, 10 * MiB, office()))
    t(20 * MiB)  # 10 MiB in the first second, the other 10 MiB at 1 MiB/s
    assert clock.slept == pytest.approx(11.0, abs=0.01)


def test_overnight_window_belongs_to_the_day_it_starts() -> None:
    night = WorkHours.parse("22:00", "06:00", [4], "UTC")  # Friday night
    assert night.contains(datetime(2024, 6, 7, 23, 0, tzinfo=UTC))  # Friday 23:00
    assert night.contains(datetime(2024, 6, 8, 3, 0, tzinfo=UTC))  # Saturday 03:00
    assert not night.contains(datetime(2024, 6, 8, 23, 0, tzinfo=UTC))  # Saturday 23:00
    assert not night.contains(datetime(2024, 6, 7, 3, 0, tzinfo=UTC))  # Friday 03:00 (Thursday's night)
    assert night.next_change(datetime(2024, 6, 7, 12, 0, tzinfo=UTC)) == datetime(
        2024, 6, 7, 22, 0, tzinfo=UTC
    )
    assert night.next_change(datetime(2024, 6, 7, 22, 0, tzinfo=UTC)) == datetime(
        2024, 6, 8, 6, 0, tzinfo=UTC
    )


def test_daylight_saving_time() -> None:
    hours = office()
    # 2024-03-31: clocks in Amsterdam go from 02:00 to 03:00; Monday 1 April 08:00 CEST = 06:00 UTC.
    assert hours.contains(datetime(2024, 4, 1, 6, 0, tzinfo=UTC))
    assert not hours.contains(datetime(2024, 4, 1, 5, 59, tzinfo=UTC))
    assert hours.next_change(datetime(2024, 3, 30, 12, 0, tzinfo=UTC)) == datetime(
        2024, 4, 1, 6, 0, tzinfo=UTC
    )
    winter = WorkHours.parse("08:00", "18:00", [0], AMS)
    assert winter.contains(datetime(2024, 1, 1, 7, 0, tzinfo=UTC))  # 08:00 CET


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": -1}, "positive number"),
        ({"rate": float("nan")}, "positive number"),
        ({"rate": float("inf")}, "positive number"),
        ({"rate": "fast"}, "number of bytes per second"),
        ({"rate": True}, "number of bytes per second"),
        ({"burst_seconds": -1}, "between 0 and 60"),
    ],
)
def test_bad_throttle_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Throttle(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("08:00", "08:00", [0], "UTC"), "must differ"),
        (("25:00", "18:00", [0], "UTC"), "HH:MM"),
        ((8, "18:00", [0], "UTC"), "time of day"),
        (("08:00", "18:00", [], "UTC"), "at least one weekday"),
        (("08:00", "18:00", [7], "UTC"), "not 0-6"),
        (("08:00", "18:00", ["funday"], "UTC"), "not 0-6"),
        (("08:00", "18:00", "mon", "UTC"), "must be a list"),
        (("08:00", "18:00", [0], "Mars/Olympus_Mons"), "unknown time zone"),
        (("08:00", "18:00", [0], ""), "time zone must be"),
        ((time_of_day(8, 0, tzinfo=UTC), "18:00", [0], "UTC"), "without a time zone"),
        (("08:00+01:00", "18:00", [0], "UTC"), "HH:MM"),
    ],
)
def test_bad_work_hours(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WorkHours.parse(*args)  # type: ignore[arg-type]


def test_bad_schedule_values() -> None:
    with pytest.raises(ValueError, match="work-hours rate"):
        RateSchedule(-5, None, office())
    with pytest.raises(ValueError, match="non-work-hours rate"):
        RateSchedule(None, "x", office())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="either a single rate or a schedule"):
        Throttle(1 * MiB, schedule=RateSchedule(1, 2, office()))
    t = Throttle(1 * MiB, now=lambda: datetime(2024, 1, 1))  # naive on purpose
    with pytest.raises(ValueError, match="aware datetimes"):
        t(10)


@pytest.mark.slow
def test_real_time_two_mib_at_one_mib_per_second() -> None:
    t = Throttle(1 * MiB)
    start = time.monotonic()
    for _ in range(32):
        t(64 * 1024)
    elapsed = time.monotonic() - start
    assert elapsed == pytest.approx(2.0, rel=0.2)
