"""Stopping protection, and the datastore maintenance jobs (verify, prune, GC)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from backupsite.core.jobs.context import JobContext, JobError
from backupsite.core.models import AuditEvent, Job, JobKind
from protection.models import Alert, AlertKind, ProtectedDataSource, ProtectionGroup, RecoveryPoint
from protection.services.datastores import open_for_job
from storage.engine import Datastore as EngineDatastore
from storage.models import Datastore

# Point ids listed in a job result and log at most; the counts are always exact.
MAX_LISTED_POINTS = 100


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
        engine = open_for_job(context, group.datastore)
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
    """Re-read the store's chunks, and reconcile the catalog with the store both ways."""
    datastore = _datastore(context)
    engine = open_for_job(context, datastore)
    reconciled = reconcile_catalog(context, datastore, engine)
    point_ids = context.job.parameters.get("point_ids")
    if point_ids is not None:
        # Points the store lost cannot be read; reconciliation has marked them already.
        gone = set(reconciled.unreadable)
        point_ids = [
            point_id for point_id in point_ids if point_id in reconciled.in_store and point_id not in gone
        ]

    def progress(state: Any) -> None:
        # Verify counts chunks, not bytes: the bar shows chunks checked so far.
        context.progress(state.chunks_checked)
        context.check_cancel()

    report = engine.verify(point_ids, progress=progress)
    now = timezone.now()
    RecoveryPoint.objects.filter(datastore=datastore, point_id__in=report.points_checked).update(
        verified_at=now
    )
    damaged_chunks = len(report.bad_chunks) + len(report.missing_chunks)
    if report.damaged_points:
        RecoveryPoint.objects.filter(datastore=datastore, point_id__in=report.damaged_points).update(
            damaged=True
        )
    # Chunks are stored under their digest: once a backup has stored a lost chunk again,
    # every point that referenced it is whole, and verify has just read all of it.
    whole = set(report.points_checked) - set(report.damaged_points) - set(reconciled.unreadable)
    healed = RecoveryPoint.objects.filter(datastore=datastore, point_id__in=whole, damaged=True).update(
        damaged=False
    )
    if healed:
        context.log(f"{healed} recovery point(s) marked damaged earlier are whole again")
    problems = []
    if damaged_chunks:
        problems.append(
            f"{damaged_chunks} damaged chunk(s) affecting {len(report.damaged_points)} recovery point(s); "
            "the next backup of each VM stores them again"
        )
    if reconciled.unreadable:
        problems.append(
            f"{len(reconciled.unreadable)} recovery point(s) with a damaged manifest, which cannot be "
            "recovered (the next backup of each VM does not depend on them)"
        )
    if reconciled.missing:
        problems.append(
            f"{len(reconciled.missing)} recovery point(s) in the catalog are missing from the datastore "
            "and cannot be recovered"
        )
    if problems:
        Alert.raise_alert(
            AlertKind.DATASTORE_DAMAGED,
            "Verify found " + "; ".join(problems) + ".",
            datastore=datastore,
            job=context.job,
        )
    else:
        Alert.resolve([AlertKind.DATASTORE_DAMAGED], "Verify found no damage", datastore=datastore)
    Datastore.objects.filter(pk=datastore.pk).update(last_verified_at=now)
    damage = "no damage" if report.ok and not reconciled.unreadable else f"{damaged_chunks} damaged chunk(s)"
    if reconciled.unreadable:
        damage += f", {len(reconciled.unreadable)} damaged manifest(s)"
    checked = len(report.points_checked)
    summary = f"Checked {report.chunks_checked} chunks of {checked} recovery point(s): {damage}"
    summary += (
        f"; {len(reconciled.missing)} catalog point(s) missing from the datastore, "
        f"{len(reconciled.unknown)} datastore point(s) unknown to the catalog."
    )
    context.message(summary)
    return {
        "chunks_checked": report.chunks_checked,
        "bytes_checked": report.bytes_checked,
        "bad_chunks": len(report.bad_chunks),
        "missing_chunks": len(report.missing_chunks),
        "damaged_points": report.damaged_points,
        "missing_points": len(reconciled.missing),
        "unknown_points": len(reconciled.unknown),
        "unreadable_point_ids": reconciled.unreadable[:MAX_LISTED_POINTS],
        "missing_point_ids": reconciled.missing[:MAX_LISTED_POINTS],
        "unknown_point_ids": reconciled.unknown[:MAX_LISTED_POINTS],
    }


@dataclass(frozen=True)
class Reconciliation:
    in_store: frozenset[str]
    missing: list[str]  # in the catalog, not in the store
    unknown: list[str]  # in the store, not in the catalog
    unreadable: list[str]  # in the store, but their manifest cannot be read (damaged)


def reconcile_catalog(context: JobContext, datastore: Datastore, engine: EngineDatastore) -> Reconciliation:
    """Compare the catalog's points with the store's, both ways.

    Catalog points the store does not hold are marked missing (and unmarked should they
    come back); store points the catalog does not know are reported, never deleted: they
    may be the only copy of something (a catalog restored from an older database dump).
    """
    scan = engine.scan_points()
    unreadable = sorted(point_id for point_id, _ in scan.unreadable)
    # A point whose manifest is damaged is still there (not missing), but cannot be read.
    in_store = frozenset(point.id for point in scan.points) | frozenset(unreadable)
    catalog = RecoveryPoint.objects.filter(datastore=datastore)
    catalog.filter(point_id__in=unreadable).update(damaged=True)
    for point_id, reason in scan.unreadable[:MAX_LISTED_POINTS]:
        context.log(f"Damaged: recovery point {point_id} ({reason}); marked damaged in the catalog")
    listed = dict(catalog.values_list("point_id", "deleted_at"))
    missing = sorted(p for p, deleted_at in listed.items() if deleted_at is None and p not in in_store)
    unknown = sorted(in_store - listed.keys())
    catalog.filter(point_id__in=missing).update(missing=True)
    catalog.filter(missing=True, point_id__in=in_store).update(missing=False)
    for point_id in missing[:MAX_LISTED_POINTS]:
        context.log(f"Missing from the datastore: recovery point {point_id} (marked missing in the catalog)")
    for point_id in unknown[:MAX_LISTED_POINTS]:
        context.log(f"Not in the catalog: recovery point {point_id} in the datastore (left in place)")
    return Reconciliation(in_store, missing, unknown, unreadable)


def collect_garbage(context: JobContext) -> dict[str, Any]:
    datastore = _datastore(context)
    grace = float(context.job.parameters.get("grace_seconds", 3600))
    report = open_for_job(context, datastore).gc(grace_seconds=grace)
    Datastore.objects.filter(pk=datastore.pk).update(last_gc_at=timezone.now())
    datastore.refresh_usage()
    context.message(f"Removed {report.chunks_removed} unused chunk(s), freed {report.bytes_freed} bytes.")
    return {
        "chunks_live": report.chunks_live,
        "chunks_removed": report.chunks_removed,
        "bytes_freed": report.bytes_freed,
    }
