"""Writing into the destination without ever leaving it.

Everything is created relative to an open directory descriptor (``dir_fd``):
folders are entered with ``O_NOFOLLOW | O_DIRECTORY`` and files are created with
``O_CREAT | O_EXCL | O_NOFOLLOW``, so a symlink planted inside the destination
(before or during the copy) cannot redirect a write. A file is written to a
temporary name and put in place only when complete, so an interrupted copy never
leaves a truncated file under the real name. Also: the raw copies
(``copy_volume_image``, ``copy_disk``) that write one file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat as stat_mod
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from storage.engine.errors import EngineError

from .browse import fs_errors
from .errors import CopyCancelled, DestinationError, ItemLevelError
from .names import encoded_len, printable

if TYPE_CHECKING:
    from storage.vdisk.filesystems import NodeInfo

    from .disk import DiskFile
    from .volumes import Volume

BLOCK = 1 << 20
HOLE = 64 << 10  # zero runs this long (and aligned) are left as holes
TMP_PREFIX = ".hvbs-partial-"
_ZERO = bytes(BLOCK)
_FATAL = {errno.ENOSPC: "is full", errno.EDQUOT: "is over its quota", errno.EROFS: "is read-only"}
_NO_HARDLINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS, errno.EXDEV}
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

ReadGuard = Callable[[], contextlib.AbstractContextManager[None]]


class ItemStatus(StrEnum):
    OK = "ok"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class ItemResult:
    source: str  # guest path on the volume
    kind: str  # "file", "dir", "link" or "other"
    status: ItemStatus
    target: str | None  # written path relative to the destination ("/"-joined); None if nothing written
    bytes: int  # bytes of file data restored
    reason: str = ""  # why it was skipped or failed
    notes: tuple[str, ...] = ()  # name changes and other remarks, for the report


@dataclass(frozen=True)
class CopyProgress:
    bytes_done: int
    bytes_total: int
    items_done: int
    items_total: int
    current: str


ProgressFn = Callable[[CopyProgress], object]
CancelFn = Callable[[], bool]
ThrottleFn = Callable[[int], object]


class Exists(Exception):
    """The name is taken at the destination."""


def raise_if_fatal(exc: OSError) -> None:
    """A full or read-only destination fails every later item too: stop instead."""
    if exc.errno in _FATAL:
        raise DestinationError(f"the destination {_FATAL[exc.errno]}; the restore stopped") from exc


def lexists(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def open_destination(path: str | os.PathLike[str]) -> int:
    """The destination folder's descriptor. The folder itself may be a link the administrator
    chose (a mounted share): it is followed once here; nothing below it ever is."""
    p = os.fspath(path)
    try:
        os.makedirs(p, exist_ok=True)
        return os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise DestinationError(f"cannot open the destination folder {p}: {exc.strerror or exc}") from exc


def commit(tmp: str, final: str, dir_fd: int, replace: bool) -> None:
    if replace:
        # rename() replaces a link *itself*, never what it points to.
        os.rename(tmp, final, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return
    try:
        # link() fails when ``final`` exists: an atomic "rename unless it exists".
        os.link(tmp, final, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except FileExistsError:
        raise Exists(final) from None
    except OSError as exc:
        if exc.errno not in _NO_HARDLINKS:
            raise
        if lexists(final, dir_fd) is not None:  # no hard links (FAT, some shares): check, then rename
            raise Exists(final) from None
        os.rename(tmp, final, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return
    os.unlink(tmp, dir_fd=dir_fd)


def set_times(fd: int, info: NodeInfo | None) -> None:
    if info is None or info.mtime_ns is None:
        return
    atime = info.atime_ns if info.atime_ns is not None else info.mtime_ns
    with contextlib.suppress(OSError, OverflowError, ValueError):
        # A share that refuses a timestamp still gets the data.
        os.utime(fd, ns=(atime, info.mtime_ns))


def _write_sparse(fd: int, data: bytes, pos: int) -> int:
    """Write ``data`` at ``pos`` but its all-zero 64 KiB pieces, which stay holes; returns bytes written"""
    n, i, written = len(data), 0, 0
    view = memoryview(data)
    while i < n:
        j = i
        while j < n and data[j : j + HOLE] != _ZERO[: min(HOLE, n - j)]:
            j += HOLE
        end = min(j, n)
        off = pos + i
        while i < end:
            w = os.pwrite(fd, view[i:end], off)
            i, off, written = i + w, off + w, written + w
        while j < n and data[j : j + HOLE] == _ZERO[: min(HOLE, n - j)]:
            j += HOLE
        i = j
    return written


class CopyState:
    """Results, totals, progress reports, cancellation and throttling of one copy."""

    def __init__(
        self, progress: ProgressFn | None, cancel: CancelFn | None, throttle: ThrottleFn | None
    ) -> None:
        self.progress = progress
        self.cancel = cancel
        self.throttle = throttle
        self.results: list[ItemResult] = []
        self.bytes_done = self.bytes_total = self.items_done = self.items_total = 0
        self._last = 0.0

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel():
            raise CopyCancelled("the restore was cancelled", self.results)

    def add(self, result: ItemResult) -> int:
        self.results.append(result)
        self.items_done += 1
        self.report(result.source)
        return len(self.results) - 1

    def skip(self, src: str, kind: str, reason: str, notes: tuple[str, ...] = ()) -> None:
        self.add(ItemResult(src, kind, ItemStatus.SKIPPED, None, 0, reason, notes))

    def fail(self, src: str, kind: str, reason: str, notes: tuple[str, ...] = ()) -> None:
        self.add(ItemResult(src, kind, ItemStatus.FAILED, None, 0, reason, notes))

    def report(self, current: str, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.25:
            return
        self._last = now
        self.progress(
            CopyProgress(
                self.bytes_done, self.bytes_total, self.items_done, self.items_total, printable(current)
            )
        )

    def write_file(
        self,
        src: Any,
        size: int,
        dir_fd: int,
        final: str,
        *,
        replace: bool,
        info: NodeInfo | None,
        durable: bool,
        label: str,
        guard: ReadGuard,
    ) -> int:
        """Stream ``size`` bytes of ``src`` into ``final`` under ``dir_fd``: sparse, throttled, cancellable"""
        tmp = f"{TMP_PREFIX}{secrets.token_hex(6)}"
        fd = os.open(tmp, _NEW_FILE_FLAGS, 0o644, dir_fd=dir_fd)
        try:
            pos = 0
            while pos < size:
                self.check_cancel()
                with guard():
                    data = src.read(min(BLOCK, size - pos))
                if not data:
                    raise ItemLevelError(f"the data ended after {pos} of {size} bytes")
                n = len(data)
                written = _write_sparse(fd, data, pos)
                if written and self.throttle is not None:
                    self.throttle(written)
                pos += n
                self.bytes_done += n
                self.report(label)
            os.ftruncate(fd, size)
            if durable:
                os.fsync(fd)
            set_times(fd, info)
            os.close(fd)
            fd = -1
            commit(tmp, final, dir_fd, replace)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
        return size


@contextlib.contextmanager
def engine_errors(name: str) -> Iterator[None]:
    try:
        yield
    except EngineError as exc:
        raise ItemLevelError(f"the backup data of {name} cannot be read: {exc}") from exc


def _copy_stream(
    src: Any,
    size: int,
    dest_file: str | os.PathLike[str],
    *,
    overwrite: bool,
    progress: ProgressFn | None,
    cancel: CancelFn | None,
    throttle: ThrottleFn | None,
    durable: bool,
    label: str,
    guard: ReadGuard,
) -> int:
    path = os.path.abspath(os.fspath(dest_file))
    parent, name = os.path.split(path)
    if not name or name in (".", "..") or encoded_len(name) > 255:
        raise DestinationError(f"invalid destination file name {name!r}")
    dir_fd = open_destination(parent)
    state = CopyState(progress, cancel, throttle)
    state.bytes_total, state.items_total = size, 1
    try:
        existing = lexists(name, dir_fd)
        if existing is not None and (not overwrite or stat_mod.S_ISDIR(existing.st_mode)):
            raise DestinationError(f"{path} already exists")
        with guard():
            src.seek(0)
        n = state.write_file(
            src, size, dir_fd, name, replace=overwrite, info=None, durable=durable, label=label, guard=guard
        )
    except Exists:
        raise DestinationError(f"{path} appeared while it was being written") from None
    except OSError as exc:
        raise_if_fatal(exc)
        raise DestinationError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(dir_fd)
    state.items_done = 1
    state.report(label, force=True)
    return n


def copy_volume_image(
    volume: Volume,
    dest_file: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    throttle: ThrottleFn | None = None,
    durable: bool = True,
) -> int:
    """Write the raw bytes of one volume to ``dest_file`` (sparse); returns its size.

    Works for every volume, browsable or not (BitLocker, ReFS, LVM...).
    """
    return _copy_stream(
        volume.open_raw(),
        volume.size,
        dest_file,
        overwrite=overwrite,
        progress=progress,
        cancel=cancel,
        throttle=throttle,
        durable=durable,
        label=volume.describe(),
        guard=lambda: fs_errors(volume, "reading the volume"),
    )


def copy_disk(
    reader: DiskFile,
    dest_file: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    throttle: ThrottleFn | None = None,
    durable: bool = True,
) -> int:
    """Write a point's disk file exactly as stored (the VHDX/VHD itself, sparse); returns its size."""
    size = getattr(reader, "size", None)
    if not isinstance(size, int):
        size = reader.seek(0, os.SEEK_END)
    name = str(getattr(reader, "name", "") or "the disk")
    return _copy_stream(
        reader,
        size,
        dest_file,
        overwrite=overwrite,
        progress=progress,
        cancel=cancel,
        throttle=throttle,
        durable=durable,
        label=name,
        guard=lambda: engine_errors(name),
    )
