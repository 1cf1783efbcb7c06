"""The SMB connection to a Hyper-V host drops in the middle of a backup, at random moments.

The Hyper-V connector talks to an emulated host for real: WinRM over HTTPS with NTLM to the
emulator, SMB to a real smbd serving its drive. The SMB traffic goes through a TCP proxy
that paces the server's answers (a slower link) and that the test cuts part way through
the read (every connection closed, as a dropped link or a restarted file server does);
WinRM still reaches the host. Each time: the job fails saying the SMB transfer broke, the
host's recovery checkpoint is removed, the previous reference point stays, no point is
committed, and once SMB answers again the next run succeeds; every committed point
restores byte for byte.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from backupsite.core.models import JobKind, JobState
from protection.connectors.hyperv.session import Reference
from protection.connectors.lab.connector import LabConnector
from protection.connectors.lab.guest import churn
from protection.models import (
    Alert,
    AlertKind,
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
from tests.hyperv.fixtures import SambaServer, hyperv_samba
from tests.hyperv.windows.hoststate import checkpoints_of, reference_points
from tests.hyperv.wired import WiredHost, wired_host
from tests.reliability.dbproxy import TCPProxy
from tests.reliability.hostfaults import JobThread, MiB, restore_all, run_in_thread
from tests.reliability.report import FaultRow, record, repetitions
from tests.wsman.fixtures import EndpointFactory, wsman_endpoint

__all__ = ["hyperv_samba", "wsman_endpoint"]

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
DROPS = repetitions(3, 12)
LINK_RATE = 24 * MiB  # bytes/s the proxy lets through from smbd


@dataclass
class SlowLinkHost:
    wired: WiredHost
    proxy: TCPProxy
    vm: VirtualMachine
    group: ProtectionGroup
    datastore: Datastore

    def reference_point(self) -> str:
        (ref,) = ProtectedDataSource.objects.get(vm=self.vm).change_tracking_refs["refs"].values()
        return Reference.decode(ref).reference_point_id

    def reference_points_on_host(self) -> list[str]:
        return list(reference_points(self.wired.vm_folder("WIN01")))


@pytest.fixture
def slow_link_host(
    wsman_endpoint: EndpointFactory,
    hyperv_samba: SambaServer,
    disk_images: dict[str, Path],
    tmp_path: Path,
) -> Iterator[SlowLinkHost]:
    wired = wired_host(wsman_endpoint, hyperv_samba, f"smbdrop-{uuid.uuid4().hex[:8]}", "HV31")
    wired.add_vm("WIN01", disk_images["windows-dynamic.vhdx"])
    proxy = TCPProxy("127.0.0.1", hyperv_samba.port, downstream_bytes_per_second=LINK_RATE)
    host = Host.objects.create(name="HV31", connection_kind=ConnectionKind.HYPERV, address="127.0.0.1")
    host.credentials = {**wired.credentials(), "smb_port": proxy.port}
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
    try:
        yield SlowLinkHost(wired, proxy, vm, group, datastore)
    finally:
        proxy.stop()


def test_smb_connection_dropped_mid_backup(slow_link_host: SlowLinkHost, tmp_path: Path) -> None:
    hv = slow_link_host
    vm = hv.vm
    disk = hv.wired.disk("WIN01")
    rng = random.Random(os.environ.get("RELIABILITY_SEED", "smb-dropped"))
    first = run_in_thread(JobKind.INITIAL_REPLICA, vm, group=hv.group)
    assert first.state == JobState.SUCCEEDED, first.error
    committed = {first.result["recovery_point"]: disk.read_bytes()}

    for attempt in range(DROPS):
        churn(LabConnector(hv.wired.folder).vm_config(vm.hyperv_id), 5.0, seed=attempt)
        before = set(RecoveryPoint.objects.values_list("point_id", flat=True))
        reference = hv.reference_point()
        runner = JobThread(JobKind.CONSISTENCY_CHECK, vm, group=hv.group).start()
        runner.wait_reading(rng.uniform(0.1, 0.7))
        hv.proxy.cut()
        job = runner.finish(timeout=90)

        assert job.state == JobState.FAILED, job.result
        assert "Traceback" not in job.error
        assert "the connection to the SMB server was lost" in job.error, job.error
        source = ProtectedDataSource.objects.get(vm=vm)
        assert source.replica_state == ReplicaState.INCONSISTENT
        assert Alert.objects.active().filter(kind=AlertKind.BACKUP_FAILED, vm=vm).exists()
        assert set(RecoveryPoint.objects.values_list("point_id", flat=True)) == before
        assert {p.id for p in hv.datastore.open_engine().points(vm.hyperv_id)} == before
        # WinRM still reached the host: its recovery checkpoint is gone, the reference stays.
        assert checkpoints_of(hv.wired.emulated, vm.hyperv_id) == []
        assert hv.reference_points_on_host() == [reference]

        hv.proxy.restore()  # the link is back
        expected = disk.read_bytes()
        check = run_in_thread(JobKind.CONSISTENCY_CHECK, vm, group=hv.group)
        assert check.state == JobState.SUCCEEDED, check.error
        assert ProtectedDataSource.objects.get(vm=vm).replica_state == ReplicaState.OK
        assert not Alert.objects.active().filter(kind=AlertKind.BACKUP_FAILED, vm=vm).exists()
        assert checkpoints_of(hv.wired.emulated, vm.hyperv_id) == []
        assert hv.reference_points_on_host() == [hv.reference_point()]
        committed[check.result["recovery_point"]] = expected

    restore_all(hv.datastore, committed, disk.name, tmp_path / "restores")
    record(
        FaultRow(
            fault="SMB connection to a Hyper-V host dropped",
            during=(
                "consistency check over a 24 MiB/s link (emulated host: WinRM + real smbd), "
                "at 10-70 % of the read"
            ),
            injected=DROPS,
            happened=(
                "job failed: 'cannot read <disk> at offset N: ... the connection to the SMB server "
                "was lost'; the recovery checkpoint removed over WinRM; the "
                "previous reference point kept; no point committed; replica marked inconsistent; "
                "once SMB answered again the next consistency check succeeded"
            ),
            user_saw="job failed naming the file, the offset and the lost connection; alert 'Backup failed'",
            nothing_lost=(
                f"{len(committed)} committed points restored, cmp + qemu-img compare identical; verify clean"
            ),
        )
    )
