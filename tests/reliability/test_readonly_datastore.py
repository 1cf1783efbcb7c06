"""The datastore's volume turns read-only in the middle of a backup, at random moments.

The datastore lives on a real ext4 volume (a loop device) mounted with
``errors=remount-ro``, the way a disk error makes the kernel remount a volume read-only
under a running backup: the test triggers an ext4 error through sysfs while a paced
consistency check is reading. (A tmpfs cannot be remounted read-only under a backup:
the kernel refuses with EBUSY while any file is open for writing, and a backup always
holds its in-progress marker open.) Each time: the job fails saying the datastore is
read-only, the replica is marked inconsistent with a backup alert and a datastore alert,
nothing half-written is offered; after the administrator's repair (unmount, e2fsck,
mount read-write) the next consistency check succeeds, every committed point restores
byte for byte and verify is clean.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupsite.core.models import Job, JobKind, JobState
from protection.connectors.lab.config import HOST_FILE, write_json_atomic
from protection.connectors.lab.guest import churn
from protection.models import Alert, AlertKind, ProtectionGroup, RecoveryPoint, ReplicaState
from storage.models import Datastore
from storage.mounts import read_only
from tests.browser.workers import WorkerCluster
from tests.protection.conftest import ProtectedLab, restore_and_compare
from tests.reliability.report import FaultRow, record, repetitions
from tests.reliability.waiting import finished, wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="a loop-mounted volume needs root (CI runs as root)"),
]
MiB = 1024 * 1024
FAULTS = repetitions(3, 12)
READ_RATE = 16 * MiB  # bytes/s: a consistency check of the lab VM takes about 4 s
MOUNT_OPTIONS = "loop,errors=remount-ro"


class Volume:
    """An ext4 file system in an image file, loop-mounted at ``path``."""

    def __init__(self, image: Path, path: Path) -> None:
        self.image = image
        self.path = path

    def mount(self) -> None:
        subprocess.run(["mount", "-o", MOUNT_OPTIONS, str(self.image), str(self.path)], check=True)

    def unmount(self) -> None:
        subprocess.run(["umount", str(self.path)], check=True)

    def fail(self) -> None:
        """What a disk error does: ext4 records it and the kernel remounts read-only."""
        source = subprocess.run(
            ["findmnt", "-n", "-o", "SOURCE", str(self.path)], check=True, capture_output=True, text=True
        )
        device = Path(source.stdout.strip()).name
        Path(f"/sys/fs/ext4/{device}/trigger_fs_error").write_text("injected by the reliability tests\n")

    def read_only(self) -> bool:
        # The product's own probe: on Linux 6.x statvfs does not tell, mountinfo does.
        return read_only(str(self.path))

    def repair(self) -> None:
        """The administrator: unmount, check the file system, mount it read-write again."""
        self.unmount()
        checked = subprocess.run(["e2fsck", "-f", "-y", str(self.image)], capture_output=True, text=True)
        assert checked.returncode in (0, 1), checked.stdout + checked.stderr  # 1: errors corrected
        self.mount()


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Volume]:
    image = tmp_path / "volume.img"
    subprocess.run(["truncate", "-s", "256M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    mount_point = tmp_path / "volume"
    mount_point.mkdir()
    made = Volume(image, mount_point)
    made.mount()
    try:
        yield made
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_datastore_turns_read_only_mid_backup(
    protected_lab: ProtectedLab, volume: Volume, cluster: WorkerCluster, tmp_path: Path
) -> None:
    lab = protected_lab
    vm = lab.windows
    datastore = Datastore.objects.create_with_store("fragile", str(volume.path / "datastore"))
    ProtectionGroup.objects.filter(pk=lab.group.pk).update(datastore=datastore)
    lab.group.refresh_from_db()
    rng = random.Random(os.environ.get("RELIABILITY_SEED", "read-only"))

    first = finished(Job.submit(JobKind.INITIAL_REPLICA, vm=vm, group=lab.group))
    assert first.state == JobState.SUCCEEDED, first.error
    committed = {first.result["recovery_point"]: lab.disk(vm).read_bytes()}
    host = json.loads((lab.folder / HOST_FILE).read_text())
    write_json_atomic(lab.folder / HOST_FILE, {**host, "read_bytes_per_second": READ_RATE})
    fractions: list[float] = []

    for attempt in range(FAULTS):
        churn(lab.connector.vm_config(vm.hyperv_id), 20.0, seed=200 + attempt)
        expected = lab.disk(vm).read_bytes()
        before = set(RecoveryPoint.objects.values_list("point_id", flat=True))
        job = Job.submit(JobKind.CONSISTENCY_CHECK, vm=vm, group=lab.group)
        fraction = rng.uniform(0.1, 0.8)
        fractions.append(fraction)

        def reading(job: Job = job, fraction: float = fraction) -> bool:
            job.refresh_from_db()
            assert not job.is_finished, f"finished before the fault: {job.state} {job.error}"
            return job.bytes_total > 0 and job.bytes_done >= fraction * job.bytes_total

        wait_for(reading, 60, f"job #{job.pk} to be {fraction:.0%} through")
        volume.fail()
        assert volume.read_only()

        job = finished(job)
        assert job.state == JobState.FAILED, job.result
        assert "the datastore is read-only" in job.error, job.error
        assert "mount it read-write" in job.error
        source = lab.source(vm)
        assert source.replica_state == ReplicaState.INCONSISTENT
        assert "read-only" in source.inconsistency_reason
        assert Alert.objects.active().filter(kind=AlertKind.BACKUP_FAILED, vm=vm).exists()
        assert (
            Alert.objects.active().filter(kind=AlertKind.DATASTORE_UNAVAILABLE, datastore=datastore).exists()
        )
        assert set(RecoveryPoint.objects.values_list("point_id", flat=True)) == before
        assert {p.id for p in datastore.open_engine(write=False).points(vm.hyperv_id)} == before
        # Until it is repaired, the next backup refuses to start on the read-only store.
        refused = finished(Job.submit(JobKind.CONSISTENCY_CHECK, vm=vm, group=lab.group))
        assert refused.state == JobState.FAILED
        assert "is read-only. Is the volume mounted read-write" in refused.error, refused.error

        volume.repair()
        assert not volume.read_only()
        # After the repair the store holds exactly the committed points, nothing half-written.
        assert {p.id for p in datastore.open_engine().points(vm.hyperv_id)} == before
        check = finished(Job.submit(JobKind.CONSISTENCY_CHECK, vm=vm, group=lab.group))
        assert check.state == JobState.SUCCEEDED, check.error
        assert lab.source(vm).replica_state == ReplicaState.OK
        assert not Alert.objects.active().filter(kind=AlertKind.BACKUP_FAILED, vm=vm).exists()
        assert not Alert.objects.active().filter(kind=AlertKind.DATASTORE_UNAVAILABLE).exists()
        committed[check.result["recovery_point"]] = expected

    report = datastore.open_engine().verify()
    assert report.ok, report
    for point_id, content in committed.items():
        expected_disk = tmp_path / "expected" / lab.disk(vm).name
        expected_disk.parent.mkdir(exist_ok=True)
        expected_disk.write_bytes(content)
        restore_and_compare(datastore, point_id, expected_disk, tmp_path / f"restore-{point_id}")

    record(
        FaultRow(
            fault="Datastore volume turned read-only (ext4 error, errors=remount-ro)",
            during=(
                f"consistency checks after 20 % churn, at {min(fractions):.0%}-{max(fractions):.0%} "
                "of the read"
            ),
            injected=FAULTS,
            happened=(
                "job failed: 'the datastore is read-only ... mount it read-write'; replica marked "
                "inconsistent; no point committed; after unmount, e2fsck and mount the next "
                "consistency check succeeded"
            ),
            user_saw=(
                "job failed with that message; alerts 'Backup failed' and 'Datastore not available' "
                "until the check succeeded"
            ),
            nothing_lost=(
                f"{len(committed)} committed points restored, cmp + qemu-img compare identical; verify clean"
            ),
        )
    )
