"""The VHDX parser: structure, checksums, truncation and corruption, against real files."""

from __future__ import annotations

import random
import shutil
import struct
import uuid
from pathlib import Path

import pytest

from storage.vdisk import builder
from storage.vdisk.errors import UnreadableDisk
from storage.vdisk.mapping import metadata_ranges
from storage.vdisk.vhdx import (
    BAT_GUID,
    METADATA_GUID,
    PAYLOAD_BLOCK_FULLY_PRESENT,
    _parent_locator,
    read_layout,
)

MiB = 1024 * 1024


def make_vhdx(path: Path, size: str, block: str | None = None) -> Path:
    mib = {"1M": MiB, None: 0}[block]
    return builder.create(path, int(size.rstrip("M")) * MiB, block_size=mib)


def qemu_write(path: Path, writes: list[tuple[int, int, int]]) -> None:
    """(virtual offset, length, pattern byte) writes through the VHDX driver."""
    builder.qemu_io_write(path, writes)


def test_layout_of_dynamic_and_fixed_disks(disk_images: dict[str, Path]) -> None:
    dyn = read_layout(disk_images["windows-dynamic.vhdx"])
    assert dyn.virtual_size == 128 * MiB and dyn.block_size == 1 * MiB
    assert dyn.logical_sector_size == 512 and not dyn.leave_blocks_allocated
    assert not dyn.has_parent and dyn.log_guid_zero
    states = {dyn.block_entry(b)[0] for b in range(dyn.data_blocks)}
    assert PAYLOAD_BLOCK_FULLY_PRESENT in states and len(states) > 1  # some blocks never written
    fixed = read_layout(disk_images["windows-fixed.vhdx"])
    assert fixed.leave_blocks_allocated
    assert {fixed.block_entry(b)[0] for b in range(fixed.data_blocks)} == {PAYLOAD_BLOCK_FULLY_PRESENT}
    meta = dyn.metadata_ranges()
    assert meta[0] == (0, 1 * MiB) or meta[0][0] == 0
    for start, length in [(dyn.bat_offset, dyn.bat_length), (dyn.log_offset, dyn.log_length)]:
        assert any(o <= start and start + length <= o + n for o, n in meta)


def test_not_a_vhdx(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"\0" * 400_000)
    with pytest.raises(UnreadableDisk, match="not a VHDX"):
        read_layout(tmp_path / "x")


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
    with pytest.raises(UnreadableDisk, match=message):
        read_layout(p)


def _fuzz(
    source: Path, target: Path, hot: list[int], *, seed: int, rounds: int, hits: int, span: int
) -> set[str]:
    """Overwrite 8 random bytes near the hot offsets, ``rounds`` times; what read_layout said."""
    original = source.read_bytes()
    rng = random.Random(seed)
    outcomes = set()
    for _ in range(rounds):
        data = bytearray(original)
        for _hit in range(rng.randrange(1, hits)):
            base = rng.choice(hot) + rng.randrange(0, span)
            data[base : base + 8] = rng.randbytes(8)
        target.write_bytes(bytes(data))
        try:
            read_layout(target)
            outcomes.add("ok")
        except UnreadableDisk:
            outcomes.add("error")
    return outcomes


def test_random_corruption_raises_only_vhdx_errors(tmp_path: Path) -> None:
    p = make_vhdx(tmp_path / "d.vhdx", "64M", "1M")
    qemu_write(p, [(5 * MiB, 65536, 0x41)])
    lay = read_layout(p)
    hot = [lay.metadata_offset, lay.metadata_offset + 64 * 1024, lay.bat_offset]
    outcomes = _fuzz(p, tmp_path / "fuzz.vhdx", hot, seed=7, rounds=100, hits=4, span=128)
    assert outcomes == {"ok", "error"}


def _damaged(tmp_path: Path, source: Path, how: str) -> Path:
    target = tmp_path / f"{how}.vhdx"
    shutil.copyfile(source, target)
    with target.open("r+b") as fh:
        if how == "signature":
            fh.write(b"XXXXXXXX")
        elif how == "headers":
            for off in (64 * 1024, 128 * 1024):
                fh.seek(off)
                fh.write(b"\0" * 4)
        elif how == "regions":
            for off in (192 * 1024, 256 * 1024):
                fh.seek(off)
                fh.write(b"\0" * 4)
        elif how == "metadata":
            layout = read_layout(source)
            fh.seek(layout.metadata_offset)
            fh.write(b"\0" * 8)
        elif how == "truncated":
            fh.truncate(target.stat().st_size - 2 * MiB)
        elif how == "tiny":
            fh.truncate(4096)
    return target


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("signature", "VHDX signature"),
        ("headers", "neither VHDX header"),
        ("regions", "neither VHDX region table"),
        ("metadata", "metadata table is corrupt"),
        ("truncated", "truncated"),
        ("tiny", "too small"),
    ],
)
def test_damaged_files_raise_clear_errors(
    tmp_path: Path, disk_images: dict[str, Path], how: str, message: str
) -> None:
    target = _damaged(tmp_path, disk_images["windows-dynamic.vhdx"], how)
    with pytest.raises(UnreadableDisk, match=message):
        read_layout(target)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UnreadableDisk, match="does not exist"):
        read_layout(tmp_path / "nope.vhdx")


def test_random_corruption_never_escapes_as_an_unexpected_exception(
    tmp_path: Path, disk_images: dict[str, Path]
) -> None:
    source = disk_images["blank-dynamic.vhdx"]
    layout = read_layout(source)
    hot = [64 * 1024, 128 * 1024, 192 * 1024, 256 * 1024, layout.metadata_offset, layout.bat_offset]
    outcomes = _fuzz(source, tmp_path / "fuzz.vhdx", hot, seed=1, rounds=150, hits=6, span=256)
    assert outcomes == {"ok", "error"}
