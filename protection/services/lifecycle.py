"""Stopping protection, and the datastore maintenance jobs (verify, prune, GC)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from backupsite.core.jobs.context import JobContext, JobError
from backupsite.core.models import AuditEvent, Job, JobKind
from protection.models import Alert, AlertKind, ProtectedDataSource, ProtectionGroup, RecoveryPoint
from storage.models import Datastore


def stop_protection(context: JobContext) -> dict[str, Any]:
    """Stop protecting one VM (job.vm) or every member of a group (job.group only).

    Keep data: the recovery points stay restorable until an administrator removes
    them. Delete data: the VM's points are removed from the datastore now and the
    chunks they alone used are freed by the next garbage collection.
    """
    job = context.job
    keep_data = bool(job.parameters.get("keep_data", True))
    if job.vm is None:
        if job.group is None:
            raise JobError("Stop protection needs a VM or a protection group.")
        members = list(job.group.members.select_related("vm"))
        for member in members:
            Job.submit(
                JobKind.STOP_PROTECTION,
                vm=member.vm,
                group=job.group,
                requested_by=job.requested_by,
                parameters={"keep_data": keep_data, "delete_group_when_empty": True},
            )
        if not members:
            _delete_group_if_empty(job.group)
        return {"members": len(members), "keep_data": keep_data}

    vm = job.vm
    source = ProtectedDataSource.objects.filter(vm=vm).select_related("group__datastore").first()
    if source is None:
        raise JobError(f"{vm} is not protected.")
    group = source.group
    removed = 0
    if not keep_data:
        engine = group.datastore.open_engine()
        for point in engine.points(vm.hyperv_id):
            context.check_cancel()
            engine.delete_point(point.id)
            removed += 1
        RecoveryPoint.objects.filter(vm=vm, datastore=group.datastore, deleted_at__isnull=True).update(
            deleted_at=timezone.now()
        )
        group.datastore.refresh_usage()
    with transaction.atomic():
        source.delete()
        Alert.resolve([AlertKind.BACKUP_FAILED, AlertKind.REPLICA_INCONSISTENT], "Protection stopped", vm=vm)
        AuditEvent.record(
            "protection.stopped", user=job.requested_by, obj=vm, group=group.name, keep_data=keep_data
        )
    context.log(
        f"Protection of {vm} stopped; "
        + ("its recovery points are kept." if keep_data else f"{removed} recovery point(s) deleted.")
    )
    if job.parameters.get("delete_group_when_empty"):
        _delete_group_if_empty(group)
    return {"keep_data": keep_data, "points_deleted": removed}


def _delete_group_if_empty(group: ProtectionGroup) -> None:
    with transaction.atomic():
        if not ProtectedDataSource.objects.filter(group=group).exists():
            AuditEvent.record("group.deleted", obj=group)
            group.drafts.all().delete()
            group.delete()


def _datastore(context: JobContext) -> Datastore:
    if context.job.datastore is None:
        raise JobError("The datastore of this job no longer exists.")
    return context.job.datastore


def verify_datastore(context: JobContext) -> dict[str, Any]:
    datastore = _datastore(context)
    engine = datastore.open_engine()
    point_ids = context.job.parameters.get("point_ids")

    def progress(state: Any) -> None:
        # Verify counts chunks, not bytes: the bar shows chunks checked so far.
        context.progress(state.chunks_checked)
        context.check_cancel()

    report = engine.verify(point_ids, progress=progress)
    now = timezone.now()
    RecoveryPoint.objects.filter(datastore=datastore, point_id__in=report.points_checked).update(
        verified_at=now
    )
    if report.damaged_points:
        RecoveryPoint.objects.filter(datastore=datastore, point_id__in=report.damaged_points).update(
            damaged=True
        )
        Alert.raise_alert(
            AlertKind.DATASTORE_DAMAGED,
            f"Verify found {len(report.bad_chunks) + len(report.missing_chunks)} damaged chunk(s) affecting "
            f"{len(report.damaged_points)} recovery point(s); the next backup of each VM stores them again.",
            datastore=datastore,
            job=context.job,
        )
    else:
        Alert.resolve([AlertKind.DATASTORE_DAMAGED], "Verify found no damage", datastore=datastore)
    Datastore.objects.filter(pk=datastore.pk).update(last_verified_at=now)
    context.message(
        f"Checked {report.chunks_checked} chunks of {len(report.points_checked)} recovery point(s): "
        + ("no damage." if report.ok else f"{len(report.bad_chunks) + len(report.missing_chunks)} damaged.")
    )
    return {
        "chunks_checked": report.chunks_checked,
        "bytes_checked": report.bytes_checked,
        "bad_chunks": len(report.bad_chunks),
        "missing_chunks": len(report.missing_chunks),
        "damaged_points": report.damaged_points,
    }


def collect_garbage(context: JobContext) -> dict[str, Any]:
    datastore = _datastore(context)
    grace = float(context.job.parameters.get("grace_seconds", 3600))
    report = datastore.open_engine().gc(grace_seconds=grace)
    Datastore.objects.filter(pk=datastore.pk).update(last_gc_at=timezone.now())
    datastore.refresh_usage()
    context.message(f"Removed {report.chunks_removed} unused chunk(s), freed {report.bytes_freed} bytes.")
    return {
        "chunks_live": report.chunks_live,
        "chunks_removed": report.chunks_removed,
        "bytes_freed": report.bytes_freed,
    }
