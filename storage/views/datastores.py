"""A datastore's page and what administrators do there: maintenance now, colocation,
and confirming that an encrypted datastore's recovery key was saved."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from backupsite.core.credentials import CredentialsError
from backupsite.core.models import AuditEvent, JobKind
from backupsite.core.permissions import Action, get_for_user
from storage.forms import ColocationForm, RecoveryKeySavedForm
from storage.maintenance import submit_now
from storage.models import Datastore

MAINTENANCE = {"verify": JobKind.VERIFY, "gc": JobKind.GARBAGE_COLLECTION}


@require_GET
def datastore_detail(request: HttpRequest, pk: int) -> HttpResponse:
    datastore = get_for_user(request, Datastore.objects.select_related("volume"), pk=pk)
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


@require_POST
def datastore_colocation(request: HttpRequest, pk: int) -> HttpResponse:
    """Switch colocation; turning it off is refused while several groups share the datastore."""
    datastore = get_for_user(request, Datastore.objects.all(), Action.MANAGE, pk=pk)
    form = ColocationForm(request.POST)
    form.is_valid()  # a lone optional checkbox: always valid
    colocate = bool(form.cleaned_data.get("colocate"))
    try:
        datastore.set_colocate(colocate)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        AuditEvent.record("datastore.colocation", request=request, obj=datastore, colocate=colocate)
        state = (
            "on: several protection groups may share it"
            if colocate
            else "off: it serves one protection group"
        )
        messages.success(request, f"Colocation of {datastore} is {state}.")
    return redirect(datastore)


@never_cache
@require_http_methods(["GET", "POST"])
def datastore_recovery_key(request: HttpRequest, pk: int) -> HttpResponse:
    """The recovery key of a new encrypted datastore, shown to administrators until one
    ticks "I have saved the recovery key"; never again after that."""
    datastore = get_for_user(request, Datastore.objects.all(), Action.MANAGE, pk=pk)
    if not datastore.recovery_key_pending:
        return render(request, "storage/recovery_key.html", {"datastore": datastore, "key": None})
    form = RecoveryKeySavedForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        datastore.confirm_recovery_key_saved()
        AuditEvent.record("datastore.recovery_key_saved", request=request, obj=datastore)
        messages.success(request, f"The recovery key of {datastore} will not be shown again.")
        return redirect(datastore)
    try:
        key = datastore.recovery_key()
    except CredentialsError as error:
        messages.error(request, str(error))
        return redirect(datastore)
    return render(request, "storage/recovery_key.html", {"datastore": datastore, "key": key, "form": form})
