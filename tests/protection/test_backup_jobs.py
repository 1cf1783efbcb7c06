"""Backup jobs end to end on a real lab host: connector -> engine -> catalog -> restore."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from backupsite.core.jobs.runner import run_job
from backupsite.core.models import Job, JobKind, JobState
from protection.connectors import ChangeTrackingLost, Consistency
from protection.connectors.lab.guest import churn
from protection.connectors.lab.rct import RCTJournal
from protection.models import (
    Alert,
    AlertKind,
    ProtectedDataSource,
    RecoveryPoint,
    ReplicaState,
    VirtualMachine,
)
from tests.protection.conftest import ProtectedLab, restore_and_compare

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def run(kind: str, lab: ProtectedLab, vm: VirtualMachine | None = None, **parameters: object) -> Job:
    job = Job.objects.create(kind=kind, vm=vm or lab.windows, group=lab.group, parameters=parameters)
    run_job(job.pk)
    job.refresh_from_db()
    return job


def test_initial_replica_then_incremental_with_change_tracking(
    protected_lab: ProtectedLab, tmp_path: Path
) -> None:
    lab = protected_lab
    vm = lab.linux  # no page file: every changed byte must come back
    disk = lab.disk(vm)
    first = run(JobKind.INITIAL_REPLICA, lab, vm)
    assert first.state == JobState.SUCCEEDED, first.traceback
    assert first.result["full_scan"] is True
    source = lab.source(vm)
    assert source.replica_state == ReplicaState.OK
    assert source.change_tracking_refs["point_id"] == first.result["recovery_point"]
    assert source.change_tracking_refs["refs"]  # RCT ids recorded for the disk
    point = RecoveryPoint.objects.get(point_id=first.result["recovery_point"])
    assert point.kind == "initial" and point.vm == vm and point.size_bytes > 0
    restore_and_compare(lab.datastore, point.point_id, disk, tmp_path / "r1")

    written = churn(lab.connector.vm_config(vm.hyperv_id), 0.5, seed=7)
    assert written.bytes_written > 0
    sync = run(JobKind.SYNCHRONIZATION, lab, vm)
    assert sync.state == JobState.SUCCEEDED, sync.traceback
    assert sync.result["change_tracking_used"] is True and sync.result["full_scan"] is False
    # Only the chunks holding changed data plus the VHDX metadata regions were read:
    # at most one chunk per 64 KiB write and a few for header, BAT and metadata.
    chunk = lab.datastore.open_engine().chunk_size
    assert sync.result["bytes_read"] <= (written.writes + 4) * chunk
    assert sync.result["bytes_read"] < first.result["bytes_read"] / 2
    restore_and_compare(lab.datastore, sync.result["recovery_point"], disk, tmp_path / "r2")
    # The first point still restores the disk as it was before the churn.
    engine = lab.datastore.open_engine()
    with engine.open_file(first.result["recovery_point"], f"Virtual Hard Disks/{disk.name}") as old:
        assert old.read() != disk.read_bytes()


def test_page_file_changes_are_left_out_of_incrementals(protected_lab: ProtectedLab, tmp_path: Path) -> None:
    lab = protected_lab
    vm = lab.windows
    disk = lab.disk(vm)
    assert run(JobKind.INITIAL_REPLICA, lab, vm).state == JobState.SUCCEEDED
    churn(lab.connector.vm_config(vm.hyperv_id), 5, seed=11)
    sync = run(JobKind.SYNCHRONIZATION, lab, vm)
    assert sync.state == JobState.SUCCEEDED, sync.traceback
    assert "paging files excluded" in sync.log
    session = lab.connector.begin_backup(vm.hyperv_id, Consistency.APPLICATION)
    try:
        excluded = session.excluded_ranges(f"Virtual Hard Disks/{disk.name}")
    finally:
        lab.connector.end_backup(session, False)
    assert excluded
    engine = lab.datastore.open_engine()
    live = disk.read_bytes()
    with engine.open_file(sync.result["recovery_point"], f"Virtual Hard Disks/{disk.name}") as reader:
        restored = reader.read()
    assert len(restored) == len(live)
    differing = [
        offset
        for offset in range(0, len(live), 4096)
        if live[offset : offset + 4096] != restored[offset : offset + 4096]
    ]
    # Whatever differs lies inside the page file; everything else is byte-exact.
    assert all(any(start <= offset < start + length for start, length in excluded) for offset in differing)
    assert differing, "the churn should have touched the page file"


def test_consistency_check_finds_nothing_then_repairs_damage(
    protected_lab: ProtectedLab, tmp_path: Path
) -> None:
    lab = protected_lab
    assert run(JobKind.INITIAL_REPLICA, lab).state == JobState.SUCCEEDED
    clean = run(JobKind.CONSISTENCY_CHECK, lab)
    assert clean.state == JobState.SUCCEEDED, clean.traceback
    assert clean.result["damaged_chunks"] == 0 and clean.result["differing_chunks"] == 0

    # Damage the replica on purpose: flip bytes in every stored chunk file.
    chunk_files = [p for p in (Path(lab.datastore.path) / "chunks").rglob("*") if p.is_file()]
    assert chunk_files
    for path in chunk_files[:3]:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    repaired = run(JobKind.CONSISTENCY_CHECK, lab)
    assert repaired.state == JobState.SUCCEEDED, repaired.traceback
    assert repaired.result["damaged_chunks"] >= 1
    restore_and_compare(
        lab.datastore, repaired.result["recovery_point"], lab.disk(lab.windows), tmp_path / "r"
    )
    assert lab.source(lab.windows).last_consistency_check_at is not None


def test_failed_sync_makes_replica_inconsistent_and_alerts_until_success(protected_lab: ProtectedLab) -> None:
    lab = protected_lab
    assert run(JobKind.INITIAL_REPLICA, lab).state == JobState.SUCCEEDED
    disk = lab.disk(lab.windows)
    hidden = disk.with_suffix(".hidden")
    disk.rename(hidden)
    failed = run(JobKind.SYNCHRONIZATION, lab)
    assert failed.state == JobState.FAILED and failed.error
    source = lab.source(lab.windows)
    assert source.replica_state == ReplicaState.INCONSISTENT
    alert = Alert.objects.active().get(vm=lab.windows)
    assert alert.kind == AlertKind.BACKUP_FAILED

    hidden.rename(disk)
    fixed = run(JobKind.CONSISTENCY_CHECK, lab)
    assert fixed.state == JobState.SUCCEEDED, fixed.traceback
    assert lab.source(lab.windows).replica_state == ReplicaState.OK
    assert not Alert.objects.active().filter(vm=lab.windows).exists()


def test_lost_change_tracking_falls_back_to_a_full_comparison(
    protected_lab: ProtectedLab, tmp_path: Path
) -> None:
    lab = protected_lab
    assert run(JobKind.INITIAL_REPLICA, lab).state == JobState.SUCCEEDED
    source = lab.source(lab.windows)
    refs = source.change_tracking_refs
    refs["refs"] = {name: "rct:unknown:999" for name in refs["refs"]}
    ProtectedDataSource.objects.filter(pk=source.pk).update(change_tracking_refs=refs)
    sync = run(JobKind.SYNCHRONIZATION, lab)
    assert sync.state == JobState.SUCCEEDED, sync.traceback
    assert sync.result["point_kind"] == "consistency_check" and sync.result["full_scan"] is True
    assert "Change tracking was lost" in sync.log
    restore_and_compare(lab.datastore, sync.result["recovery_point"], lab.disk(lab.windows), tmp_path / "r")


def test_manual_replica_from_offline_media(protected_lab: ProtectedLab, tmp_path: Path) -> None:
    lab = protected_lab
    media = tmp_path / "media"
    vm_folder = Path(lab.windows.configuration_path)
    shutil.copytree(vm_folder, media / lab.windows.name)
    imported = run(JobKind.INITIAL_REPLICA, lab, import_path=str(media))
    assert imported.state == JobState.SUCCEEDED, imported.traceback
    # The consistency check that catches up was submitted; it brings the replica up to date.
    check = Job.objects.get(kind=JobKind.CONSISTENCY_CHECK, vm=lab.windows)
    assert check.state == JobState.QUEUED
    run_job(check.pk)
    check.refresh_from_db()
    assert check.state == JobState.SUCCEEDED, check.traceback
    restore_and_compare(lab.datastore, check.result["recovery_point"], lab.disk(lab.windows), tmp_path / "r")


def test_missing_offline_media_folder_fails_clearly(protected_lab: ProtectedLab, tmp_path: Path) -> None:
    job = run(JobKind.INITIAL_REPLICA, protected_lab, import_path=str(tmp_path / "nowhere"))
    assert job.state == JobState.FAILED and "does not exist" in job.error


def test_stop_protection_delete_data(protected_lab: ProtectedLab) -> None:
    lab = protected_lab
    assert run(JobKind.INITIAL_REPLICA, lab).state == JobState.SUCCEEDED
    stop = run(JobKind.STOP_PROTECTION, lab, keep_data=False)
    assert stop.state == JobState.SUCCEEDED, stop.traceback
    assert stop.result["points_deleted"] == 1
    assert not ProtectedDataSource.objects.filter(vm=lab.windows).exists()
    assert lab.datastore.open_engine().points(lab.windows.hyperv_id) == []
    assert RecoveryPoint.objects.filter(vm=lab.windows, deleted_at__isnull=True).count() == 0


def test_stop_protection_keep_data(protected_lab: ProtectedLab) -> None:
    lab = protected_lab
    assert run(JobKind.INITIAL_REPLICA, lab).state == JobState.SUCCEEDED
    assert run(JobKind.STOP_PROTECTION, lab, keep_data=True).state == JobState.SUCCEEDED
    assert len(lab.datastore.open_engine().points(lab.windows.hyperv_id)) == 1
    assert RecoveryPoint.objects.filter(vm=lab.windows, deleted_at__isnull=True).count() == 1


def test_a_newer_point_supersedes_synchronization_points(protected_lab: ProtectedLab) -> None:
    lab = protected_lab
    vm = lab.linux
    initial = run(JobKind.INITIAL_REPLICA, lab, vm)
    first_sync = run(JobKind.SYNCHRONIZATION, lab, vm)
    second_sync = run(JobKind.SYNCHRONIZATION, lab, vm)
    recovery_point = run(JobKind.RECOVERY_POINT, lab, vm)
    assert all(j.state == JobState.SUCCEEDED for j in (initial, first_sync, second_sync, recovery_point))
    kept = {p.id for p in lab.datastore.open_engine().points(vm.hyperv_id)}
    # Scheduled points stay for the retention range; a sync only until the next point.
    assert kept == {initial.result["recovery_point"], recovery_point.result["recovery_point"]}
    live = RecoveryPoint.objects.filter(vm=vm, deleted_at__isnull=True)
    assert set(live.values_list("point_id", flat=True)) == kept
    assert "superseded" in second_sync.log and "superseded" in recovery_point.log


def test_garbage_collection_frees_the_space_of_deleted_points(
    protected_lab: ProtectedLab, tmp_path: Path
) -> None:
    lab = protected_lab
    assert run(JobKind.INITIAL_REPLICA, lab, lab.windows).state == JobState.SUCCEEDED
    linux = run(JobKind.INITIAL_REPLICA, lab, lab.linux)
    assert linux.state == JobState.SUCCEEDED
    assert run(JobKind.STOP_PROTECTION, lab, lab.windows, keep_data=False).state == JobState.SUCCEEDED
    before = lab.datastore.open_engine().usage()
    # Let an hour pass for the chunk files: GC never sweeps chunks younger than its margin.
    an_hour_ago = time.time() - 3600
    for chunk in (Path(lab.datastore.path) / "chunks").rglob("*"):
        if chunk.is_file():
            os.utime(chunk, (an_hour_ago, an_hour_ago))
    gc = Job.objects.create(
        kind=JobKind.GARBAGE_COLLECTION, datastore=lab.datastore, parameters={"grace_seconds": 0}
    )
    run_job(gc.pk)
    gc.refresh_from_db()
    assert gc.state == JobState.SUCCEEDED, gc.traceback
    after = lab.datastore.open_engine().usage()
    assert (
        gc.result["chunks_removed"] > 0
        and after.chunk_count == before.chunk_count - gc.result["chunks_removed"]
    )
    lab.datastore.refresh_from_db()
    assert lab.datastore.used_bytes == after.total_bytes and lab.datastore.last_gc_at is not None
    # What is left still restores byte for byte.
    restore_and_compare(lab.datastore, linux.result["recovery_point"], lab.disk(lab.linux), tmp_path / "r")


def test_cancelled_backups_commit_nothing_and_say_cancelled(protected_lab: ProtectedLab) -> None:
    lab = protected_lab
    vm = lab.windows
    engine = lab.datastore.open_engine()
    # The user pressed Cancel right after a worker claimed the job.
    initial = Job.objects.create(kind=JobKind.INITIAL_REPLICA, vm=vm, group=lab.group, cancel_requested=True)
    run_job(initial.pk)
    initial.refresh_from_db()
    assert initial.state == JobState.CANCELLED, initial.traceback
    assert engine.points(vm.hyperv_id) == []
    assert lab.source(vm).replica_state == ReplicaState.INCONSISTENT
    assert not Alert.objects.active().exists()  # a cancel is not a failure

    assert run(JobKind.CONSISTENCY_CHECK, lab, vm).state == JobState.SUCCEEDED
    sync = Job.objects.create(kind=JobKind.SYNCHRONIZATION, vm=vm, group=lab.group, cancel_requested=True)
    run_job(sync.pk)
    sync.refresh_from_db()
    assert sync.state == JobState.CANCELLED
    assert len(engine.points(vm.hyperv_id)) == 1
    assert lab.source(vm).replica_state == ReplicaState.OK
    # The checkpoint was released: the next backup works.
    assert run(JobKind.SYNCHRONIZATION, lab, vm).state == JobState.SUCCEEDED


def test_previous_references_are_released_only_after_a_commit(protected_lab: ProtectedLab) -> None:
    lab = protected_lab
    vm = lab.linux
    disk = lab.disk(vm)
    journal = RCTJournal(disk)
    assert run(JobKind.INITIAL_REPLICA, lab, vm).state == JobState.SUCCEEDED
    (first_ref,) = lab.source(vm).change_tracking_refs["refs"].values()

    # A failed synchronization keeps the reference it started from usable.
    hidden = disk.with_suffix(".hidden")
    disk.rename(hidden)
    assert run(JobKind.SYNCHRONIZATION, lab, vm).state == JobState.FAILED
    hidden.rename(disk)
    journal.changes_since(first_ref)
    # So does a cancelled one.
    cancelled = Job.objects.create(
        kind=JobKind.SYNCHRONIZATION, vm=vm, group=lab.group, cancel_requested=True
    )
    run_job(cancelled.pk)
    cancelled.refresh_from_db()
    assert cancelled.state == JobState.CANCELLED
    journal.changes_since(first_ref)

    churn(lab.connector.vm_config(vm.hyperv_id), 0.5, seed=3)
    check = run(JobKind.CONSISTENCY_CHECK, lab, vm)  # the failure left the replica inconsistent
    assert check.state == JobState.SUCCEEDED, check.traceback
    assert "previous change-tracking reference released" in check.log
    with pytest.raises(ChangeTrackingLost):
        journal.changes_since(first_ref)
    (second_ref,) = lab.source(vm).change_tracking_refs["refs"].values()
    # The newer reference still drives incrementals.
    churn(lab.connector.vm_config(vm.hyperv_id), 0.5, seed=4)
    sync = run(JobKind.SYNCHRONIZATION, lab, vm)
    assert sync.state == JobState.SUCCEEDED and sync.result["change_tracking_used"] is True
    assert f"Read {sync.result['bytes_read']} bytes" in sync.log
    assert sync.result["bytes_read_from_host"] == sync.result["bytes_read"]
    with pytest.raises(ChangeTrackingLost):
        journal.changes_since(second_ref)
