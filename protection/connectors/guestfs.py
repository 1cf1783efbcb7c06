"""Look inside a guest disk with dissect: where do given files live on the virtual disk?

Used for pagefile exclusion (Windows paging / hibernation / swap files need not
be kept: MABS "excludes the page file from incremental backups") and by the lab
guest, whose churn writes into files' data so the guest file system stays valid.

Chain: dissect.hypervisor VHDX -> dissect.volume Disk (GPT or MBR) ->
partition -> dissect.ntfs NTFS / dissect.extfs ExtFS. A cluster run
``(lcn, count)`` of a partition at byte ``p`` is the virtual range
``(p + lcn * cluster, count * cluster)``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from protection.connectors.ranges import Range, normalize

log = logging.getLogger(__name__)

VOLATILE_FILES = ("pagefile.sys", "hiberfil.sys", "swapfile.sys")
_MAX_FILES = 10_000  # enough for a lab guest; bounds the walk on a huge volume


@dataclass(frozen=True, slots=True)
class GuestFile:
    volume_offset: int
    fs: str  # "ntfs" | "ext4"
    path: str
    virtual_ranges: tuple[Range, ...]


def _open_disk(source: BinaryIO | str | os.PathLike[str]) -> Any:
    from dissect.hypervisor.disk.vhdx import VHDX

    if isinstance(source, str | os.PathLike):
        return VHDX(Path(source))
    source.seek(0)
    return VHDX(source)


def _volumes(vdisk: Any) -> Iterator[tuple[int, str, Any]]:
    """(partition offset, fs kind, file system) for every readable NTFS / ext volume."""
    from dissect.volume.disk import Disk

    try:
        disk = Disk(vdisk, sector_size=getattr(vdisk, "sector_size", 512))
    except Exception as exc:  # dissect raises plain exceptions for unknown schemes
        log.info("no partition table: %s", exc)
        return
    for part in disk.partitions:
        try:
            head = part.open()
            head.seek(0)
            boot = head.read(1082)
        except Exception:  # noqa: S112 - an unreadable partition is not ours to judge
            continue
        if boot[3:11] == b"NTFS    ":
            from dissect.ntfs import NTFS

            try:
                yield part.offset, "ntfs", NTFS(part.open())
            except Exception as exc:
                log.info("NTFS at %d unreadable: %s", part.offset, exc)
        elif boot[1080:1082] == b"\x53\xef":  # ext2/3/4 superblock magic at 1024+56
            from dissect.extfs import ExtFS

            try:
                yield part.offset, "ext4", ExtFS(part.open())
            except Exception as exc:
                log.info("ext volume at %d unreadable: %s", part.offset, exc)


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
            yield GuestFile(offset, "ntfs", path, tuple(_runs_to_ranges(offset, runs, cluster)))


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
            yield GuestFile(offset, "ext4", path, tuple(_runs_to_ranges(offset, runs, block)))


def guest_files(source: BinaryIO | str | os.PathLike[str], names: set[str] | None = None) -> list[GuestFile]:
    """Regular files (optionally only those named ``names``, lower case) of every volume."""
    out: list[GuestFile] = []
    for offset, kind, fs in _volumes(_open_disk(source)):
        walker = _ntfs_files if kind == "ntfs" else _ext_files
        try:
            out.extend(walker(offset, fs, names))
        except Exception as exc:
            log.info("walking the %s volume at %d failed: %s", kind, offset, exc)
    return out


def volatile_virtual_ranges(source: BinaryIO | str | os.PathLike[str]) -> list[Range]:
    """Virtual-disk ranges held by Windows paging, hibernation and swap files.

    Any failure (no partition table, unknown file system, corrupt MFT) gives an
    empty list: not excluding anything is always safe.
    """
    try:
        files = guest_files(source, set(VOLATILE_FILES))
    except Exception as exc:
        log.info("pagefile lookup failed: %s", exc)
        return []
    return normalize(r for f in files if f.fs == "ntfs" for r in f.virtual_ranges)
