"""Strict, read-only parsing of VHDX (and legacy VHD) file structure.

dissect.hypervisor is used to *read guest data*; this module exists because the
connector needs things dissect does not give (BAT file offsets, region extents,
log state) and because it must turn a corrupt or truncated file into a clear
message instead of a stray exception deep inside a parser.

Layout facts follow [MS-VHDX] 2.2: the first 1 MiB holds the file identifier,
two headers (64 KiB, 128 KiB) and two region tables (192 KiB, 256 KiB); the
region table points at the BAT and the metadata region; a header points at the log.
"""

from __future__ import annotations

import os
import struct
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from protection.connectors.ranges import Range, normalize

KiB = 1024
MiB = 1024 * KiB
BAT_GUID = uuid.UUID("2dc27766-f623-4200-9d64-115e9bfd4a08")
METADATA_GUID = uuid.UUID("8b7ca206-4790-4b9a-b8fe-575f050f886e")
FILE_PARAMETERS = uuid.UUID("caa16737-fa36-4d43-b3b6-33f0aa44e76b")
VIRTUAL_DISK_SIZE = uuid.UUID("2fa54224-cd1b-4876-b211-5dbed83bf4b8")
VIRTUAL_DISK_ID = uuid.UUID("beca12ab-b2e6-4523-93ef-c309e000c746")
LOGICAL_SECTOR = uuid.UUID("8141bf1d-a96f-4709-ba47-f233a8faab5f")
PHYSICAL_SECTOR = uuid.UUID("cda348c7-445d-4471-9cc9-e9885251c556")
PARENT_LOCATOR = uuid.UUID("a8d35f2d-b30b-454d-abf7-d3d84834ab0c")

# BAT payload block states ([MS-VHDX] 2.5.1.1)
PB_NOT_PRESENT, PB_UNDEFINED, PB_ZERO, PB_UNMAPPED = 0, 1, 2, 3
PB_FULLY_PRESENT, PB_PARTIALLY_PRESENT = 6, 7
SB_PRESENT = 6


class DiskFileError(ValueError):
    """The file is not a usable virtual disk; the message says why in plain words."""


@dataclass(frozen=True, slots=True)
class VhdxLayout:
    file_size: int
    virtual_size: int
    block_size: int
    logical_sector_size: int
    physical_sector_size: int
    disk_id: str
    leave_blocks_allocated: bool  # set by "fixed" VHDX creation
    has_parent: bool
    parent_locator: dict[str, str]
    log_guid_zero: bool  # False: a log needs replay, the data may be stale
    log_offset: int
    log_length: int
    bat_offset: int
    bat_length: int
    metadata_offset: int
    metadata_length: int
    bat: tuple[int, ...]  # raw 64-bit entries, sector bitmap entries interleaved

    @property
    def chunk_ratio(self) -> int:
        return (2**23 * self.logical_sector_size) // self.block_size

    @property
    def payload_blocks(self) -> int:
        return -(-self.virtual_size // self.block_size)

    def payload_entry(self, block: int) -> tuple[int, int]:
        """(state, file offset) of payload block ``block``."""
        raw = self.bat[block + block // self.chunk_ratio]
        return raw & 7, (raw >> 20) * MiB

    def bitmap_entry(self, block: int) -> tuple[int, int]:
        chunk = block // self.chunk_ratio
        index = (chunk + 1) * self.chunk_ratio + chunk
        if index >= len(self.bat):
            return 0, 0
        raw = self.bat[index]
        return raw & 7, (raw >> 20) * MiB

    def metadata_ranges(self) -> list[Range]:
        """Structure that changes whenever the disk is written: always re-read it."""
        ranges = [(0, 1 * MiB), (self.bat_offset, self.bat_length)]
        ranges.append((self.metadata_offset, self.metadata_length))
        if self.log_length:
            ranges.append((self.log_offset, self.log_length))
        return normalize(ranges)

    def virtual_to_file(self, virtual: Iterable[Range]) -> list[Range]:
        """Map virtual-disk ranges to the file ranges that hold their data.

        Blocks not present in this file (zero, unmapped, in the parent) have no
        file range: their state lives in the BAT, which metadata_ranges() covers.
        """
        out: list[Range] = []
        bs = self.block_size
        for voff, vlen in normalize(virtual):
            end = min(voff + vlen, self.virtual_size)
            pos = max(voff, 0)
            while pos < end:
                block, within = divmod(pos, bs)
                step = min(bs - within, end - pos)
                state, foff = self.payload_entry(block)
                if state in (PB_FULLY_PRESENT, PB_PARTIALLY_PRESENT):
                    out.append((foff + within, step))
                if state == PB_PARTIALLY_PRESENT:
                    sb_state, sb_off = self.bitmap_entry(block)
                    if sb_state == SB_PRESENT:
                        out.append((sb_off, 1 * MiB))
                pos += step
        return normalize(out)


def _guid(raw: bytes) -> uuid.UUID:
    return uuid.UUID(bytes_le=raw)


def _read_at(fh: BinaryIO, offset: int, length: int) -> bytes:
    fh.seek(offset)
    data = fh.read(length)
    if len(data) != length:
        raise DiskFileError(f"the file is truncated (needed {length} bytes at offset {offset})")
    return data


def _file_size(fh: BinaryIO) -> int:
    try:
        return os.fstat(fh.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        pos = fh.tell()
        size = fh.seek(0, os.SEEK_END)
        fh.seek(pos)
        return size


def _best_header(fh: BinaryIO) -> tuple[int, bytes, int, int]:
    best: tuple[int, bytes, int, int] | None = None
    for off in (64 * KiB, 128 * KiB):
        raw = _read_at(fh, off, 80)
        if raw[:4] != b"head":
            continue
        seq = struct.unpack_from("<Q", raw, 8)[0]
        log_guid = raw[48:64]
        log_length, log_offset = struct.unpack_from("<IQ", raw, 68)
        if best is None or seq > best[0]:
            best = (seq, log_guid, log_offset, log_length)
    if best is None:
        raise DiskFileError("neither VHDX header is valid (the file is corrupt)")
    return best


def _regions(fh: BinaryIO) -> dict[uuid.UUID, tuple[int, int]]:
    for off in (192 * KiB, 256 * KiB):
        raw = _read_at(fh, off, 64 * KiB)
        if raw[:4] != b"regi":
            continue
        count = struct.unpack_from("<I", raw, 8)[0]
        if count > 2047:  # the 64 KiB table cannot hold more
            continue
        regions = {}
        for i in range(count):
            guid, foff, length, _req = struct.unpack_from("<16sQII", raw, 16 + 32 * i)
            regions[_guid(guid)] = (foff, length)
        return regions
    raise DiskFileError("neither VHDX region table is valid (the file is corrupt)")


def _metadata(fh: BinaryIO, offset: int, length: int) -> dict[uuid.UUID, bytes]:
    raw = _read_at(fh, offset, length)
    if raw[:8] != b"metadata":
        raise DiskFileError("the VHDX metadata table is corrupt")
    count = struct.unpack_from("<H", raw, 10)[0]
    items = {}
    for i in range(count):
        item, ioff, ilen, _flags = struct.unpack_from("<16sIII", raw, 32 + 32 * i)
        if ioff + ilen > length:
            raise DiskFileError("a VHDX metadata item points outside the metadata region")
        items[_guid(item)] = raw[ioff : ioff + ilen]
    return items


def _parent_locator(raw: bytes) -> dict[str, str]:
    count = struct.unpack_from("<H", raw, 18)[0]
    entries = {}
    for i in range(count):
        koff, voff, klen, vlen = struct.unpack_from("<IIHH", raw, 20 + 12 * i)
        key = raw[koff : koff + klen].decode("utf-16-le", "replace")
        entries[key] = raw[voff : voff + vlen].decode("utf-16-le", "replace")
    return entries


def read_vhdx_layout(source: BinaryIO | str | os.PathLike[str]) -> VhdxLayout:
    """Parse and validate the structure; raises DiskFileError for anything unusable."""
    try:
        return _read_vhdx_layout(source)
    except DiskFileError:
        raise
    except (struct.error, IndexError, ValueError, OverflowError, MemoryError) as exc:
        # Garbage that passed the signature checks: still a corrupt file, not a bug.
        raise DiskFileError(f"the VHDX structure is corrupt ({exc.__class__.__name__})") from exc


def _read_vhdx_layout(source: BinaryIO | str | os.PathLike[str]) -> VhdxLayout:
    if isinstance(source, str | os.PathLike):
        try:
            with open(source, "rb") as opened:
                return _read_vhdx_layout(opened)
        except FileNotFoundError as exc:
            raise DiskFileError("the disk file does not exist") from exc
        except OSError as exc:
            raise DiskFileError(f"the disk file cannot be read ({exc.strerror})") from exc
    fh = source
    size = _file_size(fh)
    if size < 1 * MiB:
        raise DiskFileError(f"the file is too small to be a VHDX ({size} bytes)")
    if _read_at(fh, 0, 8) != b"vhdxfile":
        raise DiskFileError("the file does not start with the VHDX signature")
    _seq, log_guid, log_offset, log_length = _best_header(fh)
    regions = _regions(fh)
    if BAT_GUID not in regions or METADATA_GUID not in regions:
        raise DiskFileError("the VHDX region table lacks the BAT or metadata region")
    bat_off, bat_len = regions[BAT_GUID]
    md_off, md_len = regions[METADATA_GUID]
    for what, off, length in (
        ("BAT", bat_off, bat_len),
        ("metadata", md_off, md_len),
        ("log", log_offset, log_length),
    ):
        if off % MiB or off + length > size:
            raise DiskFileError(f"the VHDX {what} region lies outside the file (truncated?)")
    items = _metadata(fh, md_off, md_len)
    try:
        block_size, flags = struct.unpack("<II", items[FILE_PARAMETERS][:8])
        virtual_size = struct.unpack("<Q", items[VIRTUAL_DISK_SIZE][:8])[0]
        logical = struct.unpack("<I", items[LOGICAL_SECTOR][:4])[0]
        physical = struct.unpack("<I", items.get(PHYSICAL_SECTOR, b"\0\x10\0\0")[:4])[0]
        disk_id = str(_guid(items[VIRTUAL_DISK_ID][:16]))
    except (KeyError, struct.error) as exc:
        raise DiskFileError("a required VHDX metadata item is missing") from exc
    if block_size < MiB or block_size > 256 * MiB or block_size & (block_size - 1):
        raise DiskFileError(f"invalid VHDX block size {block_size}")
    if logical not in (512, 4096) or virtual_size <= 0 or virtual_size % logical:
        raise DiskFileError("invalid VHDX virtual size or sector size")
    has_parent = bool(flags & 2)
    chunk_ratio = (2**23 * logical) // block_size
    blocks = -(-virtual_size // block_size)
    if has_parent:
        entries = -(-blocks // chunk_ratio) * (chunk_ratio + 1)
    else:
        entries = blocks + (blocks - 1) // chunk_ratio
    if entries * 8 > bat_len:
        raise DiskFileError("the VHDX BAT is smaller than the virtual size needs")
    raw_bat = _read_at(fh, bat_off, entries * 8)
    bat = struct.unpack(f"<{entries}Q", raw_bat)
    layout = VhdxLayout(
        file_size=size,
        virtual_size=virtual_size,
        block_size=block_size,
        logical_sector_size=logical,
        physical_sector_size=physical,
        disk_id=disk_id,
        leave_blocks_allocated=bool(flags & 1),
        has_parent=has_parent,
        parent_locator=_parent_locator(items[PARENT_LOCATOR]) if has_parent else {},
        log_guid_zero=log_guid == bytes(16),
        log_offset=log_offset,
        log_length=log_length,
        bat_offset=bat_off,
        bat_length=bat_len,
        metadata_offset=md_off,
        metadata_length=md_len,
        bat=bat,
    )
    for block in range(blocks):
        state, foff = layout.payload_entry(block)
        if state in (PB_FULLY_PRESENT, PB_PARTIALLY_PRESENT) and foff + block_size > size:
            raise DiskFileError(
                f"payload block {block} lies beyond the end of the file (the file is truncated)"
            )
    return layout


@dataclass(frozen=True, slots=True)
class VhdFooter:
    virtual_size: int
    disk_type: str  # fixed / dynamic / differencing
    disk_id: str


def read_vhd_footer(path: str | os.PathLike[str]) -> VhdFooter:
    """Legacy VHD: the 512-byte footer at the end of the file says what it is."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size < 512:
                raise DiskFileError("the file is too small to be a VHD")
            raw = _read_at(fh, size - 512, 512)
    except FileNotFoundError as exc:
        raise DiskFileError("the disk file does not exist") from exc
    except OSError as exc:
        raise DiskFileError(f"the disk file cannot be read ({exc.strerror})") from exc
    if raw[:8] != b"conectix":
        raise DiskFileError("the file does not end with a VHD footer")
    current_size = struct.unpack_from(">Q", raw, 48)[0]
    kind = struct.unpack_from(">I", raw, 60)[0]
    types = {2: "fixed", 3: "dynamic", 4: "differencing"}
    if kind not in types:
        raise DiskFileError(f"unknown VHD disk type {kind}")
    return VhdFooter(current_size, types[kind], str(uuid.UUID(bytes=raw[68:84])))


def is_vhdx(path: Path) -> bool:
    return path.suffix.lower() in (".vhdx", ".avhdx")
