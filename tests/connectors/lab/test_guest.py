"""The lab guest (writes through qemu-io, journaled for RCT) and the per-VM lock."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from protection.connectors.lab.guest import VMBusy, VMLock, churn, guest_write
from protection.connectors.lab.rct import RCTJournal, journal_path
from protection.connectors.protocol import ConnectorError
from protection.connectors.ranges import subtract
from storage.vdisk import PAYLOAD_BLOCK_FULLY_PRESENT, builder, read_layout
from storage.vdisk.pagefile import guest_files
from tests.connectors.conftest import Lab

KiB = 1024


def test_churn_writes_the_requested_share_inside_guest_files(lab: Lab) -> None:
    disk = lab.disk("WIN01")
    layout = read_layout(disk)
    allocated = sum(
        layout.block_size
        for b in range(layout.data_blocks)
        if layout.block_entry(b)[0] == PAYLOAD_BLOCK_FULLY_PRESENT
    )
    files_before = {f.path: f for f in guest_files(disk)}
    ref = RCTJournal(disk).create_reference()

    result = churn(lab.cfg("WIN01"), 10, seed=9)

    assert result.writes == math.ceil(allocated * 0.10 / (64 * KiB))
    targets = [r for f in files_before.values() for r in f.virtual_ranges]
    assert subtract(result.virtual_ranges, targets) == []  # never outside the files' data
    assert RCTJournal(disk).changes_since(ref).virtual == result.virtual_ranges
    ok, output = builder.qemu_img_check(disk)
    assert ok, output
    # The guest file system is intact: same files, same places.
    after = {f.path: f.virtual_ranges for f in guest_files(disk)}
    assert after == {p: f.virtual_ranges for p, f in files_before.items()}


def test_churn_on_linux_and_on_a_disk_without_file_system(lab: Lab) -> None:
    result = churn(lab.cfg("LNX01"), 5, seed=1)
    assert result.writes > 0 and builder.qemu_img_check(lab.disk("LNX01"))[0]
    vm_id = lab.add("RAW01", "blank-dynamic.vhdx")
    raw = churn(lab.connector.vm_config(vm_id), 50, seed=1)
    assert raw.writes >= 1  # no partitions: writes go anywhere on the disk
    assert builder.qemu_img_check(lab.disk("RAW01"))[0]


def test_same_seed_same_writes(lab: Lab) -> None:
    a = churn(lab.cfg("WIN01"), 3, seed=42)
    b = churn(lab.cfg("WIN01"), 3, seed=42)
    assert a.virtual_ranges == b.virtual_ranges


def test_guest_write_validation(lab: Lab) -> None:
    cfg = lab.cfg("WIN01")
    size = read_layout(lab.disk("WIN01")).virtual_size
    with pytest.raises(ConnectorError, match="outside the virtual disk"):
        guest_write(cfg, 0, [(size - 512, 4096, 1)])
    with pytest.raises(ConnectorError, match="no virtual disk number 3"):
        guest_write(cfg, 3, [(0, 512, 1)])
    with pytest.raises(ConnectorError, match="percent"):
        churn(cfg, 0)
    with pytest.raises(ConnectorError, match="percent"):
        churn(cfg, 101)
    assert not journal_path(lab.disk("WIN01")).exists()  # nothing recorded for refused writes


def test_guest_write_really_writes_the_pattern(lab: Lab) -> None:
    from dissect.hypervisor.disk.vhdx import VHDX

    guest_write(lab.cfg("SQL01"), 0, [(5 * 1024 * 1024, 8192, 0xAB)])
    with lab.disk("SQL01").open("rb") as fh:
        vdisk = VHDX(fh)
        vdisk.seek(5 * 1024 * 1024)
        assert vdisk.read(8192) == b"\xab" * 8192


def test_lock_is_exclusive_and_names_its_holder(tmp_path: Path) -> None:
    held = VMLock(tmp_path, "backup of APP01").acquire()
    assert held.held
    with pytest.raises(VMBusy, match="backup of APP01"):
        VMLock(tmp_path, "guest writes").acquire(wait=0.1)
    held.release()
    assert not held.held
    VMLock(tmp_path, "guest writes").acquire().release()


def test_lock_waits_for_release(tmp_path: Path) -> None:
    import threading

    held = VMLock(tmp_path, "backup").acquire()
    threading.Timer(0.2, held.release).start()
    start = time.monotonic()
    VMLock(tmp_path, "churn").acquire(wait=5).release()
    assert 0.1 < time.monotonic() - start < 4


def test_a_dead_process_never_leaves_a_vm_locked(tmp_path: Path) -> None:
    code = (
        "import sys, time; from pathlib import Path;"
        "from protection.connectors.lab.guest import VMLock;"
        f"lock = VMLock(Path({str(tmp_path)!r}), 'crashing worker').acquire();"
        "print('locked', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=Path(__file__).parents[3]
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"locked"
        with pytest.raises(VMBusy, match="crashing worker"):
            VMLock(tmp_path, "backup").acquire(wait=0)
    finally:
        proc.kill()
        proc.wait()
    VMLock(tmp_path, "backup").acquire(wait=1).release()
    assert json.loads((tmp_path / ".lab.lock").read_text() or "{}") == {}
