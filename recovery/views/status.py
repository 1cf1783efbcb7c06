"""A recovery's live status page: progress, per-item results, final state.

The job page pattern: one URL renders the full page or, for htmx polling, the
``status`` partial; once the job has finished the partial answers with htmx's
stop-polling status and htmx stops polling.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET
from django_htmx.http import HTMX_STOP_POLLING

from backupsite.core.models import Job, JobKind
from backupsite.core.permissions import get_for_user
from backupsite.core.types import HtmxHttpRequest
from protection.models import RecoveryPoint
from recovery.models import RecoveryType
from recovery.services.options import describe_throttle

MAX_ITEM_ROWS = 500


@require_GET
def recovery_status(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    job = get_for_user(
        request,
        Job.objects.filter(kind=JobKind.RECOVERY).select_related("vm", "host", "datastore", "requested_by"),
        pk=pk,
    )
    params = job.parameters or {}
    kind = str(params.get("type", ""))
    items = job.recovery_items.all()  # type: ignore[attr-defined]
    context: dict[str, Any] = {
        "job": job,
        "items": items[:MAX_ITEM_ROWS],
        "item_count": items.count(),
        "point": RecoveryPoint.objects.filter(pk=int(params.get("point") or 0)).first(),
        "recovery_type_label": RecoveryType(kind).label if kind in RecoveryType.values else kind,
        "destination_text": params.get("destination_text", ""),
        "throttle_text": describe_throttle(params.get("options") or {}),
        "notify": (params.get("options") or {}).get("notify") or [],
    }
    if request.htmx and not request.htmx.boosted:
        status = HTMX_STOP_POLLING if job.is_finished else 200
        return render(request, "recovery/status.html#status", context, status=status)
    return render(request, "recovery/status.html", context)
