from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from backupsite.core.models import Job
from backupsite.core.permissions import Action, get_for_user, require
from protection.forms.actions import StopProtectionForm
from protection.forms.fields import describe_schedule
from protection.models import ProtectionGroup, RecoveryPoint, ReplicaState
from protection.services import groups as group_service
from protection.services.capacity import group_report


@require_GET
def group_detail(request: HttpRequest, pk: int) -> HttpResponse:
    group = get_for_user(request, ProtectionGroup.objects.select_related("datastore", "created_by"), pk=pk)
    capacity, datastore_capacity = group_report(group)
    context = {
        "capacity": capacity,
        "datastore_capacity": datastore_capacity,
        "group": group,
        "members": group.members.select_related("vm__host").exclude(replica_state=ReplicaState.STOPPED),
        "recovery_point_schedule": describe_schedule(group.recovery_point_times, group.recovery_point_days),
        "express_full_schedule": describe_schedule(group.express_full_times, group.express_full_days),
        "recovery_points": RecoveryPoint.objects.filter(group=group, deleted_at__isnull=True).select_related(
            "vm"
        )[:50],
        "jobs": Job.objects.filter(group=group).select_related("vm", "host", "datastore")[:20],
        "stop_form": StopProtectionForm(),
    }
    return render(request, "protection/group_detail.html", context)


@require_POST
def group_create(request: HttpRequest) -> HttpResponse:
    require(request, Action.PROTECT)
    draft = group_service.start_draft(request.user)
    return redirect("protection:wizard-members", draft.pk)


@require_POST
def group_modify(request: HttpRequest, pk: int) -> HttpResponse:
    group = get_for_user(request, ProtectionGroup.objects.all(), Action.PROTECT, pk=pk)
    draft = group_service.start_draft(request.user, group)
    return redirect("protection:wizard-members", draft.pk)


@require_POST
def group_consistency_check(request: HttpRequest, pk: int) -> HttpResponse:
    group = get_for_user(request, ProtectionGroup.objects.all(), Action.PROTECT, pk=pk)
    try:
        jobs = group_service.group_consistency_check(group, request.user, request=request)
    except group_service.ProtectionError as error:
        messages.error(request, str(error))
    else:
        if jobs:
            numbers = ", ".join(f"#{job.pk}" for job in jobs)
            messages.success(
                request, f"Consistency check submitted for {len(jobs)} member(s): jobs {numbers}."
            )
        else:
            messages.info(request, "Every member already has a consistency check queued or running.")
    return redirect(group)


@require_POST
def group_stop_protection(request: HttpRequest, pk: int) -> HttpResponse:
    group = get_for_user(request, ProtectionGroup.objects.all(), Action.PROTECT, pk=pk)
    form = StopProtectionForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest("Choose whether to keep or delete the recovery points.")
    try:
        job = group_service.stop_group_protection(group, form.keep_data, request.user, request=request)
    except group_service.ProtectionError as error:
        messages.error(request, str(error))
    else:
        messages.success(
            request,
            f"Stopping the protection of every member of {group} (job #{job.pk}); "
            "the group is removed once it has no members.",
        )
    return redirect(group)
