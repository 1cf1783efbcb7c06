"""Backup jobs on a Hyper-V host reached for real (WinRM over HTTPS with NTLM, SMB to Samba),
through ``Host.connector()`` and the stored credentials, as the worker runs them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from backupsite.core.jobs.runner import run_job
from backupsite.core.models import Job, JobKind, JobState
from protection.connectors.hyperv.session import Reference
from protection.connectors.lab.connector import LabConnector
from protection.connectors.lab.guest import guest_write
from protection.models import (
    ConnectionKind,
    Host,
    ProtectedDataSource,
    ProtectionGroup,
    RecoveryPoint,
    ReplicaState,
    VirtualMachine,
)
from protection.services.inventory import sync_host_inventory
from storage.models import Datastore
from storage.vdisk import read_layout
from tests.hyperv.fixtures import SambaServer
from tests.hyperv.windows.hoststate import checkpoints_of, reference_points
from tests.hyperv.wired import WiredHost, wired_host
from tests.wsman.fixtures import EndpointFactory, wsman_endpoint

__all__ = ["wsman_endpoint"]

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

MiB = 1024 * 1024


@dataclass
class ProtectedHyperV:
    wired: WiredHost
    vm: VirtualMachine
    group: ProtectionGroup

    def run(self, kind: str, **fields: object) -> Job:
        job = Job.objects.create(kind=kind, vm=self.vm, group=self.group, **fields)
        run_job(job.pk)
        job.refresh_from_db()
        return job

    def reference_point(self) -> str:
        (ref,) = ProtectedDataSource.objects.get(vm=self.vm).change_tracking_refs["refs"].values()
        return Reference.decode(ref).reference_point_id

    def reference_points_on_host(self) -> list[str]:
        return list(reference_points(self.wired.vm_folder("WIN01")))


@pytest.fixture
def protected_hyperv(
    wsman_endpoint: EndpointFactory,
    hyperv_samba: SambaServer,
    disk_images: dict[str, Path],
    tmp_path: Path,
) -> ProtectedHyperV:
    wired = wired_host(wsman_endpoint, hyperv_samba, f"jobs-{uuid.uuid4().hex[:8]}", "HV21")
    wired.add_vm("WIN01", disk_images["windows-dynamic.vhdx"])
    host = Host.objects.create(name="HV21", connection_kind=ConnectionKind.HYPERV, address="127.0.0.1")
    host.credentials = wired.credentials()
    host.save()
    (vm,) = sync_host_inventory(host)
    datastore = Datastore.objects.create_with_store(name="ds", path=str(tmp_path / "datastore"))
    group = ProtectionGroup.objects.create(
        name="HV",
        datastore=datastore,
        retention_days=5,
        recovery_point_times=["20:00"],
        recovery_point_days=[0],
    )
    ProtectedDataSource.objects.create(group=group, vm=vm, replica_state=ReplicaState.PENDING)
    return ProtectedHyperV(wired, vm, group)


def test_previous_reference_point_destroyed_only_after_a_committed_backup(
    protected_hyperv: ProtectedHyperV,
) -> None:
    hv = protected_hyperv
    first = hv.run(JobKind.INITIAL_REPLICA)
    assert first.state == JobState.SUCCEEDED, first.traceback
    point1 = hv.reference_point()
    assert hv.reference_points_on_host() == [point1]

    # The host fails converting the checkpoint: the job fails, the older point stays.
    hv.wired.emulated.fail_next["end-backup"] = ("CheckpointFailed", "ConvertToReferencePoint failed (32768)")
    failed = hv.run(JobKind.SYNCHRONIZATION)
    assert failed.state == JobState.FAILED
    assert hv.reference_points_on_host() == [point1]
    # The point the engine had committed before the conversion failed is discarded too.
    catalog = set(RecoveryPoint.objects.filter(vm=hv.vm).values_list("point_id", flat=True))
    assert {p.id for p in hv.group.datastore.open_engine().points(hv.vm.hyperv_id)} == catalog
    assert "discarded: the backup did not complete on the host" in failed.log
    # Cancelled while reading: nothing committed, nothing destroyed.
    cancelled = hv.run(JobKind.CONSISTENCY_CHECK, cancel_requested=True)
    assert cancelled.state == JobState.CANCELLED
    assert hv.reference_points_on_host() == [point1]
    assert "destroy-reference" not in [name for name, _p, _u in hv.wired.emulated.runs]

    check = hv.run(JobKind.CONSISTENCY_CHECK)
    assert check.state == JobState.SUCCEEDED, check.traceback
    point2 = hv.reference_point()
    assert point2 != point1 and hv.reference_points_on_host() == [point2]
    assert f"Previous reference point {point1} destroyed." in check.log
    assert checkpoints_of(hv.wired.emulated, hv.vm.hyperv_id) == []


def test_a_reference_point_that_cannot_be_destroyed_is_a_warning(protected_hyperv: ProtectedHyperV) -> None:
    hv = protected_hyperv
    assert hv.run(JobKind.INITIAL_REPLICA).state == JobState.SUCCEEDED
    point1 = hv.reference_point()
    hv.wired.emulated.fail_next["destroy-reference"] = (
        "AccessDenied",
        "DestroyReferencePoint: access denied",
    )
    sync = hv.run(JobKind.SYNCHRONIZATION)
    assert sync.state == JobState.SUCCEEDED, sync.traceback
    assert f"Warning: the previous reference point {point1} could not be destroyed" in sync.log
    assert ProtectedDataSource.objects.get(vm=hv.vm).replica_state == ReplicaState.OK
    # The next backup starts from the new reference and cleans up only that one.
    assert hv.run(JobKind.SYNCHRONIZATION).state == JobState.SUCCEEDED
    assert point1 in hv.reference_points_on_host() and len(hv.reference_points_on_host()) == 2


def test_bytes_read_from_the_host_over_smb(protected_hyperv: ProtectedHyperV) -> None:
    hv = protected_hyperv
    first = hv.run(JobKind.INITIAL_REPLICA)
    assert first.state == JobState.SUCCEEDED, first.traceback
    disk = hv.wired.disk("WIN01")
    size = disk.stat().st_size
    # A full read: every byte of the files (and the structures read to find paging files).
    assert first.result["bytes_read_from_host"] >= first.result["bytes_total"]
    cfg = LabConnector(hv.wired.folder).vm_config(hv.vm.hyperv_id)
    virtual = read_layout(disk).virtual_size
    guest_write(cfg, 0, [(5 * MiB, 65536, 0x61), (virtual - 8192, 8192, 0x62)])
    sync = hv.run(JobKind.SYNCHRONIZATION)
    assert sync.state == JobState.SUCCEEDED, sync.traceback
    assert sync.result["change_tracking_used"] is True
    over_wire = sync.result["bytes_read_from_host"]
    assert 0 < over_wire < size / 2, (over_wire, size)
    assert f"Read {over_wire} bytes" in sync.log and "over the network" in sync.message


def test_a_point_records_its_catalog_but_never_the_credentials(protected_hyperv: ProtectedHyperV) -> None:
    """What ``import-datastore`` rebuilds a Hyper-V host's catalog from (docs/datastore-format.md)."""
    hv = protected_hyperv
    job = hv.run(JobKind.INITIAL_REPLICA)
    assert job.state == JobState.SUCCEEDED, job.traceback
    datastore = hv.group.datastore
    point = datastore.open_engine().point(job.result["recovery_point"])
    catalog = point.metadata["catalog"]
    assert catalog["host"] == {"name": "HV21", "kind": "hyperv", "address": "127.0.0.1", "cluster": None}
    assert catalog["vm"]["name"] == "WIN01" and catalog["group"]["name"] == "HV"
    (disk,) = catalog["disks"]
    row = hv.vm.disks.get()
    assert disk["path"] == row.path and "\\" in disk["path"]  # the Windows path on the host
    assert disk["virtual_size"] == row.virtual_size_bytes > 0
    assert disk["file"] in [f.name for f in point.files] and disk["file"].startswith("Virtual Hard Disks/")
    manifest = (Path(datastore.path) / "points" / point.id / "manifest.json").read_text()
    credentials = hv.vm.host.credentials
    secrets = [str(v) for k, v in credentials.items() if v and ("password" in k or k.endswith("pem"))]
    assert secrets and not [secret for secret in secrets if secret in manifest]
