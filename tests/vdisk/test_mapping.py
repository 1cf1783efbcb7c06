"""Virtual-disk ranges -> VHDX file ranges through the BAT, against real files and a real datastore."""

from __future__ import annotations

import hashlib
import random
import subprocess
from pathlib import Path
from typing import BinaryIO, cast

import pytest
from dissect.hypervisor.disk.vhdx import VHDX

from protection.connectors.ranges import intersect, normalize, total
from storage.engine import Datastore, SourceFile
from storage.vdisk.errors import InvalidRange, UnreadableDisk
from storage.vdisk.mapping import metadata_ranges, virtual_to_file_ranges
from storage.vdisk.ranges import merge_ranges
from storage.vdisk.vhdx import HEADER_SECTION, PAYLOAD_BLOCK_FULLY_PRESENT, read_layout

from .test_vhdx import _damaged, make_vhdx, qemu_write

MiB = 1024 * 1024


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
    with pytest.raises(InvalidRange, match="outside"):
        virtual_to_file_ranges(p, [(256 * MiB - 10, 20)])


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


@pytest.mark.parametrize("image", ["windows-dynamic.vhdx", "windows-fixed.vhdx", "linux-dynamic.vhdx"])
def test_mapped_file_bytes_are_the_virtual_bytes(disk_images: dict[str, Path], image: str) -> None:
    """Read the virtual disk with dissect; the mapped file ranges must hold exactly
    the same bytes (for the parts that are present in the file)."""
    path = disk_images[image]
    layout = read_layout(path)
    rng = random.Random(image)
    with path.open("rb") as raw:
        vdisk = VHDX(raw)
        with path.open("rb") as fh:
            for _ in range(40):
                off = rng.randrange(0, layout.virtual_size - 1)
                length = min(rng.randrange(1, 3 * layout.block_size), layout.virtual_size - off)
                mapped = layout.virtual_to_file([(off, length)])
                # Re-derive which virtual bytes those file ranges carry, block by block.
                expected = b""
                pos = off
                while pos < off + length:
                    block, within = divmod(pos, layout.block_size)
                    step = min(layout.block_size - within, off + length - pos)
                    state, foff = layout.block_entry(block)
                    if state == PAYLOAD_BLOCK_FULLY_PRESENT:
                        vdisk.seek(pos)
                        expected += vdisk.read(step)
                        assert (foff + within, step) in mapped or any(
                            o <= foff + within and foff + within + step <= o + n for o, n in mapped
                        )
                    pos += step
                got = b""
                for foff, flen in mapped:
                    fh.seek(foff)
                    got += fh.read(flen)
                assert got == expected


@pytest.mark.parametrize(
    "image", ["windows-dynamic.vhdx", "windows-fixed.vhdx", "linux-dynamic.vhdx", "blank-dynamic.vhdx"]
)
def test_whole_disk_mapping_plus_structure_rebuilds_the_file(
    disk_images: dict[str, Path], image: str
) -> None:
    """The file ranges of every virtual byte plus the structure ranges are the whole VHDX,
    so a file rebuilt from only those ranges (zeros elsewhere) is byte-identical."""
    path = disk_images[image]
    layout = read_layout(path)
    whole = [(0, layout.virtual_size)]
    data = virtual_to_file_ranges(path, whole, include_metadata=False)
    meta = metadata_ranges(path)
    assert data == layout.virtual_to_file(whole) == normalize(data)
    assert meta == layout.metadata_ranges() == metadata_ranges(layout)
    assert intersect(data, meta) == []  # payload and structure never overlap
    bs, present = layout.block_size, PAYLOAD_BLOCK_FULLY_PRESENT
    blocks = [b for b in range(layout.data_blocks) if layout.block_entry(b)[0] == present]
    assert total(data) == sum(min(bs, layout.virtual_size - b * bs) for b in blocks)
    original = path.read_bytes()
    rebuilt = bytearray(len(original))
    for off, length in normalize([*data, *meta]):
        assert off + length <= len(original)
        rebuilt[off : off + length] = original[off : off + length]
    assert bytes(rebuilt) == original


def test_mapping_errors_are_plain_vdisk_errors(tmp_path: Path, disk_images: dict[str, Path]) -> None:
    path = disk_images["windows-dynamic.vhdx"]
    size = read_layout(path).virtual_size
    with pytest.raises(InvalidRange, match="outside the disk"):
        virtual_to_file_ranges(path, [(size - 10, 20)])
    with pytest.raises(UnreadableDisk, match="does not exist"):
        metadata_ranges(tmp_path / "nope.vhdx")
    with pytest.raises(UnreadableDisk, match="VHDX signature"):
        virtual_to_file_ranges(_damaged(tmp_path, path, "signature"), [(0, 10)])
