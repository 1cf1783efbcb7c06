"""Damaged file systems and truncated disks, through item-level recovery.

Real small disks (NTFS by mkntfs + ntfscp, ext4 by mkfs.ext4 -d, FAT32 by mkfs.vfat +
mcopy, each converted to a dynamic VHDX by qemu-img) get random bytes flipped where the
file system keeps its records: the first MFT records of NTFS, the superblock, group
descriptors, bitmaps, inode tables and first directory blocks of ext4, the boot sector,
FATs and root directory of FAT32. Hypothesis picks the flips (fixed seed, bounded number
of examples); the disks are also cut at every 64 KiB boundary. Each damaged disk is
opened, its volumes listed, the root and a folder listed, a file read and the whole root
copied out: everything either works or raises an ``ItemLevelError`` with a plain
message (a copy reports damaged items as failed results). Never another exception
type, never a hang, never more than 64 MiB allocated: ``tests/fixtures/bounded.py``
explains how time and memory are bounded.
"""

from __future__ import annotations

import io
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recovery.itemlevel import ItemLevelError, copy_items, list_dir, list_volumes, open_disk, open_file
from storage.vdisk import builder
from storage.vdisk.builder import DiskSpec, MiB
from storage.vdisk.vhdx import VhdxLayout, read_layout
from tests.fixtures.bounded import SCORE, run_case

KiB = 1024
EXAMPLES = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # a fixed seed: the same damage every run
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Damaged:
    """A VHDX as bytes, and the file ranges holding its file system's records."""

    def __init__(self, path: Path, hot_virtual: list[tuple[int, int]]) -> None:
        self.data = path.read_bytes()
        self.layout: VhdxLayout = read_layout(path)
        self.hot = self.layout.virtual_to_file(hot_virtual)
        assert self.hot, "the records to damage are not in the file"
        self.hot_size = sum(n for _o, n in self.hot)

    def flip(self, flips: list[tuple[int, int]]) -> bytes:
        """XOR ``value`` into the byte at ``position`` (counted across the hot ranges)."""
        data = bytearray(self.data)
        for position, value in flips:
            pos = position % self.hot_size
            for off, n in self.hot:
                if pos < n:
                    data[off + pos] ^= value
                    break
                pos -= n
        return bytes(data)


def exercise(data: bytes, dest: Path, seen: list[str]) -> None:
    """Everything an administrator does with a disk: open, volumes, folders, a file, a copy.

    A volume that fails is noted in ``seen`` and the next one is tried, as a user would.
    """
    with open_disk(io.BytesIO(data), name="damaged.vhdx") as disk:
        for volume in list_volumes(disk):
            if volume.message:
                seen.append(volume.message)
            try:
                _browse(volume, dest / f"v{volume.index}", seen)
            except ItemLevelError as exc:
                seen.append(str(exc))


def _browse(volume: Any, target: Path, seen: list[str]) -> None:
    entries = list_dir(volume, "/")
    seen.extend(e.error for e in entries if e.error)
    folders = [e for e in entries if e.is_dir and not e.error][:2]
    files = [e for e in entries if not e.is_dir and not e.is_symlink and not e.error][:3]
    for folder in folders:
        list_dir(volume, folder.path)
    for entry in files:
        with open_file(volume, entry.path) as fh:
            fh.read(2 * MiB)
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    results = copy_items(volume, ["/"], target)
    seen.extend(r.reason for r in results if r.reason)


def check(label: str, data: bytes, dest: Path) -> str | None:
    """The first problem reported (an error raised, a volume or an item marked damaged), or None."""
    seen: list[str] = []
    raised = run_case(label, lambda: exercise(data, dest, seen), (ItemLevelError,))
    for message in seen:
        _plain(message)
        SCORE.messages.add(message)
    return raised or (seen[0] if seen else None)


def _plain(message: str) -> None:
    for word in ("Traceback", "Error(", "struct.error", "KeyError", "IndexError"):
        assert word not in message, f"a parser error reached the user: {message}"
    assert message.strip()


def _volume_offset(path: Path) -> int:
    from storage.vdisk import list_volumes as vlist
    from storage.vdisk import open_path

    with open_path(path) as disk:
        return vlist(disk)[-1].offset


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Damaged]:
    need = builder.missing_tools([*builder.REQUIRED_TOOLS, "mkfs.vfat", "mcopy"])
    if need:
        pytest.fail(f"disk tools missing: {need}")
    d = tmp_path_factory.mktemp("damaged")
    files = {"notes.txt": builder.text_file(6000, "n"), "data.bin": builder.pseudo_random(300_000, "d")}
    ntfs = d / "ntfs.vhdx"
    builder.build_disk(ntfs, DiskSpec(32 * MiB, "ntfs", "dynamic", 1 * MiB, files))
    off = _volume_offset(ntfs)
    boot = _virtual(ntfs, off, 512)
    cluster = struct.unpack_from("<H", boot, 0x0B)[0] * boot[0x0D]
    mft = off + struct.unpack_from("<q", boot, 0x30)[0] * cluster
    ext = d / "ext.vhdx"
    builder.build_disk(ext, DiskSpec(32 * MiB, "ext4", "dynamic", 1 * MiB, builder.linux_files("x", 200_000)))
    raw = builder.sparse_file(d / "fat.raw", 64 * MiB)
    builder.run(["mkfs.vfat", "-F", "32", "-n", "FATVOL", str(raw)])
    tree = d / "tree"
    (tree / "Folder" / "Sub").mkdir(parents=True)
    (tree / "Folder" / "Sub" / "file.txt").write_bytes(builder.text_file(3000, "f"))
    (tree / "Long File Name.txt").write_bytes(builder.text_file(900, "l"))
    (tree / "big.bin").write_bytes(builder.pseudo_random(200_000, "b"))
    env = {"LC_ALL": "C.UTF-8", "TZ": "UTC", "MTOOLS_SKIP_CHECK": "1"}
    builder.run(
        ["mcopy", "-s", "-m", "-i", str(raw), *[str(p) for p in sorted(tree.iterdir())], "::/"], env=env
    )
    fat = builder.convert(raw, d / "fat.vhdx")
    return {
        "ntfs": Damaged(ntfs, [(mft, 128 * KiB), (off, 8 * KiB)]),
        "ext4": Damaged(ext, _ext_records(ext)),
        "fat": Damaged(fat, _fat_records(fat)),
    }


def _ext_records(path: Path) -> list[tuple[int, int]]:
    """Superblock, first group descriptors, the first inodes and every folder's blocks."""
    from storage.vdisk import list_volumes as vlist
    from storage.vdisk import open_path

    with open_path(path) as disk:
        volume = vlist(disk)[-1]
        fs, off = volume.adapter().fs, volume.offset
        bs = fs.block_size
        table = fs._read_group_desc(0).bg_inode_table_lo * bs
        hot = [(off + 1024, 1024), (off + fs.groups_offset, bs), (off + table, 16 * KiB)]
        folders = [
            fs.root,
            *(i for i in fs.root.iterdir() if i.filetype == 0o040000 and i.filename[0] != "."),
        ]
        for folder in folders:
            hot.extend((off + block * bs, count * bs) for block, count in folder.dataruns() if block)
        return hot


def _fat_records(path: Path) -> list[tuple[int, int]]:
    """Boot sector, the start of the first FAT, the root folder."""
    boot = _virtual(path, 0, 512)
    bps, spc = struct.unpack_from("<H", boot, 11)[0], boot[13]
    reserved, fats = struct.unpack_from("<H", boot, 14)[0], boot[16]
    fat_size, root_cluster = struct.unpack_from("<I", boot, 36)[0], struct.unpack_from("<I", boot, 44)[0]
    root = (reserved + fats * fat_size) * bps + (root_cluster - 2) * spc * bps
    return [(0, 512), (reserved * bps, 16 * KiB), (root, 8 * KiB)]


def _virtual(path: Path, offset: int, length: int) -> bytes:
    from storage.vdisk import open_path

    with open_path(path) as disk:
        disk.stream.seek(offset)
        return bytes(disk.stream.read(length))


FLIPS = st.lists(st.tuples(st.integers(0, 2**31), st.integers(1, 255)), min_size=1, max_size=24)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("fs", ["ntfs", "ext4", "fat"])
def test_flipped_bytes_in_file_system_records(images: dict[str, Damaged], fs: str, tmp_path: Path) -> None:
    image = images[fs]
    assert check(f"{fs} undamaged", image.data, tmp_path) is None  # the image itself is sound
    outcomes: dict[str, int] = {}

    @EXAMPLES
    @given(flips=FLIPS)
    def damaged(flips: list[tuple[int, int]]) -> None:
        message = check(f"{fs} with {flips}", image.flip(flips), tmp_path)
        outcomes["error" if message else "works"] = outcomes.get("error" if message else "works", 0) + 1

    damaged()
    assert sum(outcomes.values()) >= 20, outcomes


@pytest.mark.timeout(600)
@pytest.mark.parametrize("fs", ["ntfs", "ext4", "fat"])
def test_whole_sectors_of_records_overwritten(images: dict[str, Damaged], fs: str, tmp_path: Path) -> None:
    """A torn write or a bad sector: 512 bytes of 0x00, 0xFF or noise over the records."""
    image = images[fs]
    noise = builder.pseudo_random(512, fs)
    for sector in range(0, image.hot_size, max(512, image.hot_size // 48 // 512 * 512)):
        for fill in (bytes(512), b"\xff" * 512, noise):
            data = bytearray(image.data)
            pos = sector
            for off, n in image.hot:
                if pos < n:
                    data[off + pos : off + pos + 512] = fill[: min(512, n - pos)]
                    break
                pos -= n
            check(f"{fs} sector {sector} overwritten", bytes(data), tmp_path)


@pytest.mark.timeout(600)
def test_cut_at_every_64_kib(images: dict[str, Damaged], tmp_path: Path) -> None:
    """A truncated copy never opens as a blank or partial volume without a word."""
    for fs, image in images.items():
        lay = image.layout
        needed = max(
            off + lay.block_size for s, off in map(lay.block_entry, range(lay.data_blocks)) if s == 6
        )
        for cut in range(0, len(image.data), 64 * KiB):
            message = check(f"{fs} cut at {cut}", image.data[:cut], tmp_path)
            if cut < needed:
                assert message is not None, f"{fs} cut at {cut} opened without an error"
