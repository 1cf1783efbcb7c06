"""Colocation: protection groups that share a datastore store identical data once.

A VM cloned from another (the same disk bytes, its own VM id) is protected by a second
group. On the first group's datastore its initial replica adds almost nothing; on a
datastore of its own it stores everything again. Both restore byte-identical.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from backupsite.core.jobs.runner import run_job
from backupsite.core.models import Job, JobKind, JobState
from protection.connectors.lab.host import VMDisk, add_vm
from protection.models import (
    ProtectedDataSource,
    ProtectionGroup,
    RecoveryPoint,
    ReplicaState,
    VirtualMachine,
)
from protection.services.inventory import sync_host_inventory
from storage.models import Datastore
from tests.protection.conftest import ProtectedLab, restore_and_compare

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def stored_bytes(datastore: Datastore) -> int:
    return datastore.open_engine().usage().total_bytes


def initial_replica(vm: VirtualMachine, group: ProtectionGroup) -> RecoveryPoint:
    job = Job.objects.create(kind=JobKind.INITIAL_REPLICA, vm=vm, group=group)
    run_job(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.traceback
    return RecoveryPoint.objects.get(point_id=job.result["recovery_point"])


def clone_vm(lab: ProtectedLab, original: VirtualMachine, name: str) -> VirtualMachine:
    """What an administrator gets from a template: the same disk bytes, a new VM id."""
    add_vm(lab.folder, name, [VMDisk(lab.disk(original).name, source=lab.disk(original))])
    sync_host_inventory(lab.host)
    clone = VirtualMachine.objects.get(host=lab.host, name=name)
    assert clone.hyperv_id != original.hyperv_id
    return clone


def second_group(name: str, datastore: Datastore, vm: VirtualMachine) -> ProtectionGroup:
    group = ProtectionGroup.objects.create(
        name=name,
        datastore=datastore,
        retention_days=5,
        recovery_point_times=["20:00"],
        recovery_point_days=[0],
    )
    ProtectedDataSource.objects.create(group=group, vm=vm, replica_state=ReplicaState.PENDING)
    return group


def test_colocated_groups_deduplicate_across_each_other(protected_lab: ProtectedLab, tmp_path: Path) -> None:
    lab = protected_lab
    original = lab.windows
    clone = clone_vm(lab, original, "WIN-CLONE")
    assert lab.datastore.colocate

    first = initial_replica(original, lab.group)
    after_first = stored_bytes(lab.datastore)
    assert first.stored_bytes > 4 * 1024 * 1024  # the lab disk holds real data (compressed)

    silver = second_group("Silver", lab.datastore, clone)
    second = initial_replica(clone, silver)
    after_second = stored_bytes(lab.datastore)

    # The clone's replica found every data chunk already stored by the other group:
    # only its manifest, indexes and a chunk or two of differing metadata are new.
    assert abs(second.size_bytes - first.size_bytes) < 4096  # the VM configuration names differ
    assert second.stored_bytes < first.stored_bytes * 0.02
    assert after_second - after_first < after_first * 0.05

    # Control: the same clone on a datastore of its own stores the data again.
    dedicated = Datastore.objects.create_with_store("dedicated", str(tmp_path / "dedicated"))
    Datastore.objects.filter(pk=dedicated.pk).update(colocate=False)
    bronze = ProtectionGroup.objects.create(
        name="Bronze",
        datastore=dedicated,
        retention_days=5,
        recovery_point_times=["20:00"],
        recovery_point_days=[0],
    )
    ProtectedDataSource.objects.filter(vm=clone).update(group=bronze, replica_state=ReplicaState.PENDING)
    alone = initial_replica(clone, bronze)
    assert alone.stored_bytes > first.stored_bytes * 0.9
    assert stored_bytes(dedicated) > after_first * 0.9

    # Both groups' points restore the disks they were taken from, byte for byte.
    restore_and_compare(lab.datastore, first.point_id, lab.disk(original), tmp_path / "r-original")
    restore_and_compare(lab.datastore, second.point_id, lab.disk(clone), tmp_path / "r-clone")
