"""Restore and register on lab hosts: original instance and alternate location."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from protection.connectors.lab.guest import VMBusy, churn
from protection.connectors.protocol import (
    ChangeTrackingLost,
    Consistency,
    RestoreRefused,
    RestoreTarget,
)
from tests.connectors.conftest import Lab

DISK = "Virtual Hard Disks/{}.vhdx"


def _snapshot(lab: Lab, name: str) -> tuple[dict[str, Any], dict[str, bytes], dict[str, str]]:
    """Back a VM up into memory: (file sources for restore_vm, raw bytes, RCT refs)."""
    session = lab.connector.begin_backup(lab.ids[name], Consistency.APPLICATION)
    data = {}
    for f in session.files:
        with f.open() as fh:
            data[f.name] = fh.read()
    refs = lab.connector.end_backup(session, ok=True)
    sources = {n: (lambda b=b: io.BytesIO(b)) for n, b in data.items()}
    return sources, data, refs


def test_original_restore_replaces_disks_keeps_id_and_restarts_tracking(lab: Lab) -> None:
    sources, data, refs = _snapshot(lab, "WIN01")
    churn(lab.cfg("WIN01"), 10, seed=1)
    disk = lab.disk("WIN01")
    assert disk.read_bytes() != data[DISK.format("WIN01")]
    stray = disk.parent / "WIN01_6C1F.avhdx"  # a checkpoint left on the host
    stray.write_bytes(b"checkpoint")

    result = lab.connector.restore_vm(lab.ids["WIN01"], sources, RestoreTarget("original"))

    assert not result.new_registration
    assert result.vm.id == lab.ids["WIN01"] and result.vm.state == "Off"
    assert disk.read_bytes() == data[DISK.format("WIN01")]
    assert not stray.exists()  # "the original VHD and all associated checkpoints are deleted"
    assert result.vm.disks[0].error is None
    session = lab.connector.begin_backup(lab.ids["WIN01"], Consistency.APPLICATION)
    try:
        with pytest.raises(ChangeTrackingLost):
            session.changed_ranges(DISK.format("WIN01"), refs[DISK.format("WIN01")])
    finally:
        lab.connector.end_backup(session, ok=False)


def test_original_restore_of_a_deleted_vm_needs_its_folder(lab: Lab) -> None:
    sources, data, _refs = _snapshot(lab, "LNX01")
    folder = lab.folder / "Virtual Machines" / "LNX01"
    shutil.rmtree(folder)
    findings = lab.connector.check_restore_target(lab.ids["LNX01"], RestoreTarget("original"), list(sources))
    assert [f.code for f in findings] == ["original-folder-unknown"]
    result = lab.connector.restore_vm(lab.ids["LNX01"], sources, RestoreTarget("original", path=str(folder)))
    assert result.vm.id == lab.ids["LNX01"]
    assert lab.connector.get_vm(lab.ids["LNX01"]).disks[0].error is None
    assert (folder / DISK.format("LNX01")).read_bytes() == data[DISK.format("LNX01")]


def test_alternate_restore_registers_a_new_vm(lab: Lab, make_lab) -> None:  # type: ignore[no-untyped-def]
    other = make_lab("LAB-HV02", cluster_name="CLU2", nodes=["LAB-HV02"])
    (lab.folder / "Virtual Machines" / "WIN01" / "vm.json").write_text(
        json.dumps(
            {**json.loads((lab.folder / "Virtual Machines" / "WIN01" / "vm.json").read_text()),
             "highly_available": True, "cluster": "CLU1"}
        )
    )  # fmt: skip
    sources, data, _refs = _snapshot(lab, "WIN01")
    target = RestoreTarget("alternate", host_address=str(other.folder), path="Restored/WIN01")
    assert lab.connector.check_restore_target(lab.ids["WIN01"], target, list(sources)) == []
    result = lab.connector.restore_vm(lab.ids["WIN01"], sources, target)
    assert result.new_registration
    assert result.vm.id != lab.ids["WIN01"]
    assert not result.vm.highly_available and result.vm.cluster is None
    assert result.vm.host == "LAB-HV02"
    (vm,) = other.connector.inventory().vms
    assert vm.id == result.vm.id and vm.name == "WIN01"
    restored = other.folder / "Restored" / "WIN01" / DISK.format("WIN01")
    assert restored.read_bytes() == data[DISK.format("WIN01")]
    assert lab.connector.get_vm(lab.ids["WIN01"]).highly_available  # original untouched
    # The same folder cannot take a second VM.
    with pytest.raises(RestoreRefused, match="already holds a VM"):
        lab.connector.restore_vm(lab.ids["WIN01"], sources, target)


def test_long_destination_paths_are_refused(lab: Lab, make_lab) -> None:  # type: ignore[no-untyped-def]
    other = make_lab("LAB-HV02")
    sources, _data, _refs = _snapshot(lab, "LNX01")
    longest = max(len(n) for n in sources)
    room = 260 - len(str(other.folder)) - 1 - 1 - longest  # folder + "/" + path + "/" + name
    path = "p" * room  # exactly 260 characters: refused
    target = RestoreTarget("alternate", host_address=str(other.folder), path=path)
    (finding,) = lab.connector.check_restore_target(lab.ids["LNX01"], target, list(sources))
    assert finding.code == "recovery-path-too-long" and "260" in finding.message
    with pytest.raises(RestoreRefused, match="260"):
        lab.connector.restore_vm(lab.ids["LNX01"], sources, target)
    assert not (other.folder / path).exists()
    ok = RestoreTarget("alternate", host_address=str(other.folder), path=path[:-1])
    assert lab.connector.check_restore_target(lab.ids["LNX01"], ok, list(sources)) == []


def test_original_restore_refused_without_host_or_cluster(lab: Lab) -> None:
    vm_json = lab.folder / "Virtual Machines" / "WIN01" / "vm.json"
    vm_json.write_text(
        json.dumps({**json.loads(vm_json.read_text()), "highly_available": True, "cluster": "CLU1"})
    )
    sources, _data, _refs = _snapshot(lab, "WIN01")
    with pytest.raises(RestoreRefused, match="cluster CLU1"):
        lab.connector.restore_vm(lab.ids["WIN01"], sources, RestoreTarget("original"))
    host = json.loads((lab.folder / "host.json").read_text())
    (lab.folder / "host.json").write_text(json.dumps({**host, "cluster_name": "CLU1"}))
    result = lab.connector.restore_vm(lab.ids["WIN01"], sources, RestoreTarget("original"))
    assert result.vm.highly_available and result.vm.cluster == "CLU1"  # still HA

    shutil.rmtree(lab.folder)
    with pytest.raises(RestoreRefused, match="original host is gone"):
        lab.connector.restore_vm(lab.ids["WIN01"], sources, RestoreTarget("original"))


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (RestoreTarget("alternate", host_address="/nonexistent/host", path="x"), "does not exist"),
        (RestoreTarget("alternate", host_address="{host}", path="../../etc"), "not a folder of"),
        (RestoreTarget("alternate", host_address="{host}", path="/etc"), "not a folder of"),
    ],
)
def test_bad_alternate_targets(lab: Lab, make_lab, target: RestoreTarget, message: str) -> None:  # type: ignore[no-untyped-def]
    other = make_lab("LAB-HV02")
    target = RestoreTarget(target.mode, target.host_address.format(host=other.folder), target.path)
    sources, _d, _r = _snapshot(lab, "LNX01")
    with pytest.raises(RestoreRefused, match=message):
        lab.connector.restore_vm(lab.ids["LNX01"], sources, target)


def test_bad_file_names_and_missing_config_are_refused(lab: Lab, make_lab) -> None:  # type: ignore[no-untyped-def]
    other = make_lab("LAB-HV02")
    target = RestoreTarget("alternate", host_address=str(other.folder), path="R")
    with pytest.raises(RestoreRefused, match="refusing to restore a file"):
        lab.connector.restore_vm(lab.ids["LNX01"], {"../evil": lambda: io.BytesIO(b"")}, target)
    with pytest.raises(RestoreRefused, match="needs the VM's configuration"):
        lab.connector.restore_vm(lab.ids["LNX01"], {"a.vhdx": lambda: io.BytesIO(b"x")}, target)
    with pytest.raises(RestoreRefused, match="not valid JSON"):
        lab.connector.restore_vm(lab.ids["LNX01"], {"vm.json": lambda: io.BytesIO(b"{")}, target)


def test_restore_waits_for_a_running_backup(lab: Lab) -> None:
    sources, _data, _refs = _snapshot(lab, "WIN01")
    session = lab.connector.begin_backup(lab.ids["WIN01"], Consistency.APPLICATION)
    lab.connector.lock_wait_seconds = 0.1
    try:
        with pytest.raises(VMBusy):
            lab.connector.restore_vm(lab.ids["WIN01"], sources, RestoreTarget("original"))
    finally:
        lab.connector.end_backup(session, ok=True)
    lab.connector.restore_vm(lab.ids["WIN01"], sources, RestoreTarget("original"))


def test_restore_from_the_engine_reader(lab: Lab, tmp_path: Path) -> None:
    engine = pytest.importorskip("storage.engine")
    from tests.connectors.engine_helpers import backup_vm

    ds = engine.Datastore.create(tmp_path / "ds")
    point, _refs, _used = backup_vm(ds, lab.connector, lab.ids["SQL01"], None)
    before = lab.disk("SQL01").read_bytes()
    churn(lab.cfg("SQL01"), 5, seed=2)
    sources = {f.name: (lambda n=f.name: ds.open_file(point.id, n)) for f in point.files}
    lab.connector.restore_vm(lab.ids["SQL01"], sources, RestoreTarget("original"))
    assert lab.disk("SQL01").read_bytes() == before
