"""Lab connector inventory on real VHDX files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protection.connectors.base import (
    Connector,
    ConnectorError,
    ControllerKind,
    DiskFormat,
    DiskType,
    HostUnreachable,
    OSFamily,
    ReplicationRole,
    Severity,
    StorageKind,
    UnsupportedConnector,
    VMNotFound,
    VMState,
    get_connector,
)
from protection.connectors.lab import LabConnector
from protection.connectors.vhdxfile import read_vhdx_layout
from tests.connectors.conftest import Lab


def test_get_connector_gives_lab_connector_that_satisfies_the_protocol(lab: Lab) -> None:
    conn = get_connector("lab", str(lab.folder), None)
    assert isinstance(conn, LabConnector)
    assert isinstance(conn, Connector)
    hyperv = get_connector("hyperv", "hv01.example.com", {"username": "x", "password": "y"})
    assert hyperv.kind == "hyperv" and isinstance(hyperv, Connector)
    with pytest.raises(ConnectorError, match="needs a user name and a password"):
        get_connector("hyperv", "hv01.example.com", {"username": "x"})
    with pytest.raises(UnsupportedConnector, match="Unknown connector kind"):
        get_connector("vmware", "x", None)


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
    assert disk.disk_id == read_vhdx_layout(disk.path).disk_id
    assert disk.error is None

    (fixed,) = by_name["SQL01"].disks
    assert fixed.type == DiskType.FIXED
    assert fixed.file_size > fixed.virtual_size  # every block present, plus metadata
    assert by_name["LNX01"].os_family == OSFamily.LINUX


def test_get_vm_and_lookup_errors(lab: Lab) -> None:
    vm = lab.connector.get_vm(lab.ids["LNX01"].upper())
    assert vm.name == "LNX01"
    assert lab.connector.vm_config_by_name("lnx01").id == lab.ids["LNX01"]
    with pytest.raises(VMNotFound):
        lab.connector.get_vm("00000000-0000-0000-0000-000000000000")
    with pytest.raises(VMNotFound):
        lab.connector.vm_config_by_name("nope")


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


def test_missing_host_folder_is_unreachable(tmp_path: Path) -> None:
    conn = LabConnector(tmp_path / "gone")
    with pytest.raises(HostUnreachable, match="does not exist"):
        conn.inventory()
    result = conn.test_connection()
    assert not result.ok and "does not exist" in result.message


def test_test_connection_ok(lab: Lab) -> None:
    result = lab.connector.test_connection()
    assert result.ok and result.host_name == "LAB-HV01"


def test_bad_host_json_is_unreachable_not_a_traceback(lab: Lab) -> None:
    (lab.folder / "host.json").write_text("{not json")
    with pytest.raises(HostUnreachable, match="not valid JSON"):
        lab.connector.inventory()
    assert not lab.connector.test_connection().ok


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"id": "not-a-guid"}, "'id' must be a GUID"),
        ({"generation": 3}, "'generation' must be 1 or 2"),
        ({"state": "Exploded"}, "'state' must be one of"),
        ({"configuration_version": "ten"}, "'configuration_version' must be a version"),
        ({"disks": [{"path": "../../etc/passwd"}]}, "must be relative to the VM folder"),
        ({"disks": [{"pass_through": True, "size": -5}]}, "'size' must be at least 0"),
        ({"controllers": [{"type": "IDE", "number": 0}]}, "generation 2 VM has no IDE"),
        ({"vss_capable": "yes"}, "'vss_capable' must be true or false"),
        ({"disks": "C:/disk.vhdx"}, "'disks' must be a list"),
        ({"disks": ["x.vhdx"]}, "'disks[0]' must be an object"),
        ({"replication": ["replica"]}, "'replication' must be an object"),
        ({"replication": {"role": "secondary"}}, "'role' must be one of"),
        ({"name": "x" * 101}, "longer than Hyper-V's 100 characters"),
        ({"name": ""}, "'name' must be a non-empty string"),
        ({"generation": "2"}, "'generation' must be an integer"),
        ({"storage_kind": "nfs"}, "'storage_kind' must be one of"),
    ],
)
def test_bad_vm_json_values_become_findings(lab: Lab, change: dict, expected: str) -> None:
    path = lab.folder / "Virtual Machines" / "WIN01" / "vm.json"
    data = json.loads(path.read_text())
    data.update(change)
    path.write_text(json.dumps(data))
    inv = lab.connector.inventory()
    assert {vm.name for vm in inv.vms} == {"LNX01", "SQL01"}  # the others still listed
    (finding,) = inv.findings
    assert finding.code == "vm-config-invalid" and finding.severity == Severity.ERROR
    assert expected in finding.message and "WIN01" in finding.message
    with pytest.raises(VMNotFound):
        lab.connector.get_vm(lab.ids["WIN01"])


def test_vm_json_that_is_not_json_or_not_an_object(lab: Lab) -> None:
    path = lab.folder / "Virtual Machines" / "WIN01" / "vm.json"
    path.write_text("[1, 2]")
    assert "must hold a JSON object" in lab.connector.inventory().findings[0].message
    path.write_bytes(b"\xff\xfe garbage")
    assert "cannot be read" in lab.connector.inventory().findings[0].message


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
