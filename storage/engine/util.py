"""Small filesystem helpers shared by the engine modules."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from .errors import InvalidSource, wrap_oserror

_syncfs: Any = None
try:
    _syncfs = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).syncfs
except (OSError, AttributeError):  # pragma: no cover - non-glibc platforms
    _syncfs = None


def tmp_path(path: str) -> str:
    """A temporary name next to ``path`` (same directory, so rename is atomic)."""
    d, b = os.path.split(path)
    return os.path.join(d, f".{b}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def syncfs(path: str) -> bool:
    """Flush the whole filesystem holding ``path``; False when unsupported.

    One syncfs replaces thousands of per-chunk fsyncs: the cost of a journal commit
    is paid once per batch instead of once per chunk.
    """
    if _syncfs is None:
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        rc = _syncfs(fd)
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return True
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, *, what: str = "", sync_dir: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one.

    temp file in the same directory -> fsync -> rename -> fsync directory.
    """
    tmp = tmp_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        if sync_dir:
            fsync_dir(os.path.dirname(path) or ".")
    except OSError as exc:
        _unlink_quiet(tmp)
        raise wrap_oserror(exc, what or f"writing {path}") from exc


def _unlink_quiet(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


unlink_quiet = _unlink_quiet


_DRIVE = re.compile(r"^[A-Za-z]:")


def validate_name(name: str) -> str:
    """Check a file name stored inside a recovery point.

    Names become paths on restore, so anything that could escape the target
    directory (absolute paths, ``..``, backslashes that Windows treats as
    separators, drive letters, control characters) is rejected outright rather
    than normalised: silently rewriting a name would hide a caller bug.
    """
    if not isinstance(name, str) or not name:
        raise InvalidSource("file name must be a non-empty string")
    if len(name.encode("utf-8", "surrogateescape")) > 4096:
        raise InvalidSource("file name is too long")
    if "\\" in name:
        raise InvalidSource(f"file name {name!r} contains a backslash; use '/' as separator")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidSource(f"file name {name!r} contains control characters")
    if name.startswith("/") or _DRIVE.match(name):
        raise InvalidSource(f"file name {name!r} must be relative")
    parts = name.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise InvalidSource(f"file name {name!r} has an empty, '.' or '..' component")
        if len(part.encode("utf-8", "surrogateescape")) > 255:
            raise InvalidSource(f"file name {name!r} has a component longer than 255 bytes")
    return name


def utcnow() -> datetime:
    return datetime.now(UTC)


def dir_size(paths: Iterable[str]) -> int:
    total = 0
    for p in paths:
        with contextlib.suppress(OSError):
            total += os.stat(p).st_blocks * 512
    return total


def parse_size(text: str) -> int:
    """'1M', '256K', '4MiB', '1048576' -> bytes."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = 1
    for suffix, m in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("T", 1 << 40)):
        if t.endswith(suffix):
            t, mult = t[:-1], m
            break
    try:
        return int(float(t) * mult)
    except ValueError as exc:
        raise ValueError(f"invalid size {text!r}") from exc
