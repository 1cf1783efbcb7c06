"""Hyper-V backup sessions against the emulated host: checkpoint, SMB reads, RCT, cleanup."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from protection.connectors.hyperv.session import (
    CHECKPOINT_PREFIX,
    HyperVBackupSession,
    Reference,
    begin_hyperv_backup,
    destroy_reference,
    end_hyperv_backup,
)
from protection.connectors.hyperv.smb import SMBClient, SMBLogonFailure
from protection.connectors.lab.guest import guest_write
from protection.connectors.lab.host import copy_sparse
from protection.connectors.protocol import (
    BackupRefused,
    BackupSession,
    ChangeTrackingLost,
    ConnectorError,
    Consistency,
)
from protection.connectors.ranges import intersect, normalize, subtract
from storage.engine import Datastore, SourceFile
from storage.engine.errors import EngineError
from storage.vdisk import read_layout
from storage.vdisk.pagefile import volatile_virtual_ranges
from tests.connectors.engine_helpers import read_session
from tests.hyperv.conftest import HyperVLab
from tests.hyperv.windows.hoststate import (
    checkpoint_dirs,
    checkpoints_of,
    reference_points,
    save_checkpoint,
)

MiB = 1024 * 1024
DISK = "Virtual Hard Disks/WIN01.vhdx"


def backup(
    ds: Datastore, lab: HyperVLab, vm_id: str, refs: dict[str, str] | None, smb: SMBClient | None = None
) -> tuple[Any, dict[str, str], dict[str, list[tuple[int, int]] | None], HyperVBackupSession]:
    session = begin_hyperv_backup(lab.transport, smb or lab.smb, vm_id, Consistency.APPLICATION)
    ok = False
    try:
        point, used = read_session(ds, session, vm_id, refs)
        ok = True
    finally:
        new_refs = end_hyperv_backup(session, ok)
    return point, new_refs, used, session


def restored(ds: Datastore, point_id: str, target: Path) -> Path:
    ds.restore(point_id, target)
    return target


def same_file(a: Path, b: Path) -> bool:
    return subprocess.run(["cmp", "-s", str(a), str(b)], check=False).returncode == 0


def vm_folder(lab: HyperVLab, name: str) -> Path:
    return lab.folder / "Virtual Machines" / name


def test_full_then_incremental_reads_only_changed_ranges(hv_lab: HyperVLab, tmp_path: Path) -> None:
    lab = hv_lab
    vm_id = lab.add("WIN01")
    ds = Datastore.create(tmp_path / "ds")

    point1, refs1, used1, session1 = backup(ds, lab, vm_id, None)
    assert isinstance(session1, BackupSession)
    assert [f.name for f in session1.files] == [DISK, "Virtual Machines/vm.json"]
    assert used1[DISK] is None
    assert session1.consistency == Consistency.APPLICATION
    assert set(refs1) == {DISK} and refs1[DISK].startswith("hvrct1|")
    assert checkpoints_of(lab.host, vm_id) == []  # converted to a reference point
    assert len(reference_points(vm_folder(lab, "WIN01"))) == 1
    out1 = restored(ds, point1.id, tmp_path / "r1")
    assert same_file(out1 / DISK, lab.disk("WIN01"))

    # The guest writes while nothing is being backed up...
    cfg = lab.connector.vm_config(vm_id)
    layout = read_layout(lab.disk("WIN01"))
    writes = [(7 * MiB + 4096, 8192, 0x41), (20 * MiB, 65536, 0x42), (layout.virtual_size - 4096, 4096, 0x43)]
    guest_write(cfg, 0, writes)
    # ...and the next backup reads only what changed, over SMB.
    before = lab.smb.bytes_read.value
    point2, refs2, used2, session2 = backup(ds, lab, vm_id, refs1)
    wire = lab.smb.bytes_read.value - before - session2.lookup_bytes
    ranges = used2[DISK]
    assert ranges is not None
    out2 = restored(ds, point2.id, tmp_path / "r2")
    assert same_file(out2 / DISK, lab.disk("WIN01"))
    assert (
        subprocess.run(["qemu-img", "compare", "-q", str(out2 / DISK), str(lab.disk("WIN01"))]).returncode
        == 0
    )
    assert refs2[DISK] != refs1[DISK]

    after = read_layout(lab.disk("WIN01"))
    written = normalize(after.virtual_to_file([(o, n) for o, n, _p in writes]))
    meta = normalize(after.metadata_ranges())
    growth = [(Reference.decode(refs1[DISK]).file_size, 0)]
    growth = [(g, lab.disk("WIN01").stat().st_size - g) for g, _ in growth]
    expected = normalize([*subtract(written, session2._excluded[DISK]), *meta, *growth])
    assert normalize(ranges) == [(o, n) for o, n in expected if n > 0]
    cs = ds.chunk_size
    chunks = {off // cs for o, n in expected for off in range(o - o % cs, o + n, cs)}
    config_size = (vm_folder(lab, "WIN01") / "vm.json").stat().st_size
    # Engine reads: whole chunks around the changed ranges; the session's layout parse
    # reads the structure once more; the config file is read whole. (The paging-file
    # lookup, counted apart, reads the guest's MFT.)
    assert wire <= len(chunks) * cs + sum(n for _o, n in meta) + config_size
    assert wire < lab.disk("WIN01").stat().st_size // 4


def test_invalid_rct_id_means_a_full_read(hv_lab: HyperVLab, tmp_path: Path) -> None:
    lab = hv_lab
    vm_id = lab.add("WIN01")
    ds = Datastore.create(tmp_path / "ds")
    _p, refs, _u, _s = backup(ds, lab, vm_id, None)
    ref = Reference.decode(refs[DISK])
    bogus = Reference(ref.file_size, ref.reference_point_id, "rct:00000000-0000-0000-0000-000000000000:1")
    session = begin_hyperv_backup(lab.transport, lab.smb, vm_id, Consistency.APPLICATION)
    try:
        with pytest.raises(ChangeTrackingLost):
            session.changed_ranges(DISK, bogus.encode())
        with pytest.raises(ChangeTrackingLost):
            session.changed_ranges(DISK, "not-a-reference")
        assert session.changed_ranges("Virtual Machines/vm.json", refs[DISK]) is None
    finally:
        end_hyperv_backup(session, False)
    point, _r, used, _s = backup(ds, lab, vm_id, {DISK: bogus.encode()})
    assert used[DISK] is None
    assert same_file(restored(ds, point.id, tmp_path / "r") / DISK, lab.disk("WIN01"))


def test_consistency_replica_refusal_and_crash_fallback(hv_lab: HyperVLab) -> None:
    lab = hv_lab
    no_vss = lab.add("NOVSS", vss_capable=False)
    replica = lab.add("REP", replication={"role": "replica", "health": "Normal", "state": "Replicating"})
    bad = lab.add("BAD", replication={"role": "replica", "health": "Normal", "state": "Resynchronizing"})
    for vm_id, wanted, expected in (
        (no_vss, Consistency.APPLICATION, Consistency.CRASH),
        (replica, Consistency.APPLICATION, Consistency.CRASH),
    ):
        session = begin_hyperv_backup(lab.transport, lab.smb, vm_id, wanted)
        assert session.consistency == expected
        end_hyperv_backup(session, False)
    with pytest.raises(BackupRefused, match="resynchroniz"):
        begin_hyperv_backup(lab.transport, lab.smb, bad, Consistency.APPLICATION)
    assert checkpoints_of(lab.host, bad) == []


def test_stale_checkpoint_of_ours_is_removed_others_are_kept(hv_lab: HyperVLab, tmp_path: Path) -> None:
    lab = hv_lab
    vm_id = lab.add("WIN01")
    crashed = begin_hyperv_backup(lab.transport, lab.smb, vm_id, Consistency.APPLICATION)
    del crashed  # the worker died: end_backup never ran
    folder = vm_folder(lab, "WIN01")
    save_checkpoint(
        folder / "Snapshots" / "MANUAL", {"id": "MANUAL", "name": "before patching", "type": "Standard"}
    )
    assert len(checkpoints_of(lab.host, vm_id)) == 2
    session = begin_hyperv_backup(lab.transport, lab.smb, vm_id, Consistency.APPLICATION)
    assert any("stale recovery checkpoint" in e for e in session.events)
    names = sorted(c["name"] for c in checkpoints_of(lab.host, vm_id))
    assert len(names) == 2 and "before patching" in names
    assert [n for n in names if n.startswith(CHECKPOINT_PREFIX)] != [], "the new checkpoint is there"
    end_hyperv_backup(session, False)
    assert [c["name"] for c in checkpoints_of(lab.host, vm_id)] == ["before patching"]


@pytest.mark.parametrize(
    "step",
    ["begin-backup", "smb-open", "rct-changes", "engine-read", "end-backup-convert", "end-backup-remove"],
)
def test_a_failure_at_every_step_leaves_no_checkpoint(
    hv_lab: HyperVLab, tmp_path: Path, step: str, hyperv_samba: Any
) -> None:
    lab = hv_lab
    vm_id = lab.add("WIN01")
    ds = Datastore.create(tmp_path / "ds")
    _p, refs, _u, _s = backup(ds, lab, vm_id, None)
    guest_write(lab.connector.vm_config(vm_id), 0, [(MiB, 4096, 7)])
    smb = lab.smb
    if step == "begin-backup":
        lab.host.fail_next["begin-backup"] = ("CheckpointFailed", "the checkpoint job failed: 32768")
    elif step == "smb-open":
        smb = SMBClient(hyperv_samba.settings(password="wrong", server="localhost"))
    elif step == "rct-changes":
        lab.host.fail_next["rct-changes"] = ("AccessDenied", "access denied")
    elif step == "end-backup-convert":
        lab.host.fail_next["end-backup"] = ("CheckpointFailed", "ConvertToReferencePoint failed")
    elif step == "end-backup-remove":
        # The backup failed and removing the checkpoint failed too (the host went away):
        # the checkpoint stays until the next backup finds it and removes it.
        session = begin_hyperv_backup(lab.transport, smb, vm_id, Consistency.APPLICATION)

        def host_gone(host: Any, params: dict[str, Any]) -> None:
            raise ConnectionError("WinRM connection dropped")

        lab.host.fail_next["end-backup"] = host_gone
        with pytest.raises(ConnectionError):
            end_hyperv_backup(session, False)
        assert len(checkpoints_of(lab.host, vm_id)) == 1
        _p2, _r2, used2, s2 = backup(ds, lab, vm_id, refs)
        assert any("stale recovery checkpoint" in e for e in s2.events)
        assert checkpoints_of(lab.host, vm_id) == []
        assert used2[DISK] is not None
        return

    with pytest.raises((ConnectorError, EngineError)) as info:
        if step == "engine-read":
            session = begin_hyperv_backup(lab.transport, smb, vm_id, Consistency.APPLICATION)
            try:
                disk = next(f for f in session.files if f.kind == "disk")
                # The frozen copy vanishes under the reader (share error mid-backup).
                for d in checkpoint_dirs(vm_folder(lab, "WIN01")):
                    (d / "WIN01.vhdx").unlink()
                ds.backup(vm_id, [SourceFile(disk.name, disk.opener, disk.size)])
            finally:
                end_hyperv_backup(session, False)
        else:
            backup(ds, lab, vm_id, refs, smb=smb)
    if step == "smb-open":
        assert isinstance(info.value, SMBLogonFailure)
        smb.close()
    assert checkpoints_of(lab.host, vm_id) == []
    if step == "end-backup-convert":
        # The conversion failed, the checkpoint was removed; the older reference stays usable.
        assert len(reference_points(vm_folder(lab, "WIN01"))) == 1
    _p2, _refs2, used2, _s2 = backup(ds, lab, vm_id, refs)
    assert used2[DISK] is not None  # the previous RCT id still works after any failure


def test_reference_point_destroyed_only_when_asked(hv_lab: HyperVLab, tmp_path: Path) -> None:
    lab = hv_lab
    vm_id = lab.add("WIN01")
    ds = Datastore.create(tmp_path / "ds")
    _p, refs1, _u, _s = backup(ds, lab, vm_id, None)
    _p, refs2, _u, _s = backup(ds, lab, vm_id, refs1)
    points = reference_points(vm_folder(lab, "WIN01"))
    assert len(points) == 2
    assert destroy_reference(lab.transport, vm_id, refs1[DISK]) is True
    assert list(reference_points(vm_folder(lab, "WIN01"))) == [
        Reference.decode(refs2[DISK]).reference_point_id
    ]
    assert destroy_reference(lab.transport, vm_id, refs1[DISK]) is False


def test_frozen_files_do_not_move_while_the_guest_writes(hv_lab: HyperVLab, tmp_path: Path) -> None:
    lab = hv_lab
    vm_id = lab.add("WIN01")
    copy_sparse(lab.disk("WIN01"), tmp_path / "before.vhdx")
    session = begin_hyperv_backup(lab.transport, lab.smb, vm_id, Consistency.APPLICATION)
    try:
        guest_write(lab.connector.vm_config(vm_id), 0, [(3 * MiB, 65536, 0x55)])
        disk = session.files[0]
        with disk.open() as fh:
            assert fh.read() == (tmp_path / "before.vhdx").read_bytes()
    finally:
        end_hyperv_backup(session, False)


def test_a_linux_guest_from_the_inventory_is_file_consistent(hv_lab: HyperVLab) -> None:
    lab = hv_lab
    vm_id = lab.add("LNX01", "linux-dynamic.vhdx", os_family="linux")
    inventory_vm = lab.connector.get_vm(vm_id)  # what the connector's inventory returns
    session = begin_hyperv_backup(lab.transport, lab.smb, vm_id, Consistency.APPLICATION, vm=inventory_vm)
    try:
        assert session.vm is inventory_vm
        assert session.consistency == Consistency.FILE
        assert session.excluded_ranges(DISK.replace("WIN01", "LNX01")) == []
    finally:
        end_hyperv_backup(session, False)


def test_settings_instead_of_a_client_and_no_credentials(hv_lab: HyperVLab, hyperv_samba: Any) -> None:
    lab = hv_lab
    vm_id = lab.add("WIN01")
    session = begin_hyperv_backup(lab.transport, hyperv_samba.settings(), vm_id, Consistency.APPLICATION)
    try:
        with session.files[0].open() as fh:
            assert fh.read(8) == b"vhdxfile"
    finally:
        end_hyperv_backup(session, False)
    assert session.smb._trees == {}  # the session's own connections were closed
    calls = len(lab.transport.calls)
    with pytest.raises(ConnectorError, match="No credentials for the host's admin share"):
        begin_hyperv_backup(lab.transport, None, vm_id, Consistency.APPLICATION)
    assert len(lab.transport.calls) == calls  # refused before any checkpoint was taken


class ChainHost:
    """A host whose VM runs on a differencing disk (a standard checkpoint exists): the
    recovery checkpoint freezes the AVHDX, and its parents are read-only already."""

    def __init__(self, windows_folder: str, sizes: dict[str, int]):
        self.folder = windows_folder
        self.sizes = sizes
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def run_script(self, name: str, params: dict[str, Any]) -> Any:
        self.calls.append((name, params))
        if name == "begin-backup":
            top = f"{self.folder}\\WIN01_0A1B.avhdx"
            return {
                "checkpoint_id": "Microsoft:CKPT",
                "checkpoint_name": CHECKPOINT_PREFIX + "now",
                "consistency": "application",
                "vm": {"id": "5d2b0a51-7c1f-4b0e-9a59-1f2f6d1c0a11", "name": "WIN01", "host": "HV01"},
                "disks": [
                    {
                        "path": top,
                        "frozen_path": top,
                        "disk_id": "ID-TOP",
                        "file_size": self.sizes["WIN01_0A1B.avhdx"],
                        "format": "vhdx",  # Get-VHD says VHDX for an AVHDX too
                        "parents": [
                            {
                                "path": f"{self.folder}\\WIN01.vhdx",
                                "disk_id": "ID-BASE",
                                "file_size": self.sizes["WIN01.vhdx"],
                            }
                        ],
                    }
                ],
                "config_files": [],
            }
        if name == "end-backup":
            return (
                {"removed": True}
                if not params["ok"]
                else {
                    "reference_point_id": "Microsoft:RP",
                    "virtual_disk_ids": ["{ID-TOP}"],
                    "rct_ids": ["rctX:1"],
                }
            )
        raise AssertionError(f"unexpected script {name}")


def test_a_differencing_chain_is_backed_up_whole(hyperv_samba: Any, disk_images: dict[str, Path]) -> None:
    folder = hyperv_samba.drive / "chain-vm"
    folder.mkdir(exist_ok=True)
    copy_sparse(disk_images["windows-dynamic.vhdx"], folder / "WIN01.vhdx")
    copy_sparse(disk_images["blank-dynamic.vhdx"], folder / "WIN01_0A1B.avhdx")
    sizes = {p.name: p.stat().st_size for p in folder.iterdir()}
    host = ChainHost("C:\\chain-vm", sizes)
    with SMBClient(hyperv_samba.settings()) as smb:
        session = begin_hyperv_backup(
            host, smb, "5d2b0a51-7c1f-4b0e-9a59-1f2f6d1c0a11", Consistency.APPLICATION
        )
        names = [f.name for f in session.files]
        assert names == ["Virtual Hard Disks/WIN01_0A1B.avhdx", "Virtual Hard Disks/WIN01.vhdx"]
        with session.files[1].open() as fh:
            assert fh.read() == (folder / "WIN01.vhdx").read_bytes()
        # Only a top-level VHDX is change-tracked; a chain is read whole (and deduplicated).
        assert session.changed_ranges(names[0], "hvrct1|1|x|y") is None
        assert session.changed_ranges(names[1], "hvrct1|1|x|y") is None
        assert end_hyperv_backup(session, True) == {}
    assert [name for name, _p in host.calls] == ["begin-backup", "end-backup"]


def test_paging_file_writes_are_not_read_again(hv_lab: HyperVLab, tmp_path: Path) -> None:
    lab = hv_lab
    vm_id = lab.add("WIN01")
    ds = Datastore.create(tmp_path / "ds")
    _p, refs, _u, _s = backup(ds, lab, vm_id, None)
    pagefile = volatile_virtual_ranges(lab.disk("WIN01"))
    assert pagefile, "the fixture guest has a pagefile.sys"
    off, length = pagefile[0]
    guest_write(lab.connector.vm_config(vm_id), 0, [(off, min(length, 256 * 1024), 0x77)])
    _p2, _r2, used, session = backup(ds, lab, vm_id, refs)
    layout = read_layout(lab.disk("WIN01"))
    in_file = layout.virtual_to_file([(off, min(length, 256 * 1024))])
    ranges = used[DISK]
    assert ranges is not None
    assert intersect(ranges, in_file) == []
    assert session.lookup_bytes > 0
    assert any("paging files" in e for e in session.events)
