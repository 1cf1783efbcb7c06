"""The lab folder format: a bad host.json or vm.json is a clear finding, never a traceback."""

from __future__ import annotations

import json

import pytest

from protection.connectors.lab import config
from protection.connectors.protocol import HostUnreachable, InvalidVMConfig, Severity, VMNotFound
from tests.connectors.conftest import Lab


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


def test_parse_vm_config_names_the_file_and_the_field(lab: Lab) -> None:
    folder = lab.folder / "Virtual Machines" / "WIN01"
    assert config.parse_vm_config(folder).id == lab.ids["WIN01"]
    config.update_vm_json(folder, generation=7)
    with pytest.raises(InvalidVMConfig, match="'generation' must be 1 or 2") as raised:
        config.parse_vm_config(folder)
    assert str(folder / "vm.json") in str(raised.value)
