"""Find the VM to recover: type its name, or expand the protected items by group or host."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Max, Q, QuerySet
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from backupsite.core.permissions import Action, require, visible
from backupsite.core.types import HtmxHttpRequest
from protection.models import VirtualMachine
from recovery.forms import FindForm

MAX_RESULTS = 200


def recoverable_machines(request: HtmxHttpRequest) -> QuerySet[VirtualMachine]:
    """VMs with at least one usable recovery point, removed ones included: their points stay."""
    usable = Q(
        recovery_points__damaged=False,
        recovery_points__missing=False,
        recovery_points__deleted_at__isnull=True,
    )
    return (
        visible(request, VirtualMachine.objects.select_related("host", "cluster", "data_source__group"))
        .annotate(point_count=Count("recovery_points", filter=usable))
        .annotate(latest_point=Max("recovery_points__created", filter=usable))
        .filter(point_count__gt=0)
        .order_by("name")
    )


@require_GET
def recovery_overview(request: HtmxHttpRequest) -> HttpResponse:
    require(request, Action.VIEW)
    search = FindForm(request.GET)
    query = search.query()
    machines = recoverable_machines(request)
    found = machines.filter(name__icontains=query)[:MAX_RESULTS] if query else None
    context: dict[str, Any] = {"query": query, "found": found, "search_problem": search.problem()}
    if request.htmx and not request.htmx.boosted:
        return render(request, "recovery/overview.html#results", context)
    groups: dict[str, list[VirtualMachine]] = {}
    hosts: dict[str, list[VirtualMachine]] = {}
    for vm in machines:
        source = getattr(vm, "data_source", None)
        groups.setdefault(source.group.name if source is not None else "Not protected any more", []).append(
            vm
        )
        hosts.setdefault(vm.host.name, []).append(vm)
    context |= {"groups": sorted(groups.items()), "hosts": sorted(hosts.items()), "total": len(machines)}
    return render(request, "recovery/overview.html", context)
