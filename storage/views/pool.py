"""The storage pool: the overview, volumes, and creating a datastore on a volume.

Everybody with a role sees the pool; only administrators (``Action.MANAGE``) change it.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from backupsite.core.models import AuditEvent
from backupsite.core.permissions import Action, get_for_user, require, visible
from storage.forms import DatastoreForm, VolumeForm, add_errors
from storage.models import Datastore, Volume
from storage.services import add_volume, create_datastore


@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    """Volumes (file system, size, free, datastores on each) and datastores on no volume."""
    require(request, Action.VIEW)
    volumes = visible(request, Volume.objects.prefetch_related("datastores__protection_groups"))
    context = {
        "volumes": [(volume, volume.status()) for volume in volumes],
        "loose": [
            (datastore, datastore.disk_space())
            for datastore in visible(request, Datastore.objects.filter(volume__isnull=True))
        ],
    }
    return render(request, "storage/pool.html", context)


@require_http_methods(["GET", "POST"])
def volume_add(request: HttpRequest) -> HttpResponse:
    require(request, Action.MANAGE)
    form = VolumeForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            volume = add_volume(form.cleaned_data["path"], form.cleaned_data["label"])
        except ValidationError as error:
            add_errors(form, error)
        else:
            adopted = list(volume.datastores.values_list("name", flat=True))
            AuditEvent.record("volume.add", request=request, obj=volume, path=volume.path, adopted=adopted)
            text = f"Volume {volume} added."
            if adopted:
                text += f" Datastores already in it: {', '.join(adopted)}."
            messages.success(request, text)
            return redirect(volume)
    return render(request, "storage/volume_add.html", {"form": form})


@require_GET
def volume_detail(request: HttpRequest, pk: int) -> HttpResponse:
    volume = get_for_user(request, Volume.objects.all(), pk=pk)
    datastores = volume.datastores.prefetch_related("protection_groups")
    context = {
        "volume": volume,
        "status": volume.status(),
        "datastores": datastores,
        "need": volume.planned_need(),
    }
    return render(request, "storage/volume_detail.html", context)


@require_http_methods(["GET", "POST"])
def datastore_add(request: HttpRequest, pk: int) -> HttpResponse:
    """Create a datastore on a volume; an encrypted one goes on to its recovery key page."""
    volume = get_for_user(request, Volume.objects.all(), Action.MANAGE, pk=pk)
    form = DatastoreForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            created = create_datastore(volume, **form.cleaned_data)
        except ValidationError as error:
            add_errors(form, error)
        else:
            datastore = created.datastore
            AuditEvent.record(
                "datastore.create",
                request=request,
                obj=datastore,
                path=datastore.path,
                encrypted=datastore.encrypted,
                colocate=datastore.colocate,
            )
            messages.success(request, f"Datastore {datastore} created at {datastore.path}.")
            if datastore.recovery_key_pending:
                return redirect(reverse("storage:datastore-recovery-key", args=[datastore.pk]))
            return redirect(datastore)
    return render(
        request, "storage/datastore_add.html", {"volume": volume, "status": volume.status(), "form": form}
    )
