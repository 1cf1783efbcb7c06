"""Where do a guest's files live on its virtual disk? Above all: its paging files.

Windows paging, hibernation and swap files need not be kept by a backup (MABS
"excludes the page file from incremental backups"); the lab guest also writes
into files' data so its file system stays valid. A cluster run ``(lcn, count)``
of a volume at byte ``p`` is the virtual range ``(p + lcn * cluster, count * cluster)``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .chain import VirtualDisk, open_disk, open_path
from .ranges import Range, merge_ranges
from .volumes import FsKind, list_volumes

log = logging.getLogger(__name__)

VOLATILE_FILES = ("pagefile.sys", "hiberfil.sys", "swapfile.sys")
_MAX_FILES = 10_000  # enough for a lab guest; bounds the walk on a huge volume


@dataclass(frozen=True, slots=True)
class GuestFile:
    volume_offset: int
    fs: str  # FsKind value: "ntfs" | "ext"
    path: str
    virtual_ranges: tuple[Range, ...]


def _runs_to_ranges(base: int, runs: list[tuple[int | None, int]], unit: int) -> list[Range]:
    return [(base + lcn * unit, count * unit) for lcn, count in runs if lcn is not None and count]


def _ntfs_files(offset: int, fs: Any, names: set[str] | None) -> Iterator[GuestFile]:
    cluster = fs.cluster_size
    stack = [("", fs.mft.get("\\"))]
    seen = 0
    while stack and seen < _MAX_FILES:
        prefix, directory = stack.pop()
        for name, entry in directory.listdir(dereference=True).items():
            seen += 1
            if name.startswith("$") or name in (".", ".."):
                continue  # NTFS metadata files: never write into them
            path = f"{prefix}/{name}"
            try:
                if entry.is_dir():
                    stack.append((path, entry))
                    continue
                if names is not None and name.lower() not in names:
                    continue
                runs = entry.dataruns()
            except (TypeError, FileNotFoundError):
                continue  # resident data (tiny file) lives inside the MFT record
            yield GuestFile(offset, FsKind.NTFS.value, path, tuple(_runs_to_ranges(offset, runs, cluster)))


def _ext_files(offset: int, fs: Any, names: set[str] | None) -> Iterator[GuestFile]:
    block = fs.block_size
    stack = [("", fs.get("/"))]
    seen = 0
    while stack and seen < _MAX_FILES:
        prefix, directory = stack.pop()
        for name, inode in directory.listdir().items():
            seen += 1
            if name in (".", "..", "lost+found"):
                continue
            path = f"{prefix}/{name}"
            try:
                if inode.filetype == 0x4000:  # S_IFDIR
                    stack.append((path, inode))
                    continue
                if inode.filetype != 0x8000 or (names is not None and name.lower() not in names):
                    continue
                runs = inode.dataruns()
            except Exception:  # noqa: S112 - inline data, fast symlinks, ...
                continue
            yield GuestFile(offset, FsKind.EXT.value, path, tuple(_runs_to_ranges(offset, runs, block)))


_WALKERS = {FsKind.NTFS: _ntfs_files, FsKind.EXT: _ext_files}


def _open(source: BinaryIO | str | os.PathLike[str]) -> VirtualDisk:
    if isinstance(source, str | os.PathLike):
        return open_path(Path(source))
    return open_disk(source)


def guest_files(source: BinaryIO | str | os.PathLike[str], names: set[str] | None = None) -> list[GuestFile]:
    """Regular files (optionally only those named ``names``, lower case) of every NTFS and ext volume."""
    out: list[GuestFile] = []
    with _open(source) as disk:
        for vol in list_volumes(disk):
            walker = _WALKERS.get(vol.filesystem)
            if walker is None or not vol.browsable:
                continue
            try:
                out.extend(walker(vol.offset, vol.adapter().fs, names))
            except Exception as exc:
                log.info("walking the %s volume at %d failed: %s", vol.filesystem, vol.offset, exc)
    return out


def volatile_virtual_ranges(source: BinaryIO | str | os.PathLike[str]) -> list[Range]:
    """Virtual-disk ranges held by Windows paging, hibernation and swap files.

    Any failure (not a disk, no partition table, unknown file system, corrupt MFT)
    gives an empty list: not excluding anything is always safe.
    """
    try:
        files = guest_files(source, set(VOLATILE_FILES))
    except Exception as exc:
        log.info("pagefile lookup failed: %s", exc)
        return []
    return merge_ranges(r for f in files if f.fs == FsKind.NTFS for r in f.virtual_ranges)
