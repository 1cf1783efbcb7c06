"""Backups of one protected VM: initial replica, synchronization, recovery point,
express full and consistency check. Connector in, engine out, catalog updated.

Order matters for crash safety (design brief §5): the engine commits the new
recovery point *before* the connector is told the backup succeeded, because on
Hyper-V that is when the previous reference point is destroyed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import transaction
from django.utils import timezone

from backupsite.core.jobs.context import JobCancelled, JobContext, JobError
from backupsite.core.models import Job, JobKind
from protection.connectors import BackupSession, ChangeTrackingLost, ConnectorError, Consistency
from protection.models import (
    Alert,
    AlertKind,
    ProtectedDataSource,
    RecoveryPoint,
    RecoveryPointKind,
    ReplicaState,
    VirtualMachine,
)
from protection.services.datastores import open_for_job
from protection.services.pointmeta import catalog_metadata
from storage.engine import Cancelled as EngineCancelled
from storage.engine import Datastore as EngineDatastore
from storage.engine import EngineError, PointInfo, Progress, RetentionPolicy, SourceFile
from storage.engine import ReadOnly as EngineReadOnly
from storage.engine.retention import select_removals
from storage.models import Datastore

POINT_KIND_FOR_JOB: dict[str, RecoveryPointKind] = {
    JobKind.INITIAL_REPLICA: RecoveryPointKind.INITIAL,
    JobKind.SYNCHRONIZATION: RecoveryPointKind.SYNC,
    JobKind.RECOVERY_POINT: RecoveryPointKind.RECOVERY_POINT,
    JobKind.EXPRESS_FULL: RecoveryPointKind.EXPRESS_FULL,
    JobKind.CONSISTENCY_CHECK: RecoveryPointKind.CONSISTENCY_CHECK,
}


@dataclass
class BackupOutcome:
    point: PointInfo
    point_kind: str
    full_scan: bool
    consistency: str
    change_tracking_used: bool
    notes: list[str] = field(default_factory=list)
    damaged_chunks: int = 0
    differing_chunks: int = 0
    # The change-tracking references this backup started from, released once it is committed.
    previous_refs: dict[str, str] = field(default_factory=dict)
    # Read from the host's files (over the wire for a remote host); None: the engine's count.
    bytes_read_from_host: int | None = None

    @property
    def host_bytes_read(self) -> int:
        if self.bytes_read_from_host is None:
            return self.point.bytes_read
        return self.bytes_read_from_host

    def as_result(self) -> dict[str, Any]:
        return {
            "recovery_point": self.point.id,
            "point_kind": self.point_kind,
            "consistency": self.consistency,
            "full_scan": self.full_scan,
            "change_tracking_used": self.change_tracking_used,
            "bytes_total": self.point.total_bytes,
            "bytes_read": self.point.bytes_read,
            "bytes_read_from_host": self.host_bytes_read,
            "bytes_stored": self.point.bytes_new,
            "damaged_chunks": self.damaged_chunks,
            "differing_chunks": self.differing_chunks,
            "notes": self.notes,
        }


def protected_source(context: JobContext) -> tuple[VirtualMachine, ProtectedDataSource]:
    vm = context.job.vm
    if vm is None:
        raise JobError("The virtual machine of this job no longer exists in the catalog.")
    source = ProtectedDataSource.objects.select_related("group__datastore").filter(vm=vm).first()
    if source is None or source.replica_state == ReplicaState.STOPPED:
        raise JobError(f"{vm} is not protected any more.")
    return vm, source


def run_backup_job(context: JobContext) -> dict[str, Any]:
    """The handler body shared by every backup kind."""
    vm, source = protected_source(context)
    kind = context.job.kind
    datastore_row = source.group.datastore
    # Before anything else: an unmounted or replaced datastore fails the job with a datastore
    # alert and leaves the replica as it was (it is fine; the storage is not).
    engine = open_for_job(context, datastore_row)
    if kind == JobKind.INITIAL_REPLICA:
        ProtectedDataSource.objects.filter(pk=source.pk).update(replica_state=ReplicaState.CREATING)
    try:
        import_path = context.job.parameters.get("import_path")
        if kind == JobKind.INITIAL_REPLICA and import_path:
            outcome = _import_offline_replica(context, engine, vm, source, Path(import_path))
        else:
            outcome = _backup_from_host(context, engine, vm, source)
    except EngineCancelled as error:
        # Nothing was committed. A cancelled sync leaves the previous replica as it was;
        # a cancelled initial replica leaves none, which a consistency check will create.
        if kind == JobKind.INITIAL_REPLICA:
            ProtectedDataSource.objects.filter(pk=source.pk).update(
                replica_state=ReplicaState.INCONSISTENT,
                inconsistency_reason="The initial replica was cancelled before it finished.",
            )
        raise JobCancelled() from error
    except (ConnectorError, EngineError, JobError, OSError) as error:
        _mark_inconsistent(source, context, f"{POINT_KIND_FOR_JOB[kind].label} failed: {error}")
        if isinstance(error, EngineReadOnly):
            # The storage needs the administrator too: the same alert as a datastore found
            # read-only when a job opens it, resolved by the next job that opens it writable.
            Alert.raise_alert(
                AlertKind.DATASTORE_UNAVAILABLE,
                f"Datastore {datastore_row}: {error}",
                datastore=datastore_row,
                job=context.job,
            )
        raise JobError(str(error)) from error
    except Exception as error:
        _mark_inconsistent(source, context, f"{POINT_KIND_FOR_JOB[kind].label} failed: {error}")
        raise

    _record_point(context, engine, datastore_row, vm, source, outcome)
    _release_previous_references(vm, outcome)
    context.log(
        f"Read {outcome.host_bytes_read} bytes ({outcome.host_bytes_read / (1024 * 1024):.1f} MiB) "
        f"from {vm.host.name if not import_path else 'the offline media'}."
    )
    for note in outcome.notes:
        context.log(note)
    if kind == JobKind.INITIAL_REPLICA and import_path:
        # The imported files are only as fresh as the media; catch up from the host.
        Job.submit(
            JobKind.CONSISTENCY_CHECK, vm=vm, group=source.group, requested_by=context.job.requested_by
        )
        context.log("Replica imported from offline media; a consistency check will bring it up to date.")
    _apply_retention(context, engine, datastore_row, vm, source)
    return outcome.as_result()


def _backup_from_host(
    context: JobContext, engine: EngineDatastore, vm: VirtualMachine, source: ProtectedDataSource
) -> BackupOutcome:
    kind = context.job.kind
    connector = vm.host.connector()
    tracking = source.change_tracking_refs or {}
    parent_id = tracking.get("point_id")
    existing = {point.id for point in engine.points(vm.hyperv_id)}
    if parent_id not in existing:
        parent_id = None
    full_scan = kind in (JobKind.INITIAL_REPLICA, JobKind.CONSISTENCY_CHECK) or parent_id is None
    notes: list[str] = []
    damaged = 0

    if kind == JobKind.CONSISTENCY_CHECK and parent_id is not None:
        context.message("Verifying the replica's chunks")
        report = engine.verify([parent_id])
        damaged = len(report.bad_chunks) + len(report.missing_chunks)
        if damaged:
            notes.append(f"The replica had {damaged} damaged or missing chunk(s); they are stored again now.")

    context.message(f"Creating a checkpoint of {vm.name}")
    session = connector.begin_backup(vm.hyperv_id, Consistency.APPLICATION)
    for event in session.events:
        context.log(event)
    events_logged = len(session.events)
    ok = False
    try:
        sources, tracking_used, lost = _sources(session, tracking.get("refs", {}), full_scan)
        if lost:
            notes.append(lost)
            full_scan = True
        point_kind = POINT_KIND_FOR_JOB[kind]
        if lost and kind != JobKind.INITIAL_REPLICA:
            point_kind = RecoveryPointKind.CONSISTENCY_CHECK
        context.message(f"Reading {len(sources)} file(s) of {vm.name}")
        point = engine.backup(
            vm.hyperv_id,
            sources,
            vm_name=vm.name,
            parent=parent_id,
            consistency=str(session.consistency),
            metadata={
                "kind": str(point_kind),
                "job": context.job.pk,
                "host": vm.host.name,
                "offline": session.offline,
                "full_scan": full_scan,
                "catalog": catalog_metadata(vm, source.group, [s.name for s in sources]),
            },
            progress=_engine_progress(context),
            cancel=context.is_cancelled,
        )
        ok = True
    finally:
        try:
            refs = connector.end_backup(session, ok)
        except Exception as error:
            if ok:
                # The engine has committed the point but the host did not record it as the
                # reference point (it went away, or the VM did): the job fails, so the point
                # goes too; nothing the catalog does not know stays in the datastore.
                _discard_point(context, engine, point)
                raise
            if not isinstance(error, ConnectorError):
                raise
            context.log(f"Cleaning up the checkpoint failed: {error}")
            refs = {}
        for event in session.events[events_logged:]:
            context.log(event)
    host_bytes = session.bytes_read_from_host()
    source.change_tracking_refs = {"point_id": point.id, "refs": refs}
    differing = _differing_chunks(engine, parent_id, point) if kind == JobKind.CONSISTENCY_CHECK else 0
    if session.offline:
        notes.append(f"{vm.name} could not be backed up online; it was briefly put in a saved state.")
    return BackupOutcome(
        point=point,
        point_kind=point_kind,
        full_scan=full_scan,
        consistency=str(session.consistency),
        change_tracking_used=tracking_used,
        notes=notes,
        damaged_chunks=damaged,
        differing_chunks=differing,
        bytes_read_from_host=host_bytes,
        previous_refs={name: ref for name, ref in tracking.get("refs", {}).items() if refs.get(name) != ref},
    )


def _discard_point(context: JobContext, engine: EngineDatastore, point: PointInfo) -> None:
    try:
        engine.delete_point(point.id)
    except EngineError as error:  # the next garbage collection finds it unreferenced
        context.log(f"The recovery point {point.id} could not be removed: {error}")
    else:
        context.log(f"Recovery point {point.id} discarded: the backup did not complete on the host.")


def _release_previous_references(vm: VirtualMachine, outcome: BackupOutcome) -> None:
    """After the commit (and the new references are stored), the previous ones can go.

    Never fails the job: the new recovery point is already committed, and a reference
    left on the host costs it only a little change-tracking bookkeeping."""
    if not outcome.previous_refs:
        return
    try:
        notes = vm.host.connector().release_references(vm.hyperv_id, outcome.previous_refs)
    except Exception as error:  # a connector bug or a lost host must not undo a committed backup
        notes = [f"Warning: the previous change-tracking references could not be released: {error}"]
    outcome.notes.extend(notes)


def _sources(
    session: BackupSession, refs: dict[str, str], full_scan: bool
) -> tuple[list[SourceFile], bool, str]:
    """Engine sources for the session's files, with changed ranges when tracking allows."""
    sources: list[SourceFile] = []
    tracking_used = False
    lost = ""
    for item in session.files:
        ranges: list[tuple[int, int]] | None = None
        reference = refs.get(item.name) or (refs.get(item.disk_id) if item.disk_id else None)
        if not full_scan and item.kind == "disk" and reference:
            try:
                changed = session.changed_ranges(item.name, reference)
            except ChangeTrackingLost as error:
                lost = f"Change tracking was lost ({error}); every block was read and compared."
                changed = None
            if changed is not None:
                # The connector has already left paging-file blocks out of these ranges.
                ranges = list(changed)
                tracking_used = True
        sources.append(SourceFile(name=item.name, source=item.opener, size=item.size, changed_ranges=ranges))
    if lost:
        # One lost reference makes the whole run a full comparison.
        sources = [SourceFile(name=s.name, source=s.source, size=s.size) for s in sources]
        tracking_used = False
    return sources, tracking_used, lost


def _import_offline_replica(
    context: JobContext,
    engine: EngineDatastore,
    vm: VirtualMachine,
    source: ProtectedDataSource,
    import_path: Path,
) -> BackupOutcome:
    folder = import_path / vm.name
    if not folder.is_dir():
        raise JobError(f"The offline media folder {folder} does not exist or is not a folder.")
    sources = []
    for root, _dirs, files in os.walk(folder):
        for file_name in sorted(files):
            path = Path(root) / file_name
            if path.is_symlink():
                continue  # a link on removable media could point anywhere on the server
            sources.append(SourceFile(name=path.relative_to(folder).as_posix(), source=str(path)))
    if not sources:
        raise JobError(f"The offline media folder {folder} holds no files for {vm.name}.")
    point = engine.backup(
        vm.hyperv_id,
        sources,
        vm_name=vm.name,
        parent=None,
        consistency="crash",
        metadata={
            "kind": str(RecoveryPointKind.INITIAL),
            "job": context.job.pk,
            "imported_from": str(folder),
            "host": vm.host.name,
            "catalog": catalog_metadata(vm, source.group, [s.name for s in sources]),
        },
        progress=_engine_progress(context),
        cancel=context.is_cancelled,
    )
    return BackupOutcome(
        point=point,
        point_kind=RecoveryPointKind.INITIAL,
        full_scan=True,
        consistency="crash",
        change_tracking_used=False,
        notes=[f"Imported {len(sources)} file(s) from {folder}."],
    )


def _differing_chunks(engine: EngineDatastore, parent_id: str | None, point: PointInfo) -> int:
    """Chunks whose content differs between the replica and what the host has now."""
    if parent_id is None:
        return 0
    parent = engine.point(parent_id)
    differing = 0
    for item in point.files:
        before = parent.file(item.name)
        with engine.open_file(point.id, item.name) as now_reader:
            if before is None:
                differing += item.chunks
                continue
            with engine.open_file(parent_id, item.name) as then_reader:
                shared = min(item.chunks, before.chunks)
                differing += abs(item.chunks - before.chunks)
                differing += sum(
                    1
                    for index in range(shared)
                    if now_reader.digest_at(index) != then_reader.digest_at(index)
                )
    return differing


def _engine_progress(context: JobContext) -> Any:
    def report(progress: Progress) -> None:
        context.progress(progress.bytes_done, progress.bytes_total, message=None)

    return report


def _record_point(
    context: JobContext,
    engine: EngineDatastore,
    datastore: Datastore,
    vm: VirtualMachine,
    source: ProtectedDataSource,
    outcome: BackupOutcome,
) -> None:
    point = outcome.point
    now = timezone.now()
    kind = context.job.kind
    with transaction.atomic():
        RecoveryPoint.objects.create(
            point_id=point.id,
            datastore=datastore,
            vm=vm,
            group=source.group,
            created=point.created,
            kind=outcome.point_kind,
            consistency=outcome.consistency,
            size_bytes=point.total_bytes,
            stored_bytes=point.bytes_new,
            metadata={"job": context.job.pk, "full_scan": outcome.full_scan},
        )
        updates: dict[str, Any] = {
            "replica_state": ReplicaState.OK,
            "inconsistency_reason": "",
            "change_tracking_refs": source.change_tracking_refs,
            "last_sync_at": now,
        }
        if kind in (JobKind.RECOVERY_POINT, JobKind.EXPRESS_FULL, JobKind.INITIAL_REPLICA):
            updates["last_recovery_point_at"] = now
        if kind == JobKind.EXPRESS_FULL:
            updates["last_express_full_at"] = now
        if kind == JobKind.CONSISTENCY_CHECK or outcome.point_kind == RecoveryPointKind.CONSISTENCY_CHECK:
            updates["last_consistency_check_at"] = now
        ProtectedDataSource.objects.filter(pk=source.pk).update(**updates)
        Alert.resolve(
            [AlertKind.BACKUP_FAILED, AlertKind.REPLICA_INCONSISTENT],
            f"Job #{context.job.pk} succeeded",
            vm=vm,
        )
    datastore.add_usage(point.bytes_new)
    context.progress(point.total_bytes, point.total_bytes, message=_summary(outcome), force=True)


def _summary(outcome: BackupOutcome) -> str:
    point = outcome.point
    mib = 1024 * 1024
    text = (
        f"{RecoveryPointKind(outcome.point_kind).label} created: read {point.bytes_read / mib:.1f} MiB "
        f"of {point.total_bytes / mib:.1f} MiB, stored {point.bytes_new / mib:.1f} MiB new"
    )
    if outcome.change_tracking_used:
        text += " (change tracking)"
    if outcome.bytes_read_from_host is not None:
        text += f", {outcome.bytes_read_from_host / mib:.1f} MiB over the network"
    if outcome.point_kind == RecoveryPointKind.CONSISTENCY_CHECK:
        if outcome.damaged_chunks or outcome.differing_chunks:
            text += (
                f"; repaired the replica: {outcome.damaged_chunks} damaged and "
                f"{outcome.differing_chunks} differing chunk(s)"
            )
        else:
            text += "; the replica was consistent, nothing to repair"
    return text


BACKUP_KINDS = tuple(POINT_KIND_FOR_JOB)


def mark_abandoned(job: Job) -> None:
    """A backup lost with its worker: nothing was committed (the manifest is the commit
    point), but the replica cannot be trusted to match the VM, so it is inconsistent (a
    consistency check follows per the group's policy) and the administrator is told."""
    source = ProtectedDataSource.objects.select_related("vm", "group").filter(vm_id=job.vm_id).first()
    if source is None or source.replica_state == ReplicaState.STOPPED:
        return
    reason = f"{POINT_KIND_FOR_JOB[job.kind].label} was interrupted: {job.error}"
    ProtectedDataSource.objects.filter(pk=source.pk).update(
        replica_state=ReplicaState.INCONSISTENT, inconsistency_reason=reason[:2000]
    )
    Alert.raise_alert(AlertKind.BACKUP_FAILED, reason, vm=source.vm, group=source.group, job=job)


def _mark_inconsistent(source: ProtectedDataSource, context: JobContext, reason: str) -> None:
    if context.is_cancelled():
        return  # a cancelled sync leaves the previous replica intact and consistent
    ProtectedDataSource.objects.filter(pk=source.pk).update(
        replica_state=ReplicaState.INCONSISTENT, inconsistency_reason=reason[:2000]
    )
    Alert.raise_alert(AlertKind.BACKUP_FAILED, reason, vm=source.vm, group=source.group, job=context.job)


def _apply_retention(
    context: JobContext,
    engine: EngineDatastore,
    datastore: Datastore,
    vm: VirtualMachine,
    source: ProtectedDataSource,
) -> None:
    """Drop superseded synchronization points, then apply the group's retention.

    A synchronization only refreshes the replica: once a newer point exists it is
    superseded, as in MABS, where synchronizations are not listed as recovery points.
    Keeping every 15-minute sync would add ~100 points (and their indexes) per VM per day.
    """
    group = source.group
    points = sorted(engine.points(vm.hyperv_id), key=lambda p: (p.created, p.id))
    newest = points[-1].id if points else None
    superseded = [p for p in points if p.id != newest and p.metadata.get("kind") == RecoveryPointKind.SYNC]
    for point in superseded:
        engine.delete_point(point.id)
    policy = RetentionPolicy(
        keep_days=group.retention_days,
        keep_daily=group.keep_daily,
        keep_weekly=group.keep_weekly,
        keep_monthly=group.keep_monthly,
        keep_yearly=group.keep_yearly,
    )
    removals = select_removals(engine.points(vm.hyperv_id), policy, timezone.now())
    for point in removals:
        engine.delete_point(point.id)
    removed_ids = [p.id for p in superseded + removals]
    if removed_ids:
        RecoveryPoint.objects.filter(datastore=datastore, point_id__in=removed_ids).update(
            deleted_at=timezone.now()
        )
    if superseded:
        context.log(f"{len(superseded)} earlier synchronization point(s) superseded by this backup")
    if removals:
        context.log(
            f"Retention removed {len(removals)} recovery point(s) older than {group.retention_days} days"
        )
