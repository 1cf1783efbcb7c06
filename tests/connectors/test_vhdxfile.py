"""VHDX structure parsing and virtual -> file range mapping, against real files."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from dissect.hypervisor.disk.vhdx import VHDX

from protection.connectors import labdisks, vhdx_map
from protection.connectors.ranges import intersect, normalize, total
from protection.connectors.vhdxfile import (
    PAYLOAD_BLOCK_FULLY_PRESENT,
    DiskFileError,
    read_vhd_footer,
    read_vhdx_layout,
)
from storage.engine import vhdx as engine_vhdx

MiB = 1024 * 1024


def test_layout_of_dynamic_and_fixed_disks(disk_images: dict[str, Path]) -> None:
    dyn = read_vhdx_layout(disk_images["windows-dynamic.vhdx"])
    assert dyn.virtual_size == 128 * MiB and dyn.block_size == 1 * MiB
    assert dyn.logical_sector_size == 512 and not dyn.leave_blocks_allocated
    assert not dyn.has_parent and dyn.log_guid_zero
    states = {dyn.block_entry(b)[0] for b in range(dyn.data_blocks)}
    assert PAYLOAD_BLOCK_FULLY_PRESENT in states and len(states) > 1  # some blocks never written
    fixed = read_vhdx_layout(disk_images["windows-fixed.vhdx"])
    assert fixed.leave_blocks_allocated
    assert {fixed.block_entry(b)[0] for b in range(fixed.data_blocks)} == {PAYLOAD_BLOCK_FULLY_PRESENT}
    meta = dyn.metadata_ranges()
    assert meta[0] == (0, 1 * MiB) or meta[0][0] == 0
    for start, length in [(dyn.bat_offset, dyn.bat_length), (dyn.log_offset, dyn.log_length)]:
        assert any(o <= start and start + length <= o + n for o, n in meta)


@pytest.mark.parametrize("image", ["windows-dynamic.vhdx", "windows-fixed.vhdx", "linux-dynamic.vhdx"])
def test_mapped_file_bytes_are_the_virtual_bytes(disk_images: dict[str, Path], image: str) -> None:
    """Read the virtual disk with dissect; the mapped file ranges must hold exactly
    the same bytes (for the parts that are present in the file)."""
    path = disk_images[image]
    layout = read_vhdx_layout(path)
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
    """The connector and the engine share one parser: the file ranges of every virtual
    byte plus the structure ranges are the whole VHDX, so a file rebuilt from only
    those ranges (zeros elsewhere) is byte-identical and qemu-img reads the same disk."""
    path = disk_images[image]
    layout = read_vhdx_layout(path)
    assert isinstance(layout, engine_vhdx.VhdxLayout)
    whole = [(0, layout.virtual_size)]
    data = vhdx_map.virtual_to_file_ranges(path, whole)
    meta = vhdx_map.metadata_ranges(path)
    assert (
        data
        == layout.virtual_to_file(whole)
        == engine_vhdx.virtual_to_file_ranges(path, whole, include_metadata=False)
    )
    assert meta == layout.metadata_ranges() == engine_vhdx.metadata_ranges(path)
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


def test_mapping_errors_are_disk_file_errors(tmp_path: Path, disk_images: dict[str, Path]) -> None:
    path = disk_images["windows-dynamic.vhdx"]
    size = read_vhdx_layout(path).virtual_size
    with pytest.raises(DiskFileError, match="outside the disk"):
        vhdx_map.virtual_to_file_ranges(path, [(size - 10, 20)])
    with pytest.raises(DiskFileError, match="does not exist"):
        vhdx_map.metadata_ranges(tmp_path / "nope.vhdx")
    with pytest.raises(DiskFileError, match="VHDX signature"):
        vhdx_map.virtual_to_file_ranges(_damaged(tmp_path, path, "signature"), [(0, 10)])


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
            layout = read_vhdx_layout(source)
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
    with pytest.raises(DiskFileError, match=message):
        read_vhdx_layout(target)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DiskFileError, match="does not exist"):
        read_vhdx_layout(tmp_path / "nope.vhdx")


def test_legacy_vhd_footer(tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"")
    with raw.open("wb") as fh:
        fh.truncate(8 * MiB)
    vhd = tmp_path / "disk.vhd"
    labdisks.run(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed",
                  str(raw), str(vhd)])  # fmt: skip
    footer = read_vhd_footer(vhd)
    assert footer.disk_type == "fixed" and footer.virtual_size >= 8 * MiB
    with pytest.raises(DiskFileError, match="VHD footer"):
        read_vhd_footer(raw)


def test_random_corruption_never_escapes_as_an_unexpected_exception(
    tmp_path: Path, disk_images: dict[str, Path]
) -> None:
    source = disk_images["blank-dynamic.vhdx"].read_bytes()
    layout = read_vhdx_layout(disk_images["blank-dynamic.vhdx"])
    hot = [64 * 1024, 128 * 1024, 192 * 1024, 256 * 1024, layout.metadata_offset, layout.bat_offset]
    rng = random.Random(1)
    target = tmp_path / "fuzz.vhdx"
    outcomes = set()
    for _ in range(150):
        data = bytearray(source)
        for _hit in range(rng.randrange(1, 6)):
            base = rng.choice(hot) + rng.randrange(0, 256)
            data[base : base + 8] = rng.randbytes(8)
        target.write_bytes(bytes(data))
        try:
            read_vhdx_layout(target)
            outcomes.add("ok")
        except DiskFileError:
            outcomes.add("error")
    assert outcomes == {"ok", "error"}
