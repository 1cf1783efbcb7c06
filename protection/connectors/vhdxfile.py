"""Connector-facing view of virtual disk files: VHDX structure and legacy VHD footers.

The VHDX structure (headers, region table, metadata, BAT, parent locator) is
parsed by the backup engine's parser, ``storage.engine.vhdx`` -- the only VHDX
parser in the tree, so the connector and the engine can never disagree about a
file's layout. This module turns its ``VhdxError`` (and a missing or unreadable
file) into ``DiskFileError``, whose message says in plain words why the file is
not a usable virtual disk. dissect.hypervisor is used elsewhere to *read guest
data*; the legacy .vhd footer is small enough to read here.
"""

from __future__ import annotations

import os
import struct
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from storage.engine.vhdx import (
    PAYLOAD_BLOCK_FULLY_PRESENT,
    VhdxError,
    VhdxLayout,
    read_layout,
)

__all__ = [
    "PAYLOAD_BLOCK_FULLY_PRESENT",
    "DiskFileError",
    "VhdFooter",
    "VhdxLayout",
    "disk_file_errors",
    "read_vhd_footer",
    "read_vhdx_layout",
]


class DiskFileError(ValueError):
    """The file is not a usable virtual disk; the message says why in plain words."""


@contextmanager
def disk_file_errors() -> Iterator[None]:
    """Turn the engine's VhdxError and file access errors into DiskFileError."""
    try:
        yield
    except VhdxError as exc:
        raise DiskFileError(str(exc)) from exc
    except FileNotFoundError as exc:
        raise DiskFileError("the disk file does not exist") from exc
    except OSError as exc:
        raise DiskFileError(f"the disk file cannot be read ({exc.strerror or exc})") from exc


def read_vhdx_layout(source: BinaryIO | str | os.PathLike[str]) -> VhdxLayout:
    """Parse and validate the structure; raises DiskFileError for anything unusable."""
    with disk_file_errors():
        return read_layout(source)


@dataclass(frozen=True, slots=True)
class VhdFooter:
    virtual_size: int
    disk_type: str  # fixed / dynamic / differencing
    disk_id: str


def read_vhd_footer(path: str | os.PathLike[str]) -> VhdFooter:
    """Legacy VHD: the 512-byte footer at the end of the file says what it is."""
    with disk_file_errors(), open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size < 512:
            raise DiskFileError("the file is too small to be a VHD")
        fh.seek(size - 512)
        raw = fh.read(512)
    if raw[:8] != b"conectix":
        raise DiskFileError("the file does not end with a VHD footer")
    current_size = struct.unpack_from(">Q", raw, 48)[0]
    kind = struct.unpack_from(">I", raw, 60)[0]
    types = {2: "fixed", 3: "dynamic", 4: "differencing"}
    if kind not in types:
        raise DiskFileError(f"unknown VHD disk type {kind}")
    return VhdFooter(current_size, types[kind], str(uuid.UUID(bytes=raw[68:84])))
