"""The recovery job's body: run the recovery, then alert, notify and audit.

Whatever happens (success, failure, cancellation) the requested email goes out
and an audit event is written; a failure also raises a RECOVERY_FAILED alert,
which the next successful recovery of the same VM resolves.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import Sum
from django.urls import reverse
from django.utils import timezone

from backupsite.core.jobs.context import JobCancelled, JobContext, JobError
from backupsite.core.models import AuditEvent, Job
from protection.models import Alert, AlertKind, RecoveryPoint
from recovery.itemlevel.writer import TMP_PREFIX
from recovery.models import RecoveryItemResult, RecoveryType
from recovery.notifications import RecoveryReport, send_recovery_report
from recovery.services.browse import PointUnavailable
from recovery.services.destinations import validate_server_folder
from recovery.services.items import run_item_recovery
from recovery.services.options import build_throttle, describe_throttle
from recovery.services.vmrestore import run_vm_recovery
from storage.models import DatastoreUnavailable


def run_recovery(context: JobContext) -> dict[str, Any]:
    job = context.job
    params = job.parameters
    started = time.monotonic()
    vm = job.vm
    point = RecoveryPoint.objects.select_related("datastore", "vm").filter(pk=params.get("point")).first()
    kind = str(params.get("type", ""))
    options = params.get("options") or {}
    outcome = "failed"
    reason = ""
    result: dict[str, Any] = {}
    try:
        if vm is None or point is None:
            raise JobError("The virtual machine or its recovery point no longer exists in the catalog.")
        if point.deleted_at is not None:
            raise JobError("The recovery point was removed by retention before the recovery started.")
        throttle = build_throttle(options)
        context.log(
            f"Recovering {vm} from the point of {timezone.localtime(point.created):%Y-%m-%d %H:%M:%S}"
        )
        context.log(f"Throttling: {describe_throttle(options)}")
        if kind in (RecoveryType.ORIGINAL, RecoveryType.ALTERNATE):
            result = run_vm_recovery(context, vm, point, kind, params.get("target") or {}, throttle)
        elif kind == RecoveryType.ITEMS:
            result = run_item_recovery(context, point, params, throttle)
        else:
            raise JobError(f"Unknown recovery type {kind!r}.")
        outcome = "succeeded"
    except JobCancelled:
        outcome, reason = "cancelled", "cancelled by a user"
        raise
    except PointUnavailable as error:
        reason = str(error)
        if vm is not None:
            Alert.raise_alert(AlertKind.RECOVERY_FAILED, f"Recovery of {vm} failed: {reason}", vm=vm, job=job)
        if point is not None and isinstance(error.__cause__, DatastoreUnavailable):
            Alert.raise_alert(
                AlertKind.DATASTORE_UNAVAILABLE, str(error.__cause__), datastore=point.datastore, job=job
            )
        raise JobError(reason) from error
    except Exception as error:
        reason = str(error) or error.__class__.__name__
        if vm is not None:
            Alert.raise_alert(AlertKind.RECOVERY_FAILED, f"Recovery of {vm} failed: {reason}", vm=vm, job=job)
        raise
    finally:
        duration = time.monotonic() - started
        result.setdefault("bytes", _items_bytes(job.pk))
        result["duration_seconds"] = round(duration, 3)
        _finish(context, point, kind, params, outcome, reason, duration, result)
    if vm is not None:
        Alert.resolve([AlertKind.RECOVERY_FAILED], f"Recovery job #{job.pk} succeeded", vm=vm)
    context.progress(result.get("bytes", 0), max(context.bytes_total, result.get("bytes", 0)), force=True)
    context.message(
        f"Recovered {result.get('bytes', 0):,} bytes to {params.get('destination_text', '')} "
        f"in {duration:.1f} s"
    )
    return result


def recovery_abandoned(job: Job) -> None:
    """A recovery lost with its worker: what the handler would have done on failure.

    The alert, the audit event and the requested email, and no leftovers: an item copy
    writes each file under a hidden temporary name and renames it when complete, so a
    killed copy leaves only such names behind, never a partial file under the real
    name; they are removed here.
    """
    point = (
        RecoveryPoint.objects.select_related("datastore", "vm").filter(pk=job.parameters.get("point")).first()
    )
    reason = job.error or "the worker running it was lost"
    if job.vm is not None:
        Alert.raise_alert(
            AlertKind.RECOVERY_FAILED, f"Recovery of {job.vm} was interrupted: {reason}", vm=job.vm, job=job
        )
    removed = remove_partial_files(job)
    context = JobContext(job)
    if removed:
        context.log(f"Removed {removed} unfinished file(s) left by the interrupted copy.")
    params = job.parameters
    kind = str(params.get("type", ""))
    _finish(
        context,
        point,
        kind,
        params,
        "failed",
        reason,
        job.duration_seconds or 0.0,
        {"bytes": _items_bytes(job.pk)},
    )


def remove_partial_files(job: Job) -> int:
    """Unfinished temporary files of an item-level copy to a folder on this server."""
    spec = job.parameters.get("destination") or {}
    if job.parameters.get("type") != RecoveryType.ITEMS or spec.get("kind") != "server":
        return 0  # an SMB copy is staged in a per-job folder that the next run of it replaces
    try:
        folder = validate_server_folder(str(spec.get("folder", "")))
    except ValueError:
        return 0
    removed = 0
    for parent, _folders, files in os.walk(folder):  # never follows links out of the folder
        for name in files:
            partial = Path(parent) / name
            if name.startswith(TMP_PREFIX) and not partial.is_symlink():
                partial.unlink(missing_ok=True)
                removed += 1
    return removed


def _items_bytes(job_id: int) -> int:
    total = RecoveryItemResult.objects.filter(job_id=job_id).aggregate(total=Sum("size_bytes"))["total"]
    return int(total or 0)


def _finish(
    context: JobContext,
    point: RecoveryPoint | None,
    kind: str,
    params: dict[str, Any],
    outcome: str,
    reason: str,
    duration: float,
    result: dict[str, Any],
) -> None:
    job = context.job
    AuditEvent.record(
        f"recovery.{outcome}",
        user=job.requested_by,
        obj=job,
        vm=str(job.vm) if job.vm else "",
        type=kind,
        destination=params.get("destination_text", ""),
        bytes=result.get("bytes", 0),
        duration_seconds=round(duration, 3),
        reason=reason,
    )
    recipients = list((params.get("options") or {}).get("notify") or [])
    if not recipients:
        return
    items = [
        f"{row.source} -> {row.destination or '-'}: {row.get_state_display()}"
        + (f" ({row.message})" if row.message else "")
        for row in RecoveryItemResult.objects.filter(job=job)
    ]
    report = RecoveryReport(
        job_id=job.pk,
        vm_name=str(job.vm or (point.vm if point else "?")),
        point_time=f"{timezone.localtime(point.created):%Y-%m-%d %H:%M:%S}" if point else "?",
        recovery_type=RecoveryType(kind).label if kind in RecoveryType.values else kind,
        destination=str(params.get("destination_text", "")),
        state=outcome,
        duration_seconds=duration,
        bytes_recovered=int(result.get("bytes", 0)),
        reason=reason,
        items=items,
        url=_site_url(reverse("recovery:status", args=[job.pk])),
    )
    problem = send_recovery_report(report, recipients)
    context.log(problem or f"Notification sent to {', '.join(recipients)}")


def _site_url(path: str) -> str:
    base = getattr(settings, "SITE_URL", "")
    return f"{base.rstrip('/')}{path}" if base else path
