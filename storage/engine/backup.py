"""Backup of one VM's files into a new recovery point."""

from __future__ import annotations

import json
import os
import queue
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .chunks import ZERO_DIGEST
from .errors import Cancelled, CorruptIndex, EngineError, InvalidSource, wrap_oserror
from .index import IndexReader, IndexWriter, chunk_count
from .inprogress import BackupMarker
from .points import (
    CONSISTENCY,
    MANIFEST,
    FileInfo,
    PointInfo,
    list_points,
    load_point,
    new_point_id,
    point_dir,
    write_manifest,
)
from .source import SourceFile, SourceReader, normalise_ranges
from .store import ChunkBatch, load_heal
from .util import utcnow

if TYPE_CHECKING:
    from .datastore import Datastore


@dataclass(frozen=True)
class Progress:
    bytes_done: int  # position reached, including reused and sparse ranges
    bytes_total: int
    bytes_read: int
    bytes_stored: int
    rate: float  # bytes_done per second
    current_file: str = ""


ProgressFn = Callable[[Progress], None]
CancelFn = Callable[[], bool]

_KNOWN_CAP = 200_000  # recently confirmed digests kept to skip repeated touches
_PROGRESS_EVERY = 0.5


def default_workers() -> int:
    return min(8, (os.cpu_count() or 2) + 2)


def io_workers() -> int:
    """Restore and verify open one chunk file after another: latency bound, so
    many more threads than cores keep the device queue full."""
    return 16


class _Backup:
    def __init__(
        self,
        ds: Datastore,
        progress: ProgressFn | None,
        cancel: CancelFn | None,
        workers: int,
    ) -> None:
        self.ds = ds
        self.codec = ds.codec
        self.store = ds.store
        self.cs = ds.chunk_size
        self.progress = progress
        self.cancel = cancel
        self.workers = workers
        self.inflight = workers * 2
        self.pool: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(self.inflight):
            self.pool.put(bytearray(self.cs))
        self.batch = ChunkBatch(self.store)
        self.heal = load_heal(ds.root)
        self._known: set[bytes] = set()
        self._known_lock = threading.Lock()
        self.t0 = time.monotonic()
        self.total = 0
        self.done = 0
        self.read = 0
        self.stored = 0
        self._last_progress = 0.0

    # -- known-digest set -------------------------------------------------
    def _is_known(self, d: bytes) -> bool:
        with self._known_lock:
            return d in self._known

    def _remember(self, d: bytes) -> None:
        with self._known_lock:
            if len(self._known) >= _KNOWN_CAP:
                self._known.clear()  # a cache: forgetting only costs a utime
            self._known.add(d)

    def _have(self, d: bytes) -> bool:
        """Stored (or being stored by us), and freshly touched for GC."""
        if self._is_known(d) or self.batch.is_pending(d):
            return True
        if self.store.touch(d):
            self._remember(d)
            return True
        return False

    # -- worker -----------------------------------------------------------
    def _work(
        self,
        src: SourceReader,
        off: int,
        ln: int,
        buf: bytearray,
        preread: bool,
        expect: bytes | None,
    ) -> tuple[bytes, int, int]:
        try:
            mv = memoryview(buf)[:ln]
            if not preread:
                src.read_into(off, mv)
            d = self.codec.digest(mv)
            if self.codec.is_zero(d, ln):
                return ZERO_DIGEST, ln, 0
            if d == expect and d not in self.heal:
                # Same data as the pinned parent at this position: stored, and
                # protected from GC by the pin (no syscall, see docs).
                return d, ln, 0
            if self._have(d):
                return d, ln, 0
            blob = self.codec.encode(mv, d)
            n = self.batch.add(d, blob)
            self._remember(d)
            return d, ln, n
        finally:
            self.pool.put(buf)

    def _report(self, name: str, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if not force and now - self._last_progress < _PROGRESS_EVERY:
            return
        self._last_progress = now
        elapsed = max(now - self.t0, 1e-6)
        self.progress(Progress(self.done, self.total, self.read, self.stored, self.done / elapsed, name))

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel():
            raise Cancelled("backup cancelled")

    # -- one file ---------------------------------------------------------
    def file(
        self,
        ex: ThreadPoolExecutor,
        src: SourceFile,
        reader: SourceReader,
        parent: IndexReader | None,
        index_path: str,
    ) -> FileInfo:
        cs = self.cs
        size = reader.size
        n = chunk_count(size, cs)
        reuse_limit = 0
        changed: list[tuple[int, int]] = []
        if parent is not None and src.changed_ranges is not None:
            changed = normalise_ranges(src.name, src.changed_ranges, size)
            psize = parent.file_size
            reuse_limit = min(size, psize) // cs
            if size == psize and size % cs:
                reuse_limit += 1  # the partial last chunk has the same extent
            reuse_limit = min(reuse_limit, parent.count)
        elif src.changed_ranges is not None:
            normalise_ranges(src.name, src.changed_ranges, size)  # still validate
        if parent is not None and parent.chunk_size != cs:
            parent = None
        writer = IndexWriter(index_path, cs, size)
        window: deque[bytes | Future[tuple[bytes, int, int]]] = deque()
        f_read = f_new = zeros = 0
        ci = 0  # cursor into changed (merged, sorted)

        def pop() -> None:
            nonlocal f_read, f_new, zeros
            item = window.popleft()
            if isinstance(item, bytes):
                d, nread, nstored = item, 0, 0
            else:
                d, nread, nstored = item.result()
            if d == ZERO_DIGEST:
                zeros += 1
            writer.add(d)
            f_read += nread
            f_new += nstored
            self.read += nread
            self.stored += nstored

        try:
            for i in range(n):
                self._check_cancel()
                off = i * cs
                ln = min(cs, size - off)
                resolved: bytes | None = None
                if i < reuse_limit:
                    end = off + ln
                    while ci < len(changed) and changed[ci][1] <= off:
                        ci += 1
                    if not (ci < len(changed) and changed[ci][0] < end):
                        d = parent.digest(i)  # type: ignore[union-attr]
                        # A chunk verify found damaged or missing is read again
                        # so this backup heals it; the others are trusted.
                        if d == ZERO_DIGEST or d not in self.heal or self._have(d):
                            resolved = d
                if resolved is None and reader.is_hole(off, ln):
                    resolved = ZERO_DIGEST
                if resolved is not None:
                    window.append(resolved)
                else:
                    expect = parent.digest(i) if parent is not None and i < parent.count else None
                    buf = self.pool.get()
                    try:
                        if not reader.parallel:
                            reader.read_into(off, memoryview(buf)[:ln])
                        fut = ex.submit(self._work, reader, off, ln, buf, not reader.parallel, expect)
                    except BaseException:
                        self.pool.put(buf)
                        raise
                    window.append(fut)
                while window and (isinstance(window[0], bytes) or window[0].done() or len(window) > 4096):
                    pop()
                self.done += ln
                self._report(src.name)
            while window:
                pop()
            self.batch.flush()  # chunks durable and named before the index exists
            checksum = writer.finish()
        except BaseException:
            for item in window:
                if not isinstance(item, bytes):
                    item.cancel()
            writer.abort()
            raise
        return FileInfo(
            name=src.name,
            size=size,
            chunks=n,
            index=os.path.basename(index_path),
            index_checksum=checksum,
            bytes_read=f_read,
            bytes_new=f_new,
            zero_chunks=zeros,
        )


def _resolve_parent(ds: Datastore, vm_id: str, parent: str | None) -> PointInfo | None:
    if parent is None:
        return None
    if parent == "latest":
        pts = list_points(ds.root, vm_id)
        return pts[-1] if pts else None
    return load_point(ds.root, parent)


def run_backup(
    ds: Datastore,
    vm_id: str,
    sources: Sequence[SourceFile],
    *,
    vm_name: str | None = None,
    parent: str | None = "latest",
    consistency: str = "crash",
    metadata: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    workers: int | None = None,
) -> PointInfo:
    if not isinstance(vm_id, str) or not vm_id.strip():
        raise InvalidSource("vm_id must be a non-empty string")
    if consistency not in CONSISTENCY:
        raise InvalidSource(f"consistency must be one of {', '.join(CONSISTENCY)}")
    metadata = dict(metadata or {})
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as exc:
        raise InvalidSource(f"metadata is not JSON-serialisable: {exc}") from exc
    names = set()
    for s in sources:
        s.validate()
        if s.name in names:
            raise InvalidSource(f"file name {s.name!r} given twice")
        names.add(s.name)
    parent_info = _resolve_parent(ds, vm_id, parent)
    created = utcnow()
    point_id = new_point_id(created)
    pdir = point_dir(ds.root, point_id)
    job = _Backup(ds, progress, cancel, workers or default_workers())
    marker = BackupMarker(ds.root, point_id, parent_info.id if parent_info else None)
    readers: list[SourceReader] = []
    try:
        # Pinned first, checked second (see delete_point): if the parent is being
        # deleted right now we simply do without it.
        if parent_info is not None and not os.path.exists(
            os.path.join(point_dir(ds.root, parent_info.id), MANIFEST)
        ):
            parent_info = None
        try:
            os.mkdir(pdir)
        except OSError as exc:
            raise wrap_oserror(exc, "creating the recovery point directory") from exc
        for s in sources:
            readers.append(SourceReader(s))
        job.total = sum(r.size for r in readers)
        files: list[FileInfo] = []
        with ThreadPoolExecutor(job.workers, thread_name_prefix="hvbs-backup") as ex:
            try:
                for n, (s, r) in enumerate(zip(sources, readers, strict=True)):
                    pidx = _parent_index(ds, parent_info, s.name)
                    try:
                        files.append(job.file(ex, s, r, pidx, os.path.join(pdir, f"{n}.didx")))
                    finally:
                        if pidx is not None:
                            pidx.close()
            except BaseException:
                ex.shutdown(wait=True, cancel_futures=True)
                raise
        job.batch.commit_renames()  # every referenced chunk durable before the commit
        job._check_cancel()
        info = PointInfo(
            id=point_id,
            vm_id=vm_id,
            vm_name=vm_name or vm_id,
            created=created,
            files=files,
            total_bytes=sum(f.size for f in files),
            bytes_new=job.stored,
            consistency=consistency,
            parent=parent_info.id if parent_info else None,
            metadata=metadata,
            chunk_size=ds.chunk_size,
            bytes_read=job.read,
            duration=time.monotonic() - job.t0,
        )
        write_manifest(ds.root, info)
        job._report("", force=True)
        return info
    except BaseException:
        job.batch.abort()
        shutil.rmtree(pdir, ignore_errors=True)
        raise
    finally:
        for r in readers:
            r.close()
        marker.release()


def _parent_index(ds: Datastore, parent: PointInfo | None, name: str) -> IndexReader | None:
    if parent is None or parent.chunk_size != ds.chunk_size:
        return None
    f = parent.file(name)
    if f is None:
        return None
    try:
        return IndexReader(
            os.path.join(point_dir(ds.root, parent.id), f.index), expect=f.index_checksum or None
        )
    except (CorruptIndex, EngineError):
        return None  # a damaged parent index only costs a full read
