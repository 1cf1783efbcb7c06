from __future__ import annotations

import random
import shutil
import struct
import subprocess
import uuid
from pathlib import Path
from typing import BinaryIO, cast

import pytest

from storage.engine import Datastore, SourceFile
from storage.engine.vhdx import (
    BAT_GUID,
    HEADER_SECTION,
    METADATA_GUID,
    VhdxError,
    _parent_locator,
    merge_ranges,
    metadata_ranges,
    read_layout,
    virtual_to_file_ranges,
)

from .conftest import MiB, sha

pytestmark = pytest.mark.skipif(
    not (shutil.which("qemu-img") and shutil.which("qemu-io")), reason="qemu-utils not installed"
)


def make_vhdx(path: Path, size: str, block: str | None = None) -> Path:
    opts = ["-o", "subformat=dynamic"] + (["-o", f"block_size={block}"] if block else [])
    subprocess.run(["qemu-img", "create", "-q", "-f", "vhdx", *opts, str(path), size], check=True)
    return path


def qemu_write(path: Path, writes: list[tuple[int, int, int]]) -> None:
    """(virtual offset, length, pattern byte) writes through the VHDX driver."""
    cmds: list[str] = []
    for off, n, pat in writes:
        cmds += ["-c", f"write -P {pat} {off} {n}"]
    subprocess.run(["qemu-io", "-f", "vhdx", *cmds, str(path)], check=True, capture_output=True)


def test_layout_and_mapping(tmp_path: Path) -> None:
    p = make_vhdx(tmp_path / "d.vhdx", "256M", "1M")
    qemu_write(p, [(MiB + 4096, 65536, 0x41), (100 * MiB, 65536, 0x42)])
    lay = read_layout(p)
    assert (lay.virtual_size, lay.block_size, lay.logical_sector_size) == (256 * MiB, MiB, 512)
    assert lay.chunk_ratio == 4096
    ranges = virtual_to_file_ranges(
        p, [(MiB + 4096, 65536), (100 * MiB, 65536), (50 * MiB, 4096)], include_metadata=False
    )
    assert len(ranges) == 2  # the block at 50 MiB was never written: nothing in the file
    with open(p, "rb") as f:
        for (off, n), pat in zip(ranges, (0x41, 0x42), strict=True):
            f.seek(off)
            assert f.read(n) == bytes([pat]) * n
    meta = metadata_ranges(p)
    assert meta[0][0] == 0 and meta[0][1] >= HEADER_SECTION
    with pytest.raises(VhdxError, match="outside"):
        virtual_to_file_ranges(p, [(256 * MiB - 10, 20)])


def test_not_a_vhdx(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"\0" * 400_000)
    with pytest.raises(VhdxError, match="not a VHDX"):
        read_layout(tmp_path / "x")


def test_merge_ranges() -> None:
    assert merge_ranges([(10, 5), (0, 10), (30, 1), (31, 0), (29, 1)]) == [(0, 15), (29, 2)]


@pytest.mark.parametrize("block", ["1M", None], ids=["1MiB-blocks", "default-blocks"])
def test_incremental_from_virtual_ranges_restores_identical(tmp_path: Path, block: str | None) -> None:
    disk = make_vhdx(tmp_path / "disk.vhdx", "512M", block)
    rng = random.Random(3)
    initial = [(rng.randrange(0, 512 * MiB // 65536) * 65536, 65536, 0x10 + i) for i in range(60)]
    qemu_write(disk, initial)
    ds = Datastore.create(tmp_path / "ds", chunk_size=256 * 1024)
    p1 = ds.backup("vm", [SourceFile("disk.vhdx", disk)])
    for round_no in range(2):
        # Half the writes hit blocks that already exist, half allocate new ones;
        # sizes and offsets are not chunk aligned.
        writes = [
            (off + 512 * rng.randrange(0, 64), 4096 * rng.randrange(1, 8), 0x80 + round_no)
            for off, _, _ in rng.sample(initial, 10)
        ]
        writes += [
            (rng.randrange(0, (512 * MiB - 70_000) // 512) * 512, 65536, 0xC0 + round_no) for _ in range(10)
        ]
        qemu_write(disk, writes)
        vranges = [(o, n) for o, n, _ in writes]
        with ds.open_file(ds.points("vm")[-1].id, "disk.vhdx") as previous:
            franges = virtual_to_file_ranges(disk, vranges, previous=cast(BinaryIO, previous))
        assert franges == merge_ranges(franges)
        p = ds.backup("vm", [SourceFile("disk.vhdx", disk, changed_ranges=franges)])
        assert p.bytes_read < disk.stat().st_size // 2
        out = tmp_path / f"out{round_no}"
        ds.restore(p.id, out)
        assert sha(out / "disk.vhdx") == sha(disk)
        subprocess.run(["qemu-img", "compare", "-q", str(out / "disk.vhdx"), str(disk)], check=True)
    assert ds.verify().ok
    assert p1.id != p.id


def test_layout_describes_the_whole_structure(tmp_path: Path) -> None:
    p = make_vhdx(tmp_path / "d.vhdx", "64M")
    lay = read_layout(p)
    assert lay.file_size == p.stat().st_size
    assert not lay.has_parent and lay.parent_locator == {} and not lay.leave_blocks_allocated
    assert lay.log_guid_zero and lay.physical_sector_size in (512, 4096)
    assert str(uuid.UUID(lay.disk_id)) == lay.disk_id
    regions = {g: (o, n) for g, o, n in lay.regions}
    assert regions[BAT_GUID] == (lay.bat_offset, lay.bat_length)
    assert regions[METADATA_GUID] == (lay.metadata_offset, lay.metadata_length)
    assert lay.virtual_to_file([(0, lay.virtual_size)]) == []  # nothing written yet
    assert lay.metadata_ranges() == metadata_ranges(p)


def test_parent_locator_entries() -> None:
    key, value = "relative_path".encode("utf-16-le"), "..\\base.vhdx".encode("utf-16-le")
    header = struct.pack("<16sHH", bytes(16), 0, 1)
    entry = struct.pack("<IIHH", 32, 32 + len(key), len(key), len(value))
    raw = header + entry + key + value
    assert _parent_locator(raw) == {"relative_path": "..\\base.vhdx"}


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("signature", "not a VHDX"),
        ("tiny", "too small"),
        ("headers", "neither VHDX header"),
        ("header-checksum", "neither VHDX header"),
        ("regions", "neither VHDX region table"),
        ("truncated", "truncated"),
    ],
)
def test_damaged_files_raise_vhdx_errors(tmp_path: Path, how: str, message: str) -> None:
    p = make_vhdx(tmp_path / "d.vhdx", "64M", "1M")
    qemu_write(p, [(60 * MiB, 65536, 0x41)])  # the last block sits at the end of the file
    with open(p, "r+b") as f:
        if how == "signature":
            f.write(b"XXXXXXXX")
        elif how == "tiny":
            f.truncate(4096)
        elif how in ("headers", "regions"):
            for off in (64 * 1024, 128 * 1024) if how == "headers" else (192 * 1024, 256 * 1024):
                f.seek(off)
                f.write(b"\0" * 4)
        elif how == "header-checksum":  # signature intact, a byte inside changed
            for off in (64 * 1024 + 100, 128 * 1024 + 100):
                f.seek(off)
                f.write(b"\xff")
        elif how == "truncated":
            f.truncate(p.stat().st_size - MiB // 2)
    with pytest.raises(VhdxError, match=message):
        read_layout(p)


def test_random_corruption_raises_only_vhdx_errors(tmp_path: Path) -> None:
    p = make_vhdx(tmp_path / "d.vhdx", "64M", "1M")
    qemu_write(p, [(5 * MiB, 65536, 0x41)])
    source = p.read_bytes()
    lay = read_layout(p)
    hot = [lay.metadata_offset, lay.metadata_offset + 64 * 1024, lay.bat_offset]
    rng = random.Random(7)
    outcomes = set()
    for _ in range(100):
        data = bytearray(source)
        for _hit in range(rng.randrange(1, 4)):
            base = rng.choice(hot) + rng.randrange(0, 128)
            data[base : base + 8] = rng.randbytes(8)
        p.write_bytes(bytes(data))
        try:
            read_layout(p)
            outcomes.add("ok")
        except VhdxError:
            outcomes.add("error")
    assert outcomes == {"ok", "error"}
