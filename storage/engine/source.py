"""What a backup reads: ``SourceFile`` and the reader behind it."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from .errors import InvalidSource, SourceReadError
from .util import validate_name

Opener = Callable[[], BinaryIO]


@dataclass
class SourceFile:
    """One file of a VM to back up.

    ``source`` is a local path or a callable returning a readable, seekable binary
    file object (e.g. an SMB reader). ``changed_ranges`` are (offset, length) pairs
    in *file* offsets since the parent point; None means "unknown, read it all".
    """

    name: str
    source: str | os.PathLike[str] | Opener
    size: int | None = None
    changed_ranges: list[tuple[int, int]] | None = None

    def validate(self) -> None:
        validate_name(self.name)
        if self.size is not None and (not isinstance(self.size, int) or self.size < 0):
            raise InvalidSource(f"{self.name}: size must be a non-negative integer")


def normalise_ranges(name: str, ranges: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """Sorted, merged, validated (start, end) pairs."""
    out: list[tuple[int, int]] = []
    for item in ranges:
        try:
            off, length = (int(x) for x in item)
        except (TypeError, ValueError):
            raise InvalidSource(f"{name}: changed range {item!r} is not (offset, length)") from None
        if off < 0 or length < 0 or off + length > size:
            raise InvalidSource(
                f"{name}: changed range offset={off} length={length} lies outside the file (size {size})"
            )
        if length:
            out.append((off, off + length))
    out.sort()
    merged: list[tuple[int, int]] = []
    for s, e in out:
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


class SourceReader:
    """Reads fixed-size pieces; knows holes when a real file descriptor exists.

    Local paths are read with ``preadv`` (no shared file position), so worker
    threads read in parallel. Other file objects are read by one thread only.
    """

    def __init__(self, src: SourceFile) -> None:
        self.name = src.name
        self._fd = -1
        self._hole_fd = -1
        self._file: BinaryIO | None = None
        self._pos = -1
        self.parallel = False
        try:
            if callable(src.source):
                self._file = src.source()
                try:
                    fileno = self._file.fileno()
                    if stat.S_ISREG(os.fstat(fileno).st_mode):
                        # A private description: SEEK_DATA must not move the
                        # position the file object believes it has.
                        self._hole_fd = os.open(f"/proc/self/fd/{fileno}", os.O_RDONLY)
                except (OSError, AttributeError, ValueError):
                    self._hole_fd = -1
                if src.size is None:
                    self._file.seek(0, os.SEEK_END)
                    self.size = self._file.tell()
                else:
                    self.size = src.size
            else:
                self._fd = os.open(os.fspath(src.source), os.O_RDONLY | os.O_CLOEXEC)
                st = os.fstat(self._fd)
                self.size = st.st_size if src.size is None else src.size
                if stat.S_ISREG(st.st_mode):
                    self._hole_fd = self._fd
                    with contextlib.suppress(OSError):
                        os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
                self.parallel = True
        except OSError as exc:
            self.close()
            raise SourceReadError(f"cannot open {src.name}: {exc.strerror or exc}") from exc
        except Exception as exc:
            self.close()
            if isinstance(exc, SourceReadError | InvalidSource):
                raise
            raise SourceReadError(f"cannot open {src.name}: {exc}") from exc
        self._data_start = -1  # known data extent [start, end)
        self._data_end = -1
        self._hole_end = -1  # known hole extent [.., hole_end)
        self._hole_start = -1

    def read_into(self, off: int, mv: memoryview) -> None:
        want = len(mv)
        got = 0
        try:
            if self._fd >= 0:
                while got < want:
                    n = os.preadv(self._fd, [mv[got:]], off + got)
                    if n == 0:
                        break
                    got += n
            else:
                assert self._file is not None
                if self._pos != off:
                    self._file.seek(off)
                while got < want:
                    n = self._file.readinto(mv[got:])  # type: ignore[attr-defined]
                    if not n:
                        break
                    got += n
                self._pos = off + got
        except OSError as exc:
            self._pos = -1
            raise SourceReadError(f"cannot read {self.name} at offset {off}: {exc.strerror or exc}") from exc
        except Exception as exc:  # remote readers raise their own types
            self._pos = -1
            raise SourceReadError(f"cannot read {self.name} at offset {off}: {exc}") from exc
        if got != want:
            raise SourceReadError(
                f"{self.name} ended at offset {off + got}, before its declared size {self.size}"
            )

    def is_hole(self, off: int, length: int) -> bool:
        """True when [off, off+length) holds no data at all (never read)."""
        if self._hole_fd < 0:
            return False
        end = off + length
        if self._hole_start <= off and end <= self._hole_end:
            return True
        if self._data_start <= off < self._data_end:
            return False
        try:
            data = os.lseek(self._hole_fd, off, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after off: hole up to EOF
                self._hole_start, self._hole_end = off, self.size
                return end <= self.size
            self._hole_fd = -1  # filesystem without SEEK_DATA support
            return False
        if data > off:
            self._hole_start, self._hole_end = off, data
            if end <= data:
                return True
        try:
            hole = os.lseek(self._hole_fd, data, os.SEEK_HOLE)
        except OSError:
            return False
        self._data_start, self._data_end = data, hole
        return False

    def close(self) -> None:
        if self._hole_fd >= 0 and self._hole_fd != self._fd:
            os.close(self._hole_fd)
        self._hole_fd = -1
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._file is not None:
            # Closing a remote reader must not mask the error that got us here.
            with contextlib.suppress(Exception):
                self._file.close()
            self._file = None
