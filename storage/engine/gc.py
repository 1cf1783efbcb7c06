"""Garbage collection: mark every chunk some index references, sweep the rest.

Safety against concurrent backups and deletions (argued in full in
docs/datastore-format.md):
  * mark = every ``*.didx`` under ``points/`` (committed, being written, or being
    deleted), re-listed until a listing shows no index not yet read;
  * a backup reuses a chunk without touching it only from a *pinned* parent,
    whose index cannot disappear while the backup runs; every other chunk it
    uses is written or touched after it registered;
  * sweep only chunk files older than cutoff = min(now - grace, oldest running
    backup start) - margin, by rename-to-trash, re-stat, then unlink or rename
    back, so a touch racing with the sweep is always seen.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .chunks import ZERO_DIGEST
from .errors import Busy, CorruptIndex, EngineError, wrap_oserror
from .index import HEADER_SIZE, IndexReader
from .inprogress import DirLock, GCLock, kernel_now, marker_path, pinned_points, running_backups
from .points import MANIFEST, ignore_missing, points_dir
from .store import BAD_SUFFIX, TMP_MARK, TRASH_SUFFIX
from .util import unlink_quiet

if TYPE_CHECKING:
    from .datastore import Datastore

CLOCK_MARGIN = 2.0  # seconds; file times use a coarse clock
MARK_SET_LIMIT = 2_000_000  # digests held in memory per mark pass (~200 MiB)


@dataclass
class GCReport:
    chunks_live: int = 0
    chunks_removed: int = 0
    bytes_freed: int = 0
    chunks_kept_recent: int = 0
    temp_files_removed: int = 0
    points_cleaned: int = 0  # uncommitted point directories removed
    passes: int = 1
    duration: float = 0.0


def run_gc(ds: Datastore, grace_seconds: float = 3600.0, *, passes: int | None = None) -> GCReport:
    if grace_seconds < 0:
        raise EngineError("grace period must not be negative")
    t0 = time.monotonic()
    report = GCReport()
    lock = GCLock(ds.root)
    try:
        now = kernel_now(ds.root)
        running = running_backups(ds.root)
        cutoff = now - grace_seconds
        if running:
            cutoff = min(cutoff, min(r.started for r in running))
        cutoff -= CLOCK_MARGIN
        _clean_points(ds, cutoff, report)
        if passes is None:
            entries = sum(max(0, _size(p) - HEADER_SIZE) // 32 for p in _indexes(ds))
            passes = max(1, -(-entries // MARK_SET_LIMIT))
        report.passes = passes
        subdirs = list(ds.store.iter_subdirs())
        for k in range(passes):
            live = _mark(ds, k, passes)
            report.chunks_live += len(live)
            for sub in subdirs:
                if _pass_of(bytes.fromhex(os.path.basename(sub)), passes) == k:
                    _sweep_dir(sub, live, cutoff, report)
            del live
    finally:
        lock.release()
    report.duration = time.monotonic() - t0
    return report


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _pass_of(digest: bytes, passes: int) -> int:
    return digest[0] * passes // 256


def _indexes(ds: Datastore) -> set[str]:
    out: set[str] = set()
    pd = points_dir(ds.root)
    try:
        dirs = os.listdir(pd)
    except FileNotFoundError:
        return out
    for d in dirs:
        if d.startswith("."):
            continue
        try:
            names = os.listdir(os.path.join(pd, d))
        except (FileNotFoundError, NotADirectoryError):
            continue
        out.update(os.path.join(pd, d, n) for n in names if n.endswith(".didx"))
    return out


def _mark(ds: Datastore, k: int, passes: int) -> set[bytes]:
    live: set[bytes] = set()
    seen: set[str] = set()
    while True:
        # Re-list until nothing new appears: an index created while we were
        # reading (a backup committing) is read too, so a chain of indexes that
        # hand a chunk on to each other is never missed.
        new = _indexes(ds) - seen
        if not new:
            return live
        seen |= new
        for path in sorted(new):
            try:
                with IndexReader(path) as idx:
                    for d in idx:
                        if d != ZERO_DIGEST and (passes == 1 or _pass_of(d, passes) == k):
                            live.add(d)
            except CorruptIndex as exc:
                if not os.path.exists(path):
                    continue  # deleted while we read it
                if not os.path.exists(os.path.join(os.path.dirname(path), MANIFEST)):
                    continue  # damaged leftovers of an uncommitted point
                raise EngineError(
                    f"GC stopped: {exc}; verify the datastore and delete that recovery point"
                ) from exc


def _sweep_dir(sub: str, live: set[bytes], cutoff: float, report: GCReport) -> None:
    try:
        names = os.listdir(sub)
    except FileNotFoundError:
        return
    for name in names:
        path = os.path.join(sub, name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        if TMP_MARK in name or name.endswith(BAD_SUFFIX):
            if st.st_mtime < cutoff:
                unlink_quiet(path)
                report.temp_files_removed += 1
            continue
        if name.endswith(TRASH_SUFFIX):
            # Left by a GC that died mid-sweep.
            digest = _digest_of(name[: -len(TRASH_SUFFIX)])
            if digest is not None and (digest in live or st.st_mtime >= cutoff):
                _rename_quiet(path, path[: -len(TRASH_SUFFIX)])
            elif digest is not None:
                unlink_quiet(path)
            continue
        digest = _digest_of(name)
        if digest is None or digest in live:
            continue
        if st.st_mtime >= cutoff:
            report.chunks_kept_recent += 1
            continue
        trash = path + TRASH_SUFFIX
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise wrap_oserror(exc, f"removing chunk {name}") from exc
        # A backup may have touched it between our stat and the rename; after
        # the rename nobody can touch it under its real name any more.
        st2 = os.stat(trash)
        if st2.st_mtime >= cutoff:
            _rename_quiet(trash, path)
            report.chunks_kept_recent += 1
            continue
        os.unlink(trash)
        report.chunks_removed += 1
        report.bytes_freed += st2.st_blocks * 512


def _digest_of(name: str) -> bytes | None:
    if len(name) != 64:
        return None
    try:
        return bytes.fromhex(name)
    except ValueError:
        return None


def _rename_quiet(src: str, dst: str) -> None:
    with contextlib.suppress(OSError):
        os.rename(src, dst)


def _clean_points(ds: Datastore, cutoff: float, report: GCReport) -> None:
    """Remove point directories without a manifest (killed or failed backups,
    interrupted deletions).

    Checked in this order, under the directory's lock: live marker, then
    manifest, then pins. A backup writes its manifest before it drops its
    marker, so "no marker, then no manifest" means nobody will commit it.
    """
    pd = points_dir(ds.root)
    try:
        names = os.listdir(pd)
    except FileNotFoundError:
        return
    pins: set[str] | None = None
    for name in names:
        path = os.path.join(pd, name)
        try:
            if name.startswith("."):
                if TMP_MARK in name and os.stat(path).st_mtime < cutoff:
                    unlink_quiet(path)
                    report.temp_files_removed += 1
                continue
            if os.path.exists(marker_path(ds.root, name)):
                continue
            try:
                lock = DirLock(path, wait=False)
            except Busy:
                continue  # delete_point is working on it
            try:
                if os.path.exists(os.path.join(path, MANIFEST)):
                    _clean_temp_in(path, cutoff, report)
                    continue
                if pins is None:
                    pins = pinned_points(ds.root)
                if name in pins:
                    continue
                shutil.rmtree(path, onexc=ignore_missing)
                report.points_cleaned += 1
            finally:
                lock.release()
        except (FileNotFoundError, NotADirectoryError):
            continue


def _clean_temp_in(path: str, cutoff: float, report: GCReport) -> None:
    for name in os.listdir(path):
        if TMP_MARK in name:
            p = os.path.join(path, name)
            try:
                if os.stat(p).st_mtime < cutoff:
                    os.unlink(p)
                    report.temp_files_removed += 1
            except FileNotFoundError:
                pass
