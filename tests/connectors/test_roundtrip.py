"""Full backup -> guest churn -> RCT incremental -> restore, through the real engine."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from protection.connectors.lab.guest import churn, guest_write
from tests.connectors.conftest import Lab
from tests.connectors.engine_helpers import (
    backup_vm,
    restore_point,
    writes_outside_paging_files,
)

engine = pytest.importorskip("storage.engine")


@pytest.mark.parametrize("name", ["LNX01", "SQL01"])
def test_incremental_from_rct_restores_the_live_disk_exactly(lab: Lab, tmp_path: Path, name: str) -> None:
    ds = engine.Datastore.create(tmp_path / "ds")
    vm_id, disk = lab.ids[name], lab.disk(name)
    file_name = f"Virtual Hard Disks/{name}.vhdx"
    _full, refs, used = backup_vm(ds, lab.connector, vm_id, None)
    assert used[file_name] is None

    if name == "SQL01":
        # Keep the guest out of its paging files: those are excluded by design.
        guest_write(lab.cfg(name), 0, writes_outside_paging_files(disk, 40))
    else:
        result = churn(lab.cfg(name), 10, seed=5)
        assert result.writes > 0

    point, refs2, used = backup_vm(ds, lab.connector, vm_id, refs)
    ranges = used[file_name]
    assert ranges is not None and refs2[file_name] != refs[file_name]
    size = disk.stat().st_size
    assert point.bytes_read < size / 2  # only the changed ranges (plus growth) were read

    out = restore_point(ds, point.id, tmp_path / "restore")
    restored = out / file_name
    assert restored.read_bytes() == disk.read_bytes()
    cmp = subprocess.run(["cmp", str(restored), str(disk)], capture_output=True)
    assert cmp.returncode == 0
    compare = subprocess.run(
        ["qemu-img", "compare", "-f", "vhdx", "-F", "vhdx", str(restored), str(disk)],
        capture_output=True,
        text=True,
    )
    assert compare.returncode == 0 and "identical" in compare.stdout


def test_lost_tracking_falls_back_to_a_full_read(lab: Lab, tmp_path: Path) -> None:
    ds = engine.Datastore.create(tmp_path / "ds")
    vm_id, disk = lab.ids["LNX01"], lab.disk("LNX01")
    _p, refs, _u = backup_vm(ds, lab.connector, vm_id, None)
    with disk.open("r+b") as fh:  # written behind change tracking's back
        fh.seek(disk.stat().st_size - 100)
        fh.write(b"tampered")
    point, _refs, used = backup_vm(ds, lab.connector, vm_id, refs)
    assert used["Virtual Hard Disks/LNX01.vhdx"] is None
    out = restore_point(ds, point.id, tmp_path / "restore")
    assert (out / "Virtual Hard Disks/LNX01.vhdx").read_bytes() == disk.read_bytes()
