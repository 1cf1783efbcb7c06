from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from backupsite.core.models import AuditEvent, Job, JobState
from backupsite.core.permissions import Action, require, visible
from protection.models import Alert, RecoveryPoint, VirtualMachine
from storage.models import Datastore


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    require(request, Action.VIEW)
    since = timezone.now() - timedelta(hours=24)
    jobs = visible(request, Job.objects.all())
    by_state = dict(
        jobs.since(since).values_list("state").annotate(count=Count("pk")).values_list("state", "count")
    )
    job_counts = [(state, label, by_state.get(state, 0)) for state, label in JobState.choices]
    context = {
        "protected_vm_count": visible(request, VirtualMachine.objects.present().protected()).count(),
        "vm_count": visible(request, VirtualMachine.objects.present()).count(),
        "job_counts": job_counts,
        "recovery_point_count": visible(request, RecoveryPoint.objects.usable()).count(),
        "storage_used_bytes": visible(request, Datastore.objects.all()).total_used_bytes(),
        "datastore_count": visible(request, Datastore.objects.all()).count(),
        "active_jobs": jobs.active().select_related("vm", "host", "group")[:10],
        "recent_failures": jobs.since(since).filter(state=JobState.FAILED).select_related("vm")[:10],
        "alerts": visible(request, Alert.objects.active().select_related("vm", "group", "host", "datastore"))[
            :20
        ],
    }
    return render(request, "backupsite/home.html", context)


@require_GET
def management(request: HttpRequest) -> HttpResponse:
    require(request, Action.VIEW)
    users = get_user_model().objects.prefetch_related("groups").order_by("username")
    events = AuditEvent.objects.all()[:100]
    return render(request, "backupsite/management.html", {"users": users, "events": events})


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return render(request, "errors/404.html", status=404)


def forbidden(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return render(request, "errors/403.html", {"reason": str(exception or "")}, status=403)


def server_error(request: HttpRequest) -> HttpResponse:
    return render(request, "errors/500.html", status=500)
