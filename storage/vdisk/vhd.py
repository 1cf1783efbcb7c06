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
DISK_TYPES = {2: "fixed", 3: "dynamic", 4: "differencing"}


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
