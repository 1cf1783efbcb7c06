"""Backup sessions on a lab host: files, consistency, refusals, locks, change tracking."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from protection.connectors.lab.guest import VMBusy, VMLock, churn, guest_write
from protection.connectors.protocol import (
    BackupRefused,
    BackupSession,
    ChangeTrackingLost,
    ConnectorError,
    Consistency,
    InvalidVMConfig,
)
from protection.connectors.ranges import intersect, subtract
from storage.vdisk import PAYLOAD_BLOCK_FULLY_PRESENT, read_layout
from storage.vdisk.pagefile import guest_files, volatile_virtual_ranges
from tests.connectors.conftest import Lab

DISK = "Virtual Hard Disks/{}.vhdx"
MiB = 1024 * 1024


def _vm_json(lab: Lab, name: str) -> dict:
    return json.loads((lab.folder / "Virtual Machines" / name / "vm.json").read_text())


def test_session_lists_disks_and_config_with_working_readers(lab: Lab) -> None:
    session = lab.connector.begin_backup(lab.ids["WIN01"], Consistency.APPLICATION)
    try:
        assert isinstance(session, BackupSession)
        names = [(f.name, f.kind) for f in session.files]
        assert names == [(DISK.format("WIN01"), "disk"), ("vm.json", "config")]
        disk = session.files[0]
        assert disk.size == lab.disk("WIN01").stat().st_size
        with disk.open() as fh:
            fh.seek(0)
            assert fh.read(8) == b"vhdxfile"
            fh.seek(disk.size - 10)
            assert len(fh.read(100)) == 10  # seekable, bounded by the file
        with session.files[1].open() as fh:
            assert json.load(fh)["id"] == lab.ids["WIN01"]
        assert session.changed_ranges("vm.json", "rct:whatever") is None  # config: read whole
        assert session.changed_ranges(disk.name, None) is None  # no reference: full read
        with pytest.raises(ConnectorError, match="not part of this backup"):
            session.changed_ranges("nope.vhdx", None)
    finally:
        lab.connector.end_backup(session, ok=False)


@pytest.mark.parametrize(
    ("name", "settings", "wanted", "consistency", "offline"),
    [
        ("WIN02", {}, "application", "application", False),
        ("WIN02", {}, "crash", "crash", False),
        ("LNX02", {"os_family": "linux"}, "application", "file", False),
        ("WIN02", {"vss_capable": False}, "application", "crash", True),
        ("WIN02", {"integration_services_version": None}, "application", "crash", True),
        ("WIN02", {"state": "Off"}, "application", "crash", False),
        ("WIN02", {"state": "Saved"}, "application", "crash", True),
        ("WIN02", {"state": "Paused"}, "application", "crash", True),
        ("WIN02", {"replication": {"role": "replica", "state": "Replicating"}}, "application",
         "crash", False),
    ],
)  # fmt: skip
def test_consistency_per_guest(
    lab: Lab, name: str, settings: dict, wanted: str, consistency: str, offline: bool
) -> None:
    vm_id = lab.add(name, **settings)
    state_before = _vm_json(lab, name)["state"]
    session = lab.connector.begin_backup(vm_id, Consistency(wanted))
    lab.connector.end_backup(session, ok=True)
    assert session.consistency == consistency
    assert session.offline is offline
    assert _vm_json(lab, name)["state"] == state_before  # never left in saved state
    if offline and state_before == "Running":
        assert any("saved state" in e for e in session.events)


def test_scsi_less_vm_on_2012_r2_is_backed_up_offline(make_lab) -> None:  # type: ignore[no-untyped-def]
    lab = make_lab("OLD", os_version="Windows Server 2012 R2")
    vm_id = lab.add(
        "GEN1", generation=1, configuration_version="5.0",
        controllers=[{"type": "IDE", "number": 0}],
        disks=[{"path": "Virtual Hard Disks/GEN1.vhdx", "controller": "IDE", "location": 0}],
    )  # fmt: skip
    session = lab.connector.begin_backup(vm_id, Consistency.APPLICATION)
    lab.connector.end_backup(session, ok=True)
    assert (session.consistency, session.offline) == ("crash", True)
    assert any("SCSI" in e for e in session.events)


@pytest.mark.parametrize(
    ("replication", "reason"),
    [
        ({"health": "Critical", "state": "Replicating"}, "unhealthy"),
        ({"state": "Resynchronizing"}, "resynchronizing"),
        ({"state": "WaitingForStartResynchronize"}, "needs resynchronization"),
        ({"state": "InitialReplicationInProgress"}, "initial replication is in progress"),
        ({"state": "WaitingForInitialReplication"}, "initial replication is pending"),
        ({"state": "ApplyingLogs"}, ".hrl"),
        ({"state": "FailingOver"}, "failover"),
        ({"state": "Migrating"}, "migrated"),
    ],
)
def test_unhealthy_replicas_are_refused_with_a_reason(lab: Lab, replication: dict, reason: str) -> None:
    vm_id = lab.add("REP01", replication={"role": "replica", **replication}, state="Off")
    with pytest.raises(BackupRefused, match=reason):
        lab.connector.begin_backup(vm_id, Consistency.CRASH)
    VMLock(lab.folder / "Virtual Machines" / "REP01", "t").acquire(0).release()  # not locked


def test_primary_replicas_are_not_refused(lab: Lab) -> None:
    vm_id = lab.add("PRI01", replication={"role": "primary", "health": "Critical"})
    session = lab.connector.begin_backup(vm_id, Consistency.APPLICATION)
    lab.connector.end_backup(session, ok=True)
    assert session.consistency == "application"


def test_session_freezes_the_vm_and_always_releases_the_lock(lab: Lab) -> None:
    cfg = lab.cfg("WIN01")
    session = lab.connector.begin_backup(lab.ids["WIN01"], Consistency.APPLICATION)
    with pytest.raises(VMBusy, match="backup of WIN01"):
        churn(cfg, 1, wait=0.1)
    lab.connector.lock_wait_seconds = 0.2
    with pytest.raises(BackupRefused, match="busy"):
        lab.connector.begin_backup(lab.ids["WIN01"], Consistency.APPLICATION)
    # Other VMs are independent.
    other = lab.connector.begin_backup(lab.ids["LNX01"], Consistency.APPLICATION)
    lab.connector.end_backup(other, ok=True)
    assert lab.connector.end_backup(session, ok=False) == {}
    assert any("checkpoint removed" in e for e in session.events)
    churn(cfg, 1, wait=0)  # lock released after a failed backup
    with pytest.raises(ConnectorError, match="already ended"):
        lab.connector.end_backup(session, ok=True)


def test_context_manager_and_exceptions_release_the_lock(lab: Lab) -> None:
    with pytest.raises(RuntimeError), lab.connector.begin_backup(lab.ids["WIN01"], Consistency.CRASH):
        raise RuntimeError("engine blew up")
    churn(lab.cfg("WIN01"), 1, wait=0)
    session = lab.connector.begin_backup(lab.ids["WIN01"], Consistency.CRASH)
    del session  # dropped without end_backup (e.g. a crashed job): no stuck lock
    churn(lab.cfg("WIN01"), 1, wait=0)


def test_missing_disk_refuses_backup_clearly(lab: Lab) -> None:
    lab.disk("WIN01").unlink()
    with pytest.raises(InvalidVMConfig, match="does not exist"):
        lab.connector.begin_backup(lab.ids["WIN01"], Consistency.APPLICATION)
    churn(lab.cfg("SQL01"), 1, wait=0)
    VMLock(lab.folder / "Virtual Machines" / "WIN01", "t").acquire(0).release()


def test_pass_through_disks_are_skipped(lab: Lab) -> None:
    vm_id = lab.add(
        "PT01",
        disks=[
            {"path": "Virtual Hard Disks/PT01.vhdx"},
            {"pass_through": True, "size": 2**30, "location": 1},
        ],
    )
    session = lab.connector.begin_backup(vm_id, Consistency.APPLICATION)
    lab.connector.end_backup(session, ok=True)
    assert [f.name for f in session.files] == [DISK.format("PT01"), "vm.json"]
    assert any("pass-through" in e for e in session.events)


def _read(path: Path) -> bytes:
    return path.read_bytes()


def _apply(previous: bytes, current_path: Path, ranges: list[tuple[int, int]]) -> bytes:
    """What an incremental backup stores: the previous image, re-read where told."""
    current = current_path.read_bytes()
    image = bytearray(previous[: len(current)].ljust(len(current), b"\0"))
    for off, length in ranges:
        image[off : off + length] = current[off : off + length]
    return bytes(image)


def _free_unallocated_block(disk: Path) -> int:
    """A virtual offset in a block not present in the file, inside free NTFS space
    near the end of the data partition (so the write also makes the file grow)."""
    layout = read_layout(disk)
    for block in range(layout.data_blocks - 3, 0, -1):
        if layout.block_entry(block)[0] != PAYLOAD_BLOCK_FULLY_PRESENT:
            return block * layout.block_size
    raise AssertionError("no unallocated block")


@pytest.mark.parametrize("name", ["WIN01", "LNX01", "SQL01"])
def test_changed_ranges_reproduce_the_disk_byte_for_byte(lab: Lab, name: str) -> None:
    conn, vm_id, disk = lab.connector, lab.ids[name], lab.disk(name)
    file_name = DISK.format(name)
    s1 = conn.begin_backup(vm_id, Consistency.APPLICATION)
    full = _read(disk)
    refs = conn.end_backup(s1, ok=True)
    assert set(refs) == {file_name}

    # Guest writes avoiding the paging files (those are excluded on purpose, see
    # tests/connectors/test_pagefile_exclusion.py), plus a write into a never-allocated block: the file grows.
    volatile = volatile_virtual_ranges(disk)
    targets = subtract([r for f in guest_files(disk) for r in f.virtual_ranges], volatile)
    writes = [(off, min(length, 64 * 1024), 0x40 + i) for i, (off, length) in enumerate(targets)]
    writes.append((_free_unallocated_block(disk) + 4096, 8192, 0x99) if name != "SQL01" else
                  (targets[0][0] + 4096, 512, 0x77))  # fmt: skip
    guest_write(lab.cfg(name), 0, writes)
    assert disk.stat().st_size > len(full) or name == "SQL01"

    s2 = conn.begin_backup(vm_id, Consistency.APPLICATION)
    ranges = s2.changed_ranges(file_name, refs[file_name])
    assert ranges is not None
    size = s2.files[0].size
    assert all(off >= 0 and off + n <= size for off, n in ranges)
    reread = sum(n for _o, n in ranges)
    assert reread < size / 2  # incremental really is smaller than the file
    assert _apply(full, disk, ranges) == _read(disk)
    new_refs = conn.end_backup(s2, ok=True)
    assert new_refs[file_name] != refs[file_name]

    # Without further writes only the VHDX structure regions come back.
    s3 = conn.begin_backup(vm_id, Consistency.APPLICATION)
    quiet = s3.changed_ranges(file_name, new_refs[file_name])
    conn.end_backup(s3, ok=False)
    assert quiet is not None and sum(n for _o, n in quiet) <= 4 * MiB


def test_stale_and_foreign_references_raise_change_tracking_lost(lab: Lab) -> None:
    conn, file_name = lab.connector, DISK.format("WIN01")
    s = conn.begin_backup(lab.ids["WIN01"], Consistency.APPLICATION)
    first = conn.end_backup(s, ok=True)[file_name]
    s = conn.begin_backup(lab.ids["LNX01"], Consistency.APPLICATION)
    linux_ref = conn.end_backup(s, ok=True)[DISK.format("LNX01")]
    # The host keeps 16 reference points: push the first one out.
    for _ in range(16):
        s = conn.begin_backup(lab.ids["WIN01"], Consistency.APPLICATION)
        conn.end_backup(s, ok=True)
    s = conn.begin_backup(lab.ids["WIN01"], Consistency.APPLICATION)
    try:
        with pytest.raises(ChangeTrackingLost):
            s.changed_ranges(file_name, first)
        with pytest.raises(ChangeTrackingLost):
            s.changed_ranges(file_name, linux_ref)
        with pytest.raises(ChangeTrackingLost):
            s.changed_ranges(file_name, "rct:not-even-close")
    finally:
        conn.end_backup(s, ok=False)


def test_failed_backup_creates_no_reference(lab: Lab) -> None:
    conn, file_name = lab.connector, DISK.format("WIN01")
    s = conn.begin_backup(lab.ids["WIN01"], Consistency.APPLICATION)
    ref = conn.end_backup(s, ok=True)[file_name]
    guest_write(lab.cfg("WIN01"), 0, [(10 * MiB, 4096, 0x11)])
    s = conn.begin_backup(lab.ids["WIN01"], Consistency.APPLICATION)
    assert conn.end_backup(s, ok=False) == {}
    s = conn.begin_backup(lab.ids["WIN01"], Consistency.APPLICATION)
    ranges = s.changed_ranges(file_name, ref)  # still answers relative to the last good one
    conn.end_backup(s, ok=False)
    layout = read_layout(lab.disk("WIN01"))
    assert intersect(ranges or [], layout.virtual_to_file([(10 * MiB, 4096)]))


def test_old_configuration_version_has_no_tracking(lab: Lab) -> None:
    vm_id = lab.add("OLD01", configuration_version="5.0")
    s = lab.connector.begin_backup(vm_id, Consistency.APPLICATION)
    fake = f"rct:{'0' * 8}-0000-0000-0000-{'0' * 12}:1"
    assert s.changed_ranges(DISK.format("OLD01"), fake) is None  # RCT needs version 6.2+
    assert lab.connector.end_backup(s, ok=True) == {}


def test_qemu_img_accepts_disks_after_sessions_and_writes(lab: Lab) -> None:
    churn(lab.cfg("WIN01"), 5, seed=3)
    proc = subprocess.run(["qemu-img", "check", str(lab.disk("WIN01"))], capture_output=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_disk_symlinked_outside_the_vm_folder_is_refused(lab: Lab, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.vhdx"
    lab.disk("WIN01").rename(outside)
    lab.disk("WIN01").symlink_to(outside)
    with pytest.raises(InvalidVMConfig, match="outside the VM's folder"):
        lab.connector.begin_backup(lab.ids["WIN01"], Consistency.APPLICATION)
    churn(lab.cfg("SQL01"), 1, wait=0)  # unrelated VM unaffected
    VMLock(lab.folder / "Virtual Machines" / "WIN01", "t").acquire(0).release()


def test_a_host_behind_a_slow_link_is_read_at_its_pace(make_lab) -> None:  # type: ignore[no-untyped-def]
    lab = make_lab(read_bytes_per_second=4 * MiB)
    lab.add("WIN01")
    session = lab.connector.begin_backup(lab.ids["WIN01"], Consistency.APPLICATION)
    try:
        with session.files[0].open() as fh:
            began = time.monotonic()
            data = fh.read(2 * MiB)
            elapsed = time.monotonic() - began
            assert len(data) == 2 * MiB
            assert data == lab.disk("WIN01").read_bytes()[: 2 * MiB]  # the same bytes, only slower
            assert elapsed >= 0.45  # 2 MiB at 4 MiB/s
            assert fh.fileno() >= 0  # holes are still found without reading them
    finally:
        lab.connector.end_backup(session, ok=False)
    fast = make_lab("LAB-HV02")
    fast.add("WIN02")
    with fast.connector.begin_backup(fast.ids["WIN02"], Consistency.APPLICATION) as unpaced:
        with unpaced.files[0].open() as fh:
            began = time.monotonic()
            fh.read(2 * MiB)
            assert time.monotonic() - began < 0.45
        fast.connector.end_backup(unpaced, ok=False)


def test_a_bad_read_rate_is_refused(make_lab) -> None:  # type: ignore[no-untyped-def]
    lab = make_lab(read_bytes_per_second=0)
    with pytest.raises(ConnectorError, match="'read_bytes_per_second' must be at least 1"):
        lab.connector.host_config()
