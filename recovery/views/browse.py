"""Browse a recovery point's disks, volumes and folders (htmx fragments), and
download single files from it."""

from __future__ import annotations

from typing import Any

from django.http import FileResponse, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET

from backupsite.core.models import AuditEvent
from backupsite.core.permissions import Action, get_for_user
from backupsite.core.types import HtmxHttpRequest
from protection.models import RecoveryPoint
from recovery.itemlevel.browse import Entry
from recovery.itemlevel.errors import ItemLevelError
from recovery.itemlevel.names import NameStyle, printable, safe_name
from recovery.models import ItemKind
from recovery.services import browse as points
from recovery.services.browse import InvalidItem, ItemRef, PointUnavailable, clean_guest_path
from recovery.views.wizard import own_draft

DOWNLOAD_BLOCK = 1024 * 1024


def _volume_index(text: str) -> int:
    try:
        index = int(text)
    except (TypeError, ValueError):
        raise InvalidItem("The volume is not valid.") from None
    if not 0 <= index < 128:
        raise InvalidItem("The volume is not valid.")
    return index


@require_GET
def browse(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """One level of the tree: the point's disks, a disk's volumes, or a folder's items."""
    draft = own_draft(request, pk)
    point = draft.point
    disk = request.GET.get("disk", "")
    selected = {ItemRef(**item).token() for item in draft.data.get("items") or [] if isinstance(item, dict)}
    context: dict[str, Any] = {"draft": draft, "point": point, "disk": disk, "selected": selected}
    try:
        disks = points.disk_names(point)
        if not disk:
            context["disks"] = [(name, ItemRef(ItemKind.DISK, name).token()) for name in disks]
            return render(request, "recovery/_browse.html#disks", context)
        if disk not in disks:
            raise InvalidItem(f"{disk!r} is not a virtual disk of this recovery point.")
        if "volume" not in request.GET:
            found, warnings = points.volumes(point, disk)
            context["volumes"] = [(v, ItemRef(ItemKind.VOLUME, disk, v.index).token()) for v in found]
            context["warnings"] = warnings
            return render(request, "recovery/_browse.html#volumes", context)
        volume = _volume_index(request.GET["volume"])
        path = clean_guest_path(request.GET.get("path", "/"))
        entries = points.folder(point, disk, volume, path)
        context |= {
            "volume": volume,
            "path": path,
            "entries": [_row(draft.pk, point.pk, disk, volume, e, selected) for e in entries],
        }
        return render(request, "recovery/_browse.html#folder", context)
    except (ItemLevelError, InvalidItem, PointUnavailable) as error:
        context["error"] = str(error)
        return render(request, "recovery/_browse.html#error", context)


def _row(
    draft_id: int, point_id: int, disk: str, volume: int, entry: Entry, selected: set[str]
) -> dict[str, Any]:
    kind = ItemKind.FOLDER if entry.is_dir else ItemKind.FILE
    # A name with NUL or bytes that are not valid Unicode cannot travel in a URL or be stored
    # in the draft: it is shown, and recovered with its folder.
    if entry.path != printable(entry.path) or "\x00" in entry.path:
        return {"entry": entry, "token": "", "selected": False, "unselectable": True}
    token = ItemRef(kind, disk, volume, entry.path).token()
    row: dict[str, Any] = {"entry": entry, "token": token, "selected": token in selected}
    if entry.error or entry.is_symlink:
        return row
    query = urlencode({"disk": disk, "volume": str(volume), "path": entry.path})
    if entry.is_dir:
        row["open_url"] = f"{reverse('recovery:browse', args=[draft_id])}?{query}"
    else:
        row["download_url"] = f"{reverse('recovery:download', args=[point_id])}?{query}"
    return row


@require_GET
def download(request: HtmxHttpRequest, pk: int) -> HttpResponseBase:
    """One guest file, streamed from the chunk store to the browser."""
    # Any point the user may recover from: a damaged or missing one gets a page saying so.
    point = get_for_user(
        request, RecoveryPoint.objects.select_related("vm", "datastore"), Action.RECOVER, pk=pk
    )
    disk = request.GET.get("disk", "")
    try:
        if disk not in points.disk_names(point):
            raise InvalidItem(f"{disk!r} is not a virtual disk of this recovery point.")
        volume = _volume_index(request.GET.get("volume", ""))
        path = clean_guest_path(request.GET.get("path", ""))
        if path == "/":
            raise InvalidItem("Choose a file to download.")
        reader = points.open_download(point, disk, volume, path)
    except InvalidItem as error:
        return render(
            request, "recovery/download_error.html", {"error": str(error), "point": point}, status=400
        )
    except ItemLevelError as error:
        return render(
            request, "recovery/download_error.html", {"error": str(error), "point": point}, status=404
        )
    except PointUnavailable as error:
        return render(
            request, "recovery/download_error.html", {"error": str(error), "point": point}, status=409
        )
    name = safe_name(path.rsplit("/", 1)[-1], NameStyle.WINDOWS).name
    AuditEvent.record(
        "recovery.download",
        request=request,
        obj=point.vm,
        point=point.point_id,
        disk=disk,
        volume=volume,
        path=printable(path),
        bytes=reader.size,  # type: ignore[attr-defined]
    )
    response = FileResponse(
        reader, as_attachment=True, filename=printable(name), content_type="application/octet-stream"
    )
    response.block_size = DOWNLOAD_BLOCK
    return response
