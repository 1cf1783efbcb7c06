"""The one "HH:MM" parser shared by the scheduler, the wizard and the throttle."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest
from django.core.exceptions import ValidationError

from backupsite.core.timeofday import format_time_of_day, parse_time_of_day
from protection.forms.fields import TimeListField, TimeOfDayField
from protection.scheduler import latest_slot
from recovery.forms import OptionsForm
from recovery.throttle import WorkHours


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("00:00", time(0, 0)),
        ("08:05", time(8, 5)),
        ("8:05", time(8, 5)),
        ("23:59", time(23, 59)),
        ("  20:00 ", time(20, 0)),
        ("\t07:30\n", time(7, 30)),
    ],
)
def test_times_of_day_that_parse(text: str, expected: time) -> None:
    assert parse_time_of_day(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "24:00",  # midnight is 00:00, not the end of the day
        "23:60",
        "25:99",
        "7:5",  # 7:05 or 7:50: refused rather than guessed
        "123:00",
        "08:00:00",  # seconds are not part of a schedule
        "08:00+01:00",  # the schedule carries the zone, not the time
        "0800",
        "08 : 00",
        "8h00",
        "-1:00",
        "+8:00",
        "ab:cd",
        "\u0660\u0668:\u0660\u0660",  # Arabic-Indic digits: str.isdigit() says yes, int() too
        "",
        " ",
        "noon",
    ],
)
def test_times_of_day_that_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a time of day: use HH:MM"):
        parse_time_of_day(text)


def test_only_text_is_a_time_of_day() -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        parse_time_of_day(800)  # type: ignore[arg-type]


def test_format_is_zero_padded() -> None:
    assert format_time_of_day(parse_time_of_day("7:05")) == "07:05"


def test_wizard_fields_store_the_canonical_form() -> None:
    assert TimeOfDayField(required=False).clean(" 7:05 ") == "07:05"
    assert TimeListField().clean("20:00, 8:00; 08:00") == ["08:00", "20:00"]
    with pytest.raises(ValidationError, match="“24:00” is not a time of day"):
        TimeOfDayField().clean("24:00")


def test_scheduler_skips_values_the_parser_refuses() -> None:
    noon = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # a Wednesday
    assert latest_slot(["24:00", "7:5", " 08:00 "], [2], noon) == datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def test_work_hours_use_the_same_rules() -> None:
    hours = WorkHours.parse(" 8:00", "18:00 ", [0], "UTC")
    assert (hours.start, hours.end) == (time(8, 0), time(18, 0))
    for bad in ("24:00", "7:5", "08:00+01:00"):
        with pytest.raises(ValueError, match="work hours start must look like HH:MM"):
            WorkHours.parse(bad, "18:00", [0], "UTC")


def test_recovery_work_hours_form_uses_the_same_rules() -> None:
    posted = {"throttle": "schedule", "work_rate_mbps": "8", "work_days": ["0"], "work_end": "18:00"}
    form = OptionsForm({**posted, "work_start": " 8:00"})
    assert form.is_valid(), form.errors
    assert form.to_data()["work_start"] == "08:00"
    for bad in ("8:00:", "24:00", "7:5"):
        refused = OptionsForm({**posted, "work_start": bad})
        assert not refused.is_valid() and "is not a time of day" in refused.errors["work_start"][0]
    seconds = OptionsForm({**posted, "work_start": "08:00:30"})  # Django's TimeField took this
    assert not seconds.is_valid() and "work_start" in seconds.errors
