"""One small adapter per file system, so browsing and copying have a single shape.

Each adapter hides what must never reach the administrator (NTFS metafiles, the
``.``/``..`` entries of ext and FAT) and turns the parser's objects into
``NodeInfo``. Path lookups are done here, component by component with literal
names, instead of dissect's ``get(path)``: dissect follows reparse points while
resolving and treats ``/`` and ``\\`` alike, and a guest name may contain either.
"""

from __future__ import annotations

import calendar
import io
import stat
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, BinaryIO, NamedTuple

from dissect.extfs import ExtFS
from dissect.fat import FATFS, ExFAT
from dissect.fat.c_fat import Fattype
from dissect.ntfs import NTFS
from dissect.ntfs.c_ntfs import ATTRIBUTE_TYPE_CODE, IO_REPARSE_TAG
from dissect.ntfs.util import segment_reference
from dissect.util.stream import RunlistStream
from dissect.util.ts import dostimestamp

# MFT records 0-23 are the NTFS metafiles ($MFT, $Bitmap, $Extend...) and reserved
# records; the root's own "." entry (record 5) is among them too.
NTFS_FIRST_USER_RECORD = 24
_NTFS_LINK_TAGS = {IO_REPARSE_TAG.SYMLINK, IO_REPARSE_TAG.MOUNT_POINT, IO_REPARSE_TAG.LX_SYMLINK}
_FILE_ATTRIBUTE_HIDDEN = 0x2
_FILE_ATTRIBUTE_ENCRYPTED = 0x4000
_FAT_LOWER_BASE, _FAT_LOWER_EXT = 0x08, 0x10  # DIR_NTRes flags for 8.3 names shown in lower case


@dataclass(frozen=True)
class NodeInfo:
    kind: str  # "file", "dir", "link" or "other"
    size: int
    mtime_ns: int | None
    atime_ns: int | None
    btime_ns: int | None  # creation ("birth") time
    hidden: bool = False
    link_target: str | None = None
    node_id: int | None = None  # stable per file system: spots folder loops and hard-linked folders
    unreadable: str | None = None  # why the data cannot be restored, None when it can


class Child(NamedTuple):
    name: str
    node: Any  # None when the entry's record could not be read
    error: str | None = None


class Adapter(ABC):
    kind: str  # FsKind value
    fs: Any  # the dissect file system object, for what the adapter does not cover (data runs)
    label: str = ""
    name: str = ""  # "NTFS", "FAT32", "ext4"...

    @abstractmethod
    def root(self) -> Any: ...

    @abstractmethod
    def children(self, node: Any) -> Iterator[Child]: ...

    @abstractmethod
    def info(self, node: Any) -> NodeInfo: ...

    @abstractmethod
    def open(self, node: Any) -> BinaryIO: ...

    def find(self, node: Any, name: str) -> Child | None:
        """The child called exactly ``name``; case-insensitive only when no exact match exists."""
        folded = None
        for child in self.children(node):
            if child.error is not None:
                continue
            if child.name == name:
                return child
            if folded is None and child.name.casefold() == name.casefold():
                folded = child
        return folded


def _dos_ns(value: int, centiseconds: int = 0, utc_offset_minutes: int = 0) -> int | None:
    """FAT/exFAT timestamps: local time of the guest. Without an offset they are taken as UTC."""
    if not value:
        return None
    try:
        naive = dostimestamp(value, centiseconds)
    except (ValueError, OverflowError):
        return None
    seconds = calendar.timegm(naive.timetuple()) - utc_offset_minutes * 60
    return seconds * 1_000_000_000 + naive.microsecond * 1000


class NtfsAdapter(Adapter):
    kind = "ntfs"
    name = "NTFS"

    def __init__(self, stream: BinaryIO) -> None:
        self.fs = NTFS(stream)
        try:
            self.label = self.fs.volume_name or ""
        except Exception:
            self.label = ""

    def root(self) -> Any:
        return self.fs.mft.root

    def children(self, node: Any) -> Iterator[Child]:
        for entry in node.iterdir(ignore_dos=True):
            if segment_reference(entry.header.FileReference) < NTFS_FIRST_USER_RECORD:
                continue
            name = entry.attribute.file_name
            try:
                record = entry.dereference()
                record.attributes  # noqa: B018 - parse now so a broken record is reported here
            except Exception:
                yield Child(name, None, "its file record is damaged")
                continue
            yield Child(name, record, None)

    def find(self, node: Any, name: str) -> Child | None:
        try:
            entry = node.index("$I30").search(name)
            if (
                entry.attribute.file_name == name
                and segment_reference(entry.header.FileReference) >= NTFS_FIRST_USER_RECORD
            ):
                return Child(name, entry.dereference(), None)
        except (KeyError, NotImplementedError):
            pass
        except Exception:  # noqa: S110 - an inconsistent B-tree still lists: fall back to a scan
            pass
        return super().find(node, name)

    def info(self, node: Any) -> NodeInfo:
        si = node.attributes[ATTRIBUTE_TYPE_CODE.STANDARD_INFORMATION]
        mtime = atime = btime = None
        attrs = 0
        if si:
            mtime, atime, btime = si.last_modification_time_ns, si.last_access_time_ns, si.creation_time_ns
            attrs = si.file_attributes
        seg = getattr(node, "segment", None)
        base = NodeInfo("dir", 0, mtime, atime, btime, bool(attrs & _FILE_ATTRIBUTE_HIDDEN), node_id=seg)
        if node.is_reparse_point():
            tag = node.attributes[ATTRIBUTE_TYPE_CODE.REPARSE_POINT].tag
            if tag in _NTFS_LINK_TAGS:
                try:
                    target = node.reparse_point_name or node.reparse_point_substitute_name
                except Exception:
                    target = None
                return replace(base, kind="link", link_target=target)
            if not node.is_dir():
                tag_name = getattr(tag, "name", None) or f"0x{int(tag):08x}"
                reason = (
                    f"it is a Windows reparse point ({tag_name}: a deduplicated, compressed or cloud file) "
                    "whose data is not stored in the file itself"
                )
                return replace(base, kind="file", size=self._size(node), unreadable=reason)
        if node.is_dir():
            return base
        unreadable = "it is encrypted with EFS" if attrs & _FILE_ATTRIBUTE_ENCRYPTED else None
        return replace(base, kind="file", size=self._size(node), unreadable=unreadable)

    @staticmethod
    def _size(node: Any) -> int:
        try:
            return int(node.size())
        except FileNotFoundError:
            return 0

    def open(self, node: Any) -> BinaryIO:
        try:
            return node.open()
        except FileNotFoundError:
            return io.BytesIO(b"")


class ClusterLoop(Exception):
    """A FAT cluster chain that comes back on itself (a damaged FAT)."""


def _loop_safe_chain(chain: Callable[[int], Iterator[int]]) -> Callable[[int], Iterator[int]]:
    """dissect follows a cluster chain until its end marker; a damaged FAT whose chain loops
    would make it build a run list forever. Brent's cycle detection stops it after at most
    twice the chain's real length, in constant memory."""

    def safe(cluster: int) -> Iterator[int]:
        saved, power, steps = None, 1, 0
        for current in chain(cluster):
            if current == saved:
                raise ClusterLoop(f"the cluster chain starting at {cluster} loops")
            yield current
            steps += 1
            if steps == power:
                saved, power, steps = current, power * 2, 0

    return safe


class FatAdapter(Adapter):
    kind = "fat"

    def __init__(self, stream: BinaryIO) -> None:
        self.fs = FATFS(stream)
        self.fs.fat.chain = _loop_safe_chain(self.fs.fat.chain)  # type: ignore[method-assign]
        self.name = {Fattype.FAT12: "FAT12", Fattype.FAT16: "FAT16", Fattype.FAT32: "FAT32"}.get(
            self.fs.type, "FAT"
        )
        self.label = self.fs.volume_label if self.fs.volume_label != "NO NAME" else ""

    def root(self) -> Any:
        return self.fs.root

    def children(self, node: Any) -> Iterator[Child]:
        for entry in node.iterdir():
            if entry.is_volume_id() or entry.name in (".", ".."):
                continue
            yield Child(self._name(entry), entry, None)

    @staticmethod
    def _name(entry: Any) -> str:
        """The name Windows shows: without a long name, the NT case flags lower-case the short one."""
        if entry.ldirents:
            return str(entry.name)
        flags = entry.dirent.DIR_NTRes
        base, dot, ext = str(entry.short_name).partition(".")
        if flags & _FAT_LOWER_BASE:
            base = base.lower()
        if flags & _FAT_LOWER_EXT:
            ext = ext.lower()
        return base + dot + ext

    def info(self, node: Any) -> NodeInfo:
        d = getattr(node, "dirent", None)
        if d is None:  # the root directory has no entry of its own
            return NodeInfo("dir", 0, None, None, None, node_id=node.cluster)
        mtime = _dos_ns((d.DIR_WrtDate << 16) | d.DIR_WrtTime)
        atime = _dos_ns(d.DIR_LstAccDate << 16)
        btime = _dos_ns((d.DIR_CrtDate << 16) | d.DIR_CrtTime, d.DIR_CrtTimeTenth)
        if node.is_directory():
            return NodeInfo("dir", 0, mtime, atime, btime, node.is_hidden(), node_id=node.cluster)
        return NodeInfo("file", node.size, mtime, atime, btime, node.is_hidden(), node_id=node.cluster)

    def open(self, node: Any) -> BinaryIO:
        if node.size == 0:
            return io.BytesIO(b"")
        return node.open()


@dataclass
class _ExfatNode:
    name: str
    entry: Any  # c_exfat.FILE
    children: Any  # OrderedDict for folders, None for files


class ExfatAdapter(Adapter):
    kind = "exfat"
    name = "exFAT"

    def __init__(self, stream: BinaryIO) -> None:
        self.fs = ExFAT(stream)
        self.label = self.fs.volume_label or ""

    def root(self) -> Any:
        entry, kids = self.fs.files["/"]
        return _ExfatNode("/", entry, kids)

    def children(self, node: Any) -> Iterator[Child]:
        for name, (entry, kids) in (node.children or {}).items():
            yield Child(name, _ExfatNode(name, entry, kids), None)

    @staticmethod
    def _offset(tz: int) -> int:
        if not tz & 0x80:  # no offset recorded: local time of an unknown zone
            return 0
        quarter_hours = tz & 0x7F
        if quarter_hours >= 64:
            quarter_hours -= 128
        return quarter_hours * 15

    def info(self, node: Any) -> NodeInfo:
        m = node.entry.metadata
        if node.name == "/":
            return NodeInfo("dir", 0, None, None, None, node_id=node.entry.stream.location)
        mtime = _dos_ns(m.modified_time, m.modified_offset, self._offset(m.modified_timezone))
        atime = _dos_ns(m.access_time, 0, self._offset(m.access_timezone))
        btime = _dos_ns(m.create_time, m.create_offset, self._offset(m.create_timezone))
        hidden = bool(m.attributes.hidden)
        loc = node.entry.stream.location
        if m.attributes.directory:
            return NodeInfo("dir", 0, mtime, atime, btime, hidden, node_id=loc)
        return NodeInfo("file", int(node.entry.stream.data_length), mtime, atime, btime, hidden, node_id=loc)

    def open(self, node: Any) -> BinaryIO:
        stream = node.entry.stream
        size = int(stream.data_length)
        if size == 0 or stream.location < 2:
            return io.BytesIO(b"")
        fs = self.fs
        spc = fs.cluster_size // fs.sector_size
        if stream.flags.not_fragmented:
            clusters = -(-size // fs.cluster_size)
            runlist = [(fs.cluster_to_sector(stream.location), clusters * spc)]
        else:
            runlist = fs.runlist(stream.location, not_fragmented=False)
        return RunlistStream(fs.filesystem, runlist, size, fs.sector_size)


class ExtAdapter(Adapter):
    kind = "ext"

    def __init__(self, stream: BinaryIO) -> None:
        self.fs = ExtFS(stream)
        self.name = {2: "ext2", 3: "ext3", 4: "ext4"}.get(int(self.fs.type), "ext")
        self.label = self.fs.volume_name or ""

    def root(self) -> Any:
        return self.fs.root

    def children(self, node: Any) -> Iterator[Child]:
        for inode in node.iterdir():
            if inode.filename in (".", ".."):
                continue
            yield Child(inode.filename, inode, None)

    def info(self, node: Any) -> NodeInfo:
        ft = node.filetype
        hidden = bool(node.filename and node.filename.startswith(".") and node.filename not in (".", ".."))
        base = NodeInfo("other", 0, node.mtime_ns, node.atime_ns, node.crtime_ns, hidden, node_id=node.inum)
        if ft == stat.S_IFDIR:
            return replace(base, kind="dir")
        if ft == stat.S_IFLNK:
            try:
                target = node.link
            except Exception:
                target = None
            return replace(base, kind="link", link_target=target)
        if ft == stat.S_IFREG:
            return replace(base, kind="file", size=int(node.size))
        return base

    def open(self, node: Any) -> BinaryIO:
        return node.open()


def ns_to_datetime(ns: int | None) -> datetime | None:
    """Aware UTC datetime; None for missing or absurd values (a damaged record)."""
    if ns is None:
        return None
    try:
        return datetime.fromtimestamp(ns / 1_000_000_000, UTC)
    except (OverflowError, OSError, ValueError):
        return None
