"""Opening disks for reading: the guest's bytes, differencing chains through a parent opener,
what is checked along a chain, and which errors come out."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from storage.vdisk import (
    LOG_NOT_REPLAYED,
    ParentDiskMissing,
    UnreadableDisk,
    UnsupportedDisk,
    builder,
    list_volumes,
    open_disk,
    open_path,
    read_layout,
)
from storage.vdisk.chain import ParentRef, open_local_parent
from storage.vdisk.vhdx import PAYLOAD_BLOCK_PARTIALLY_PRESENT, SB_BLOCK_PRESENT

MiB = 1024 * 1024
SIZE = 16 * MiB
CHANGED = (2, 3, 9)  # blocks the checkpoint rewrote


def _read_all(stream: Any, size: int, step: int = 3 * MiB + 512) -> bytes:
    """Read in odd-sized pieces, so reads cross block boundaries."""
    out = bytearray()
    stream.seek(0)
    while len(out) < size:
        out += stream.read(min(step, size - len(out)))
    return bytes(out)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """base.vhdx (random data, 1 MiB blocks) + a differencing child holding CHANGED."""
    d = tmp_path_factory.mktemp("chain")
    base_raw = builder.pseudo_random(SIZE, "base")
    (d / "base.raw").write_bytes(base_raw)
    delta = builder.sparse_file(d / "delta.raw", SIZE)
    view = bytearray(base_raw)
    with delta.open("r+b") as fh:
        for block in CHANGED:
            data = builder.pseudo_random(MiB, f"child-{block}")
            fh.seek(block * MiB)
            fh.write(data)
            view[block * MiB : (block + 1) * MiB] = data
    base = builder.convert(d / "base.raw", d / "base.vhdx")
    child = builder.convert(delta, d / "child.avhdx")
    builder.make_differencing(
        child, base, {"relative_path": ".\\base.vhdx", "absolute_win32_path": "D:\\VMs\\base.vhdx"}
    )
    return {"dir": d, "base": base, "child": child, "view": bytes(view), "base_view": base_raw}


def test_a_vhdx_reads_exactly_what_qemu_reads(disk_images: dict[str, Path], tmp_path: Path) -> None:
    for name in ("windows-dynamic.vhdx", "windows-fixed.vhdx"):
        raw = tmp_path / f"{name}.raw"
        subprocess.run(
            ["qemu-img", "convert", "-f", "vhdx", "-O", "raw", str(disk_images[name]), str(raw)], check=True
        )
        with open_path(disk_images[name]) as disk:
            assert (disk.format, disk.size, disk.sector_size) == ("vhdx", raw.stat().st_size, 512)
            assert _read_all(disk.stream, disk.size) == raw.read_bytes()


def test_a_chain_reads_the_child_over_its_parent(chain: dict[str, Any]) -> None:
    with open_path(chain["child"]) as disk:
        assert disk.chain == [str(chain["child"]), str(chain["base"])]
        assert disk.warnings == []
        assert _read_all(disk.stream, SIZE) == chain["view"]
    with open_path(chain["base"]) as disk:
        assert disk.chain == [str(chain["base"])]
        assert _read_all(disk.stream, SIZE) == chain["base_view"]


def test_the_parent_opener_is_asked_with_the_locator(chain: dict[str, Any]) -> None:
    asked: list[ParentRef] = []

    def opener(ref: ParentRef) -> tuple[str, Any]:
        asked.append(ref)
        return "the-base", chain["base"].open("rb")

    with chain["child"].open("rb") as fh, open_disk(fh, name="child", parent_opener=opener) as disk:
        assert disk.chain == ["child", "the-base"]
        assert _read_all(disk.stream, SIZE) == chain["view"]
    (ref,) = asked
    assert ref.child_name == "child" and ref.relative_path == ".\\base.vhdx"
    assert ref.absolute_path == "D:\\VMs\\base.vhdx"
    assert ref.parent_linkage == str(read_layout(chain["base"]).data_write_guid)


def test_the_local_opener_falls_back_to_the_absolute_paths_file_name(chain: dict[str, Any]) -> None:
    ref = ParentRef(str(chain["child"]), ".\\moved\\base.vhdx", "D:\\VMs\\base.vhdx", None, None)
    name, fh = open_local_parent(ref)
    fh.close()
    assert name == str(chain["base"])
    with pytest.raises(ParentDiskMissing, match="needs its parent"):
        open_local_parent(ParentRef(str(chain["child"]), ".\\gone.vhdx", None, None, None))


def test_a_differencing_disk_without_its_parent(chain: dict[str, Any], tmp_path: Path) -> None:
    with chain["child"].open("rb") as fh, pytest.raises(ParentDiskMissing, match=r"no parent.*base\.vhdx"):
        open_disk(fh, name="child")
    alone = tmp_path / "child.avhdx"
    shutil.copyfile(chain["child"], alone)
    with pytest.raises(ParentDiskMissing, match="needs its parent"):
        open_path(alone)


def test_a_chain_that_loops_is_refused(chain: dict[str, Any]) -> None:
    def itself(ref: ParentRef) -> tuple[str, Any]:
        return "child", chain["child"].open("rb")

    with chain["child"].open("rb") as fh, pytest.raises(UnreadableDisk, match="loops at child"):
        open_disk(fh, name="child", parent_opener=itself)


def test_linkage_size_and_log_are_reported_as_warnings(chain: dict[str, Any], tmp_path: Path) -> None:
    other = builder.create(tmp_path / "other.vhdx", 2 * SIZE, block_size=MiB)
    builder.set_log_guid(other, uuid.uuid4())
    assert not read_layout(other).log_guid_zero  # the checksums still hold

    def wrong(ref: ParentRef) -> tuple[str, Any]:
        return "other.vhdx", other.open("rb")

    with chain["child"].open("rb") as fh, open_disk(fh, name="child", parent_opener=wrong) as disk:
        assert disk.warnings[0] == f"other.vhdx: {LOG_NOT_REPLAYED}"
        assert "parent linkage mismatch" in disk.warnings[1]
        assert "differ in size" in disk.warnings[2]


def test_a_partially_present_block_reads_sector_by_sector(chain: dict[str, Any], tmp_path: Path) -> None:
    """Hyper-V marks a block PARTIALLY_PRESENT when only some sectors were written in the
    child; the chunk's sector bitmap says which. qemu never writes one, so patch it in."""
    child = tmp_path / "partial.avhdx"
    shutil.copyfile(chain["child"], child)
    shutil.copyfile(chain["base"], tmp_path / "base.vhdx")
    lay = read_layout(child)
    block = CHANGED[1]
    _state, offset = lay.block_entry(block)
    sectors = lay.block_size // 512
    bitmap = bytearray(MiB)
    first = block * sectors  # the block's first sector within its chunk (chunk 0)
    written = [*range(first, first + sectors // 2), first + sectors - 1]
    for sector in written:
        bitmap[sector // 8] |= 1 << (sector % 8)
    with child.open("r+b") as fh:
        bitmap_offset = fh.seek(0, 2)
        fh.write(bitmap)
        fh.seek(lay.bat_offset + lay.bat_index(block) * 8)
        fh.write(struct.pack("<Q", (offset // MiB) << 20 | PAYLOAD_BLOCK_PARTIALLY_PRESENT))
        fh.seek(lay.bat_offset + lay.chunk_ratio * 8)
        fh.write(struct.pack("<Q", (bitmap_offset // MiB) << 20 | SB_BLOCK_PRESENT))
    expected = bytearray(chain["base_view"][block * MiB : (block + 1) * MiB])
    mine = chain["view"][block * MiB : (block + 1) * MiB]
    for sector in range(sectors):
        if first + sector in written:
            expected[sector * 512 : (sector + 1) * 512] = mine[sector * 512 : (sector + 1) * 512]
    with open_path(child) as disk:
        disk.stream.seek(block * MiB - 512)
        got = disk.stream.read(MiB + 1024)
    assert got[512:-512] == bytes(expected)
    assert got[:512] == chain["view"][block * MiB - 512 : block * MiB]
    assert got[-512:] == chain["view"][(block + 1) * MiB : (block + 1) * MiB + 512]


def test_files_that_are_not_disks(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedDisk, match="not a VHD or VHDX"):
        open_disk(io.BytesIO(b"MZ" + bytes(100_000)), name="x.vmcx")
    with pytest.raises(UnreadableDisk, match="footer is missing"):
        open_disk(io.BytesIO(b"conectix" + bytes(100_000)), name="cut.vhd")
    with pytest.raises(UnreadableDisk, match="could not be read as a VHDX file: the file is too small"):
        open_disk(io.BytesIO(b"vhdxfile" + bytes(100_000)), name="short.vhdx")
    with pytest.raises(UnreadableDisk, match="does not exist"):
        open_path(tmp_path / "missing.vhdx")


class SourceBroke(Exception):
    """What a backup store's reader raises when its data cannot be read."""


class FailingReader(io.RawIOBase):
    """A file object whose reads past ``limit`` fail, like a store with a missing chunk."""

    def __init__(self, data: bytes, limit: int) -> None:
        self.data, self.limit, self.pos = data, limit, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset + (self.pos if whence == 1 else len(self.data) if whence == 2 else 0)
        return self.pos

    def read(self, n: int = -1) -> bytes:
        if self.pos >= self.limit:
            raise SourceBroke(f"no data at {self.pos}")
        end = len(self.data) if n < 0 else self.pos + n
        out = self.data[self.pos : end]
        self.pos += len(out)
        return out


def test_source_errors_are_never_taken_for_damage(disk_images: dict[str, Path]) -> None:
    data = disk_images["windows-dynamic.vhdx"].read_bytes()
    lay = read_layout(disk_images["windows-dynamic.vhdx"])
    limit = max(lay.bat_offset + lay.bat_length, lay.metadata_offset + lay.metadata_length)
    disk = open_disk(FailingReader(data, limit), source_errors=(SourceBroke,))
    with pytest.raises(SourceBroke):
        list_volumes(disk)
    disk = open_disk(FailingReader(data, limit))
    with pytest.raises(UnreadableDisk, match=r"partition table .* could not be read"):
        list_volumes(disk)
