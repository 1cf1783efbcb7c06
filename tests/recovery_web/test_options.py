"""Recovery options -> the Throttle the engine and the item-level copy are given."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from recovery.services.options import build_throttle, describe_throttle, mbps_to_bytes


def test_no_throttle_means_none() -> None:
    assert build_throttle({}) is None
    assert build_throttle({"throttle": "none"}) is None
    assert describe_throttle({}) == "Not throttled"


def test_single_rate_in_megabits() -> None:
    throttle = build_throttle({"throttle": "rate", "rate_mbps": 80})
    assert throttle is not None and throttle.rate == 10_000_000
    assert mbps_to_bytes(8) == 1_000_000 and mbps_to_bytes(0) is None
    assert describe_throttle({"throttle": "rate", "rate_mbps": 80}) == "80 Mbit/s"


def test_work_hours_schedule(settings) -> None:  # type: ignore[no-untyped-def]
    settings.TIME_ZONE = "Europe/Amsterdam"
    options = {
        "throttle": "schedule",
        "work_rate_mbps": 8,
        "off_rate_mbps": None,
        "work_start": "08:00",
        "work_end": "18:00",
        "work_days": [0, 1, 2, 3, 4],
    }
    throttle = build_throttle(options)
    assert throttle is not None
    monday_noon = datetime(2025, 11, 24, 11, 0, tzinfo=UTC)  # 12:00 in Amsterdam
    saturday = datetime(2025, 11, 29, 11, 0, tzinfo=UTC)
    monday_night = datetime(2025, 11, 24, 20, 0, tzinfo=UTC)
    assert throttle.rate_at(monday_noon) == 1_000_000
    assert throttle.rate_at(saturday) is None and throttle.rate_at(monday_night) is None
    text = describe_throttle(options)
    assert "8 Mbit/s during work hours" in text and "Mon, Tue, Wed, Thu, Fri" in text
    assert "unthrottled outside them" in text


def test_bad_schedule_is_refused() -> None:
    with pytest.raises(ValueError):
        build_throttle(
            {"throttle": "schedule", "work_rate_mbps": 8, "work_start": "09:00", "work_end": "09:00"}
        )
