from __future__ import annotations

from django.db.models import Count, Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from backupsite.permissions import Action, get_for_user, require, visible
from protection.models import Host, Job, ProtectionGroup, RecoveryPoint, VirtualMachine


@require_GET
def protection_overview(request: HttpRequest) -> HttpResponse:
    require(request, Action.VIEW)
    machines = VirtualMachine.objects.present().select_related("data_source__group")
    hosts = visible(request, Host.objects.select_related("cluster")).prefetch_related(
        Prefetch("virtual_machines", queryset=machines)
    )
    groups = visible(request, ProtectionGroup.objects.select_related("datastore")).annotate(
        member_count=Count("members")
    )
    return render(request, "protection/overview.html", {"hosts": hosts, "groups": groups})


@require_GET
def host_detail(request: HttpRequest, pk: int) -> HttpResponse:
    host = get_for_user(request, Host.objects.select_related("cluster"), pk=pk)
    machines = host.virtual_machines.present().select_related("data_source__group")
    jobs = host.jobs.all()[:20]
    return render(request, "protection/host_detail.html", {"host": host, "machines": machines, "jobs": jobs})


@require_GET
def vm_detail(request: HttpRequest, pk: int) -> HttpResponse:
    vm = get_for_user(
        request, VirtualMachine.objects.select_related("host", "cluster", "data_source__group"), pk=pk
    )
    context = {
        "vm": vm,
        "disks": vm.disks.all(),
        "recovery_points": vm.recovery_points.filter(deleted_at__isnull=True)[:50],
        "jobs": vm.jobs.all()[:20],
    }
    return render(request, "protection/vm_detail.html", context)


@require_GET
def group_detail(request: HttpRequest, pk: int) -> HttpResponse:
    group = get_for_user(request, ProtectionGroup.objects.select_related("datastore"), pk=pk)
    members = group.members.select_related("vm__host")
    points = RecoveryPoint.objects.filter(group=group).select_related("vm")[:50]
    jobs = Job.objects.filter(group=group)[:20]
    context = {"group": group, "members": members, "recovery_points": points, "jobs": jobs}
    return render(request, "protection/group_detail.html", context)
