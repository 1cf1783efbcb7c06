from __future__ import annotations

from django.db.models import Count, Max, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from backupsite.permissions import Action, require, visible
from protection.models import VirtualMachine


@require_GET
def recovery_overview(request: HttpRequest) -> HttpResponse:
    """Every VM that has recovery points, newest point first: where a recovery starts."""
    require(request, Action.VIEW)
    usable = Q(recovery_points__damaged=False, recovery_points__deleted_at__isnull=True)
    query = request.GET.get("q", "").strip()
    machines = (
        visible(request, VirtualMachine.objects.select_related("host"))
        .annotate(point_count=Count("recovery_points", filter=usable))
        .annotate(latest_point=Max("recovery_points__created", filter=usable))
        .filter(point_count__gt=0)
        .order_by("name")
    )
    if query:
        machines = machines.filter(name__icontains=query)
    return render(request, "recovery/overview.html", {"machines": machines, "query": query})
