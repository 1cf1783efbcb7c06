"""Minimal VHDX reader: map virtual-disk ranges (what RCT reports) to file ranges.

Only the structures needed for incremental backups are parsed: headers, region
table, metadata (block size, logical sector size, virtual size) and the BAT.
Reference: [MS-VHDX] sections 2.2-2.5.
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
from typing import BinaryIO

from .errors import EngineError

KiB = 1024
MiB = 1024 * 1024

BAT_GUID = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA_GUID = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
VIRTUAL_DISK_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
LOGICAL_SECTOR_SIZE = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")

PAYLOAD_BLOCK_NOT_PRESENT = 0
PAYLOAD_BLOCK_UNDEFINED = 1
PAYLOAD_BLOCK_ZERO = 2
PAYLOAD_BLOCK_UNMAPPED = 3
PAYLOAD_BLOCK_FULLY_PRESENT = 6
PAYLOAD_BLOCK_PARTIALLY_PRESENT = 7
SB_BLOCK_PRESENT = 6
_PRESENT = (PAYLOAD_BLOCK_FULLY_PRESENT, PAYLOAD_BLOCK_PARTIALLY_PRESENT)

HEADER_SECTION = 1 * MiB  # file identifier, two headers, two region tables

Range = tuple[int, int]


class VhdxError(EngineError):
    pass


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    t = _CRC_TABLE
    for b in data:
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _checksum_ok(block: bytes) -> bool:
    stored = struct.unpack_from("<I", block, 4)[0]
    return crc32c(block[:4] + b"\0\0\0\0" + block[8:]) == stored


@dataclass(frozen=True)
class VhdxLayout:
    virtual_size: int
    block_size: int
    logical_sector_size: int
    has_parent: bool
    log_offset: int
    log_length: int
    regions: list[tuple[uuid.UUID, int, int]]  # (guid, file offset, length)
    bat: array.array  # type: ignore[type-arg]

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
        e = self.bat[chunk * (self.chunk_ratio + 1) + self.chunk_ratio]
        return e & 7, (e >> 20) * MiB


@contextmanager
def _as_file(src: str | os.PathLike[str] | BinaryIO) -> Iterator[BinaryIO]:
    if isinstance(src, str | os.PathLike):
        with open(src, "rb") as f:
            yield f
    else:
        yield src


def _read(f: BinaryIO, off: int, n: int) -> bytes:
    f.seek(off)
    data = f.read(n)
    if data is None or len(data) != n:
        raise VhdxError(f"VHDX is truncated (wanted {n} bytes at {off})")
    return data


def read_layout(src: str | os.PathLike[str] | BinaryIO) -> VhdxLayout:
    with _as_file(src) as f:
        if _read(f, 0, 8) != b"vhdxfile":
            raise VhdxError("not a VHDX file (no 'vhdxfile' signature)")
        best: tuple[int, bytes] | None = None
        for off in (64 * KiB, 128 * KiB):
            h = _read(f, off, 4 * KiB)
            if h[:4] == b"head" and _checksum_ok(h):
                seq = struct.unpack_from("<Q", h, 8)[0]
                if best is None or seq > best[0]:
                    best = (seq, h)
        if best is None:
            raise VhdxError("VHDX has no valid header")
        h = best[1]
        log_length, log_offset = struct.unpack_from("<IQ", h, 68)
        regions: list[tuple[uuid.UUID, int, int]] = []
        for off in (192 * KiB, 256 * KiB):
            rt = _read(f, off, 64 * KiB)
            if rt[:4] == b"regi" and _checksum_ok(rt):
                count = struct.unpack_from("<I", rt, 8)[0]
                for i in range(min(count, 2047)):
                    g, foff, ln, _req = struct.unpack_from("<16sQII", rt, 16 + 32 * i)
                    regions.append((uuid.UUID(bytes_le=g), foff, ln))
                break
        else:
            raise VhdxError("VHDX has no valid region table")
        reg = {g: (o, n) for g, o, n in regions}
        if BAT_GUID not in reg or METADATA_GUID not in reg:
            raise VhdxError("VHDX region table lacks the BAT or metadata region")
        moff, mlen = reg[METADATA_GUID]
        meta = _read(f, moff, min(mlen, 64 * KiB))
        if meta[:8] != b"metadata":
            raise VhdxError("VHDX metadata table signature is wrong")
        count = struct.unpack_from("<H", meta, 10)[0]
        items: dict[uuid.UUID, bytes] = {}
        for i in range(min(count, 2047)):
            g, ioff, iln, _fl, _r = struct.unpack_from("<16sIIII", meta, 32 + 32 * i)
            items[uuid.UUID(bytes_le=g)] = _read(f, moff + ioff, iln)
        try:
            block_size, flags = struct.unpack_from("<II", items[FILE_PARAMETERS])
            virtual_size = struct.unpack_from("<Q", items[VIRTUAL_DISK_SIZE])[0]
            lss = struct.unpack_from("<I", items[LOGICAL_SECTOR_SIZE])[0]
        except KeyError as exc:
            raise VhdxError(f"VHDX metadata item {exc} is missing") from exc
        if block_size < MiB or block_size & (block_size - 1) or lss not in (512, 4096):
            raise VhdxError("VHDX metadata has an invalid block or sector size")
        boff, blen = reg[BAT_GUID]
        bat = array.array("Q")
        bat.frombytes(_read(f, boff, blen - blen % 8))
        if sys.byteorder != "little":  # pragma: no cover
            bat.byteswap()
        layout = VhdxLayout(
            virtual_size=virtual_size,
            block_size=block_size,
            logical_sector_size=lss,
            has_parent=bool(flags & 2),
            log_offset=log_offset,
            log_length=log_length,
            regions=regions,
            bat=bat,
        )
        need = layout.bat_index(layout.data_blocks - 1) + 1 if layout.data_blocks else 0
        if len(bat) < need:
            raise VhdxError("VHDX BAT is smaller than the virtual size needs")
        return layout


def merge_ranges(ranges: Iterable[Range]) -> list[Range]:
    """Sort and merge (offset, length) pairs."""
    spans = sorted((o, o + n) for o, n in ranges if n > 0)
    out: list[list[int]] = []
    for s, e in spans:
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e - s) for s, e in out]


def metadata_ranges(src: str | os.PathLike[str] | BinaryIO | VhdxLayout) -> list[Range]:
    """File ranges that change with almost any write: header section, log, every
    region (BAT, metadata, ...) and the present sector bitmap blocks."""
    lay = src if isinstance(src, VhdxLayout) else read_layout(src)
    out: list[Range] = [(0, HEADER_SECTION)]
    if lay.log_length:
        out.append((lay.log_offset, lay.log_length))
    out.extend((o, n) for _g, o, n in lay.regions)
    chunks = -(-lay.data_blocks // lay.chunk_ratio)
    for c in range(chunks):
        idx = c * (lay.chunk_ratio + 1) + lay.chunk_ratio
        if idx < len(lay.bat):
            state, off = lay.bitmap_entry(c)
            if state == SB_BLOCK_PRESENT and off:
                out.append((off, MiB))
    return merge_ranges(out)


def virtual_to_file_ranges(
    src: str | os.PathLike[str] | BinaryIO,
    virtual_ranges: Iterable[Range],
    *,
    previous: str | os.PathLike[str] | BinaryIO | None = None,
    include_metadata: bool = True,
) -> list[Range]:
    """File ranges of ``src`` holding the given virtual-disk ranges.

    Blocks that are not present in the file (never written, zero, unmapped) map
    to nothing: their content lives in the BAT, which is a metadata range.
    With ``previous`` (the same VHDX as of the parent recovery point, e.g.
    ``Datastore.open_file(parent, name)``), blocks whose BAT entry changed are
    included whole: a newly placed block is written entirely (zero fill), not
    only where the guest wrote.
    """
    lay = read_layout(src)
    bs = lay.block_size
    out: list[Range] = []
    for voff, vlen in virtual_ranges:
        if vlen <= 0:
            continue
        if voff < 0 or voff + vlen > lay.virtual_size:
            raise VhdxError(f"virtual range {voff}+{vlen} lies outside the disk (size {lay.virtual_size})")
        end = voff + vlen
        pos = voff
        while pos < end:
            block = pos // bs
            in_block = pos - block * bs
            n = min(end - pos, bs - in_block)
            state, foff = lay.block_entry(block)
            if state in _PRESENT and foff:
                out.append((foff + in_block, n))
            pos += n
    if previous is not None:
        prev = read_layout(previous)
        if prev.block_size != bs or prev.logical_sector_size != lay.logical_sector_size:
            raise VhdxError("previous VHDX has a different block layout")
        for block in range(lay.data_blocks):
            now = lay.block_entry(block)
            was = prev.block_entry(block) if block < prev.data_blocks else (0, 0)
            if now != was and now[0] in _PRESENT and now[1]:
                out.append((now[1], bs))
    if include_metadata:
        out.extend(metadata_ranges(lay))
    return merge_ranges(out)
