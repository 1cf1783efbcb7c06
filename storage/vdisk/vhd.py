"""Legacy VHD: the 512-byte footer at the end of the file says what the disk is."""

from __future__ import annotations

import os
import struct
import uuid
from dataclasses import dataclass
from typing import BinaryIO

from .errors import UnreadableDisk
from .vhdx import file_errors

FOOTER_SIZE = 512
FOOTER_COOKIE = b"conectix"
DYNAMIC_COOKIE = b"cxsparse"
DYNAMIC_HEADER_SIZE = 1024
DISK_TYPES = {2: "fixed", 3: "dynamic", 4: "differencing"}
MAX_VHD_SIZE = 2040 * 1024**3  # the VHD format's limit (Hyper-V and qemu agree)
MIN_BLOCK, MAX_BLOCK = 4096, 256 * 1024 * 1024  # Hyper-V writes 2 MiB (512 KiB for differencing)


@dataclass(frozen=True, slots=True)
class VhdFooter:
    virtual_size: int
    disk_type: str  # fixed / dynamic / differencing
    disk_id: str


def _read_footer(fh: BinaryIO) -> bytes:
    size = fh.seek(0, os.SEEK_END)
    if size < FOOTER_SIZE:
        raise UnreadableDisk("the file is too small to be a VHD")
    fh.seek(size - FOOTER_SIZE)
    return fh.read(FOOTER_SIZE)


def has_footer(fh: BinaryIO) -> bool:
    """Whether the file ends with a VHD footer (how a VHD is told from other files)."""
    try:
        return _read_footer(fh)[:8] == FOOTER_COOKIE
    except UnreadableDisk:
        return False


def read_vhd_footer(src: str | os.PathLike[str] | BinaryIO) -> VhdFooter:
    """The footer of a VHD file (a path or a binary file object); UnreadableDisk if it has none."""
    with file_errors():
        if isinstance(src, str | os.PathLike):
            with open(src, "rb") as fh:
                raw = _read_footer(fh)
        else:
            raw = _read_footer(src)
    if raw[:8] != FOOTER_COOKIE:
        raise UnreadableDisk("the file does not end with a VHD footer")
    current_size = struct.unpack_from(">Q", raw, 48)[0]
    kind = struct.unpack_from(">I", raw, 60)[0]
    if kind not in DISK_TYPES:
        raise UnreadableDisk(f"unknown VHD disk type {kind}")
    return VhdFooter(current_size, DISK_TYPES[kind], str(uuid.UUID(bytes=raw[68:84])))


def check_vhd(fh: BinaryIO, footer: VhdFooter) -> None:
    """Refuse what would make a reader allocate, loop or seek absurdly: a size beyond the
    format's limit or beyond a fixed file, and a dynamic header whose block size, table
    size or table offset do not fit the file. Raises UnreadableDisk saying what is wrong."""
    file_size = fh.seek(0, os.SEEK_END)
    if footer.virtual_size <= 0 or footer.virtual_size % 512 or footer.virtual_size > MAX_VHD_SIZE:
        raise UnreadableDisk(
            f"invalid VHD disk size {footer.virtual_size} bytes (whole sectors, at most 2040 GiB)"
        )
    if footer.disk_type == "fixed":
        if footer.virtual_size > file_size - FOOTER_SIZE:
            raise UnreadableDisk("the fixed VHD is shorter than its disk size (the file is truncated)")
        return
    fh.seek(file_size - FOOTER_SIZE + 16)
    data_offset = struct.unpack(">Q", fh.read(8))[0]
    if data_offset + DYNAMIC_HEADER_SIZE > file_size - FOOTER_SIZE:
        raise UnreadableDisk("the VHD's dynamic disk header lies outside the file (truncated or damaged)")
    fh.seek(data_offset)
    header = fh.read(DYNAMIC_HEADER_SIZE)
    if len(header) != DYNAMIC_HEADER_SIZE or header[:8] != DYNAMIC_COOKIE:
        raise UnreadableDisk("the VHD's dynamic disk header is damaged")
    table_offset = struct.unpack_from(">Q", header, 16)[0]
    entries, block_size = struct.unpack_from(">II", header, 28)
    if block_size < MIN_BLOCK or block_size > MAX_BLOCK or block_size & (block_size - 1):
        raise UnreadableDisk(f"invalid VHD block size {block_size}")
    if entries * block_size < footer.virtual_size:
        raise UnreadableDisk(
            f"the VHD's block table ({entries} entries) is too small for its disk size (damaged file)"
        )
    if table_offset + 4 * entries > file_size:
        raise UnreadableDisk("the VHD's block table lies beyond the end of the file (truncated or damaged)")
