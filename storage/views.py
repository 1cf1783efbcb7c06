from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from backupsite.core.models import AuditEvent, JobKind
from backupsite.core.permissions import (
    Action,
    get_for_user,
    require,
    visible,
)
from storage.maintenance import submit_now
from storage.models import Datastore

MAINTENANCE = {"verify": JobKind.VERIFY, "gc": JobKind.GARBAGE_COLLECTION}


@require_GET
def datastore_list(request: HttpRequest) -> HttpResponse:
    require(request, Action.VIEW)
    datastores = visible(request, Datastore.objects.all())
    rows = [(datastore, datastore.disk_space()) for datastore in datastores]
    return render(request, "storage/datastore_list.html", {"rows": rows})


@require_GET
def datastore_detail(request: HttpRequest, pk: int) -> HttpResponse:
    datastore = get_for_user(request, Datastore.objects.all(), pk=pk)
    context = {
        "datastore": datastore,
        "space": datastore.disk_space(),
        "groups": datastore.protection_groups.all(),
        "recovery_points": datastore.recovery_points.select_related("vm")[:50],
        "jobs": datastore.jobs.all()[:20],
        "damaged_points": datastore.recovery_points.filter(damaged=True, deleted_at__isnull=True).count(),
        "missing_points": datastore.recovery_points.filter(missing=True, deleted_at__isnull=True).count(),
    }
    return render(request, "storage/datastore_detail.html", context)


@require_POST
def datastore_maintenance(request: HttpRequest, pk: int, task: str) -> HttpResponse:
    """Verify now / Collect garbage now (administrators)."""
    datastore = get_for_user(request, Datastore.objects.all(), Action.MANAGE, pk=pk)
    kind = MAINTENANCE.get(task)
    if kind is None:
        return render(request, "errors/404.html", status=404)
    job = submit_now(kind, datastore, request.user)
    AuditEvent.record(f"datastore.{task}", request=request, obj=datastore, job=job.pk)
    messages.success(request, f"{job.get_kind_display()} of {datastore}: job #{job.pk}.")
    return redirect(datastore)
