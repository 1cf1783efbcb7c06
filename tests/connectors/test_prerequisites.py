"""Each MABS prerequisite rule, with an outcome that passes and one that does not."""

from __future__ import annotations

from dataclasses import replace

import pytest

from protection.connectors import prerequisites as pr
from protection.connectors.protocol import (
    ControllerInfo,
    ControllerKind,
    CSVInfo,
    DiskFormat,
    DiskInfo,
    DiskType,
    HostInfo,
    OSFamily,
    ReplicationHealth,
    ReplicationInfo,
    ReplicationRole,
    Severity,
    SMBShareInfo,
    StorageKind,
    VMInfo,
    VMState,
)

GiB = 1024**3
HOST = HostInfo("HV01", "Windows Server 2022", "10.0.20348", free_bytes=500 * GiB)
DISK = DiskInfo(
    path="C:/VMs/APP01/app01.vhdx",
    format=DiskFormat.VHDX,
    type=DiskType.DYNAMIC,
    virtual_size=100 * GiB,
    file_size=40 * GiB,
    controller=ControllerKind.SCSI,
    controller_number=0,
    controller_location=0,
)
VM = VMInfo(
    id="8f3c1a2e-0000-4000-8000-000000000001",
    name="APP01",
    host="HV01",
    state=VMState.RUNNING,
    generation=2,
    configuration_version="10.0",
    integration_services_version="10.0.20348",
    host_integration_services_version="10.0.20348",
    os_family=OSFamily.WINDOWS,
    controllers=(ControllerInfo(ControllerKind.SCSI, 0),),
    disks=(DISK,),
    replication=ReplicationInfo(),
    storage_kind=StorageKind.LOCAL,
    vss_capable=True,
    path="C:/VMs/APP01",
)


def codes(findings: list) -> list[str]:
    return [f.code for f in findings]


def test_a_healthy_vm_has_no_findings() -> None:
    assert pr.check_vm(VM, HOST) == []


def test_every_finding_has_plain_language_and_a_fix() -> None:
    vm = replace(VM, integration_services_version="6.3", disks=(replace(DISK, pass_through=True),))
    for f in pr.check_vm(vm, replace(HOST, free_bytes=0)):
        assert f.message and f.fix and f.severity in Severity


def test_integration_services_version() -> None:
    assert pr.check_integration_services(VM, HOST) == []
    same = replace(VM, integration_services_version="10.0.20348.0")
    assert pr.check_integration_services(same, HOST) == []  # trailing zeros are equal
    old = replace(VM, integration_services_version="6.3.9600.18080")
    (f,) = pr.check_integration_services(old, HOST)
    assert f.code == "ic-version-mismatch" and f.severity == Severity.WARNING
    assert "6.3.9600.18080" in f.message and "10.0.20348" in f.message
    (f,) = pr.check_integration_services(replace(VM, integration_services_version=None), HOST)
    assert f.code == "ic-missing"


def test_free_space_for_checkpoint_differencing_disks() -> None:
    # 40 GiB x 1 %/h x 4 h = 1.6 GiB needed
    assert pr.avhdx_space_needed(VM, 0.01, 4) == int(40 * GiB * 0.04)
    assert pr.check_free_space(VM, replace(HOST, free_bytes=2 * GiB)) == []
    (f,) = pr.check_free_space(VM, replace(HOST, free_bytes=1 * GiB))
    assert f.code == "free-space-low" and f.severity == Severity.ERROR
    assert "1.6 GiB" in f.message
    # churn rate and window are parameters
    assert (
        pr.check_free_space(VM, replace(HOST, free_bytes=1 * GiB), churn_rate=0.01, backup_window_hours=2)
        == []
    )
    # CSV VMs are measured against the CSV, not the host's local volume
    csv_vm = replace(VM, storage_kind=StorageKind.CSV, csv="Volume1")
    small = CSVInfo("Volume1", "C:/ClusterStorage/Volume1", "HV01", True, 10 * GiB, 1 * GiB)
    assert codes(pr.check_free_space(csv_vm, HOST, small)) == ["free-space-low"]
    assert pr.check_free_space(csv_vm, HOST, replace(small, free_bytes=5 * GiB)) == []


def test_scsi_controller_on_2012_r2_hosts() -> None:
    old_host = replace(HOST, os_version="Windows Server 2012 R2")
    gen1_ide = replace(VM, generation=1, controllers=(ControllerInfo(ControllerKind.IDE, 0),))
    (f,) = pr.check_scsi_controller(gen1_ide, old_host)
    assert f.code == "scsi-controller-missing" and "10103" in f.message
    assert pr.check_scsi_controller(gen1_ide, HOST) == []  # only 2012 R2 needs it
    with_scsi = replace(gen1_ide, controllers=(*gen1_ide.controllers, ControllerInfo(ControllerKind.SCSI, 0)))
    assert pr.check_scsi_controller(with_scsi, old_host) == []  # empty SCSI controller is enough


def test_linux_guests_are_file_consistent_only() -> None:
    (f,) = pr.check_linux(replace(VM, os_family=OSFamily.LINUX))
    assert f.code == "linux-file-consistent" and f.severity == Severity.INFO
    assert pr.check_linux(VM) == []


def test_pass_through_disks_are_not_supported() -> None:
    pt = replace(DISK, path="", format=None, type=DiskType.PASS_THROUGH, pass_through=True)
    (f,) = pr.check_pass_through(replace(VM, disks=(DISK, pt)))
    assert f.code == "pass-through-disk" and f.severity == Severity.ERROR
    assert pr.check_pass_through(VM) == []


def test_csv_needs_a_hardware_vss_provider() -> None:
    csv_vm = replace(VM, storage_kind=StorageKind.CSV, csv="Volume1")
    csv = CSVInfo("Volume1", "C:/ClusterStorage/Volume1", "HV01", False, 10 * GiB, 9 * GiB)
    (f,) = pr.check_csv(csv_vm, HOST, csv)
    assert f.code == "csv-no-hardware-vss" and f.severity == Severity.WARNING
    assert pr.check_csv(csv_vm, HOST, replace(csv, hardware_vss_provider=True)) == []
    assert pr.check_csv(VM, HOST, csv) == []  # local storage: rule does not apply


def test_smb_storage_rules() -> None:
    good = SMBShareInfo(r"\\fs01\vms", "3.1.1", True)
    smb_vm = replace(VM, storage_kind=StorageKind.SMB, smb_share=good)
    assert pr.check_smb(smb_vm) == []
    assert pr.check_smb(VM) == []
    old = replace(smb_vm, smb_share=replace(good, smb_version="2.1"))
    assert codes(pr.check_smb(old)) == ["smb-version-old"]
    by_ip = replace(smb_vm, smb_share=replace(good, path=r"\\192.0.2.10\vms"))
    assert codes(pr.check_smb(by_ip)) == ["smb-ip-address"]
    v6 = replace(smb_vm, smb_share=replace(good, path=r"\\[2001:db8::1]\vms"))
    assert codes(pr.check_smb(v6)) == ["smb-ip-address"]
    no_acl = replace(smb_vm, smb_share=replace(good, host_has_full_control=False))
    (f,) = pr.check_smb(no_acl)
    assert f.code == "smb-permissions" and f.severity == Severity.WARNING
    assert "machine$" in f.fix
    assert codes(pr.check_smb(replace(smb_vm, smb_share=None))) == ["smb-share-unknown"]


def test_recovery_path_must_stay_under_260_characters() -> None:
    assert pr.check_recovery_path(r"D:\Restore", ["app01.vhdx"]) == []
    deep = "D:\\" + "x" * 250
    (f,) = pr.check_recovery_path(deep, ["app01.vhdx"])
    assert f.code == "recovery-path-too-long" and f.severity == Severity.ERROR
    exactly = "D:\\" + "y" * (260 - len("D:\\") - len("\\a.vhdx"))
    assert len(exactly + "\\a.vhdx") == 260
    assert codes(pr.check_recovery_path(exactly, ["a.vhdx"])) == ["recovery-path-too-long"]
    assert pr.check_recovery_path(exactly[:-1], ["a.vhdx"]) == []
    assert codes(pr.check_vm(VM, HOST, recovery_path=deep)) == ["recovery-path-too-long"]


@pytest.mark.parametrize(
    ("os_version", "config", "expected"),
    [
        ("Windows Server 2022", "10.0", []),
        ("Windows Server 2022", "11.0", ["config-version-unsupported"]),
        ("Windows Server 2022", "5.0", ["rct-unavailable"]),
        ("Windows Server 2016", "8.0", []),
        ("Windows Server 2016", "9.0", ["config-version-unsupported"]),
        ("Windows Server 2012 R2", "5.0", ["rct-unavailable-host"]),
        ("Windows Server 2012 R2", "8.0", ["config-version-unsupported"]),
        ("Windows Server 2025", "12.0", []),
        ("Hyper-V Server 2008", "1.0", ["host-os-unknown"]),
    ],
)
def test_generation_and_configuration_version(os_version: str, config: str, expected: list) -> None:
    vm = replace(VM, configuration_version=config)
    assert codes(pr.check_versions(vm, replace(HOST, os_version=os_version))) == expected


def test_generation_must_be_one_or_two() -> None:
    assert codes(pr.check_versions(replace(VM, generation=3), HOST)) == ["generation-unsupported"]
    assert pr.check_versions(replace(VM, generation=1), HOST) == []


@pytest.mark.parametrize(
    ("state", "settings", "expected"),
    [
        (VMState.RUNNING, {}, []),
        (VMState.OFF, {}, []),
        (VMState.SAVED, {}, ["offline-backup"]),
        (VMState.PAUSED, {}, ["offline-backup"]),
        (VMState.RUNNING, {"vss_capable": False}, ["offline-backup"]),
    ],
)
def test_vm_state_and_offline_backup(state: VMState, settings: dict, expected: list) -> None:
    assert codes(pr.check_state(replace(VM, state=state, **settings), HOST)) == expected


def test_plan_consistency_matches_the_rules() -> None:
    assert pr.plan_consistency(VM, HOST, "application")[:2] == ("application", False)
    assert pr.plan_consistency(VM, HOST, "crash")[:2] == ("crash", False)
    linux = replace(VM, os_family=OSFamily.LINUX)
    assert pr.plan_consistency(linux, HOST, "application")[:2] == ("file", False)
    no_ic = replace(VM, integration_services_version=None)
    consistency, offline, reasons = pr.plan_consistency(no_ic, HOST, "application")
    assert (consistency, offline) == ("crash", True) and "integration services" in reasons[0]


@pytest.mark.parametrize(
    ("health", "state", "refused"),
    [
        (ReplicationHealth.NORMAL, "Replicating", False),
        (ReplicationHealth.WARNING, "Replicating", False),
        (ReplicationHealth.CRITICAL, "Replicating", True),
        (ReplicationHealth.NORMAL, "Resynchronizing", True),
        (ReplicationHealth.NORMAL, "InitialReplicationInProgress", True),
        (ReplicationHealth.NORMAL, "ApplyingLogs", True),
        (ReplicationHealth.NORMAL, "ApplyLogsFailed", True),
        (ReplicationHealth.NORMAL, "FailingOver", True),
        (ReplicationHealth.NORMAL, "Migrating", True),
    ],
)
def test_replica_rules(health: ReplicationHealth, state: str, refused: bool) -> None:
    vm = replace(VM, replication=ReplicationInfo(ReplicationRole.REPLICA, health, state))
    (f,) = pr.check_replica(vm)
    assert f.code == ("replica-not-ready" if refused else "replica-crash-consistent")
    assert (pr.replica_refusal(vm) is not None) is refused
    assert pr.plan_consistency(vm, HOST, "application")[0] == "crash"
    assert pr.check_replica(VM) == [] and pr.replica_refusal(VM) is None


def test_disk_findings() -> None:
    broken = replace(DISK, error="app01.vhdx: the disk file does not exist")
    assert codes(pr.check_disks(replace(VM, disks=(broken,)))) == ["disk-unusable"]
    assert codes(pr.check_disks(replace(VM, disks=()))) == ["no-disks"]
    vhd = replace(DISK, format=DiskFormat.VHD)
    assert codes(pr.check_disks(replace(VM, disks=(vhd,)))) == ["vhd-no-rct"]
    avhdx = replace(DISK, format=DiskFormat.AVHDX, type=DiskType.DIFFERENCING)
    assert codes(pr.check_disks(replace(VM, disks=(avhdx,)))) == ["checkpoints-present"]
    assert pr.check_disks(VM) == []


def test_check_vm_orders_errors_first() -> None:
    vm = replace(VM, os_family=OSFamily.LINUX, disks=(replace(DISK, pass_through=True),))
    severities = [f.severity for f in pr.check_vm(vm, replace(HOST, free_bytes=0))]
    assert severities == sorted(severities, key=["error", "warning", "info"].index)
    assert severities[0] == Severity.ERROR and severities[-1] == Severity.INFO


def test_lab_connector_prerequisites_use_the_lab_host(lab) -> None:  # type: ignore[no-untyped-def]
    vm_id = lab.add("IC01", integration_services_version="10.0.17763")
    assert codes(lab.connector.prerequisites(vm_id)) == ["ic-version-mismatch"]
    assert codes(lab.connector.prerequisites(lab.ids["LNX01"])) == ["linux-file-consistent"]
    huge = lab.connector.prerequisites(lab.ids["WIN01"], churn_rate=1000.0, backup_window_hours=1000)
    assert "free-space-low" in codes(huge)
