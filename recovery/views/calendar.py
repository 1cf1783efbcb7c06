"""A VM's recovery points as a month calendar; clicking a day lists that day's points."""

from __future__ import annotations

import calendar as cal
from datetime import date, datetime, time, timedelta

from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from backupsite.core.permissions import get_for_user
from backupsite.core.types import HtmxHttpRequest
from protection.models import RecoveryPoint, VirtualMachine


def _parse_month(text: str, fallback: date) -> date:
    try:
        year, month = (int(part) for part in text.split("-", 1))
        return date(year, month, 1)
    except (ValueError, TypeError):
        return fallback.replace(day=1)


def _local_range(first: date, last: date) -> tuple[datetime, datetime]:
    zone = timezone.get_current_timezone()
    return (
        datetime.combine(first, time.min, tzinfo=zone),
        datetime.combine(last + timedelta(days=1), time.min, tzinfo=zone),
    )


@require_GET
def vm_calendar(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    vm = get_for_user(request, VirtualMachine.objects.select_related("host", "data_source__group"), pk=pk)
    points = vm.recovery_points.filter(deleted_at__isnull=True)
    latest = points.order_by("-created").first()
    today = timezone.localdate()
    month = _parse_month(
        request.GET.get("month", ""), timezone.localdate(latest.created) if latest else today
    )
    days_in_month = cal.monthrange(month.year, month.month)[1]
    start, end = _local_range(month, month.replace(day=days_in_month))
    counts: dict[date, int] = {}
    for created in points.filter(created__gte=start, created__lt=end).values_list("created", flat=True):
        day = timezone.localdate(created)
        counts[day] = counts.get(day, 0) + 1
    weeks = [
        [{"date": d, "in_month": d.month == month.month, "count": counts.get(d, 0)} for d in week]
        for week in cal.Calendar(firstweekday=0).monthdatescalendar(month.year, month.month)
    ]
    previous = (month - timedelta(days=1)).replace(day=1)
    following = (month + timedelta(days=32)).replace(day=1)
    selected = request.GET.get("day", "")
    context = {
        "vm": vm,
        "month": month,
        "weeks": weeks,
        "previous": previous,
        "following": following,
        "weekday_names": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
        "point_total": points.count(),
        "latest": latest,
        "today": today,
        "month_total": sum(counts.values()),
    }
    if selected:
        context |= _day_context(vm, selected)
    if request.htmx and not request.htmx.boosted:
        return render(request, "recovery/calendar.html#month", context)
    return render(request, "recovery/calendar.html", context)


def _day_context(vm: VirtualMachine, day_text: str) -> dict[str, object]:
    try:
        day = date.fromisoformat(day_text)
    except ValueError:
        raise Http404("No such day") from None
    start, end = _local_range(day, day)
    day_points: list[RecoveryPoint] = list(
        vm.recovery_points.filter(deleted_at__isnull=True, created__gte=start, created__lt=end)
        .select_related("datastore")
        .order_by("created")
    )
    return {"day": day, "day_points": day_points}


@require_GET
def day_points(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    vm = get_for_user(request, VirtualMachine.objects.all(), pk=pk)
    context = {"vm": vm, **_day_context(vm, request.GET.get("date", ""))}
    if request.htmx and not request.htmx.boosted:
        return render(request, "recovery/calendar.html#day", context)
    # Without htmx the day is shown in its month, so the page still works without JavaScript.
    url = reverse("recovery:vm", args=[vm.pk])
    return redirect(f"{url}?month={context['day']:%Y-%m}&day={context['day']:%Y-%m-%d}")
