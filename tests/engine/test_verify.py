from __future__ import annotations

import json
from pathlib import Path

from storage.engine import Datastore, SourceFile

from .conftest import CHUNK, MiB, rand, sha, write_file


def _damage(ds: Datastore, digests: list[bytes]) -> None:
    flip, trunc, gone = digests
    p = Path(ds.store.path(flip))
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    p.write_bytes(raw)
    p = Path(ds.store.path(trunc))
    p.write_bytes(p.read_bytes()[:100])
    Path(ds.store.path(gone)).unlink()


def test_verify_finds_every_damage_and_next_backup_heals(ds: Datastore, tmp_path: Path) -> None:
    src = write_file(tmp_path / "d", [rand(4 * MiB)])
    other = write_file(tmp_path / "o", [rand(MiB, 5)])
    p1 = ds.backup("vm", [SourceFile("d", src)])
    p_other = ds.backup("vm2", [SourceFile("o", other)])
    assert ds.verify().ok
    with ds.open_file(p1.id, "d") as r:
        victims = [r.digest_at(1), r.digest_at(5), r.digest_at(9)]
    _damage(ds, victims)

    rep = ds.verify()
    assert not rep.ok
    assert sorted(rep.bad_chunks) == sorted(d.hex() for d in victims[:2])
    assert rep.missing_chunks == [victims[2].hex()]
    assert rep.damaged_points == [p1.id]
    assert p_other.id in rep.points_checked and p_other.id not in rep.damaged_points
    assert rep.chunks_checked == 4 * MiB // CHUNK + MiB // CHUNK - 1
    for d in victims[:2]:
        assert Path(ds.store.path(d) + ".bad").exists()
        assert not Path(ds.store.path(d)).exists()
    listed = {p.id: p.damaged for p in ds.points()}
    assert listed == {p1.id: True, p_other.id: False}
    v = json.loads((Path(ds.root) / "points" / p1.id / "verify.json").read_text())
    assert v["ok"] is False and v["damaged_chunks"] == 2 and v["missing_chunks"] == 1

    # Same data again, even with changed ranges claiming nothing changed: the
    # chunks the parent references are missing, so they are read and re-stored.
    p2 = ds.backup("vm", [SourceFile("d", src, changed_ranges=[])])
    assert p2.bytes_new >= 3 * CHUNK
    rep2 = ds.verify()
    assert rep2.ok, rep2
    assert not any(p.damaged for p in ds.points())
    out = tmp_path / "out"
    ds.restore(p1.id, out)  # the old point is whole again too
    assert sha(out / "d") == sha(src)


def test_verify_chosen_points_and_corrupt_index(ds: Datastore, tmp_path: Path) -> None:
    a = ds.backup("a", [SourceFile("d", write_file(tmp_path / "a", [rand(MiB, 1)]))])
    b = ds.backup("b", [SourceFile("d", write_file(tmp_path / "b", [rand(MiB, 2)]))])
    rep = ds.verify([b.id])
    assert rep.points_checked == [b.id] and rep.chunks_checked == MiB // CHUNK and rep.ok
    idx = Path(ds.root) / "points" / a.id / a.files[0].index
    raw = bytearray(idx.read_bytes())
    raw[40] ^= 1
    idx.write_bytes(raw)
    rep = ds.verify()
    assert rep.damaged_points == [a.id]
    assert ds.point(a.id).damaged


def test_a_damaged_manifest_is_reported_by_verify_and_stops_nothing_else(
    ds: Datastore, tmp_path: Path
) -> None:
    src = write_file(tmp_path / "d", [rand(2 * MiB)])
    other = write_file(tmp_path / "o", [rand(MiB, 5)])
    p1 = ds.backup("vm", [SourceFile("d", src)])
    p2 = ds.backup("vm", [SourceFile("d", src)], parent=p1.id)
    p_other = ds.backup("vm2", [SourceFile("o", other)])
    manifest = Path(ds.root) / "points" / p2.id / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:40])  # truncated (a torn copy, a bad sector)

    # Listing (what every backup does first) leaves it out instead of failing.
    assert [p.id for p in ds.points()] == [p1.id, p_other.id]
    assert [p.id for p in ds.points("vm")] == [p1.id]
    scan = ds.scan_points()
    assert [point_id for point_id, _ in scan.unreadable] == [p2.id]
    # A backup of either VM still works; the damaged point is not used as a parent.
    assert ds.backup("vm2", [SourceFile("o", other)], parent=p_other.id).bytes_new < MiB // 4
    # Verify names it as damaged, with the reason; the others verify clean.
    rep = ds.verify()
    assert not rep.ok
    assert rep.damaged_points == [p2.id]
    assert [point_id for point_id, _ in rep.unreadable_points] == [p2.id]
    assert p1.id in rep.points_checked and p_other.id in rep.points_checked
    assert not rep.bad_chunks and not rep.missing_chunks
