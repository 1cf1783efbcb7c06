"""The job list's filters, read from the query string with django-filter.

A value that does not clean (an unknown state, a period not offered, an id that is
not a positive 64-bit number) is dropped, as if the filter were not set: a hand-edited
or stale URL shows the unfiltered list instead of an error page, and never sends an
out-of-range number to the database.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import django_filters
from django import forms
from django.db.models import Q, QuerySet
from django.utils import timezone

from backupsite.core.models import Job, JobKind, JobState

PERIODS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
# Primary keys are BigAutoFields: a signed 64-bit integer.
MAX_ID = 2**63 - 1


class IdFilter(django_filters.NumberFilter):
    """A row id: a whole number from 1 to MAX_ID (NumberFilter alone takes any decimal)."""

    field_class = forms.IntegerField

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(*args, **kwargs)


class JobFilterSet(django_filters.FilterSet):
    state = django_filters.ChoiceFilter(choices=JobState.choices)
    kind = django_filters.ChoiceFilter(choices=JobKind.choices)
    period = django_filters.ChoiceFilter(
        choices=[(name, f"Last {name}") for name in PERIODS], method="filter_period"
    )
    group = IdFilter(field_name="group_id")
    vm = IdFilter(field_name="vm_id")
    q = django_filters.CharFilter(method="filter_name")

    class Meta:
        model = Job
        fields = ["state", "kind", "period", "group", "vm", "q"]

    def filter_period(self, queryset: QuerySet[Job], name: str, value: str) -> QuerySet[Job]:
        return queryset.filter(created__gte=timezone.now() - PERIODS[value])

    def filter_name(self, queryset: QuerySet[Job], name: str, value: str) -> QuerySet[Job]:
        text = value.strip()
        if not text:
            return queryset
        return queryset.filter(Q(vm__name__icontains=text) | Q(group__name__icontains=text))
