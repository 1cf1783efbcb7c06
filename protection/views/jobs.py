from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from backupsite.core.models import AuditEvent, Job, JobKind, JobState
from backupsite.core.permissions import (
    Action,
    get_for_user,
    require,
    visible,
)
from backupsite.core.types import HtmxHttpRequest
from protection.models import ProtectionGroup

# htmx stops polling when a response has this status.
HTMX_STOP_POLLING = 286
PERIODS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}


@require_GET
def job_list(request: HtmxHttpRequest) -> HttpResponse:
    require(request, Action.VIEW)
    jobs = visible(request, Job.objects.select_related("vm", "host", "group", "requested_by"))
    filters = {
        "state": request.GET.get("state", ""),
        "kind": request.GET.get("kind", ""),
        "period": request.GET.get("period", ""),
        "q": request.GET.get("q", "").strip(),
        "group": request.GET.get("group", ""),
        "vm": request.GET.get("vm", ""),
    }
    if filters["state"] in JobState.values:
        jobs = jobs.filter(state=filters["state"])
    if filters["kind"] in JobKind.values:
        jobs = jobs.filter(kind=filters["kind"])
    if filters["period"] in PERIODS:
        jobs = jobs.filter(created__gte=timezone.now() - PERIODS[filters["period"]])
    if filters["group"].isdigit():
        jobs = jobs.filter(group_id=int(filters["group"]))
    if filters["vm"].isdigit():
        jobs = jobs.filter(vm_id=int(filters["vm"]))
    if filters["q"]:
        jobs = jobs.filter(vm__name__icontains=filters["q"]) | jobs.filter(
            group__name__icontains=filters["q"]
        )
    page = Paginator(jobs, 50).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "filters": filters,
        "states": JobState.choices,
        "groups": visible(request, ProtectionGroup.objects.only("pk", "name")),
        "kinds": JobKind.choices,
        "periods": list(PERIODS),
        "any_active": any(not job.is_finished for job in page.object_list),
    }
    if request.htmx and not request.htmx.boosted:
        return render(request, "protection/job_list.html#job-table", context)
    return render(request, "protection/job_list.html", context)


@require_GET
def job_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    job = get_for_user(request, Job.objects.select_related("vm", "host", "group", "datastore"), pk=pk)
    context = {"job": job}
    if request.htmx and not request.htmx.boosted:
        status = HTMX_STOP_POLLING if job.is_finished else 200
        return render(request, "protection/job_detail.html#job-status", context, status=status)
    return render(request, "protection/job_detail.html", context)


@require_POST
def job_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_for_user(request, Job.objects.all(), pk=pk)
    # Recovery operators may stop their recoveries; protection jobs need a backup role.
    require(request, Action.RECOVER if job.kind == JobKind.RECOVERY else Action.PROTECT)
    if job.request_cancel():
        AuditEvent.record("job.cancel", request=request, obj=job)
        messages.success(request, f"Cancellation of job #{job.pk} requested.")
    else:
        messages.info(request, f"Job #{job.pk} has already finished.")
    return redirect(job)
