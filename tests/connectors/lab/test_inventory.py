"""Lab host inventory on real VHDX files: host, cluster, VMs, disks and their faults."""

from __future__ import annotations

from pathlib import Path

import pytest

from protection.connectors.lab import config, inventory
from protection.connectors.protocol import (
    ControllerKind,
    DiskFormat,
    DiskType,
    OSFamily,
    ReplicationRole,
    StorageKind,
    VMNotFound,
    VMState,
)
from storage.vdisk import read_layout
from tests.connectors.conftest import Lab


def test_inventory_reports_host_and_vms_from_real_disks(lab: Lab) -> None:
    inv = lab.connector.inventory()
    assert inv.host.name == "LAB-HV01"
    assert inv.host.os_version == "Windows Server 2022"
    assert inv.host.integration_services_version == "10.0.20348"
    assert inv.host.free_bytes > 0
    assert inv.cluster_name is None and inv.csvs == ()
    assert inv.findings == ()
    by_name = {vm.name: vm for vm in inv.vms}
    assert set(by_name) == {"WIN01", "LNX01", "SQL01"}

    win = by_name["WIN01"]
    assert win.id == lab.ids["WIN01"]
    assert win.state == VMState.RUNNING and win.generation == 2
    assert win.os_family == OSFamily.WINDOWS and win.vss_capable
    assert win.configuration_version == "10.0"
    assert win.integration_services_version == win.host_integration_services_version
    assert win.storage_kind == StorageKind.LOCAL
    assert win.replication.role == ReplicationRole.NONE
    assert [c.kind for c in win.controllers] == [ControllerKind.SCSI]
    (disk,) = win.disks
    assert disk.format == DiskFormat.VHDX and disk.type == DiskType.DYNAMIC
    assert disk.virtual_size == 128 * 1024 * 1024
    assert disk.file_size == Path(disk.path).stat().st_size
    assert disk.file_size < disk.virtual_size  # dynamic: only written blocks take space
    assert disk.disk_id == read_layout(disk.path).disk_id
    assert disk.error is None

    (fixed,) = by_name["SQL01"].disks
    assert fixed.type == DiskType.FIXED
    assert fixed.file_size > fixed.virtual_size  # every block present, plus metadata
    assert by_name["LNX01"].os_family == OSFamily.LINUX


def test_cluster_host_with_csv_and_ha_vm(make_lab) -> None:  # type: ignore[no-untyped-def]
    lab = make_lab(
        "NODE1",
        cluster_name="LABCLU",
        nodes=["NODE1", "NODE2"],
        csvs=[{"name": "Volume1", "path": "ClusterStorage/Volume1", "owner_node": "NODE2",
               "hardware_vss_provider": True}],
    )  # fmt: skip
    lab.add(
        "HA01",
        folder=lab.folder / "ClusterStorage" / "Volume1" / "HA01",
        storage_kind="csv",
        csv="Volume1",
        highly_available=True,
        cluster="LABCLU",
        owner_node="NODE2",
    )
    inv = lab.connector.inventory()
    assert inv.cluster_name == "LABCLU" and inv.host.nodes == ("NODE1", "NODE2")
    (csv,) = inv.csvs
    assert csv.name == "Volume1" and csv.owner_node == "NODE2" and csv.hardware_vss_provider
    (vm,) = inv.vms
    assert vm.storage_kind == StorageKind.CSV and vm.csv == "Volume1"
    assert vm.highly_available and vm.cluster == "LABCLU" and vm.host == "NODE2"


def test_duplicate_vm_id_is_reported(lab: Lab) -> None:
    lab.add("COPY", vm_id=lab.ids["WIN01"])
    inv = lab.connector.inventory()
    assert [f.code for f in inv.findings] == ["vm-id-duplicate"]
    assert len(inv.vms) == 3


def test_missing_corrupt_and_truncated_disks_are_findings(lab: Lab) -> None:
    lab.disk("WIN01").unlink()
    with lab.disk("SQL01").open("r+b") as fh:
        fh.write(b"garbage!")  # destroys the file signature
    disk = lab.disk("LNX01")
    with disk.open("r+b") as fh:
        fh.truncate(disk.stat().st_size - 3 * 1024 * 1024)
    inv = lab.connector.inventory()
    errors = {f.message.split(":")[0]: f.message for f in inv.findings}
    assert set(errors) == {"VM WIN01", "VM SQL01", "VM LNX01"}
    assert "does not exist" in errors["VM WIN01"]
    assert "VHDX signature" in errors["VM SQL01"]
    assert "truncated" in errors["VM LNX01"]
    assert all(f.code == "disk-unusable" for f in inv.findings)
    win = lab.connector.get_vm(lab.ids["WIN01"])
    assert win.disks[0].error and win.disks[0].virtual_size == 0


def test_pass_through_disk_is_listed_without_a_file(lab: Lab) -> None:
    lab.add(
        "PT01",
        disks=[
            {"path": "Virtual Hard Disks/PT01.vhdx", "controller": "SCSI", "location": 0},
            {"pass_through": True, "size": 10 * 2**30, "controller": "SCSI", "location": 1},
        ],
    )
    vm = lab.connector.get_vm(lab.ids["PT01"])
    assert [d.pass_through for d in vm.disks] == [False, True]
    assert vm.disks[1].type == DiskType.PASS_THROUGH and vm.disks[1].virtual_size == 10 * 2**30


def test_inventory_works_from_the_host_folder_alone(lab: Lab) -> None:
    """Backup sessions and restores look VMs up here, without a connector object."""
    wanted = "{" + lab.ids["LNX01"].upper() + "}"  # as Hyper-V prints a VMId
    cfg = inventory.find_vm_config(lab.folder, wanted)
    assert cfg.id == lab.ids["LNX01"]
    assert inventory.vm_info(cfg, config.load_host_config(lab.folder)) == lab.connector.get_vm(cfg.id)
    assert inventory.find_vm_config_by_name(lab.folder, "win01").id == lab.ids["WIN01"]
    assert inventory.host_inventory(lab.folder).vms == lab.connector.inventory().vms
    lab.add("ZZCOPY", vm_id=lab.ids["SQL01"])  # found after SQL01: it is the duplicate
    with pytest.raises(VMNotFound, match="No VM named 'ZZCOPY'"):
        inventory.find_vm_config_by_name(lab.folder, "ZZCOPY")
