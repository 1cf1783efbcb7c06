from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from backupsite.core.permissions import Action, require, visible
from protection.services.capacity import capacity_report
from storage.models import Datastore


@require_GET
def capacity_overview(request: HttpRequest) -> HttpResponse:
    """Read-only for every role: what each datastore and group needs, and when volumes fill."""
    require(request, Action.VIEW)
    report = capacity_report(visible(request, Datastore.objects.all()))
    return render(request, "protection/capacity.html", {"report": report})
