"""Faults on a lab host in the middle of a backup, at random moments of the read.

- The host becomes unreachable: its folder is a real bind mount, lazily unmounted while the
  job reads (what an administrator's ``umount -l`` or a share dropped under a host does).
- The VM is deleted: its folder removed while the job reads.
- The disk grows during a full read: a guest write allocates new VHDX blocks while the
  job reads; the lab's checkpoint (the VM lock) must hold it back until the backup ends.

Each time: the job ends as it should with a clear message, no point is committed that
mixes states or misses files, the VM's checkpoint is not left held, the committed points
restore byte for byte, and (where the VM still exists) the next run succeeds.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupsite.core.models import JobKind, JobState
from protection.connectors.lab.config import LabVMConfig
from protection.connectors.lab.guest import churn, guest_write
from protection.models import Alert, AlertKind, RecoveryPoint, ReplicaState, VirtualMachine
from protection.services.inventory import sync_host_inventory
from storage.vdisk import PAYLOAD_BLOCK_FULLY_PRESENT, read_layout
from tests.protection.conftest import ProtectedLab
from tests.reliability.hostfaults import (
    JobThread,
    MiB,
    lock_held,
    pace_lab_host,
    restore_all,
    run_in_thread,
)
from tests.reliability.report import FaultRow, record, repetitions

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root (CI runs as root)"),
]
READ_RATE = 16 * MiB  # bytes/s: a backup of the lab VM takes a few seconds
TIMES = repetitions(3, 12)
GROWS = 2  # the lab disk has two blocks never written: each write allocates one


def seeded(name: str) -> random.Random:
    return random.Random(os.environ.get("RELIABILITY_SEED", name))


@pytest.fixture
def mounted_lab(protected_lab: ProtectedLab, tmp_path: Path) -> Iterator[ProtectedLab]:
    """The lab host folder is a bind mount of the real one: unmounting it cuts the host off."""
    real = tmp_path / "host-disk"
    protected_lab.folder.rename(real)
    protected_lab.folder.mkdir()
    subprocess.run(["mount", "--bind", str(real), str(protected_lab.folder)], check=True)
    pace_lab_host(protected_lab.folder, READ_RATE)
    try:
        yield protected_lab
    finally:
        # os.path.ismount cannot see a bind mount of the same file system: ask mountpoint.
        while subprocess.run(["mountpoint", "-q", str(protected_lab.folder)], check=False).returncode == 0:
            subprocess.run(["umount", "-l", str(protected_lab.folder)], check=False)


def vm_folder(lab: ProtectedLab, vm: VirtualMachine) -> Path:
    return lab.disk(vm).parent.parent


def points() -> set[str]:
    return set(RecoveryPoint.objects.values_list("point_id", flat=True))


def engine_points(lab: ProtectedLab, vm: VirtualMachine) -> set[str]:
    return {p.id for p in lab.datastore.open_engine().points(vm.hyperv_id)}


def assert_failed_cleanly(lab: ProtectedLab, vm: VirtualMachine, job_error: str, before: set[str]) -> None:
    assert "Traceback" not in job_error
    source = lab.source(vm)
    assert source.replica_state == ReplicaState.INCONSISTENT
    assert Alert.objects.active().filter(kind=AlertKind.BACKUP_FAILED, vm=vm).exists()
    # Nothing half-done: not in the catalog and not in the datastore either.
    assert points() == before
    assert engine_points(lab, vm) == before


def test_lab_host_unreachable_mid_backup(mounted_lab: ProtectedLab, tmp_path: Path) -> None:
    lab = mounted_lab
    vm = lab.windows
    real = tmp_path / "host-disk"
    rng = seeded("host-unreachable")
    first = run_in_thread(JobKind.INITIAL_REPLICA, vm, group=lab.group)
    assert first.state == JobState.SUCCEEDED, first.error
    committed = {first.result["recovery_point"]: lab.disk(vm).read_bytes()}
    messages: set[str] = set()

    for attempt in range(TIMES):
        churn(lab.connector.vm_config(vm.hyperv_id), 5.0, seed=attempt)
        before = points()
        runner = JobThread(JobKind.CONSISTENCY_CHECK, vm, group=lab.group).start()
        runner.wait_reading(rng.uniform(0.1, 0.7))
        subprocess.run(["umount", "-l", str(lab.folder)], check=True)
        job = runner.finish()

        assert job.state == JobState.FAILED, job.result
        assert f"lab host {lab.folder.name} is unreachable" in job.error, job.error
        messages.add(job.error)
        assert_failed_cleanly(lab, vm, job.error, before)

        # The host comes back: its checkpoint is not held and the next run succeeds.
        subprocess.run(["mount", "--bind", str(real), str(lab.folder)], check=True)
        assert not lock_held(vm_folder(lab, vm))
        expected = lab.disk(vm).read_bytes()
        check = run_in_thread(JobKind.CONSISTENCY_CHECK, vm, group=lab.group)
        assert check.state == JobState.SUCCEEDED, check.error
        assert lab.source(vm).replica_state == ReplicaState.OK
        assert not Alert.objects.active().filter(kind=AlertKind.BACKUP_FAILED, vm=vm).exists()
        committed[check.result["recovery_point"]] = expected

    restore_all(lab.datastore, committed, lab.disk(vm).name, tmp_path / "restores")
    record(
        FaultRow(
            fault="Lab host unreachable (its folder unmounted)",
            during="consistency check after 5 % churn, at 10-70 % of the read",
            injected=TIMES,
            happened=(
                "job failed: 'lab host ... is unreachable'; the point being written was discarded; "
                "replica marked inconsistent; the checkpoint (VM lock) released; once the host was "
                "back the next consistency check succeeded"
            ),
            user_saw="job failed with that message; alert 'Backup failed' until the check succeeded",
            nothing_lost=(
                f"{len(committed)} committed points restored, cmp + qemu-img compare identical; verify clean"
            ),
        )
    )


def test_vm_deleted_mid_backup(mounted_lab: ProtectedLab, tmp_path: Path) -> None:
    lab = mounted_lab
    vm, other = lab.windows, lab.linux
    first = run_in_thread(JobKind.INITIAL_REPLICA, vm, group=lab.group)
    assert first.state == JobState.SUCCEEDED, first.error
    committed = {first.result["recovery_point"]: lab.disk(vm).read_bytes()}
    disk_name = lab.disk(vm).name
    folder = vm_folder(lab, vm)

    before = points()
    runner = JobThread(JobKind.CONSISTENCY_CHECK, vm, group=lab.group).start()
    runner.wait_reading(seeded("vm-deleted").uniform(0.1, 0.7))
    shutil.rmtree(folder)  # Remove-VM and its files while the backup reads
    job = runner.finish()

    assert job.state == JobState.FAILED, job.result
    assert f"was deleted from lab host {lab.folder.name} during the backup" in job.error, job.error
    assert_failed_cleanly(lab, vm, job.error, before)

    # The inventory marks the VM removed; its points stay restorable; the next run says why
    # it cannot run; the host's other VM backs up as before.
    sync_host_inventory(lab.host)
    vm.refresh_from_db()
    assert vm.removed_at is not None
    again = run_in_thread(JobKind.CONSISTENCY_CHECK, vm, group=lab.group)
    assert again.state == JobState.FAILED
    assert f"No VM with id {vm.hyperv_id}" in again.error, again.error
    assert points() == before
    neighbour = run_in_thread(JobKind.INITIAL_REPLICA, other, group=lab.group)
    assert neighbour.state == JobState.SUCCEEDED, neighbour.error

    restore_all(lab.datastore, committed, disk_name, tmp_path / "restores")
    record(
        FaultRow(
            fault="VM deleted during its backup (lab: its folder removed)",
            during="consistency check, at 10-70 % of the read",
            injected=1,
            happened=(
                "job failed: 'VM ... was deleted from lab host ... during the backup'; the point being "
                "written was discarded; replica marked inconsistent; the next inventory marked the VM "
                "removed; its later jobs fail with 'No VM with id ...'; the host's other VM backed up"
            ),
            user_saw="job failed with that message; alert 'Backup failed'; the VM shown as removed",
            nothing_lost="the point taken before restored, cmp + qemu-img compare identical; verify clean",
        )
    )


def unallocated_block(disk: Path) -> int:
    layout = read_layout(disk)
    for block in range(layout.data_blocks - 1, -1, -1):
        if layout.block_entry(block)[0] != PAYLOAD_BLOCK_FULLY_PRESENT:
            return block * layout.block_size
    raise AssertionError(f"{disk} has no unallocated block left to grow into")


def write_and_note(cfg: LabVMConfig, where: int, pattern: int, wrote: list[float]) -> None:
    guest_write(cfg, 0, [(where, MiB, pattern)], wait=60)
    wrote.append(time.monotonic())


def test_disk_grows_during_full_read(mounted_lab: ProtectedLab, tmp_path: Path) -> None:
    lab = mounted_lab
    vm = lab.windows
    disk = lab.disk(vm)
    cfg = lab.connector.vm_config(vm.hyperv_id)
    rng = seeded("disk-grows")
    first = run_in_thread(JobKind.INITIAL_REPLICA, vm, group=lab.group)
    assert first.state == JobState.SUCCEEDED, first.error
    committed = {first.result["recovery_point"]: disk.read_bytes()}
    waits: list[float] = []

    for attempt in range(GROWS):
        frozen = disk.read_bytes()  # the disk as the checkpoint will find it
        runner = JobThread(JobKind.CONSISTENCY_CHECK, vm, group=lab.group).start()
        runner.wait_reading(rng.uniform(0.1, 0.7))
        # The guest writes 1 MiB into a block it never used: the VHDX allocates it and grows.
        where = unallocated_block(disk)
        wrote: list[float] = []
        writer = threading.Thread(target=write_and_note, args=(cfg, where, 0x41 + attempt, wrote))
        asked = time.monotonic()
        writer.start()
        time.sleep(0.3)
        runner.job.refresh_from_db()
        if not runner.job.is_finished:  # still reading: the write must be held back
            assert writer.is_alive() and not wrote, "the guest wrote while the backup read"
            assert disk.stat().st_size == len(frozen)
        job = runner.finish()
        writer.join(60)
        assert wrote, "the guest write did not complete"
        assert job.state == JobState.SUCCEEDED, job.error
        waits.append(wrote[0] - asked)
        assert len(disk.read_bytes()) > len(frozen), "the guest write should have grown the VHDX"
        committed[job.result["recovery_point"]] = frozen

        # The next run takes the grown disk as it is now.
        grown = disk.read_bytes()
        sync = run_in_thread(JobKind.SYNCHRONIZATION, vm, group=lab.group)
        assert sync.state == JobState.SUCCEEDED, sync.error
        committed[sync.result["recovery_point"]] = grown

    assert not lock_held(vm_folder(lab, vm))
    live = set(RecoveryPoint.objects.filter(deleted_at__isnull=True).values_list("point_id", flat=True))
    restore_all(
        lab.datastore, {p: c for p, c in committed.items() if p in live}, disk.name, tmp_path / "restores"
    )
    record(
        FaultRow(
            fault="Disk file growing during a full read (guest allocates new VHDX blocks)",
            during="consistency check, write asked for at 10-70 % of the read",
            injected=GROWS,
            happened=(
                "the guest write waited for the checkpoint (the VM lock) "
                f"{min(waits):.1f}-{max(waits):.1f} s; the point holds the disk as it was at the "
                "checkpoint; the next synchronization took the grown disk"
            ),
            user_saw="jobs succeeded; nothing to act on",
            nothing_lost=(
                "each point restored equal to the disk at its checkpoint (pre-write, then grown), "
                "cmp + qemu-img compare identical; verify clean"
            ),
        )
    )
