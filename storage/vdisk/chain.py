"""Open a virtual disk file (VHDX, AVHDX chain, VHD) as one readable stream of guest sectors.

Differencing disks name their parent in a parent locator; this module never looks
for the parent itself but asks a caller-supplied *parent opener* (a recovery
point looks inside the point; ``open_local_parent`` looks beside the child on this machine).
VHDX files are read through the structure ``vhdx.read_layout`` parsed and
checked (checksums, truncation), so the bytes a backup maps and the bytes a
browser reads come from one parser. Legacy VHD files are read with
dissect.hypervisor; differencing VHD chains are refused.

What is checked along a chain: the parent locator type, the chain's depth and
loops, that each parent is a VHDX, and -- as warnings, because the data can
still be shown -- the parent linkage (the parent changed after the child was
made), a different virtual size, and a log that was not replayed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from dissect.hypervisor.disk.vhd import VHD
from dissect.util.stream import AlignedStream

from .errors import ParentDiskMissing, UnreadableDisk, UnsupportedDisk, VdiskError
from .vhd import check_vhd, has_footer, read_vhd_footer
from .vhdx import (
    PAYLOAD_BLOCK_FULLY_PRESENT,
    PAYLOAD_BLOCK_NOT_PRESENT,
    PAYLOAD_BLOCK_PARTIALLY_PRESENT,
    SB_BLOCK_PRESENT,
    VHDX_PARENT_LOCATOR_TYPE,
    VhdxLayout,
    file_errors,
    read_layout,
)

log = logging.getLogger(__name__)

LOG_NOT_REPLAYED = "the disk's log was not replayed; the newest writes may be missing"
MAX_CHAIN = 64  # Hyper-V allows 50 checkpoints; anything deeper is a loop or garbage


@dataclass(frozen=True)
class ParentRef:
    """What a differencing disk says about its parent ([MS-VHDX] 2.6.2.6.1)."""

    child_name: str
    relative_path: str | None
    absolute_path: str | None
    volume_path: str | None
    parent_linkage: str | None  # the parent's DataWriteGuid when the child was made


# Any binary file object: an open file, io.BytesIO, the engine's lazy point reader...
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
    stream: Any = field(repr=False)  # read/seek like a binary file over the guest's sectors
    # Exceptions the caller's file objects raise for their own reasons (e.g. a backup
    # store's read errors): passed through as they are, never taken for a damaged disk.
    source_errors: tuple[type[BaseException], ...] = field(default=(), repr=False)
    _owned: list[DiskFile] = field(default_factory=list, repr=False)

    def close(self) -> None:
        for fh in self._owned:
            with contextlib.suppress(Exception):
                fh.close()
        self._owned.clear()

    @property
    def passthrough_errors(self) -> tuple[type[BaseException], ...]:
        """What a parser failure handler must re-raise as is: our own errors and the source's."""
        return (VdiskError, *self.source_errors)

    @contextlib.contextmanager
    def parsing(self, message: str, error: type[VdiskError] = UnreadableDisk) -> Iterator[None]:
        """A parser's failure inside the block becomes ``error(message)``; our own errors and
        the source's pass unchanged, so a read error is never reported as a damaged disk."""
        try:
            yield
        except self.passthrough_errors:
            raise
        except Exception as exc:
            log.info("%s", message, exc_info=True)
            raise error(message) from exc

    def own(self, fh: DiskFile) -> None:
        """Close ``fh`` with the disk."""
        self._owned.append(fh)

    def __enter__(self) -> VirtualDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VhdxStream(AlignedStream):
    """The guest's view of one VHDX file: payload blocks through the BAT, the rest from
    the parent (a differencing disk) or zeros."""

    def __init__(self, fh: Any, layout: VhdxLayout, parent: VhdxStream | None = None) -> None:
        self.fh = fh
        self.layout = layout
        self.parent = parent
        super().__init__(layout.virtual_size)

    def _from_parent(self, offset: int, length: int) -> bytes:
        if self.parent is None:
            return bytes(length)
        self.parent.seek(offset)
        data = self.parent.read(length)
        return data + bytes(length - len(data))  # a smaller parent reads as zeros past its end

    def _from_file(self, offset: int, length: int) -> bytes:
        self.fh.seek(offset)
        data = self.fh.read(length) or b""
        return data + bytes(length - len(data))

    def _partial(self, block: int, file_offset: int, within: int, length: int) -> bytes:
        """A partially present block: its chunk's sector bitmap says, sector by sector,
        whether the data is in this file (1) or in the parent (0)."""
        lay = self.layout
        ss = lay.logical_sector_size
        state, bitmap_offset = lay.bitmap_entry(block // lay.chunk_ratio)
        virtual = block * lay.block_size + within
        if state != SB_BLOCK_PRESENT or not bitmap_offset:
            return self._from_parent(virtual, length)
        first = (block % lay.chunk_ratio) * (lay.block_size // ss) + within // ss
        count = -(-length // ss)
        self.fh.seek(bitmap_offset + first // 8)
        bits = self.fh.read((first % 8 + count + 7) // 8)
        out: list[bytes] = []
        run_start, run_bit = 0, None
        for i in range(count + 1):
            if i < count:
                k = first % 8 + i
                bit = (bits[k // 8] >> (k % 8)) & 1 if k // 8 < len(bits) else 0
                if bit == run_bit:
                    continue
            if run_bit is not None:
                start, n = run_start * ss, (i - run_start) * ss
                if run_bit:
                    out.append(self._from_file(file_offset + within + start, n))
                else:
                    out.append(self._from_parent(virtual + start, n))
            if i < count:
                run_start, run_bit = i, bit
        return b"".join(out)[:length]

    def _read(self, offset: int, length: int) -> bytes:
        lay = self.layout
        end = min(offset + length, lay.virtual_size)
        out: list[bytes] = []
        pos = offset
        while pos < end:
            block, within = divmod(pos, lay.block_size)
            n = min(lay.block_size - within, end - pos)
            state, file_offset = lay.block_entry(block)
            if state == PAYLOAD_BLOCK_FULLY_PRESENT and file_offset:
                out.append(self._from_file(file_offset + within, n))
            elif state == PAYLOAD_BLOCK_PARTIALLY_PRESENT and file_offset:
                out.append(self._partial(block, file_offset, within, n))
            elif state == PAYLOAD_BLOCK_NOT_PRESENT:
                out.append(self._from_parent(pos, n))
            else:  # zero, unmapped, undefined: the guest reads zeros
                out.append(bytes(n))
            pos += n
        return b"".join(out)


def sniff(fh: Any) -> str:
    """ "vhdx" or "vhd", from the file's signature or footer."""
    fh.seek(0)
    head = fh.read(8)
    if head == b"vhdxfile":
        return "vhdx"
    if has_footer(fh):
        return "vhd"
    if head == b"conectix":  # a dynamic VHD whose trailing footer is lost
        raise UnreadableDisk("the VHD file's footer is missing (truncated file)")
    raise UnsupportedDisk("not a VHD or VHDX file")


def _guid_text(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return str(uuid.UUID(value.strip("{}")))
    except ValueError:
        return value


def open_disk(
    fh: DiskFile,
    *,
    name: str = "",
    parent_opener: ParentOpener | None = None,
    source_errors: Sequence[type[BaseException]] = (),
) -> VirtualDisk:
    """Open ``fh`` (a VHDX, AVHDX or VHD file object) as a virtual disk.

    ``parent_opener`` is called for each differencing disk's parent with a
    :class:`ParentRef` and returns ``(name, file object)``; without it a
    differencing disk raises :class:`ParentDiskMissing`. Errors are VdiskError
    subclasses, the parent opener's own exceptions and ``source_errors``, unchanged.
    The returned disk owns the parents' file objects (``close()`` closes them), not ``fh``.
    """
    disk = VirtualDisk(name, "", 0, 512, [name], [], fh, tuple(source_errors))
    try:
        disk.format = sniff(fh)
        if disk.format == "vhd":
            _open_vhd(fh, disk)
        else:
            vhdx = _open_vhdx(fh, name, parent_opener, disk, depth=0)
            disk.stream, disk.size = vhdx, vhdx.layout.virtual_size
            disk.sector_size = vhdx.layout.logical_sector_size
    except BaseException:
        disk.close()
        raise
    return disk


def _label(name: str) -> str:
    return name or "the virtual disk"


def _open_vhd(fh: Any, disk: VirtualDisk) -> None:
    footer = read_vhd_footer(fh)
    if footer.disk_type == "differencing":
        raise UnsupportedDisk(
            f"{disk.name or 'the disk'} is a differencing VHD; browsing legacy VHD chains is not "
            "supported: recover the whole disk files and merge them in Hyper-V"
        )
    try:
        check_vhd(fh, footer)
    except UnreadableDisk as exc:
        raise UnreadableDisk(f"{_label(disk.name)} could not be read as a VHD file: {exc}") from exc
    with disk.parsing(f"{_label(disk.name)} could not be read as a VHD file: it looks damaged"):
        vhd = VHD(fh)
    disk.stream, disk.size, disk.sector_size = vhd, vhd.size, 512


def _open_vhdx(
    fh: Any, name: str, parent_opener: ParentOpener | None, disk: VirtualDisk, depth: int
) -> VhdxStream:
    try:
        layout = read_layout(fh)
    except UnreadableDisk as exc:
        raise UnreadableDisk(f"{_label(name)} could not be read as a VHDX file: {exc}") from exc
    parent = None
    if layout.has_parent:
        if layout.parent_locator_type != VHDX_PARENT_LOCATOR_TYPE:
            raise UnsupportedDisk(f"unknown VHDX parent locator type {layout.parent_locator_type}")
        parent = _open_parent(layout, name, parent_opener, disk, depth)
    if not layout.log_guid_zero:
        disk.warnings.append(f"{name}: {LOG_NOT_REPLAYED}" if name else LOG_NOT_REPLAYED)
    return VhdxStream(fh, layout, parent)


def _open_parent(
    layout: VhdxLayout, name: str, parent_opener: ParentOpener | None, disk: VirtualDisk, depth: int
) -> VhdxStream:
    entries = layout.parent_locator
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
    disk.own(parent_fh)
    if parent_name in disk.chain:
        raise UnreadableDisk(f"the differencing disk chain of {disk.name} loops at {parent_name}")
    disk.chain.append(parent_name)
    if sniff(parent_fh) != "vhdx":
        raise UnsupportedDisk(f"the parent {parent_name} of {name} is not a VHDX file")
    parent = _open_vhdx(parent_fh, parent_name, parent_opener, disk, depth + 1)
    if ref.parent_linkage and ref.parent_linkage != str(parent.layout.data_write_guid):
        disk.warnings.append(
            f"{parent_name} was changed after {name} was created from it (parent linkage "
            "mismatch); Hyper-V would refuse this chain and the data shown may be inconsistent"
        )
    if parent.layout.virtual_size != layout.virtual_size:
        disk.warnings.append(
            f"{parent_name} ({parent.layout.virtual_size} bytes) and {name} ({layout.virtual_size} bytes) "
            "differ in size; Hyper-V would refuse this chain and the data shown may be inconsistent"
        )
    return parent


def open_local_parent(ref: ParentRef) -> tuple[str, DiskFile]:
    """The parent opener for files on this machine: the locator's relative path beside the
    child first (what Hyper-V writes), then the absolute path's file name beside it."""
    folder = Path(ref.child_name).parent
    candidates = []
    if ref.relative_path:
        candidates.append(folder / ref.relative_path.replace("\\", "/"))
    if ref.absolute_path:
        candidates.append(folder / ref.absolute_path.replace("\\", "/").rsplit("/", 1)[-1])
    for path in candidates:
        if path.is_file():
            with file_errors():
                return str(path), path.open("rb")
    wanted = ref.relative_path or ref.absolute_path or "its parent"
    raise ParentDiskMissing(
        f"the differencing disk {ref.child_name} needs its parent {wanted}, which is missing"
    )


def open_path(path: str | Path) -> VirtualDisk:
    """Open a disk file on this machine, following a differencing chain beside it.

    The disk owns every file it opened, ``path`` included: ``close()`` (or ``with``) releases them.
    """
    path = Path(path)
    with file_errors():
        fh = path.open("rb")
    try:
        disk = open_disk(fh, name=str(path), parent_opener=open_local_parent)
    except BaseException:
        fh.close()
        raise
    disk._owned.insert(0, fh)
    return disk
