"""The volumes of a virtual disk: partitions (GPT/MBR, read by dissect.volume) or the
whole disk, each with the file system found on it.

A volume's file system is told by its signature first (cheap, and the only way to
recognise BitLocker), then mounted with the adapter of ``filesystems``, so a
volume whose boot sector looks right but whose structures are garbage is
reported when the disk is listed. Partition types that hold no browsable file
system (MSR, LDM, Storage Spaces, swap, LVM) are named without being read.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, BinaryIO
from uuid import UUID

from dissect.util.stream import RangeStream
from dissect.volume.disk import Disk

from .chain import VirtualDisk
from .errors import EncryptedVolume, NotBrowsable, UnreadableDisk, UnreadableFileSystem
from .filesystems import Adapter, ExfatAdapter, ExtAdapter, FatAdapter, NtfsAdapter

log = logging.getLogger(__name__)

RAW_HINT = "recover it as a raw volume image or recover the whole disk"
BITLOCKER_MESSAGE = f"BitLocker-encrypted volume: cannot be browsed; {RAW_HINT}"
_PROBE = 8192
MAX_GPT_ENTRIES = 4096  # Windows and sgdisk write 128; the UEFI minimum is 16 KiB of entries

_MSR = UUID("E3C9E316-0B5C-4DB8-817D-F92DF00215AE")
_LDM_METADATA = UUID("5808C8AA-7E8F-42E0-85D2-E1E90434CFB3")
_LDM_DATA = UUID("AF9B60A0-1431-4F62-BC68-3311714A69AD")
_STORAGE_SPACES = UUID("E75CAF8F-F680-4CEE-AFA3-B001E56EFC2D")
_LINUX_LVM = UUID("E6D6D379-F507-44C2-A23C-238F2A3DF928")
_LINUX_SWAP = UUID("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F")
_EXTENDED_MBR_TYPES = (0x05, 0x0F, 0x85)


class FsKind(StrEnum):
    NTFS = "ntfs"
    FAT = "fat"
    EXFAT = "exfat"
    EXT = "ext"
    BITLOCKER = "bitlocker"
    UNKNOWN = "unknown"


_ADAPTERS: dict[FsKind, Callable[[BinaryIO], Adapter]] = {
    FsKind.NTFS: NtfsAdapter,
    FsKind.FAT: FatAdapter,
    FsKind.EXFAT: ExfatAdapter,
    FsKind.EXT: ExtAdapter,
}


@dataclass
class Volume:
    """One volume of a disk. ``filesystem`` says what was found; ``message`` why it cannot be browsed."""

    index: int  # position in list_volumes(), 0-based: what the UI and URLs use
    number: int | None  # partition number in the table (1-based); None for an unpartitioned disk
    offset: int
    size: int
    partition_type: str
    partition_name: str
    filesystem: FsKind
    filesystem_name: str  # "NTFS", "FAT32", "exFAT", "ext4", "BitLocker", "unknown"
    label: str
    message: str  # "" when browsable
    disk: VirtualDisk = field(repr=False, compare=False)
    _adapter: Adapter | None = field(default=None, repr=False, compare=False)

    @property
    def browsable(self) -> bool:
        return self.filesystem in _ADAPTERS and not self.message

    def open_raw(self) -> BinaryIO:
        """The volume's bytes (for a raw image): a window on the virtual disk."""
        return RangeStream(self.disk.stream, self.offset, self.size)

    def describe(self) -> str:
        where = f"partition {self.number}" if self.number is not None else "the whole disk"
        label = f" '{self.label}'" if self.label else ""
        return f"volume {self.index + 1} ({where}, {self.filesystem_name}{label})"

    def adapter(self) -> Adapter:
        """The mounted file system (parsed once, then reused)."""
        if self._adapter is not None:
            return self._adapter
        if self.filesystem is FsKind.BITLOCKER:
            raise EncryptedVolume(BITLOCKER_MESSAGE)
        if self.filesystem in _ADAPTERS and self.message:  # recognised, but it did not mount
            raise UnreadableFileSystem(f"{self.describe()} cannot be browsed: {self.message}")
        if not self.browsable:
            raise NotBrowsable(f"{self.describe()} cannot be browsed: {self.message}")
        damaged = (
            f"the {self.filesystem_name} file system on {self.describe()} could not be read: it looks "
            f"damaged; {RAW_HINT}"
        )
        with self.disk.parsing(damaged, UnreadableFileSystem):
            self._adapter = _ADAPTERS[self.filesystem](self.open_raw())
        return self._adapter


def _probe(stream: BinaryIO, offset: int, size: int) -> bytes:
    stream.seek(offset)
    return stream.read(min(_PROBE, size))


def detect(
    head: bytes, stream: BinaryIO | None = None, source_errors: tuple[type[BaseException], ...] = ()
) -> tuple[FsKind, str, str, str, Adapter | None]:
    """(kind, display name, label, message, adapter) from the first bytes of a volume.

    Signatures first (cheap, and they decide BitLocker, which no parser would);
    then the parser, so a volume whose boot sector looks right but whose
    structures are garbage is reported now rather than on the first click.
    """
    oem = head[3:11]
    if oem == b"-FVE-FS-":
        return FsKind.BITLOCKER, "BitLocker", "", BITLOCKER_MESSAGE, None
    if oem == b"ReFS\0\0\0\0":
        return FsKind.UNKNOWN, "ReFS", "", f"ReFS cannot be browsed by item-level recovery; {RAW_HINT}", None
    kind = FsKind.UNKNOWN
    if oem == b"NTFS    ":
        kind = FsKind.NTFS
    elif oem == b"EXFAT   ":
        kind = FsKind.EXFAT
    elif (
        len(head) >= 512
        and head[510:512] == b"\x55\xaa"
        and (head[82:87] == b"FAT32" or head[54:57] == b"FAT")
    ):
        kind = FsKind.FAT
    elif len(head) >= 1082 and head[1080:1082] == b"\x53\xef":
        kind = FsKind.EXT
    elif len(head) >= 521 and head[512:521] == b"LABEL_ONE":
        return FsKind.UNKNOWN, "LVM", "", f"LVM physical volume: LVM cannot be browsed; {RAW_HINT}", None
    elif b"SWAPSPACE2" in head[4086:4096] or b"SWAP-SPACE" in head[4086:4096]:
        return FsKind.UNKNOWN, "Linux swap", "", "Linux swap space: holds no files", None
    if kind is FsKind.UNKNOWN:
        if not head.strip(b"\0"):
            return kind, "unknown", "", f"no file system found (the volume starts blank); {RAW_HINT}", None
        return kind, "unknown", "", f"no supported file system was found; {RAW_HINT}", None
    names = {FsKind.NTFS: "NTFS", FsKind.EXFAT: "exFAT", FsKind.FAT: "FAT", FsKind.EXT: "ext"}
    if stream is None:
        return kind, names[kind], "", "", None
    try:
        adapter = _ADAPTERS[kind](stream)
        adapter.root()
    except source_errors:
        raise
    except Exception:
        log.debug("cannot mount %s volume", names[kind], exc_info=True)
        return kind, names[kind], "", f"the {names[kind]} file system looks damaged; {RAW_HINT}", None
    return kind, adapter.name, adapter.label, "", adapter


def _partition_type(part: Any) -> str:
    name = getattr(part, "type_name", None) or ""
    if name and name != "Unknown":
        return str(name)
    return str(getattr(part, "type_str", "") or part.type)


def _known_container(part: Any) -> tuple[str, str] | None:
    """Partitions whose type alone says they hold no browsable file system."""
    t = part.type
    if t == _MSR:
        return "Microsoft reserved", "Microsoft reserved partition: holds no files"
    if t in (_LDM_METADATA, _LDM_DATA) or t == 0x42:
        return "Windows dynamic disk", f"Windows dynamic disk (LDM) volumes cannot be browsed; {RAW_HINT}"
    if t == _STORAGE_SPACES:
        return "Storage Spaces", f"Storage Spaces cannot be browsed; {RAW_HINT}"
    if t == _LINUX_SWAP or t == 0x82:
        return "Linux swap", "Linux swap space: holds no files"
    if t == _LINUX_LVM or t == 0x8E:
        return "LVM", f"LVM physical volume: LVM cannot be browsed; {RAW_HINT}"
    return None


def list_volumes(disk: VirtualDisk) -> list[Volume]:
    """The volumes of ``disk``, in partition-table order; an unpartitioned disk is one volume."""
    stream = disk.stream
    damaged = f"the partition table of {disk.name or 'the disk'} could not be read: it looks damaged"
    volumes: list[Volume] = []
    with disk.parsing(damaged):
        parts = _partitions(disk)
        for part in parts or []:
            if part.type in _EXTENDED_MBR_TYPES or part.type == 0xEE:
                continue
            offset, size = _extent(part, disk)
            if size <= 0 or offset >= disk.size:
                continue
            size = min(size, disk.size - offset)
            known = _known_container(part)
            vol = Volume(
                len(volumes),
                part.number,
                offset,
                size,
                _partition_type(part),
                part.name or "",
                FsKind.UNKNOWN,
                "unknown",
                "",
                "",
                disk,
            )
            if known is not None:
                vol.filesystem_name, vol.message = known
            else:
                _fill(vol, _probe(stream, offset, size))
            volumes.append(vol)
        if parts is None:
            vol = Volume(0, None, 0, disk.size, "whole disk", "", FsKind.UNKNOWN, "unknown", "", "", disk)
            _fill(vol, _probe(stream, 0, disk.size))
            volumes.append(vol)
    return volumes


def _fill(vol: Volume, head: bytes) -> None:
    kind, fs_name, label, message, adapter = detect(head, vol.open_raw(), vol.disk.source_errors)
    vol.filesystem, vol.filesystem_name, vol.label, vol.message = kind, fs_name, label, message
    vol._adapter = adapter


def _partitions(disk: VirtualDisk) -> list[Any] | None:
    """Partition objects, or None when the disk has no partition table at all."""
    stream = disk.stream
    stream.seek(0)
    head = stream.read(disk.sector_size * 2)
    if head[510:512] != b"\x55\xaa":
        return None
    if (
        head[3:11] in (b"NTFS    ", b"EXFAT   ", b"-FVE-FS-")
        or head[82:87] == b"FAT32"
        or head[54:57] == b"FAT"
    ):
        return None  # a file system's boot sector at sector 0: an unpartitioned (superfloppy) disk
    _check_gpt(disk, head)
    stream.seek(0)
    try:
        return list(Disk(stream, sector_size=disk.sector_size).partitions)
    except Exception:
        log.info("no partition table on %s", disk.name, exc_info=True)
        return None


def _check_gpt(disk: VirtualDisk, mbr: bytes) -> None:
    """dissect reads every entry a GPT header declares, one by one: refuse a header whose
    entry count, entry size or array position is impossible before it loops for hours."""
    starts = [
        struct.unpack_from("<I", mbr, 446 + 16 * i + 8)[0] for i in range(4) if mbr[446 + 16 * i + 4] == 0xEE
    ]
    if not starts:
        return
    stream = disk.stream
    stream.seek(starts[0] * disk.sector_size)
    header = stream.read(92)
    if len(header) < 92 or header[:8] != b"EFI PART":
        return  # not a GPT after all: dissect falls back to the MBR
    array_lba, count, entry_size = struct.unpack_from("<QII", header, 72)
    array_end = array_lba * disk.sector_size + count * entry_size
    if (
        count > MAX_GPT_ENTRIES
        or entry_size < 128
        or entry_size > 4096
        or entry_size & (entry_size - 1)
        or array_end > disk.size
    ):
        raise UnreadableDisk(
            f"the GPT partition table of {disk.name or 'the disk'} is damaged (it declares {count} "
            f"entries of {entry_size} bytes at sector {array_lba}); recover the whole disk"
        )


def _extent(part: Any, disk: VirtualDisk) -> tuple[int, int]:
    raw = getattr(part, "raw", None)
    if raw is not None and hasattr(raw, "last_lba"):
        # dissect drops the last sector of GPT partitions (last_lba is inclusive).
        return part.offset, (raw.last_lba - raw.first_lba + 1) * disk.sector_size
    return part.offset, part.size
