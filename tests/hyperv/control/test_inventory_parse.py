"""The inventory JSON as protocol values: strict, and faithful to what the lab host holds."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from protection.connectors.hyperv.errors import ProtocolError
from protection.connectors.hyperv.inventory import (
    VSS_SERVICE_ID,
    os_family,
    parse_inventory,
    vm_state,
    windows_server_name,
)
from protection.connectors.lab.connector import LabConnector
from protection.connectors.protocol import (
    DiskFormat,
    DiskType,
    OSFamily,
    ReplicationHealth,
    ReplicationRole,
    StorageKind,
    VMState,
)
from tests.hyperv.control.conftest import LabHost
from tests.hyperv.windows import EmulatedHyperV
from tests.hyperv.windows.control import inventory


def answer(host: EmulatedHyperV, **params: Any) -> dict[str, Any]:
    # Through JSON, as it would come off the wire.
    return json.loads(json.dumps(inventory(host, params)))


def test_inventory_matches_what_the_lab_connector_reads(lab_host: LabHost, emulated: EmulatedHyperV) -> None:
    parsed = parse_inventory(answer(emulated))
    lab = LabConnector(lab_host.folder).inventory()
    # The volume's free space moves between the two reads (other processes write).
    assert parsed.host.free_bytes > 0
    assert replace(parsed.host, free_bytes=lab.host.free_bytes) == lab.host
    assert parsed.cluster_name is None and parsed.findings == ()
    assert {vm.id for vm in parsed.vms} == set(lab_host.ids.values())
    for vm in parsed.vms:
        expected = next(v for v in lab.vms if v.id == vm.id)
        # Only the paths differ: the Windows host's C:\ is the lab folder.
        assert vm.path == "C:\\Virtual Machines\\" + vm.name
        disks = tuple(replace(d, path=e.path) for d, e in zip(vm.disks, expected.disks, strict=True))
        assert replace(vm, path=expected.path, disks=disks) == expected
        assert vm.disks[0].path == f"C:\\Virtual Machines\\{vm.name}\\Virtual Hard Disks\\{vm.name}.vhdx"
    linux = next(vm for vm in parsed.vms if vm.name == "LNX01")
    assert linux.os_family == OSFamily.LINUX and linux.disks[0].disk_id


def test_one_vm_only(lab_host: LabHost, emulated: EmulatedHyperV) -> None:
    parsed = parse_inventory(answer(emulated, vm_id=lab_host.ids["WIN01"]))
    assert [vm.name for vm in parsed.vms] == ["WIN01"]


@pytest.fixture
def sample(emulated: EmulatedHyperV) -> dict[str, Any]:
    return answer(emulated)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("host", "name"), None, r"host\.name must be a string, not null"),
        (("host", "os_build"), "20348", r"host\.os_build must be an integer, not str '20348'"),
        (("host", "hardware_vss_provider"), "no", r"host\.hardware_vss_provider must be true or false"),
        (("vms", 0, "generation"), 3, r"vms\[0\]\.generation must be 1 or 2, not 3"),
        (("vms", 0, "generation"), True, r"vms\[0\]\.generation must be an integer"),
        (("vms", 0, "id"), "not-a-guid", r"vms\[0\]\.id must be a GUID"),
        (("vms", 0, "replication_mode"), "Sideways", r"vms\[0\]\.replication_mode is not a replication mode"),
        (
            ("vms", 0, "replication_health"),
            "Bad",
            r"vms\[0\]\.replication_health is not a replication health",
        ),
        (("disks", 0, "controller_type"), "SATA", r"disks\[0\]\.controller_type must be IDE or SCSI"),
        (("disks", 1, "size"), 1.5, r"disks\[1\]\.size must be an integer, not float 1\.5"),
        (("disks", 0, "vhd_type"), "Sparse", r"disks\[0\]\.vhd_type must be Dynamic, Fixed or Differencing"),
        (("controllers", 0, "kind"), "NVMe", r"controllers\[0\]\.kind must be IDE or SCSI"),
        (("volumes", 0), "C:", r"volumes\[0\] must be an object, not str"),
        (("vms",), {"a": 1}, r"vms\[0\]\.id is missing"),
        (("vms",), "WIN01", r"result\.vms must be a list, not str"),
    ],
)
def test_a_wrong_field_is_named(
    sample: dict[str, Any], path: tuple[Any, ...], value: Any, message: str
) -> None:
    broken = copy.deepcopy(sample)
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ProtocolError, match=message):
        parse_inventory(broken)


@pytest.mark.parametrize("field", ["name", "state", "path", "configuration_version", "is_clustered"])
def test_a_missing_vm_field_is_named(sample: dict[str, Any], field: str) -> None:
    del sample["vms"][0][field]
    with pytest.raises(ProtocolError, match=rf"vms\[0\]\.{field} is missing"):
        parse_inventory(sample)


def test_a_missing_section_or_a_result_that_is_no_object(sample: dict[str, Any]) -> None:
    del sample["host"]
    with pytest.raises(ProtocolError, match=r"result\.host is missing"):
        parse_inventory(sample)
    with pytest.raises(ProtocolError, match="result must be an object, not list"):
        parse_inventory([])


def _vm(sample: dict[str, Any]) -> tuple[dict[str, Any], str]:
    vm = sample["vms"][0]
    return vm, vm["id"]


def test_pass_through_disk(sample: dict[str, Any]) -> None:
    _vm_record, vm_id = _vm(sample)
    sample["disks"].append(
        {
            "vm_id": vm_id,
            "controller_type": "SCSI",
            "controller_number": 0,
            "controller_location": 5,
            "path": "",
            "disk_number": 3,
            "vhd_format": None,
            "vhd_type": None,
            "size": 500 * 2**30,
            "file_size": 0,
            "parent_path": None,
            "disk_identifier": None,
            "volume_id": None,
            "error": None,
        }
    )
    parsed = next(v for v in parse_inventory(sample).vms if v.id == vm_id)
    disk = parsed.disks[-1]
    assert (
        disk.pass_through and disk.type == DiskType.PASS_THROUGH and disk.path == "" and disk.format is None
    )
    assert disk.virtual_size == 500 * 2**30


def test_get_vhd_failure_is_kept_as_a_finding(sample: dict[str, Any]) -> None:
    sample["disks"][0]["error"] = "Get-VHD failed: The file is in use."
    inventory = parse_inventory(sample)
    assert [f.code for f in inventory.findings] == ["disk-unusable"]
    assert "The file is in use" in inventory.findings[0].message


def test_differencing_disk_and_avhdx(sample: dict[str, Any]) -> None:
    disk = sample["disks"][0]
    disk.update(
        path=disk["path"].replace(".vhdx", "_1A2B.avhdx"), vhd_type="Differencing", parent_path=disk["path"]
    )
    parsed = parse_inventory(sample)
    found = next(d for vm in parsed.vms for d in vm.disks if d.path.endswith(".avhdx"))
    assert found.type == DiskType.DIFFERENCING and found.format == DiskFormat.AVHDX
    assert found.parent_path is not None and found.parent_path.endswith(".vhdx")


def test_storage_kinds_smb_and_csv(sample: dict[str, Any]) -> None:
    smb, csv = sample["vms"][0], sample["vms"][1]
    smb["path"] = "\\\\fs01\\vms\\WIN01"
    smb["smb_dialect"] = "3.1.1"
    for disk in sample["disks"]:
        if disk["vm_id"] == smb["id"]:
            disk["path"] = "\\\\fs01\\vms\\WIN01\\disk.vhdx"
        if disk["vm_id"] == csv["id"]:
            disk["path"] = "C:\\ClusterStorage\\Volume1\\VMs\\disk.vhdx"
    sample["csvs"] = [
        {
            "name": "Cluster Disk 1",
            "path": "C:\\ClusterStorage\\Volume1",
            "owner_node": "HV07",
            "size": 10,
            "free": 5,
        }
    ]
    sample["host"]["cluster_name"] = "HVCLUSTER"
    csv["is_clustered"] = True
    parsed = {vm.id: vm for vm in parse_inventory(sample).vms}
    assert parsed[smb["id"]].storage_kind == StorageKind.SMB
    share = parsed[smb["id"]].smb_share
    assert share is not None and (share.path, share.smb_version) == ("\\\\fs01\\vms", "3.1.1")
    assert parsed[csv["id"]].storage_kind == StorageKind.CSV and parsed[csv["id"]].csv == "Cluster Disk 1"
    assert parsed[csv["id"]].highly_available and parsed[csv["id"]].cluster == "HVCLUSTER"


def test_replica_from_get_vmreplication(sample: dict[str, Any]) -> None:
    vm, vm_id = _vm(sample)
    vm.update(replication_mode="Replica", replication_health="Warning", replication_state="Replicating")
    sample["replications"] = [
        {"vm_id": vm_id, "mode": "Replica", "state": "Resynchronizing", "health": "Critical"}
    ]
    parsed = next(v for v in parse_inventory(sample).vms if v.id == vm_id)
    assert parsed.replication.role == ReplicationRole.REPLICA
    assert (
        parsed.replication.health == ReplicationHealth.CRITICAL
        and parsed.replication.state == "Resynchronizing"
    )


def test_vss_capable_needs_the_backup_service_enabled_and_ok(sample: dict[str, Any]) -> None:
    _vm_record, vm_id = _vm(sample)
    for service in sample["integration_services"]:
        if service["vm_id"] == vm_id and service["id"].lower().endswith(VSS_SERVICE_ID):
            service["status"] = "Lost Communication"
    assert not next(v for v in parse_inventory(sample).vms if v.id == vm_id).vss_capable


def test_integration_services_zero_version_means_none(sample: dict[str, Any]) -> None:
    vm, vm_id = _vm(sample)
    vm["integration_services_version"] = "0.0"
    assert next(v for v in parse_inventory(sample).vms if v.id == vm_id).integration_services_version is None


def test_free_space_is_the_fullest_volume_holding_vm_files(sample: dict[str, Any]) -> None:
    sample["volumes"].append({"id": "other", "path": "D:\\", "label": "", "size": 100, "free": 7})
    sample["disks"][0]["volume_id"] = "other"
    assert parse_inventory(sample).host.free_bytes == 7


@pytest.mark.parametrize(
    ("build", "caption", "name"),
    [
        (14393, "Microsoft Windows Server 2016 Standard", "Windows Server 2016"),
        (17763, "x", "Windows Server 2019"),
        (26100, "Microsoft Windows Server 2025 Datacenter", "Windows Server 2025"),
        (9600, "Microsoft Windows Server 2012 R2 Datacenter", "Windows Server 2012 R2"),
        (99999, "Microsoft Windows Server 2031 Datacenter", "Windows Server 2031"),
        (22631, "Microsoft Windows 11 Pro", "Windows 11 Pro"),
    ],
)
def test_windows_server_names(build: int, caption: str, name: str) -> None:
    assert windows_server_name(build, caption) == name


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("Running", VMState.RUNNING),
        ("Off", VMState.OFF),
        ("OffCritical", VMState.OFF),
        ("Saved", VMState.SAVED),
        ("Paused", VMState.PAUSED),
        ("Starting", VMState.RUNNING),
    ],
)
def test_vm_states(text: str, state: VMState) -> None:
    assert vm_state(text) == state


@pytest.mark.parametrize(
    ("guest", "family"),
    [
        ("Windows Server 2019 Datacenter", OSFamily.WINDOWS),
        ("Ubuntu 22.04.3 LTS", OSFamily.LINUX),
        ("Red Hat Enterprise Linux 9.2", OSFamily.LINUX),
        ("", OSFamily.WINDOWS),
    ],
)
def test_guest_os_family(guest: str, family: OSFamily) -> None:
    assert os_family(guest) == family


def test_parsing_never_raises_key_errors_on_random_damage(sample: dict[str, Any], tmp_path: Path) -> None:
    """Delete each key of each record in turn: a ProtocolError or a parse, never anything else."""
    for section in ("host", "vms", "disks", "controllers", "integration_services", "volumes"):
        records = [sample[section]] if isinstance(sample[section], dict) else sample[section][:1]
        for record in records:
            for key in list(record):
                damaged = copy.deepcopy(sample)
                target = damaged[section] if section == "host" else damaged[section][0]
                del target[key]
                try:
                    parse_inventory(damaged)
                except ProtocolError as error:
                    assert key in str(error)
