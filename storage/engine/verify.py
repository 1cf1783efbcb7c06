"""Verify: re-read chunks, recompute digests, mark damaged recovery points."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .backup import io_workers
from .chunks import ZERO_DIGEST
from .errors import CorruptChunk, CorruptIndex, EngineError
from .index import IndexReader
from .points import PointInfo, load_point, point_dir, scan_points, write_verify
from .store import load_heal, save_heal
from .util import utcnow

if TYPE_CHECKING:
    from .datastore import Datastore


@dataclass(frozen=True)
class VerifyProgress:
    chunks_checked: int
    bad_chunks: int
    points_total: int


@dataclass
class VerifyReport:
    chunks_checked: int = 0
    bytes_checked: int = 0
    bad_chunks: list[str] = field(default_factory=list)  # damaged, set aside as .bad
    missing_chunks: list[str] = field(default_factory=list)  # referenced, not on disk
    points_checked: list[str] = field(default_factory=list)
    damaged_points: list[str] = field(default_factory=list)
    # Committed points whose manifest cannot be read: (point id, why). Also in damaged_points.
    unreadable_points: list[tuple[str, str]] = field(default_factory=list)
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.bad_chunks or self.missing_chunks or self.damaged_points)


VerifyProgressFn = Callable[[VerifyProgress], None]
_MAX_LISTED = 10_000  # keep the report bounded on a badly damaged datastore


def _check(ds: Datastore, digest: bytes) -> tuple[bytes, int, str | None]:
    try:
        return digest, len(ds.store.load(digest)), None
    except CorruptChunk as exc:
        return digest, 0, exc.reason
    except EngineError as exc:
        return digest, 0, str(exc)


def _run_checks(
    ds: Datastore,
    digests: Iterator[bytes],
    report: VerifyReport,
    bad: set[bytes],
    missing: set[bytes],
    tick: Callable[[], None],
) -> None:
    with ThreadPoolExecutor(io_workers(), thread_name_prefix="hvbs-verify") as ex:
        window: deque[Future[tuple[bytes, int, str | None]]] = deque()

        def pop() -> None:
            d, n, err = window.popleft().result()
            report.chunks_checked += 1
            report.bytes_checked += n
            if err is not None:
                if "missing" in err:
                    missing.add(d)
                else:
                    ds.store.set_aside(d)
                    bad.add(d)
            tick()

        for d in digests:
            window.append(ex.submit(_check, ds, d))
            while window and (window[0].done() or len(window) > 32):
                pop()
        while window:
            pop()


def run_verify(
    ds: Datastore,
    point_ids: Iterable[str] | None = None,
    progress: VerifyProgressFn | None = None,
) -> VerifyReport:
    t0 = time.monotonic()
    report = VerifyReport()
    if point_ids is None:
        scan = scan_points(ds.root)
        points = scan.points
        report.unreadable_points = list(scan.unreadable)
        report.damaged_points.extend(point_id for point_id, _ in scan.unreadable)
    else:
        points = [load_point(ds.root, p) for p in point_ids]
    bad: set[bytes] = set()
    missing: set[bytes] = set()
    last = [0.0]

    def tick() -> None:
        if progress is None:
            return
        now = time.monotonic()
        if now - last[0] >= 0.5:
            last[0] = now
            progress(VerifyProgress(report.chunks_checked, len(bad), len(points)))

    if point_ids is None:
        # Whole datastore: walk the chunk directory once, O(1) memory.
        all_digests = (d for d, _ in ds.store.iter_digests())
        _run_checks(ds, all_digests, report, bad, missing, tick)
    else:
        # Chosen points: check each referenced chunk once (memory ~100 bytes per
        # distinct chunk of those points).
        seen: set[bytes] = set()

        def referenced() -> Iterator[bytes]:
            for p in points:
                for d in _point_digests(ds, p):
                    if d != ZERO_DIGEST and d not in seen:
                        seen.add(d)
                        yield d

        _run_checks(ds, referenced(), report, bad, missing, tick)
    for p in points:
        _mark_point(ds, p, report, bad, missing)
    heal = bad | missing
    if point_ids is not None:
        heal |= load_heal(ds.root)  # a partial verify does not clear older findings
    save_heal(ds.root, heal)
    report.bad_chunks = sorted(d.hex() for d in bad)[:_MAX_LISTED]
    report.missing_chunks = sorted(d.hex() for d in missing)[:_MAX_LISTED]
    report.duration = time.monotonic() - t0
    if progress is not None:
        progress(VerifyProgress(report.chunks_checked, len(bad), len(points)))
    return report


def _point_digests(ds: Datastore, p: PointInfo) -> Iterator[bytes]:
    pdir = point_dir(ds.root, p.id)
    for f in p.files:
        try:
            with IndexReader(os.path.join(pdir, f.index)) as idx:
                yield from idx
        except CorruptIndex:
            continue  # reported by _mark_point


def _mark_point(
    ds: Datastore, p: PointInfo, report: VerifyReport, bad: set[bytes], missing: set[bytes]
) -> None:
    pdir = point_dir(ds.root, p.id)
    problems: list[str] = []
    n_bad = n_missing = 0
    for f in p.files:
        try:
            with IndexReader(os.path.join(pdir, f.index), expect=f.index_checksum or None) as idx:
                if idx.file_size != f.size:
                    problems.append(f"{f.name}: index size does not match the manifest")
                for d in idx:
                    if d == ZERO_DIGEST:
                        continue
                    if d in bad:
                        n_bad += 1
                    elif d in missing or not ds.store.exists(d):
                        n_missing += 1
                        if len(missing) < _MAX_LISTED:
                            missing.add(d)
        except CorruptIndex as exc:
            problems.append(str(exc))
    if n_bad:
        problems.append(f"{n_bad} damaged chunk reference(s)")
    if n_missing:
        problems.append(f"{n_missing} missing chunk reference(s)")
    ok = not problems
    report.points_checked.append(p.id)
    if not ok:
        report.damaged_points.append(p.id)
    write_verify(
        ds.root,
        p.id,
        {
            "verified": utcnow().isoformat(),
            "ok": ok,
            "damaged_chunks": n_bad,
            "missing_chunks": n_missing,
            "problems": problems[:20],
        },
    )
