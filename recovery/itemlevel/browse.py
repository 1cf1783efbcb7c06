"""Browsing a volume: list folders, look at one item, open one file for download.

Paths are ``/``-separated guest names from the volume root (``/Users/ann/a.txt``);
each component is matched literally (exact case first, then case-insensitively),
so a guest name containing ``\\`` is just a name. Links are listed but never
followed, so a path can only lead to items stored on this volume.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO

from storage.engine.errors import EngineError
from storage.vdisk.filesystems import Adapter, NodeInfo, ns_to_datetime

from .errors import (
    IsADirectory,
    ItemLevelError,
    ItemNotFound,
    NotADirectory,
    UnreadableDisk,
    UnreadableFileSystem,
)
from .names import printable
from .volumes import RAW_HINT, Volume, mount

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """One item of a folder listing.

    ``ctime`` is the *creation* time (NTFS, FAT, exFAT, ext4 crtime), None when the
    file system keeps none; all times are aware UTC datetimes (FAT keeps the
    guest's local time and is shown as if it were UTC). ``name`` may hold lone
    surrogates for undecodable ext names: show ``display_name``.
    """

    name: str
    path: str
    is_dir: bool
    size: int
    mtime: datetime | None
    ctime: datetime | None
    atime: datetime | None
    is_symlink: bool
    link_target: str | None = None
    hidden: bool = False
    error: str | None = None  # why this item cannot be opened or restored

    @property
    def display_name(self) -> str:
        return printable(self.name)

    @property
    def display_path(self) -> str:
        return printable(self.path)


def split_path(path: str) -> list[str]:
    if not isinstance(path, str):
        raise ItemNotFound(f"invalid path {path!r}")
    return [p for p in path.split("/") if p]


def join_path(parts: list[str]) -> str:
    return "/" + "/".join(parts)


@contextlib.contextmanager
def fs_errors(volume: Volume, doing: str) -> Iterator[None]:
    """Turn any parser failure into an ItemLevelError with a sentence an administrator can act on."""
    try:
        yield
    except ItemLevelError:
        raise
    except EngineError as exc:
        raise UnreadableDisk(f"the backup data of this disk cannot be read while {doing}: {exc}") from exc
    except Exception as exc:
        log.info("file system error on %s while %s", volume.describe(), doing, exc_info=True)
        raise UnreadableFileSystem(
            f"the {volume.filesystem_name} file system on {volume.describe()} could not be read while "
            f"{doing}: it looks damaged; {RAW_HINT}"
        ) from exc


def make_entry(name: str, path: str, info: NodeInfo | None, error: str | None = None) -> Entry:
    if info is None:
        return Entry(name, path, False, 0, None, None, None, False, error=error or "unreadable")
    return Entry(
        name=name,
        path=path,
        is_dir=info.kind == "dir",
        size=info.size,
        mtime=ns_to_datetime(info.mtime_ns),
        ctime=ns_to_datetime(info.btime_ns),
        atime=ns_to_datetime(info.atime_ns),
        is_symlink=info.kind == "link",
        link_target=info.link_target,
        hidden=info.hidden,
        error=error or info.unreadable,
    )


def resolve(volume: Volume, path: str) -> tuple[Adapter, Any, NodeInfo, list[str]]:
    """(adapter, node, info, components) of the item at ``path``."""
    parts = split_path(path)
    fs = mount(volume)
    with fs_errors(volume, f"opening {printable(path)!r}"):
        node = fs.root()
        info = fs.info(node)
        for i, part in enumerate(parts):
            if info.kind == "link":
                raise NotADirectory(
                    f"{printable(join_path(parts[:i]))} is a link; links are not followed (it points to "
                    f"{printable(info.link_target or '?')})"
                )
            if info.kind != "dir":
                raise NotADirectory(f"{printable(join_path(parts[:i]))} is not a folder")
            child = fs.find(node, part)
            if child is None:
                raise ItemNotFound(f"{printable(join_path(parts[: i + 1]))} does not exist on this volume")
            parts[i] = child.name  # the name as stored, when it was matched case-insensitively
            node = child.node
            info = fs.info(node)
    return fs, node, info, parts


def _sort_key(e: Entry) -> tuple[int, str, str]:
    return (0 if e.is_dir else 1, e.name.casefold(), e.name)


def iter_dir(volume: Volume, path: str = "/") -> Iterator[Entry]:
    """The items of the folder at ``path`` in on-disk order, one at a time.

    For very large folders: a view can stop after the first N entries instead of
    reading every file record of the folder.
    """
    fs, node, info, parts = resolve(volume, path)
    if info.kind == "link":
        raise NotADirectory(
            f"{printable(join_path(parts))} is a link; links are not followed (it points to "
            f"{printable(info.link_target or '?')})"
        )
    if info.kind != "dir":
        raise NotADirectory(f"{printable(join_path(parts))} is not a folder")
    return _iter_children(volume, fs, node, parts)


def _iter_children(volume: Volume, fs: Adapter, node: Any, parts: list[str]) -> Iterator[Entry]:
    with fs_errors(volume, f"listing {printable(join_path(parts))!r}"):
        for child in fs.children(node):
            child_path = join_path([*parts, child.name])
            if child.error is not None:
                yield make_entry(child.name, child_path, None, child.error)
                continue
            try:
                child_info = fs.info(child.node)
            except EngineError:
                raise
            except Exception:
                log.info("unreadable entry %r", child_path, exc_info=True)
                yield make_entry(child.name, child_path, None, "its metadata is damaged")
                continue
            yield make_entry(child.name, child_path, child_info)


def list_dir(volume: Volume, path: str = "/") -> list[Entry]:
    """The items of the folder at ``path``: folders first, then by name."""
    return sorted(iter_dir(volume, path), key=_sort_key)


def stat(volume: Volume, path: str) -> Entry:
    _, _, info, parts = resolve(volume, path)
    name = parts[-1] if parts else ""
    return make_entry(name, join_path(parts), info)


class ItemReader(io.RawIOBase):
    """A seekable, read-only file object over one guest file; errors come out as ItemLevelError."""

    def __init__(self, volume: Volume, path: str, stream: BinaryIO, size: int) -> None:
        super().__init__()
        self._volume = volume
        self._stream = stream
        self.name = path
        self.size = size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._stream.seek(offset, whence)

    def tell(self) -> int:
        return self._stream.tell()

    def readinto(self, b: Any) -> int:
        mv = memoryview(b).cast("B")
        with fs_errors(self._volume, f"reading {printable(self.name)!r}"):
            data = self._stream.read(len(mv))
        mv[: len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        with fs_errors(self._volume, f"reading {printable(self.name)!r}"):
            if size is None or size < 0:
                return self._stream.read()
            return self._stream.read(size)

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                self._stream.close()
        super().close()


def open_node(volume: Volume, fs: Adapter, node: Any, info: NodeInfo, path: str) -> ItemReader:
    if info.kind == "dir":
        raise IsADirectory(f"{printable(path)} is a folder")
    if info.kind == "link":
        raise ItemNotFound(
            f"{printable(path)} is a link to {printable(info.link_target or '?')}; links are not followed"
        )
    if info.kind != "file":
        raise ItemNotFound(f"{printable(path)} is a special file (device, pipe or socket) and holds no data")
    if info.unreadable:
        raise UnreadableFileSystem(f"{printable(path)} cannot be read: {info.unreadable}")
    with fs_errors(volume, f"opening {printable(path)!r}"):
        stream = fs.open(node)
    return ItemReader(volume, path, stream, info.size)


def open_file(volume: Volume, path: str) -> ItemReader:
    """A binary file object for one file (``.size`` is its length), for streaming a download."""
    fs, node, info, parts = resolve(volume, path)
    return open_node(volume, fs, node, info, join_path(parts))
