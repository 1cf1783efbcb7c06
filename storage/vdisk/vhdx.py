"""The one VHDX parser: file identifier, headers, region tables, metadata and BAT.

Parsed and validated: file identifier, both headers (checksummed, highest
sequence number wins), both region tables (checksummed; a torn write damages
only one), the metadata region (block size, sector sizes, virtual size, disk id,
parent locator) and the BAT, including that no present block lies beyond the end
of the file (a truncated copy). Anything unusable -- missing, unreadable,
corrupt, truncated, garbage that passes the signature checks -- raises
``UnreadableDisk`` with a message in plain words; no other exception escapes
``read_layout`` for a bad file. The log is not replayed: a non-zero log GUID
means the newest writes may still sit in the log (``VhdxLayout.log_guid_zero``).
Reference: [MS-VHDX] sections 2.2-2.6.
"""

from __future__ import annotations

import array
import os
import struct
import sys
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

from .errors import InvalidRange, UnreadableDisk
from .ranges import Range, merge_ranges

KiB = 1024
MiB = 1024 * 1024

BAT_GUID = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA_GUID = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
VIRTUAL_DISK_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
VIRTUAL_DISK_ID = uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
LOGICAL_SECTOR_SIZE = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
PHYSICAL_SECTOR_SIZE = uuid.UUID("CDA348C7-445D-4471-9CC9-E9885251C556")
PARENT_LOCATOR = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
VHDX_PARENT_LOCATOR_TYPE = uuid.UUID("B04AEFB7-D19E-4A81-B789-25B8E9445913")

# BAT payload block states ([MS-VHDX] 2.5.1.1)
PAYLOAD_BLOCK_NOT_PRESENT = 0
PAYLOAD_BLOCK_UNDEFINED = 1
PAYLOAD_BLOCK_ZERO = 2
PAYLOAD_BLOCK_UNMAPPED = 3
PAYLOAD_BLOCK_FULLY_PRESENT = 6
PAYLOAD_BLOCK_PARTIALLY_PRESENT = 7
SB_BLOCK_PRESENT = 6
PRESENT_STATES = (PAYLOAD_BLOCK_FULLY_PRESENT, PAYLOAD_BLOCK_PARTIALLY_PRESENT)

HEADER_SECTION = 1 * MiB  # file identifier, two headers, two region tables
HEADER_OFFSETS = (64 * KiB, 128 * KiB)
REGION_TABLE_OFFSETS = (192 * KiB, 256 * KiB)
_MAX_ENTRIES = 2047  # a 64 KiB region/metadata table cannot hold more
METADATA_TABLE = 64 * KiB
MAX_METADATA_ITEM = 1 * MiB  # [MS-VHDX] 2.6.1.2: an item is at most 1 MB
MAX_METADATA_REGION = 256 * MiB  # Hyper-V makes 1 MiB; far more is damage
MAX_VIRTUAL_SIZE = 64 * 1024**4  # [MS-VHDX] 2.6.2.2: a VHDX holds at most 64 TiB


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


try:  # dissect.util's native (Rust) CRC-32C, when built: a hundred times faster than the table
    from dissect.util._native import hash as _native_hash

    _native_crc32c: Any = _native_hash.crc32c.crc32c
except (ImportError, AttributeError):  # pragma: no cover - the pure-Python wheel
    _native_crc32c = None


def crc32c(data: bytes) -> int:
    if _native_crc32c is not None:
        return int(_native_crc32c(data))
    return crc32c_python(data)


def crc32c_python(data: bytes) -> int:
    crc = 0xFFFFFFFF
    t = _CRC_TABLE
    for b in data:
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _checksum(block: bytes) -> int:
    return crc32c(block[:4] + b"\0\0\0\0" + block[8:])


def _checksum_ok(block: bytes) -> bool:
    return _checksum(block) == struct.unpack_from("<I", block, 4)[0]


def with_checksum(block: bytes) -> bytes:
    """A header or region table with its checksum field (bytes 4-8) recomputed."""
    return block[:4] + struct.pack("<I", _checksum(block)) + block[8:]


@dataclass(frozen=True)
class VhdxLayout:
    file_size: int
    virtual_size: int
    block_size: int
    logical_sector_size: int
    physical_sector_size: int
    disk_id: str
    leave_blocks_allocated: bool  # set by "fixed" VHDX creation
    has_parent: bool  # a differencing disk
    parent_locator: dict[str, str]  # empty unless has_parent
    parent_locator_type: uuid.UUID | None  # VHDX_PARENT_LOCATOR_TYPE for Hyper-V's differencing disks
    log_guid: uuid.UUID  # not zero: the log needs replay, the data may be stale
    data_write_guid: uuid.UUID  # a differencing child records its parent's as "parent_linkage"
    log_offset: int
    log_length: int
    regions: list[tuple[uuid.UUID, int, int]]  # (guid, file offset, length)
    bat_offset: int
    bat_length: int
    metadata_offset: int
    metadata_length: int
    bat: array.array  # type: ignore[type-arg]  # raw entries, sector bitmap entries interleaved

    @property
    def log_guid_zero(self) -> bool:
        return self.log_guid.int == 0

    @property
    def chunk_ratio(self) -> int:
        return (2**23 * self.logical_sector_size) // self.block_size

    @property
    def data_blocks(self) -> int:
        return -(-self.virtual_size // self.block_size)

    def bat_index(self, block: int) -> int:
        return block + block // self.chunk_ratio

    def block_entry(self, block: int) -> tuple[int, int]:
        """(state, file offset) of payload block ``block``."""
        e = self.bat[self.bat_index(block)]
        return e & 7, (e >> 20) * MiB

    def bitmap_entry(self, chunk: int) -> tuple[int, int]:
        idx = chunk * (self.chunk_ratio + 1) + self.chunk_ratio
        if idx >= len(self.bat):  # a disk without a parent keeps no last bitmap entry
            return PAYLOAD_BLOCK_NOT_PRESENT, 0
        e = self.bat[idx]
        return e & 7, (e >> 20) * MiB

    def virtual_to_file(self, virtual_ranges: Iterable[Range]) -> list[Range]:
        """File ranges holding the given virtual-disk ranges (merged).

        Blocks not present in this file (never written, zero, unmapped, in the
        parent) map to nothing: their state lives in the BAT, a metadata range.
        """
        bs = self.block_size
        out: list[Range] = []
        for voff, vlen in virtual_ranges:
            if vlen <= 0:
                continue
            if voff < 0 or voff + vlen > self.virtual_size:
                raise InvalidRange(
                    f"virtual range {voff}+{vlen} lies outside the disk (size {self.virtual_size})"
                )
            end = voff + vlen
            pos = voff
            while pos < end:
                block = pos // bs
                in_block = pos - block * bs
                n = min(end - pos, bs - in_block)
                state, foff = self.block_entry(block)
                if state in PRESENT_STATES and foff:
                    out.append((foff + in_block, n))
                pos += n
        return merge_ranges(out)

    def metadata_ranges(self) -> list[Range]:
        """File ranges that change with almost any write: header section, log, every
        region (BAT, metadata, ...) and the present sector bitmap blocks."""
        out: list[Range] = [(0, HEADER_SECTION)]
        if self.log_length:
            out.append((self.log_offset, self.log_length))
        out.extend((o, n) for _g, o, n in self.regions)
        chunks = -(-self.data_blocks // self.chunk_ratio)
        for c in range(chunks):
            idx = c * (self.chunk_ratio + 1) + self.chunk_ratio
            if idx < len(self.bat):
                state, off = self.bitmap_entry(c)
                if state == SB_BLOCK_PRESENT and off:
                    out.append((off, MiB))
        return merge_ranges(out)


@contextmanager
def _as_file(src: str | os.PathLike[str] | BinaryIO) -> Iterator[BinaryIO]:
    if isinstance(src, str | os.PathLike):
        with open(src, "rb") as f:
            yield f
    else:
        yield src


@contextmanager
def file_errors() -> Iterator[None]:
    """A missing or unreadable file becomes UnreadableDisk with a plain message."""
    try:
        yield
    except FileNotFoundError as exc:
        raise UnreadableDisk("the disk file does not exist") from exc
    except OSError as exc:
        raise UnreadableDisk(f"the disk file cannot be read ({exc.strerror or exc})") from exc


def _read(f: BinaryIO, off: int, n: int) -> bytes:
    f.seek(off)
    data = f.read(n)
    if data is None or len(data) != n:
        raise UnreadableDisk(f"the file is truncated (needed {n} bytes at offset {off})")
    return data


def _file_size(f: BinaryIO) -> int:
    try:
        return os.fstat(f.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        pos = f.tell()
        size = f.seek(0, os.SEEK_END)
        f.seek(pos)
        return size


def read_layout(src: str | os.PathLike[str] | BinaryIO) -> VhdxLayout:
    """Parse and validate the structure; raises VhdxError for anything unusable."""
    with file_errors(), _as_file(src) as f:
        try:
            return _parse(f)
        except (struct.error, IndexError, ValueError, OverflowError, MemoryError) as exc:
            # Garbage that passed the signature checks: still a corrupt file, not a bug.
            raise UnreadableDisk(f"the VHDX structure is corrupt ({exc.__class__.__name__})") from exc


def _best_header(f: BinaryIO) -> bytes:
    best: tuple[int, bytes] | None = None
    for off in HEADER_OFFSETS:
        h = _read(f, off, 4 * KiB)
        if h[:4] == b"head" and _checksum_ok(h):
            seq = struct.unpack_from("<Q", h, 8)[0]
            if best is None or seq > best[0]:
                best = (seq, h)
    if best is None:
        raise UnreadableDisk("neither VHDX header is valid (the file is corrupt)")
    return best[1]


def _regions(f: BinaryIO) -> list[tuple[uuid.UUID, int, int]]:
    for off in REGION_TABLE_OFFSETS:
        rt = _read(f, off, 64 * KiB)
        if rt[:4] != b"regi" or not _checksum_ok(rt):
            continue
        count = struct.unpack_from("<I", rt, 8)[0]
        if count > _MAX_ENTRIES:
            continue
        regions = []
        for i in range(count):
            g, foff, ln, _req = struct.unpack_from("<16sQII", rt, 16 + 32 * i)
            regions.append((uuid.UUID(bytes_le=g), foff, ln))
        return regions
    raise UnreadableDisk("neither VHDX region table is valid (the file is corrupt)")


def _metadata(f: BinaryIO, offset: int, length: int) -> dict[uuid.UUID, bytes]:
    """The metadata items this parser uses; each is read on its own, so a damaged table
    cannot make it read (or allocate) more than a few MiB."""
    if length < METADATA_TABLE or length > MAX_METADATA_REGION:
        raise UnreadableDisk(f"the VHDX metadata region has an impossible length ({length} bytes)")
    raw = _read(f, offset, METADATA_TABLE)
    if raw[:8] != b"metadata":
        raise UnreadableDisk("the VHDX metadata table is corrupt")
    count = struct.unpack_from("<H", raw, 10)[0]
    if count > _MAX_ENTRIES:
        raise UnreadableDisk(f"the VHDX metadata table is corrupt (it claims {count} entries)")
    items = {}
    for i in range(count):
        g, ioff, iln, _flags = struct.unpack_from("<16sIII", raw, 32 + 32 * i)
        item = uuid.UUID(bytes_le=g)
        if item not in _USED_ITEMS:
            continue
        if ioff < METADATA_TABLE or ioff + iln > length or iln > MAX_METADATA_ITEM:
            raise UnreadableDisk("a VHDX metadata item points outside the metadata region")
        items[item] = _read(f, offset + ioff, iln)
    return items


_USED_ITEMS = {
    FILE_PARAMETERS,
    VIRTUAL_DISK_SIZE,
    VIRTUAL_DISK_ID,
    LOGICAL_SECTOR_SIZE,
    PHYSICAL_SECTOR_SIZE,
    PARENT_LOCATOR,
}


def _parent_locator(raw: bytes) -> dict[str, str]:
    count = struct.unpack_from("<H", raw, 18)[0]
    entries = {}
    for i in range(count):
        koff, voff, klen, vlen = struct.unpack_from("<IIHH", raw, 20 + 12 * i)
        key = raw[koff : koff + klen].decode("utf-16-le", "replace")
        entries[key] = raw[voff : voff + vlen].decode("utf-16-le", "replace")
    return entries


def _parse(f: BinaryIO) -> VhdxLayout:
    size = _file_size(f)
    if size >= 8 and _read(f, 0, 8) != b"vhdxfile":
        raise UnreadableDisk("not a VHDX file (the file does not start with the VHDX signature)")
    if size < HEADER_SECTION:
        raise UnreadableDisk(f"the file is too small to be a VHDX ({size} bytes)")
    h = _best_header(f)
    data_write_guid = uuid.UUID(bytes_le=h[32:48])
    log_guid = uuid.UUID(bytes_le=h[48:64])
    log_length, log_offset = struct.unpack_from("<IQ", h, 68)
    regions = _regions(f)
    reg = {g: (o, n) for g, o, n in regions}
    if BAT_GUID not in reg or METADATA_GUID not in reg:
        raise UnreadableDisk("the VHDX region table lacks the BAT or metadata region")
    boff, blen = reg[BAT_GUID]
    moff, mlen = reg[METADATA_GUID]
    for what, off, length in (("BAT", boff, blen), ("metadata", moff, mlen), ("log", log_offset, log_length)):
        if what == "log" and not length:
            continue
        if off % MiB or off < HEADER_SECTION:
            raise UnreadableDisk(f"the VHDX {what} region is misplaced (offset {off}): the file is corrupt")
        if off + length > size:
            raise UnreadableDisk(f"the VHDX {what} region lies beyond the end of the file (truncated?)")
    items = _metadata(f, moff, mlen)
    try:
        block_size, flags = struct.unpack("<II", items[FILE_PARAMETERS][:8])
        virtual_size = struct.unpack("<Q", items[VIRTUAL_DISK_SIZE][:8])[0]
        lss = struct.unpack("<I", items[LOGICAL_SECTOR_SIZE][:4])[0]
        pss = struct.unpack("<I", items.get(PHYSICAL_SECTOR_SIZE, b"\0\x10\0\0")[:4])[0]
        disk_id = str(uuid.UUID(bytes_le=items[VIRTUAL_DISK_ID][:16]))
        has_parent = bool(flags & 2)
        locator = _parent_locator(items[PARENT_LOCATOR]) if has_parent else {}
        locator_type = uuid.UUID(bytes_le=items[PARENT_LOCATOR][:16]) if has_parent else None
    except (KeyError, struct.error) as exc:
        raise UnreadableDisk("a required VHDX metadata item is missing") from exc
    if block_size < MiB or block_size > 256 * MiB or block_size & (block_size - 1):
        raise UnreadableDisk(f"invalid VHDX block size {block_size}")
    if lss not in (512, 4096):
        raise UnreadableDisk(f"invalid VHDX logical sector size {lss} (only 512 and 4096 exist)")
    if virtual_size <= 0 or virtual_size % lss or virtual_size > MAX_VIRTUAL_SIZE:
        raise UnreadableDisk(
            f"invalid VHDX virtual size {virtual_size} bytes (it must be whole sectors, at most 64 TiB)"
        )
    chunk_ratio = (2**23 * lss) // block_size
    blocks = -(-virtual_size // block_size)
    if has_parent:  # every chunk has its sector bitmap entry
        entries = -(-blocks // chunk_ratio) * (chunk_ratio + 1)
    else:
        entries = blocks + (blocks - 1) // chunk_ratio
    if entries * 8 > blen:
        raise UnreadableDisk("the VHDX BAT is smaller than the virtual size needs")
    bat = array.array("Q")
    # Only the entries the virtual size needs: a BAT region claiming gigabytes is not read.
    bat.frombytes(_read(f, boff, entries * 8))
    if sys.byteorder != "little":  # pragma: no cover
        bat.byteswap()
    layout = VhdxLayout(
        file_size=size,
        virtual_size=virtual_size,
        block_size=block_size,
        logical_sector_size=lss,
        physical_sector_size=pss,
        disk_id=disk_id,
        leave_blocks_allocated=bool(flags & 1),
        has_parent=has_parent,
        parent_locator=locator,
        parent_locator_type=locator_type,
        log_guid=log_guid,
        data_write_guid=data_write_guid,
        log_offset=log_offset,
        log_length=log_length,
        regions=regions,
        bat_offset=boff,
        bat_length=blen,
        metadata_offset=moff,
        metadata_length=mlen,
        bat=bat,
    )
    for block in range(blocks):
        state, foff = layout.block_entry(block)
        if state in PRESENT_STATES and foff + block_size > size:
            raise UnreadableDisk(
                f"payload block {block} lies beyond the end of the file (the file is truncated)"
            )
    return layout
