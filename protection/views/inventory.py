from __future__ import annotations

from django.contrib import messages
from django.db.models import Count, Prefetch
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from backupsite.core.models import JobKind
from backupsite.core.permissions import (
    Action,
    get_for_user,
    require,
    visible,
)
from protection.forms.actions import StopProtectionForm, VMJobForm
from protection.models import Host, ProtectionGroup, VirtualMachine
from protection.services import groups as group_service
from protection.services.hosts import vm_prerequisites

VM_ACTIONS = [
    (JobKind.RECOVERY_POINT, "Create recovery point now"),
    (JobKind.SYNCHRONIZATION, "Synchronize now"),
    (JobKind.CONSISTENCY_CHECK, "Perform consistency check"),
    (JobKind.EXPRESS_FULL, "Express full backup"),
]


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
def vm_detail(request: HttpRequest, pk: int) -> HttpResponse:
    vm = get_for_user(
        request, VirtualMachine.objects.select_related("host", "cluster", "data_source__group"), pk=pk
    )
    context = {
        "vm": vm,
        "disks": vm.disks.all(),
        "prerequisites": vm_prerequisites(vm) if vm.removed_at is None else None,
        "recovery_points": vm.recovery_points.filter(deleted_at__isnull=True)[:50],
        "jobs": vm.jobs.all()[:20],
        "vm_actions": VM_ACTIONS,
        "stop_form": StopProtectionForm(),
    }
    return render(request, "protection/vm_detail.html", context)


@require_POST
def vm_run_job(request: HttpRequest, pk: int) -> HttpResponse:
    vm = get_for_user(request, VirtualMachine.objects.all(), Action.PROTECT, pk=pk)
    form = VMJobForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest("Unknown backup kind.")
    try:
        job = group_service.run_vm_job(vm, form.cleaned_data["kind"], request.user, request=request)
    except group_service.ProtectionError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"{job.get_kind_display()} of {vm} submitted (job #{job.pk}).")
    return redirect(vm)


@require_POST
def vm_stop_protection(request: HttpRequest, pk: int) -> HttpResponse:
    vm = get_for_user(request, VirtualMachine.objects.all(), Action.PROTECT, pk=pk)
    form = StopProtectionForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest("Choose whether to keep or delete the recovery points.")
    try:
        job = group_service.stop_vm_protection(vm, form.keep_data, request.user, request=request)
    except group_service.ProtectionError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Stopping the protection of {vm} (job #{job.pk}).")
    return redirect(vm)
