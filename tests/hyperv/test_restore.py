"""Restores to the emulated host: files over SMB, then the VM registered."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from protection.connectors.hyperv.restore import check_restore_target, restore_vm
from protection.connectors.hyperv.smb import SMBClient
from protection.connectors.lab.connector import LabConnector
from protection.connectors.lab.guest import guest_write
from protection.connectors.lab.host import write_host_json
from protection.connectors.protocol import RestoreRefused, RestoreTarget
from storage.engine import Datastore
from tests.hyperv.conftest import HyperVLab
from tests.hyperv.emulation import DirectTransport, FakeHost
from tests.hyperv.test_session import DISK, backup

MiB = 1024 * 1024
CONFIG = "Virtual Machines/vm.json"


def point_files(ds: Datastore, point_id: str, names: list[str]) -> dict[str, Any]:
    def opener(name: str) -> Any:
        return lambda: ds.open_file(point_id, name)

    return {name: opener(name) for name in names}


def same(a: Path, b: Path) -> bool:
    return subprocess.run(["cmp", "-s", str(a), str(b)], check=False).returncode == 0


def test_restore_to_the_original_vm_puts_back_the_backed_up_disk(hv_lab: HyperVLab, tmp_path: Path) -> None:
    lab = hv_lab
    vm_id = lab.add("WIN01")
    ds = Datastore.create(tmp_path / "ds")
    point, _refs, _u, _s = backup(ds, lab, vm_id, None)
    ds.restore(point.id, tmp_path / "expected")
    guest_write(lab.connector.vm_config(vm_id), 0, [(2 * MiB, 65536, 0x99)])
    assert not same(lab.disk("WIN01"), tmp_path / "expected" / DISK)

    names = [DISK, CONFIG]
    assert check_restore_target(lab.transport, lab.smb, vm_id, RestoreTarget("original"), names) == []
    before = lab.smb.bytes_written.value
    result = restore_vm(
        lab.transport, lab.smb, vm_id, point_files(ds, point.id, names), RestoreTarget("original")
    )
    assert lab.smb.bytes_written.value > before
    assert result.vm.id == vm_id and not result.new_registration
    assert same(lab.disk("WIN01"), tmp_path / "expected" / DISK)
    cfg = lab.connector.vm_config(vm_id)
    assert cfg.state.value == "Off"
    assert not (cfg.folder / ".hvbackup-restore").exists()
    assert subprocess.run(["qemu-img", "check", "-q", str(lab.disk("WIN01"))], check=False).returncode == 0


def test_restore_to_another_host_registers_a_new_vm(
    hv_lab: HyperVLab, tmp_path: Path, hyperv_samba: Any
) -> None:
    lab = hv_lab
    vm_id = lab.add("WIN01")
    ds = Datastore.create(tmp_path / "ds")
    point, _refs, _u, _s = backup(ds, lab, vm_id, None)
    ds.restore(point.id, tmp_path / "expected")

    other_folder = lab.folder.parent / f"{lab.folder.name}-other"
    write_host_json(other_folder, "HV02")
    other = DirectTransport(FakeHost(lab_root=other_folder, drive_root=hyperv_samba.drive))
    smb = SMBClient(hyperv_samba.settings())
    try:
        path = f"C:\\{other_folder.name}\\Restored\\WIN01"
        target = RestoreTarget("alternate", host_address="hv02", path=path)
        names = [DISK, CONFIG]
        result = restore_vm(other, smb, vm_id, point_files(ds, point.id, names), target)
    finally:
        smb.close()
    assert result.new_registration and result.vm.id != vm_id
    restored_vm = LabConnector(other_folder).vm_config(result.vm.id)
    assert restored_vm.folder == other_folder / "Restored" / "WIN01"
    assert same(restored_vm.folder / DISK, tmp_path / "expected" / DISK)
    assert json.loads((restored_vm.folder / "vm.json").read_text())["highly_available"] is False


def test_refusals_long_paths_occupied_folder_and_bad_names(hv_lab: HyperVLab, tmp_path: Path) -> None:
    lab = hv_lab
    vm_id = lab.add("WIN01")
    long_path = f"C:\\{lab.folder.name}\\" + "\\".join(["a-rather-long-folder-name"] * 10)
    findings = check_restore_target(
        lab.transport, lab.smb, vm_id, RestoreTarget("alternate", path=long_path), [DISK, CONFIG]
    )
    assert "recovery-path-too-long" in [f.code for f in findings]
    occupied = f"C:\\{lab.folder.name}\\Virtual Machines\\WIN01"
    findings = check_restore_target(
        lab.transport, lab.smb, vm_id, RestoreTarget("alternate", path=occupied), [DISK]
    )
    assert [f.code for f in findings] == ["target-occupied"]
    never_opened = {"../evil.vhdx": _unused_source}
    with pytest.raises(RestoreRefused, match="refusing"):
        restore_vm(lab.transport, lab.smb, vm_id, never_opened, RestoreTarget("original"))
    with pytest.raises(RestoreRefused, match="holds a VM"):
        restore_vm(
            lab.transport, lab.smb, vm_id, {DISK: _unused_source}, RestoreTarget("alternate", path=occupied)
        )


def _unused_source() -> BinaryIO:
    raise AssertionError("a refused restore must not read the backup")
