from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storage.engine import Datastore, InvalidPolicy, PointInfo, RetentionPolicy, SourceFile
from storage.engine.retention import select_kept

from .conftest import MiB, age_chunks, rand, sha, write_file

NOW = datetime(2025, 6, 30, 12, 0, tzinfo=UTC)


def pt(vm: str, hours_ago: float, n: int = 0) -> PointInfo:
    t = NOW - timedelta(hours=hours_ago)
    return PointInfo(f"{t:%Y%m%dT%H%M%S}-{vm}-{n}", vm, vm, t, [], 0, 0, "crash", None)


def test_keep_days() -> None:
    pts = [pt("a", h) for h in (1, 30, 50, 200)]
    kept = select_kept(pts, RetentionPolicy(keep_days=2), NOW)
    assert kept == {pts[0].id, pts[1].id}


def test_newest_point_is_always_kept() -> None:
    pts = [pt("a", 500), pt("a", 900), pt("b", 1000)]
    kept = select_kept(pts, RetentionPolicy(keep_days=1), NOW)
    assert kept == {pts[0].id, pts[2].id}


def test_gfs() -> None:
    # Four points a day for 100 days.
    pts = [pt("a", d * 24 + h * 6, d * 10 + h) for d in range(100) for h in range(4)]
    kept = select_kept(pts, RetentionPolicy(keep_daily=7), NOW)
    assert len(kept) == 7
    days = {p.created.date() for p in pts if p.id in kept}
    assert len(days) == 7
    # the newest of each day is the one kept
    for p in pts:
        if p.id in kept:
            same_day = [q for q in pts if q.created.date() == p.created.date()]
            assert p.created == max(q.created for q in same_day)
    kept = select_kept(pts, RetentionPolicy(keep_weekly=4, keep_monthly=3), NOW)
    months = {(p.created.year, p.created.month) for p in pts if p.id in kept}
    assert len(months) == 3
    assert len(kept) <= 4 + 3
    kept = select_kept(pts, RetentionPolicy(keep_last=5, keep_yearly=5), NOW)
    assert len(kept) == 5  # the one yearly bucket's newest point is among the 5 newest
    with pytest.raises(InvalidPolicy):
        RetentionPolicy(keep_daily=-1)


def test_prune_then_gc_keeps_remaining_points_restorable(ds: Datastore, tmp_path: Path) -> None:
    src = tmp_path / "d"
    data = bytearray(rand(2 * MiB))
    kept_hashes = {}
    ids = []
    for i in range(5):
        data[i * 300_000 : i * 300_000 + 10] = bytes([i + 1]) * 10
        write_file(src, [bytes(data)])
        p = ds.backup("vm", [SourceFile("d", src)])
        ids.append(p.id)
        kept_hashes[p.id] = sha(src)
    ds.backup("other", [SourceFile("d", write_file(tmp_path / "o", [rand(MiB, 3)]))])
    later = max(p.created for p in ds.points()) + timedelta(days=10)
    removed = ds.prune(RetentionPolicy(keep_last=2), now=later)
    assert sorted(p.id for p in removed) == sorted(ids[:3])
    assert {p.id for p in ds.points("vm")} == set(ids[3:])
    before = ds.usage()
    age_chunks(ds, 3600)
    rep = ds.gc(grace_seconds=60)
    assert rep.chunks_removed > 0
    assert ds.usage().chunk_bytes < before.chunk_bytes
    assert ds.verify().ok
    for pid in ids[3:]:
        out = tmp_path / pid
        ds.restore(pid, out)
        assert sha(out / "d") == kept_hashes[pid]
    # Pruning everything away still keeps each VM's newest point.
    ds.prune(RetentionPolicy(keep_days=0), now=later)
    assert [p.id for p in ds.points("vm")] == [ids[-1]]
    assert len(ds.points("other")) == 1
