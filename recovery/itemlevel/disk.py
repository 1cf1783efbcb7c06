"""Open a recovery point's virtual disk file (VHDX, AVHDX chain, VHD) as a readable disk.

The file object is the engine's lazy ``PointFileReader``, so parsing reads only the
chunks it touches. dissect.hypervisor does the block translation; this module
adds what the product needs around it: a parent opener that looks inside the
recovery point (dissect would look on the local file system), a check of the
VHDX log, and plain-language errors.
"""

from __future__ import annotations

import contextlib
import io
import logging
import posixpath
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO

from dissect.hypervisor.disk.c_vhd import c_vhd
from dissect.hypervisor.disk.c_vhdx import (
    ALIGNMENT,
    BAT_REGION_GUID,
    FILE_PARAMETERS_GUID,
    LOGICAL_SECTOR_SIZE_GUID,
    METADATA_REGION_GUID,
    PARENT_LOCATOR_GUID,
    VHDX_PARENT_LOCATOR_GUID,
    VIRTUAL_DISK_ID_GUID,
    VIRTUAL_DISK_SIZE_GUID,
    c_vhdx,
)
from dissect.hypervisor.disk.vhd import VHD
from dissect.hypervisor.disk.vhdx import VHDX, BlockAllocationTable, MetadataTable, RegionTable
from dissect.util.stream import AlignedStream

from storage.engine.errors import EngineError

from .errors import ItemLevelError, ParentDiskMissing, UnreadableDisk, UnsupportedDisk

log = logging.getLogger(__name__)

LOG_NOT_REPLAYED = "the disk's log was not replayed; the newest writes may be missing"
MAX_CHAIN = 64  # Hyper-V allows 50 checkpoints; anything deeper is a loop or garbage
_VHD_DIFFERENCING = 4


@dataclass(frozen=True)
class ParentRef:
    """What a differencing disk says about its parent ([MS-VHDX] 2.6.2.6.1)."""

    child_name: str
    relative_path: str | None
    absolute_path: str | None
    volume_path: str | None
    parent_linkage: str | None  # the parent's DataWriteGuid when the child was made


# What the engine hands out (PointFileReader is an io.RawIOBase) or any binary file object.
DiskFile = BinaryIO | IO[bytes] | io.RawIOBase | io.BufferedIOBase
ParentOpener = Callable[[ParentRef], tuple[str, DiskFile]]


@dataclass
class VirtualDisk:
    """A readable virtual disk. Not thread-safe: open one per request or job."""

    name: str
    format: str  # "vhdx" or "vhd"
    size: int  # virtual size in bytes
    sector_size: int  # logical sector size
    chain: list[str]  # file names, the opened disk first, its base disk last
    warnings: list[str]
    stream: Any = field(repr=False)  # a dissect stream (VHDX/VHD): read/seek like a binary file
    _owned: list[DiskFile] = field(default_factory=list, repr=False)

    def close(self) -> None:
        for fh in self._owned:
            with contextlib.suppress(Exception):
                fh.close()
        self._owned.clear()

    def __enter__(self) -> VirtualDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ChainedVHDX(VHDX):
    """dissect's VHDX with the parent supplied by a callback instead of a local path.

    The constructor mirrors ``VHDX.__init__`` (dissect.hypervisor 3.21) except for
    the parent lookup, which dissect hard-wires to ``Path(fh.name).parent``.
    """

    def __init__(self, fh: Any, open_parent: Callable[[Any], VHDX]) -> None:
        self.fh = fh
        self.path = None
        self.file_identifier = c_vhdx.file_identifier(fh)
        if self.file_identifier.signature != b"vhdxfile":
            raise UnreadableDisk("not a VHDX file (no 'vhdxfile' signature)")
        fh.seek(1 * ALIGNMENT)
        header1 = c_vhdx.header(fh)
        fh.seek(2 * ALIGNMENT)
        header2 = c_vhdx.header(fh)
        valid = [h for h in (header1, header2) if h.signature == b"head"]
        if not valid:
            raise UnreadableDisk("both VHDX headers are damaged")
        self.header = max(valid, key=lambda h: h.sequence_number)
        self.headers = [header1, header2]
        try:
            self.region_table = RegionTable(fh, 3 * ALIGNMENT)
        except Exception:
            # The two region tables are copies of each other; one torn write damages only one.
            self.region_table = RegionTable(fh, 4 * ALIGNMENT)
        self.region_tables = [self.region_table]
        metadata_entry = self.region_table.get(METADATA_REGION_GUID)
        self.metadata = MetadataTable(fh, metadata_entry.file_offset, metadata_entry.length)
        self.size = self.metadata.get(VIRTUAL_DISK_SIZE_GUID)
        file_parameters = self.metadata.get(FILE_PARAMETERS_GUID)
        self.block_size = file_parameters.block_size
        self.has_parent = file_parameters.has_parent
        self.sector_size = self.metadata.get(LOGICAL_SECTOR_SIZE_GUID)
        _check_geometry(self.size, self.block_size, self.sector_size)
        self.id = uuid.UUID(bytes_le=self.metadata.get(VIRTUAL_DISK_ID_GUID).virtual_disk_id)
        self._sectors_per_block = self.block_size // self.sector_size
        self._chunk_ratio = ((2**23) * self.sector_size) // self.block_size
        self.parent = None
        self.parent_locator = None
        if self.has_parent:
            self.parent_locator = self.metadata.get(PARENT_LOCATOR_GUID)
            if self.parent_locator.type != VHDX_PARENT_LOCATOR_GUID:
                raise UnsupportedDisk(f"unknown VHDX parent locator type {self.parent_locator.type}")
            self.parent = open_parent(self.parent_locator)
        bat_entry = self.region_table.get(BAT_REGION_GUID)
        self.bat = BlockAllocationTable(self, bat_entry.file_offset)
        AlignedStream.__init__(self, self.size)

    @property
    def log_guid(self) -> uuid.UUID:
        return uuid.UUID(bytes_le=bytes(self.header.log_guid))

    @property
    def data_write_guid(self) -> uuid.UUID:
        return uuid.UUID(bytes_le=bytes(self.header.data_write_guid))


def _check_geometry(size: int, block_size: int, sector_size: int) -> None:
    if sector_size not in (512, 4096):
        raise UnreadableDisk(f"unsupported logical sector size {sector_size}")
    if not (1 << 20 <= block_size <= 256 << 20) or block_size & (block_size - 1):
        raise UnreadableDisk(f"invalid VHDX block size {block_size}")
    if size <= 0 or size % sector_size:
        raise UnreadableDisk(f"invalid virtual disk size {size}")


def _guid_text(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return str(uuid.UUID(value.strip("{}")))
    except ValueError:
        return value


def _sniff(fh: Any) -> str:
    fh.seek(0)
    head = fh.read(8)
    if head == b"vhdxfile":
        return "vhdx"
    size = fh.seek(0, 2)
    if size >= 512:
        fh.seek(size - 512)
        if fh.read(8) == b"conectix":
            return "vhd"
    if head == b"conectix":  # a dynamic VHD whose trailing footer is lost: dissect needs it
        raise UnreadableDisk("the VHD file's footer is missing (truncated file)")
    raise UnsupportedDisk("not a VHD or VHDX file")


def open_disk(
    fh: DiskFile,
    *,
    name: str = "",
    parent_opener: ParentOpener | None = None,
) -> VirtualDisk:
    """Open ``fh`` (a VHDX, AVHDX or VHD file object) as a virtual disk.

    ``parent_opener`` is called for each differencing disk's parent with a
    :class:`ParentRef` and returns ``(name, file object)``; without it a
    differencing disk raises :class:`ParentDiskMissing`. The returned disk owns
    the parents' file objects (``close()`` closes them), not ``fh``.
    """
    disk = VirtualDisk(name, "", 0, 512, [name], [], fh)
    try:
        fmt = _sniff(fh)
        disk.format = fmt
        if fmt == "vhd":
            fh.seek(fh.seek(0, 2) - 512)
            footer = c_vhd.footer(fh)
            if footer.disk_type == _VHD_DIFFERENCING:
                raise UnsupportedDisk(
                    f"{name or 'the disk'} is a differencing VHD; browsing legacy VHD chains is not "
                    "supported: recover the whole disk files and merge them in Hyper-V"
                )
            vhd = VHD(fh)
            disk.stream, disk.size, disk.sector_size = vhd, vhd.size, 512
        else:
            vhdx = _open_vhdx(fh, name, parent_opener, disk, depth=0)
            disk.stream, disk.size, disk.sector_size = vhdx, vhdx.size, vhdx.sector_size
    except ItemLevelError:
        disk.close()
        raise
    except EngineError as exc:
        disk.close()
        raise UnreadableDisk(f"the backup data of {name or 'the disk'} cannot be read: {exc}") from exc
    except Exception as exc:
        disk.close()
        log.info("cannot parse virtual disk %s", name, exc_info=True)
        raise UnreadableDisk(
            f"{name or 'the virtual disk'} could not be read as a {disk.format.upper() or 'virtual disk'} "
            "file: it looks damaged"
        ) from exc
    return disk


def _open_vhdx(
    fh: Any, name: str, parent_opener: ParentOpener | None, disk: VirtualDisk, depth: int
) -> _ChainedVHDX:
    def open_parent(locator: Any) -> VHDX:
        entries: dict[str, str] = dict(locator.entries)
        ref = ParentRef(
            child_name=name,
            relative_path=entries.get("relative_path"),
            absolute_path=entries.get("absolute_win32_path"),
            volume_path=entries.get("volume_path"),
            parent_linkage=_guid_text(entries.get("parent_linkage")),
        )
        if depth + 1 >= MAX_CHAIN:
            raise UnreadableDisk(f"the differencing disk chain of {disk.name} is longer than {MAX_CHAIN}")
        if parent_opener is None:
            raise ParentDiskMissing(
                f"{name} is a differencing disk and no parent is available "
                f"(it needs {ref.relative_path or ref.absolute_path or 'an unnamed parent'})"
            )
        parent_name, parent_fh = parent_opener(ref)
        disk._owned.append(parent_fh)
        if parent_name in disk.chain:
            raise UnreadableDisk(f"the differencing disk chain of {disk.name} loops at {parent_name}")
        disk.chain.append(parent_name)
        if _sniff(parent_fh) != "vhdx":
            raise UnsupportedDisk(f"the parent {parent_name} of {name} is not a VHDX file")
        parent = _open_vhdx(parent_fh, parent_name, parent_opener, disk, depth + 1)
        if ref.parent_linkage and ref.parent_linkage != str(parent.data_write_guid):
            disk.warnings.append(
                f"{parent_name} was changed after {name} was created from it (parent linkage "
                "mismatch); Hyper-V would refuse this chain and the data shown may be inconsistent"
            )
        return parent

    fh.seek(0)
    vhdx = _ChainedVHDX(fh, open_parent)
    if vhdx.log_guid != uuid.UUID(int=0):
        warning = f"{name}: {LOG_NOT_REPLAYED}" if name else LOG_NOT_REPLAYED
        disk.warnings.append(warning)
    return vhdx


def resolve_parent(ref: ParentRef, names: Iterable[str]) -> str:
    """The name, among a recovery point's file names, of the parent ``ref`` describes.

    Hyper-V writes ``relative_path`` relative to the child's folder (``.\\base.vhdx``);
    the point keeps the VM's folder layout, so that is tried first. The absolute
    path's file name is the fallback for chains whose parent lived in another folder.
    """
    names = list(names)
    by_lower: dict[str, list[str]] = {}
    for n in names:
        by_lower.setdefault(n.lower(), []).append(n)
    child_dir = posixpath.dirname(ref.child_name)
    if ref.relative_path:
        rel = ref.relative_path.replace("\\", "/")
        candidate = posixpath.normpath(posixpath.join(child_dir, rel)).lstrip("/")
        if not candidate.startswith("../") and candidate.lower() in by_lower:
            hits = by_lower[candidate.lower()]
            return candidate if candidate in hits else hits[0]
    for path in (ref.absolute_path, ref.relative_path):
        if not path:
            continue
        base = path.replace("\\", "/").rsplit("/", 1)[-1].lower()
        hits = [n for n in names if posixpath.basename(n).lower() == base and n != ref.child_name]
        same_dir = [n for n in hits if posixpath.dirname(n) == child_dir]
        if len(same_dir) == 1:
            return same_dir[0]
        if len(hits) == 1:
            return hits[0]
    wanted = ref.relative_path or ref.absolute_path or "its parent"
    raise ParentDiskMissing(
        f"the differencing disk {ref.child_name} needs its parent {wanted}, which is not in this "
        "recovery point"
    )


def open_point_disk(
    names: Iterable[str],
    open_file: Callable[[str], DiskFile],
    name: str,
) -> VirtualDisk:
    """Open the disk ``name`` of a recovery point, following a differencing chain inside it.

    ``names`` are all file names of the point and ``open_file(name)`` opens one
    (e.g. ``lambda n: datastore.open_file(point_id, n)``). The disk owns every file
    it opened: ``close()`` (or ``with``) releases them.
    """
    names = list(names)

    def parent_opener(ref: ParentRef) -> tuple[str, DiskFile]:
        parent = resolve_parent(ref, names)
        return parent, open_file(parent)

    fh = open_file(name)
    try:
        disk = open_disk(fh, name=name, parent_opener=parent_opener)
    except BaseException:
        fh.close()
        raise
    disk._owned.insert(0, fh)
    return disk
