"""Recovery options as stored in a draft / job parameters, and the Throttle they make.

Rates are entered in Mbit/s because that is how network links are sized; the
engine and the item-level copy count bytes, so the conversion happens here once.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from recovery.throttle import RateSchedule, Throttle, WorkHours

BITS_PER_BYTE = 8
MEGABIT = 1_000_000
WEEKDAYS = [(0, "Mon"), (1, "Tue"), (2, "Wed"), (3, "Thu"), (4, "Fri"), (5, "Sat"), (6, "Sun")]
SAN_UNAVAILABLE = "no hardware snapshot provider is configured"


def mbps_to_bytes(mbps: float | None) -> float | None:
    """Mbit/s -> bytes/s; None or 0 mean unthrottled."""
    if not mbps:
        return None
    return float(mbps) * MEGABIT / BITS_PER_BYTE


def build_throttle(options: dict[str, Any]) -> Throttle | None:
    """The Throttle the options ask for, or None when the recovery runs at full speed."""
    mode = options.get("throttle", "none")
    if mode == "rate":
        rate = mbps_to_bytes(options.get("rate_mbps"))
        return Throttle(rate) if rate else None
    if mode == "schedule":
        hours = WorkHours.parse(
            options.get("work_start", "08:00"),
            options.get("work_end", "18:00"),
            options.get("work_days") or [0, 1, 2, 3, 4],
            settings.TIME_ZONE,
        )
        schedule = RateSchedule(
            mbps_to_bytes(options.get("work_rate_mbps")), mbps_to_bytes(options.get("off_rate_mbps")), hours
        )
        return Throttle(schedule=schedule)
    return None


def describe_throttle(options: dict[str, Any]) -> str:
    mode = options.get("throttle", "none")
    if mode == "rate" and options.get("rate_mbps"):
        return f"{options['rate_mbps']:g} Mbit/s"
    if mode == "schedule":
        days = ", ".join(name for number, name in WEEKDAYS if number in (options.get("work_days") or []))
        work = options.get("work_rate_mbps")
        off = options.get("off_rate_mbps")
        return (
            f"{f'{work:g} Mbit/s' if work else 'unthrottled'} during work hours "
            f"({options.get('work_start')}-{options.get('work_end')} on {days}, {settings.TIME_ZONE}), "
            f"{f'{off:g} Mbit/s' if off else 'unthrottled'} outside them"
        )
    return "Not throttled"
