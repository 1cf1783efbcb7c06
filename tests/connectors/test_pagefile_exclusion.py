"""Pagefile exclusion in lab backups: skip the paging files in incrementals and still
restore a valid NTFS whose user files are intact. (Finding the paging files:
tests/vdisk/test_pagefile.py.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from dissect.hypervisor.disk.vhdx import VHDX

from protection.connectors.lab.guest import churn
from protection.connectors.protocol import Consistency
from protection.connectors.ranges import intersect, subtract, total
from storage.vdisk import read_layout
from storage.vdisk.pagefile import volatile_virtual_ranges
from tests.connectors.conftest import Lab
from tests.connectors.engine_helpers import backup_vm, restore_point
from tests.fixtures.build_vhdx import dissect_ntfs

MiB = 1024 * 1024
USER_FILES = ["notes.txt", "report.docx", "ledger.csv", "database.mdf"]


def test_session_excluded_ranges_are_file_ranges_of_the_paging_files(lab: Lab) -> None:
    session = lab.connector.begin_backup(lab.ids["WIN01"], Consistency.APPLICATION)
    try:
        disk_name = session.files[0].name
        excluded = session.excluded_ranges(disk_name)
        layout = read_layout(lab.disk("WIN01"))
        assert excluded == layout.virtual_to_file(volatile_virtual_ranges(lab.disk("WIN01")))
        assert total(excluded) == 17 * MiB
        assert intersect(excluded, layout.metadata_ranges()) == []
        assert session.excluded_ranges("vm.json") == []
        linux = lab.connector.begin_backup(lab.ids["LNX01"], Consistency.APPLICATION)
        assert linux.excluded_ranges(linux.files[0].name) == []
        lab.connector.end_backup(linux, ok=False)
    finally:
        lab.connector.end_backup(session, ok=False)


def _partition_file(vhdx: Path, tmp_path: Path) -> Path:
    """The NTFS partition as a plain file, for ntfsfix / ntfscat."""
    _fs, part = dissect_ntfs(vhdx)
    out = tmp_path / f"{vhdx.stem}.ntfs"
    with vhdx.open("rb") as fh, out.open("wb") as dst:
        vdisk = VHDX(fh)
        vdisk.seek(part.offset)
        # dissect.volume's GPT size is (last_lba - first_lba) sectors: one short,
        # which would cut off NTFS's backup boot sector.
        remaining = part.size + 512
        while remaining > 0:
            chunk = vdisk.read(min(remaining, 4 * MiB))
            dst.write(chunk)
            remaining -= len(chunk)
    return out


def test_incremental_skipping_paging_files_restores_a_valid_ntfs(lab: Lab, tmp_path: Path) -> None:
    engine = pytest.importorskip("storage.engine")
    ds = engine.Datastore.create(tmp_path / "ds")
    vm_id, disk = lab.ids["WIN01"], lab.disk("WIN01")
    disk_name = "Virtual Hard Disks/WIN01.vhdx"
    _p, refs, _u = backup_vm(ds, lab.connector, vm_id, None)
    result = churn(lab.cfg("WIN01"), 20, seed=11)
    volatile = volatile_virtual_ranges(disk)
    assert intersect(result.virtual_ranges, volatile), "churn should hit the pagefile"

    point, _refs, used = backup_vm(ds, lab.connector, vm_id, refs)
    changed = used[disk_name]
    excluded = read_layout(disk).virtual_to_file(volatile)
    assert changed is not None and intersect(changed, excluded) == []
    restored = restore_point(ds, point.id, tmp_path / "restore") / disk_name

    live_bytes, restored_bytes = disk.read_bytes(), restored.read_bytes()
    assert len(live_bytes) == len(restored_bytes)
    differing = [
        (i, 4096)
        for i in range(0, len(live_bytes), 4096)
        if live_bytes[i : i + 4096] != restored_bytes[i : i + 4096]
    ]
    assert differing, "the pagefile writes were skipped, so the files must differ"
    assert subtract(differing, excluded) == []  # ...but only inside the paging files

    ok, output = _check_ntfs(restored, tmp_path)
    assert ok, output
    live_fs, _ = dissect_ntfs(disk)
    restored_fs, _ = dissect_ntfs(restored)
    for name in USER_FILES:
        assert restored_fs.mft.get(name).open().read() == live_fs.mft.get(name).open().read()
    part = _partition_file(restored, tmp_path)
    cat = subprocess.run(["ntfscat", str(part), "notes.txt"], capture_output=True)
    assert cat.returncode == 0 and cat.stdout == live_fs.mft.get("notes.txt").open().read()


def _check_ntfs(vhdx: Path, tmp_path: Path) -> tuple[bool, str]:
    part = _partition_file(vhdx, tmp_path)
    proc = subprocess.run(["ntfsfix", "-n", str(part)], capture_output=True, text=True)
    return proc.returncode == 0, proc.stdout + proc.stderr
