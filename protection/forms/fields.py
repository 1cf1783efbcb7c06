"""Form fields for schedules: times of day kept as "HH:MM" strings, days as 0..6.

The policy stores schedules as JSON lists, so the fields clean to exactly what is
stored, and the same strings come back into the inputs when a step is shown again.
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from backupsite.core.timeofday import format_time_of_day, parse_time_of_day

DAYS_OF_WEEK = [
    (0, "Monday"),
    (1, "Tuesday"),
    (2, "Wednesday"),
    (3, "Thursday"),
    (4, "Friday"),
    (5, "Saturday"),
    (6, "Sunday"),
]
DAY_NAMES = dict(DAYS_OF_WEEK)


def clean_time_of_day(text: str) -> str:
    """'8:05' -> '08:05', the form schedules store; anything else is refused."""
    try:
        return format_time_of_day(parse_time_of_day(text))
    except ValueError:
        raise ValidationError(
            "“%(value)s” is not a time of day: use HH:MM, for example 21:00.",
            code="invalid_time",
            params={"value": text.strip()},
        ) from None


class TimeOfDayField(forms.CharField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("widget", forms.TextInput(attrs={"placeholder": "HH:MM", "inputmode": "numeric"}))
        kwargs.setdefault("max_length", 5)
        super().__init__(**kwargs)

    def clean(self, value: Any) -> str:
        text = super().clean(value)
        return clean_time_of_day(text) if text else ""


class TimeListField(forms.CharField):
    """Several times of day in one input, separated by commas or spaces."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("widget", forms.TextInput(attrs={"placeholder": "e.g. 08:00, 20:00"}))
        kwargs.setdefault("max_length", 400)
        super().__init__(**kwargs)

    def clean(self, value: Any) -> list[str]:  # type: ignore[override]
        text = super().clean(value)
        times = {clean_time_of_day(part) for part in re.split(r"[,\s;]+", text or "") if part}
        return sorted(times)


class DaysField(forms.TypedMultipleChoiceField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            choices=DAYS_OF_WEEK, coerce=int, widget=forms.CheckboxSelectMultiple, empty_value=[], **kwargs
        )

    def clean(self, value: Any) -> list[int]:  # type: ignore[override]
        return sorted(set(super().clean(value)))


def describe_schedule(times: list[str], days: list[int]) -> str:
    """'20:00 on Monday, Friday' for pages; 'every day' reads better than seven names."""
    if not times or not days:
        return "not scheduled"
    when = ", ".join(times)
    if len(set(days)) == 7:
        return f"{when} every day"
    return f"{when} on {', '.join(DAY_NAMES[day] for day in sorted(set(days)))}"
