from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest

from storage.engine import Busy, Datastore, RetentionPolicy, SourceFile
from storage.engine import gc as gc_mod
from storage.engine.inprogress import BackupMarker, GCLock

from .conftest import CHUNK, MiB, age_chunks, rand, sha, write_file


def chunk_files(ds: Datastore) -> set[str]:
    return {p.name for p in Path(ds.root, "chunks").rglob("*") if p.is_file()}


def test_grace_period_protects_fresh_chunks(ds: Datastore, tmp_path: Path) -> None:
    p = ds.backup("vm", [SourceFile("d", write_file(tmp_path / "d", [rand(MiB)]))])
    ds.delete_point(p.id)
    assert ds.gc(grace_seconds=3600).chunks_removed == 0
    assert len(chunk_files(ds)) == MiB // CHUNK
    age_chunks(ds, 7200)
    rep = ds.gc(grace_seconds=3600)
    assert rep.chunks_removed == MiB // CHUNK and rep.bytes_freed >= MiB
    assert chunk_files(ds) == set()


def test_running_backup_holds_back_the_cutoff(ds: Datastore, tmp_path: Path) -> None:
    p = ds.backup("vm", [SourceFile("d", write_file(tmp_path / "d", [rand(MiB)]))])
    ds.delete_point(p.id)
    age_chunks(ds, 3600)  # unreferenced, an hour old
    marker = BackupMarker(ds.root, "20250101T000000.000000Z-deadbeef")
    old = time.time() - 7200  # ... but a backup has been running for two hours
    os.utime(marker.path, (old, old))
    try:
        assert ds.gc(grace_seconds=60).chunks_removed == 0
    finally:
        marker.release()
    assert ds.gc(grace_seconds=60).chunks_removed == MiB // CHUNK


def test_uncommitted_points_and_stale_markers_are_cleaned(ds: Datastore, tmp_path: Path) -> None:
    points = Path(ds.root, "points")
    dead = points / "20250101T000000.000000Z-00000001"
    dead.mkdir()
    (dead / "0.didx").write_bytes(b"partial")
    (Path(ds.root, "in-progress") / "20250101T000000.000000Z-00000001.json").write_text("{}")
    live = BackupMarker(ds.root, "20250101T000000.000000Z-00000002")
    (points / "20250101T000000.000000Z-00000002").mkdir()
    try:
        rep = ds.gc(grace_seconds=3600)
        assert rep.points_cleaned == 1
        assert not dead.exists()
        assert (points / "20250101T000000.000000Z-00000002").exists()
        assert not (Path(ds.root, "in-progress") / "20250101T000000.000000Z-00000001.json").exists()
    finally:
        live.release()


def test_interrupted_sweep_is_repaired(ds: Datastore, tmp_path: Path) -> None:
    src = write_file(tmp_path / "d", [rand(MiB)])
    p = ds.backup("vm", [SourceFile("d", src)])
    with ds.open_file(p.id, "d") as r:
        d = r.digest_at(0)
    os.rename(ds.store.path(d), ds.store.path(d) + ".trash")  # GC died mid-sweep
    out = tmp_path / "o1"
    ds.restore(p.id, out)  # readers fall back to the trash name
    assert sha(out / "d") == sha(src)
    age_chunks(ds, 7200)
    ds.gc(grace_seconds=60)
    assert os.path.exists(ds.store.path(d))
    assert ds.verify().ok


def test_one_gc_at_a_time(ds: Datastore) -> None:
    lock = GCLock(ds.root)
    try:
        with pytest.raises(Busy):
            ds.gc()
    finally:
        lock.release()


def test_gc_mark_in_several_passes(ds: Datastore, tmp_path: Path) -> None:
    src = write_file(tmp_path / "d", [rand(4 * MiB)])
    p = ds.backup("vm", [SourceFile("d", src)])
    q = ds.backup("vm2", [SourceFile("d", write_file(tmp_path / "e", [rand(2 * MiB, 4)]))])
    ds.delete_point(q.id)
    age_chunks(ds, 7200)
    rep = gc_mod.run_gc(ds, 60, passes=3)
    assert rep.passes == 3 and rep.chunks_removed == 2 * MiB // CHUNK
    assert rep.chunks_live == 4 * MiB // CHUNK
    assert ds.verify().ok
    ds.restore(p.id, tmp_path / "out")
    assert sha(tmp_path / "out" / "d") == sha(src)


def test_gc_concurrent_with_backups_loses_nothing(
    ds: Datastore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Backups reuse chunks of points that prune has just removed while GC sweeps
    in a loop with no grace period."""
    monkeypatch.setattr(gc_mod, "CLOCK_MARGIN", 0.05)
    pool = [rand(CHUNK, seed=1000 + i) for i in range(24)]
    rng = random.Random(7)
    stop = threading.Event()
    errors: list[BaseException] = []
    sweeps = [0, 0]

    def collector() -> None:
        while not stop.is_set():
            try:
                r = ds.gc(grace_seconds=0)
                sweeps[0] += 1
                sweeps[1] += r.chunks_removed
            except Exception as exc:
                errors.append(exc)
                return

    expected: dict[str, str] = {}
    t = threading.Thread(target=collector)
    t.start()
    deadline = time.monotonic() + 4.0
    src = tmp_path / "disk"
    try:
        i = 0
        while time.monotonic() < deadline or i < 8:
            blocks = [pool[rng.randrange(len(pool))] for _ in range(12)]
            write_file(src, [b"".join(blocks)])
            p = ds.backup("vm", [SourceFile("disk", src)], parent="latest")
            expected[p.id] = sha(src)
            ds.prune(RetentionPolicy(keep_last=1))
            i += 1
            time.sleep(rng.random() * 0.1)
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    assert sweeps[1] > 0, "GC never removed anything: the test did not exercise the race"
    survivors = ds.points()
    assert len(survivors) == 1
    assert ds.verify().ok
    for p in survivors:
        out = tmp_path / f"out-{p.id}"
        ds.restore(p.id, out)
        assert sha(out / "disk") == expected[p.id]


def test_parent_of_running_backup_is_pinned(ds: Datastore, tmp_path: Path) -> None:
    """A backup reuses its parent's chunks without touching them; the parent
    cannot be deleted meanwhile, and GC keeps everything the new point needs."""
    src = write_file(tmp_path / "d", [rand(3 * MiB)])
    p1 = ds.backup("vm", [SourceFile("d", src)])
    age_chunks(ds, 7200)
    started = threading.Event()
    release = threading.Event()
    result: list[object] = []

    def slow_cancel() -> bool:
        started.set()
        release.wait(5)
        return False

    def run() -> None:
        try:
            result.append(ds.backup("vm", [SourceFile("d", src, changed_ranges=[])], cancel=slow_cancel))
        except Exception as exc:
            result.append(exc)

    t = threading.Thread(target=run)
    t.start()
    try:
        assert started.wait(5)
        with pytest.raises(Busy, match="parent of a running backup"):
            ds.delete_point(p1.id)
        assert ds.prune(RetentionPolicy(keep_last=0), now=None) == []
        assert [p.id for p in ds.points()] == [p1.id]  # manifest put back
        assert ds.gc(grace_seconds=0).chunks_removed == 0
    finally:
        release.set()
        t.join()
    p2 = result[0]
    assert not isinstance(p2, Exception), p2
    ds.delete_point(p1.id)
    rep = ds.gc(grace_seconds=0)
    assert rep.chunks_live == 3 * MiB // CHUNK and rep.chunks_removed == 0
    assert ds.verify().ok
    ds.restore(p2.id, tmp_path / "out")  # type: ignore[attr-defined]
    assert sha(tmp_path / "out" / "d") == sha(src)
