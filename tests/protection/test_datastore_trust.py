"""Jobs against a datastore that is not what the catalog thinks: an unmounted, replaced
or read-only volume fails backups, verify and GC with a datastore alert and writes
nothing; verify reconciles catalog and store both ways. Real tmpfs and bind mounts."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupsite.core.jobs.runner import run_job
from backupsite.core.models import Job, JobKind, JobState
from protection.models import Alert, AlertKind, RecoveryPoint, ReplicaState, VirtualMachine
from storage.engine import Datastore as EngineDatastore
from tests.protection.conftest import ProtectedLab, restore_and_compare
from tests.reliability.report import FaultRow, record

pytestmark = [pytest.mark.django_db, pytest.mark.slow]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")


def run(kind: str, lab: ProtectedLab, vm: VirtualMachine | None = None) -> Job:
    if kind in (JobKind.VERIFY, JobKind.GARBAGE_COLLECTION):
        job = Job.objects.create(kind=kind, datastore=lab.datastore)
    else:
        job = Job.objects.create(kind=kind, vm=vm or lab.windows, group=lab.group)
    run_job(job.pk)
    job.refresh_from_db()
    return job


def mount(*arguments: str) -> None:
    subprocess.run(["mount", *arguments], check=True)


def unmount(path: Path) -> None:
    subprocess.run(["umount", str(path)], check=True)


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    """The datastore's folder as a mount point: a tmpfs "disk" bind-mounted there, so
    unmounting it keeps the data (the disk is only detached) and it can come back."""
    disk, mount_point = tmp_path / "disk", tmp_path / "datastore"  # protected_lab's datastore path
    disk.mkdir()
    mount_point.mkdir()
    mount("-t", "tmpfs", "-o", "size=512m", "tmpfs", str(disk))
    mount("--bind", str(disk), str(mount_point))
    yield mount_point
    for path in (mount_point, disk):
        while os.path.ismount(path):
            unmount(path)


@pytest.fixture
def lab(volume: Path, protected_lab: ProtectedLab) -> ProtectedLab:
    assert os.path.ismount(protected_lab.datastore.path)
    first = run(JobKind.INITIAL_REPLICA, protected_lab)
    assert first.state == JobState.SUCCEEDED, first.traceback
    return protected_lab


def unavailable_alert(lab: ProtectedLab) -> Alert | None:
    return (
        Alert.objects.active().filter(kind=AlertKind.DATASTORE_UNAVAILABLE, datastore=lab.datastore).first()
    )


@needs_root
def test_unmounted_volume_fails_every_job_and_nothing_is_written(lab: ProtectedLab, volume: Path) -> None:
    unmount(volume)
    assert list(volume.iterdir()) == []
    for kind in (JobKind.RECOVERY_POINT, JobKind.SYNCHRONIZATION, JobKind.VERIFY, JobKind.GARBAGE_COLLECTION):
        job = run(kind, lab)
        assert job.state == JobState.FAILED, kind
        assert "is empty. Is the volume mounted?" in job.error and "nothing was written" in job.error
    assert list(volume.iterdir()) == []  # no fresh store on the root disk
    alert = unavailable_alert(lab)
    assert alert is not None and alert.occurrences == 4 and "Is the volume mounted?" in alert.message
    # The replica is fine, its storage is not: no inconsistency, no new catalog entry.
    assert lab.source(lab.windows).replica_state == ReplicaState.OK
    assert RecoveryPoint.objects.filter(vm=lab.windows).count() == 1
    assert not RecoveryPoint.objects.filter(missing=True).exists()

    mount("--bind", str(volume.parent / "disk"), str(volume))  # the volume is back
    again = run(JobKind.RECOVERY_POINT, lab)
    assert again.state == JobState.SUCCEEDED, again.traceback
    assert unavailable_alert(lab) is None
    assert RecoveryPoint.objects.filter(vm=lab.windows).count() == 2


@needs_root
def test_another_volume_mounted_in_its_place_is_refused(lab: ProtectedLab, volume: Path) -> None:
    unmount(volume)
    mount("-t", "tmpfs", "-o", "size=64m", "tmpfs", str(volume))
    other = EngineDatastore.create(volume)
    for kind in (JobKind.RECOVERY_POINT, JobKind.VERIFY, JobKind.GARBAGE_COLLECTION):
        job = run(kind, lab)
        assert job.state == JobState.FAILED and "holds another datastore" in job.error, kind
    assert other.points() == [] and other.usage().chunk_count == 0
    assert unavailable_alert(lab) is not None


@needs_root
def test_read_only_volume_is_refused_for_backups_and_maintenance(lab: ProtectedLab, volume: Path) -> None:
    mount("-o", "remount,bind,ro", str(volume))
    for kind in (JobKind.RECOVERY_POINT, JobKind.VERIFY, JobKind.GARBAGE_COLLECTION):
        job = run(kind, lab)
        assert job.state == JobState.FAILED and "is read-only" in job.error, kind
    assert unavailable_alert(lab) is not None
    assert RecoveryPoint.objects.filter(vm=lab.windows).count() == 1


def test_verify_reconciles_catalog_and_store_both_ways(protected_lab: ProtectedLab) -> None:
    lab = protected_lab
    for vm in (lab.windows, lab.linux):
        assert run(JobKind.INITIAL_REPLICA, lab, vm).state == JobState.SUCCEEDED
    lost = RecoveryPoint.objects.get(vm=lab.windows)
    stray = RecoveryPoint.objects.get(vm=lab.linux)
    engine = lab.datastore.open_engine()
    engine.delete_point(lost.point_id)  # the catalog lists it, the store lost it
    RecoveryPoint.objects.filter(pk=stray.pk).delete()  # the store holds it, the catalog forgot it

    job = run(JobKind.VERIFY, lab)
    assert job.state == JobState.SUCCEEDED, job.traceback
    assert job.result["missing_points"] == 1 and job.result["missing_point_ids"] == [lost.point_id]
    assert job.result["unknown_points"] == 1 and job.result["unknown_point_ids"] == [stray.point_id]
    assert "1 catalog point(s) missing from the datastore, 1 datastore point(s) unknown" in job.message
    lost.refresh_from_db()
    assert lost.missing and not RecoveryPoint.objects.usable().filter(pk=lost.pk).exists()
    assert [p.id for p in engine.points()] == [stray.point_id]  # reported, never deleted
    alert = Alert.objects.active().get(kind=AlertKind.DATASTORE_DAMAGED, datastore=lab.datastore)
    assert "missing from the datastore" in alert.message
    assert f"Not in the catalog: recovery point {stray.point_id}" in job.log


def test_a_damaged_manifest_stops_no_backup_and_verify_marks_the_point(
    protected_lab: ProtectedLab, tmp_path: Path
) -> None:
    """One truncated manifest used to fail every backup of the datastore (listing raised)."""
    lab = protected_lab
    first = run(JobKind.INITIAL_REPLICA, lab, lab.windows)
    assert run(JobKind.INITIAL_REPLICA, lab, lab.linux).state == JobState.SUCCEEDED
    damaged = RecoveryPoint.objects.get(point_id=first.result["recovery_point"])
    manifest = Path(lab.datastore.path) / "points" / damaged.point_id / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:64])

    other = run(JobKind.SYNCHRONIZATION, lab, lab.linux)
    assert other.state == JobState.SUCCEEDED, other.error
    # The VM whose latest point is damaged is read in full (its parent cannot be trusted).
    again = run(JobKind.SYNCHRONIZATION, lab, lab.windows)
    assert again.state == JobState.SUCCEEDED, again.error
    assert again.result["full_scan"] is True

    job = run(JobKind.VERIFY, lab)
    assert job.state == JobState.SUCCEEDED, job.traceback
    assert job.result["unreadable_point_ids"] == [damaged.point_id]
    assert "1 damaged manifest(s)" in job.message
    damaged.refresh_from_db()
    assert damaged.damaged and not damaged.missing
    assert not RecoveryPoint.objects.usable().filter(pk=damaged.pk).exists()
    alert = Alert.objects.active().get(kind=AlertKind.DATASTORE_DAMAGED, datastore=lab.datastore)
    assert "damaged manifest" in alert.message
    assert f"Damaged: recovery point {damaged.point_id}" in job.log
    # The points taken after the damage are whole.
    restore_and_compare(lab.datastore, other.result["recovery_point"], lab.disk(lab.linux), tmp_path / "r1")
    restore_and_compare(lab.datastore, again.result["recovery_point"], lab.disk(lab.windows), tmp_path / "r2")
    record(
        FaultRow(
            fault="Manifest truncated (a torn copy, a bad sector)",
            during="between backups: the newest point of one of two VMs",
            injected=1,
            happened=(
                "the other VM's backup and the damaged VM's next backup (a full read: its parent cannot be "
                "trusted) succeeded; verify marked the point damaged, not missing"
            ),
            user_saw="verify job: '1 damaged manifest(s)'; alert 'Datastore damage found'; the point refused",
            nothing_lost="both points taken after the damage restored, cmp + qemu-img compare identical",
        )
    )
