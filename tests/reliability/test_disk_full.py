"""The datastore's volume fills up in the middle of a backup, at random fill levels.

A real tmpfs of 48 MiB holds the datastore; a filler file leaves a random few MiB free
before each backup. Each time: the job fails saying the datastore is full, nothing
half-written is offered, the replica is marked inconsistent with an alert, the points
committed before restore byte for byte and verify finds no damage; once space is back
the next consistency check succeeds.
"""

from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupsite.core.jobs.runner import run_job
from backupsite.core.models import Job, JobKind, JobState
from protection.connectors.lab.guest import churn
from protection.models import Alert, AlertKind, ProtectionGroup, RecoveryPoint, ReplicaState
from storage.models import Datastore
from tests.protection.conftest import ProtectedLab, restore_and_compare
from tests.reliability.report import FaultRow, record, repetitions

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)"),
]
MiB = 1024 * 1024
FILLS = repetitions(3, 15)


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def run(kind: str, lab: ProtectedLab) -> Job:
    job = Job.objects.create(kind=kind, vm=lab.windows, group=lab.group)
    run_job(job.pk)
    job.refresh_from_db()
    return job


def fill(volume: Path, leave: int) -> Path:
    """A file that takes all but ``leave`` bytes of the volume."""
    filler = volume / "filler.bin"
    free = os.statvfs(volume).f_bavail * os.statvfs(volume).f_frsize
    with filler.open("ab") as handle:
        handle.write(b"\xff" * max(0, free - leave))
    return filler


def test_datastore_volume_full_mid_backup(
    protected_lab: ProtectedLab, small_volume: Path, tmp_path: Path
) -> None:
    lab = protected_lab
    datastore = Datastore.objects.create_with_store("small", str(small_volume / "datastore"))
    ProtectionGroup.objects.filter(pk=lab.group.pk).update(datastore=datastore)
    lab.group.refresh_from_db()
    lab.datastore = datastore
    rng = random.Random(os.environ.get("RELIABILITY_SEED", "disk-full"))

    first = run(JobKind.INITIAL_REPLICA, lab)
    assert first.state == JobState.SUCCEEDED, first.error
    committed = {first.result["recovery_point"]: lab.disk(lab.windows).read_bytes()}
    messages: set[str] = set()

    for attempt in range(FILLS):
        churn(lab.connector.vm_config(lab.windows.hyperv_id), 30.0, seed=100 + attempt)
        before = set(RecoveryPoint.objects.values_list("point_id", flat=True))
        filler = fill(small_volume, rng.randint(0, 96 * 1024))
        # A consistency check reads (and may store) the whole disk: it runs out of space.
        job = run(JobKind.CONSISTENCY_CHECK, lab)
        assert job.state == JobState.FAILED, (job.result.get("bytes_stored"), job.result)
        assert "no space left on the datastore device" in job.error
        messages.add(job.message.split(":")[0])
        source = lab.source(lab.windows)
        assert source.replica_state == ReplicaState.INCONSISTENT
        assert Alert.objects.active().filter(kind=AlertKind.BACKUP_FAILED, vm=lab.windows).exists()
        assert set(RecoveryPoint.objects.values_list("point_id", flat=True)) == before
        assert {p.id for p in datastore.open_engine().points()} == before

        filler.unlink()  # the administrator makes room
        expected = lab.disk(lab.windows).read_bytes()
        repaired = run(JobKind.CONSISTENCY_CHECK, lab)
        assert repaired.state == JobState.SUCCEEDED, repaired.error
        assert lab.source(lab.windows).replica_state == ReplicaState.OK
        assert not Alert.objects.active().filter(kind=AlertKind.BACKUP_FAILED, vm=lab.windows).exists()
        committed[repaired.result["recovery_point"]] = expected

    engine = datastore.open_engine()
    report = engine.verify()
    assert report.ok, report
    for point_id, content in committed.items():
        expected_disk = tmp_path / "expected" / lab.disk(lab.windows).name
        expected_disk.parent.mkdir(exist_ok=True)
        expected_disk.write_bytes(content)
        restore_and_compare(datastore, point_id, expected_disk, tmp_path / f"restore-{point_id}")

    record(
        FaultRow(
            fault="Datastore volume full",
            during="consistency check after 30 % churn (about 130 KB of new data), 0-96 KiB left free",
            injected=FILLS,
            happened=(
                "job failed: 'no space left on the datastore device'; replica marked inconsistent; "
                "no point committed; after space was freed the next consistency check succeeded"
            ),
            user_saw="job failed with that message; alert 'Backup failed' until the check succeeded",
            nothing_lost=(
                f"{len(committed)} committed points restored, cmp + qemu-img compare identical; verify clean"
            ),
        )
    )
