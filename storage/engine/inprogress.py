"""Markers that tell GC which backups are running (``in-progress/``).

A backup creates ``in-progress/<point id>.json`` and holds an exclusive ``flock``
on it for its whole life. The kernel drops the lock when the process dies, so GC
can tell a live backup (lock held) from the leftovers of a killed one (lock free)
without trusting pids or clocks of other hosts. The marker's mtime is its start
time, taken from the same kernel clock that stamps chunk files.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass

from .errors import Busy, wrap_oserror
from .util import fsync_dir, tmp_path, unlink_quiet, utcnow

SUFFIX = ".json"
GC_LOCK = "gc.lock"


def _dir(root: str) -> str:
    return os.path.join(root, "in-progress")


def marker_path(root: str, point_id: str) -> str:
    return os.path.join(_dir(root), point_id + SUFFIX)


class BackupMarker:
    """``parent`` is *pinned*: ``delete_point`` refuses to delete it while this
    marker is live, so the backup may reuse the parent's chunks untouched."""

    def __init__(self, root: str, point_id: str, parent: str | None = None) -> None:
        d = _dir(root)
        self.path = os.path.join(d, point_id + SUFFIX)
        tmp = tmp_path(self.path)
        try:
            os.makedirs(d, exist_ok=True)
            self._fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            # Lock before the rename: GC must never see the marker unlocked.
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            doc = {
                "point": point_id,
                "parent": parent,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": utcnow().isoformat(),
            }
            os.write(self._fd, json.dumps(doc).encode())
            os.fsync(self._fd)
            os.rename(tmp, self.path)
            fsync_dir(d)
            self.started = os.fstat(self._fd).st_mtime
        except OSError as exc:
            unlink_quiet(tmp)
            raise wrap_oserror(exc, "registering the backup as in progress") from exc

    def release(self) -> None:
        if self._fd < 0:
            return
        unlink_quiet(self.path)
        os.close(self._fd)
        self._fd = -1


@dataclass(frozen=True)
class RunningBackup:
    point_id: str
    started: float
    parent: str | None = None


def running_backups(root: str, *, remove_stale: bool = True) -> list[RunningBackup]:
    """Live backups; markers whose lock is free belong to dead processes."""
    d = _dir(root)
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        if name.startswith(".") and ".tmp-" in name and remove_stale:
            _remove_dead_temp(os.path.join(d, name))
            continue
        if not name.endswith(SUFFIX) or name.startswith("."):
            continue
        path = os.path.join(d, name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            started = os.fstat(fd).st_mtime
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                parent = None
                with contextlib.suppress(OSError, ValueError, AttributeError):
                    parent = json.loads(os.pread(fd, 65536, 0)).get("parent")
                out.append(RunningBackup(name[: -len(SUFFIX)], started, parent))
                continue
            if remove_stale:
                unlink_quiet(path)
        finally:
            os.close(fd)
    return out


class GCLock:
    def __init__(self, root: str) -> None:
        d = _dir(root)
        os.makedirs(d, exist_ok=True)
        self._fd = os.open(os.path.join(d, GC_LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise Busy("another garbage collection is running on this datastore") from None

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _remove_dead_temp(path: str) -> None:
    """A marker that never got renamed into place (its backup was killed).

    Its creator locks it microseconds after creating it, so an unlocked temp
    marker older than a second has no owner.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        if time.time() - os.fstat(fd).st_mtime < 1.0:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        unlink_quiet(path)
    finally:
        os.close(fd)


def pinned_points(root: str) -> set[str]:
    return {r.parent for r in running_backups(root, remove_stale=False) if r.parent}


class DirLock:
    """flock on a point directory: serialises delete_point and GC's cleanup."""

    def __init__(self, path: str, *, wait: bool = True) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(self._fd)
            raise Busy(f"{path} is locked") from None

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def kernel_now(root: str) -> float:
    """Current time as the filesystem stamps it (coarse clock, may lag time.time())."""
    p = os.path.join(_dir(root), ".clock")
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.utime(fd)
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)
