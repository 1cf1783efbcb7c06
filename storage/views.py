from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from backupsite.permissions import Action, get_for_user, require, visible
from storage.models import Datastore


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
    }
    return render(request, "storage/datastore_detail.html", context)
