from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from storage.engine import (
    Cancelled,
    Datastore,
    InvalidSource,
    NoSpace,
    PointNotFound,
    Progress,
    SourceFile,
    SourceReadError,
)

from .conftest import CHUNK, MiB, allocated, rand, sha, write_file

Files = Callable[[str, list[bytes | int]], Path]


def restored(ds: Datastore, point: str, tmp_path: Path) -> Path:
    out = tmp_path / f"restore-{point}"
    ds.restore(point, out)
    return out


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp-" in p.name]


def test_full_backup_restores_byte_identical(ds: Datastore, files: Files, tmp_path: Path) -> None:
    a = files("disk0.vhdx", [rand(3 * MiB + 123), bytes(CHUNK * 2), b"log\n" * 70_000])
    b = files("config.vmcx", [b"<cfg/>" * 10])
    p = ds.backup(
        "vm-1",
        [SourceFile("Virtual Hard Disks/disk0.vhdx", a), SourceFile("config.vmcx", b)],
        vm_name="Web server",
        consistency="application",
        metadata={"rct": ["rctX:1"], "note": "ü"},
    )
    assert p.vm_name == "Web server" and p.consistency == "application"
    assert p.metadata == {"rct": ["rctX:1"], "note": "ü"}
    assert p.parent is None and p.total_bytes == a.stat().st_size + b.stat().st_size
    assert p.created.tzinfo is not None
    assert [f.name for f in p.files] == ["Virtual Hard Disks/disk0.vhdx", "config.vmcx"]
    assert p.files[0].chunks == -(-a.stat().st_size // CHUNK)
    assert p.bytes_new < a.stat().st_size  # zeros never stored, logs compressed
    out = restored(ds, p.id, tmp_path)
    assert sha(out / "Virtual Hard Disks" / "disk0.vhdx") == sha(a)
    assert sha(out / "config.vmcx") == sha(b)
    assert ds.points("vm-1") == [ds.point(p.id)]
    assert not leftovers(Path(ds.root))


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 17], ids=lambda s: f"size{s}"
)
def test_sizes(ds: Datastore, files: Files, tmp_path: Path, size: int) -> None:
    f = files("f", [rand(size, seed=size)])
    p = ds.backup("vm", [SourceFile("f", f)])
    assert p.files[0].chunks == -(-size // CHUNK)
    assert sha(restored(ds, p.id, tmp_path) / "f") == sha(f)


def test_zero_files(ds: Datastore, tmp_path: Path) -> None:
    p = ds.backup("vm", [])
    assert p.files == [] and p.total_bytes == 0
    out = restored(ds, p.id, tmp_path)
    assert list(out.iterdir()) == []


def test_sparse_file_skips_holes_and_restores_sparse(ds: Datastore, files: Files, tmp_path: Path) -> None:
    f = files("sparse.vhdx", [rand(MiB), 200 * MiB, rand(MiB, 1), 100 * MiB])
    assert allocated(f) < 4 * MiB
    p = ds.backup("vm", [SourceFile("sparse.vhdx", f)])
    assert p.bytes_read == 2 * MiB  # holes were never read
    out = restored(ds, p.id, tmp_path) / "sparse.vhdx"
    assert out.stat().st_size == f.stat().st_size
    assert sha(out) == sha(f)
    assert allocated(out) < 4 * MiB


def test_allocated_zeros_are_not_stored(ds: Datastore, files: Files, tmp_path: Path) -> None:
    f = files("z", [bytes(4 * MiB)])
    p = ds.backup("vm", [SourceFile("z", f)])
    assert p.bytes_new == 0 and ds.usage().chunk_count == 0
    out = restored(ds, p.id, tmp_path) / "z"
    assert sha(out) == sha(f) and allocated(out) == 0


def test_incremental_full_scan_stores_only_new_chunks(ds: Datastore, files: Files, tmp_path: Path) -> None:
    data = bytearray(rand(4 * MiB))
    f = files("d", [bytes(data)])
    p1 = ds.backup("vm", [SourceFile("d", f)])
    data[CHUNK * 3 + 10 : CHUNK * 3 + 20] = b"x" * 10
    f.write_bytes(data)
    p2 = ds.backup("vm", [SourceFile("d", f)])
    assert p2.parent == p1.id
    assert p2.bytes_read == len(data)
    assert 0 < p2.bytes_new <= CHUNK + 16
    assert sha(restored(ds, p2.id, tmp_path) / "d") == sha(f)
    f1 = restored(ds, p1.id, tmp_path) / "d"
    assert f1.read_bytes()[CHUNK * 3 + 10 : CHUNK * 3 + 20] != b"x" * 10


def test_incremental_with_changed_ranges_reads_only_those(
    ds: Datastore, files: Files, tmp_path: Path
) -> None:
    data = bytearray(rand(8 * MiB + 100))
    f = files("d", [bytes(data)])
    ds.backup("vm", [SourceFile("d", f)])
    changes = [(CHUNK * 5 + 7, 100), (CHUNK * 20 - 1, 2)]  # second one spans two chunks
    for off, n in changes:
        data[off : off + n] = rand(n, seed=off)
    data += b"growth" * 50_000
    f.write_bytes(data)
    p2 = ds.backup("vm", [SourceFile("d", f, changed_ranges=changes)])
    old_chunks = -(-(8 * MiB + 100) // CHUNK)
    # 3 changed chunks + the parent's partial last chunk + the growth.
    expected = 3 * CHUNK + (len(data) - (old_chunks - 1) * CHUNK)
    assert p2.bytes_read == expected
    assert sha(restored(ds, p2.id, tmp_path) / "d") == sha(f)


def test_changed_ranges_trust_the_caller(ds: Datastore, files: Files, tmp_path: Path) -> None:
    """Unlisted changes are (by contract) not read: proves the parent is reused."""
    data = bytearray(rand(2 * MiB))
    f = files("d", [bytes(data)])
    ds.backup("vm", [SourceFile("d", f)])
    data[0:4] = b"XXXX"
    f.write_bytes(data)
    p2 = ds.backup("vm", [SourceFile("d", f, changed_ranges=[])])
    assert p2.bytes_read == 0
    assert (restored(ds, p2.id, tmp_path) / "d").read_bytes()[:4] != b"XXXX"


def test_shrunk_file_and_new_file_with_changed_ranges(ds: Datastore, files: Files, tmp_path: Path) -> None:
    f = files("d", [rand(3 * MiB)])
    ds.backup("vm", [SourceFile("d", f)])
    with open(f, "r+b") as fh:
        fh.truncate(2 * MiB + 5)
    g = files("new", [rand(MiB, 9)])
    p2 = ds.backup("vm", [SourceFile("d", f, changed_ranges=[]), SourceFile("new", g, changed_ranges=[])])
    assert p2.files[0].bytes_read == 5  # only the new partial last chunk
    assert p2.files[1].bytes_read == MiB  # absent from the parent: read fully
    out = restored(ds, p2.id, tmp_path)
    assert sha(out / "d") == sha(f) and sha(out / "new") == sha(g)


def test_parent_selection(ds: Datastore, files: Files) -> None:
    f = files("d", [rand(MiB)])
    a1 = ds.backup("a", [SourceFile("d", f)])
    b1 = ds.backup("b", [SourceFile("d", f)])
    assert b1.parent is None  # latest of *its* VM
    a2 = ds.backup("a", [SourceFile("d", f)])
    assert a2.parent == a1.id
    assert ds.backup("a", [SourceFile("d", f)], parent=None).parent is None
    assert ds.backup("a", [SourceFile("d", f)], parent=a1.id).parent == a1.id
    with pytest.raises(PointNotFound):
        ds.backup("a", [SourceFile("d", f)], parent="20990101T000000.000000Z-00000000")


def test_file_object_sources(ds: Datastore, tmp_path: Path) -> None:
    data = rand(3 * MiB + 5)

    class Remote(io.RawIOBase):
        """A stream without a file descriptor, like an SMB reader."""

        def __init__(self) -> None:
            self._b = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return True

        def readinto(self, b):  # type: ignore[no-untyped-def]
            return self._b.readinto(b)

        def seek(self, off: int, whence: int = 0) -> int:
            return self._b.seek(off, whence)

        def tell(self) -> int:
            return self._b.tell()

    p = ds.backup("vm", [SourceFile("r", Remote, size=len(data))])  # type: ignore[arg-type]  # duck-typed stream
    assert (restored(ds, p.id, tmp_path) / "r").read_bytes() == data


def test_progress_reports(ds: Datastore, files: Files) -> None:
    f = files("d", [rand(2 * MiB)])
    seen: list[Progress] = []
    ds.backup("vm", [SourceFile("d", f)], progress=seen.append)
    assert seen and seen[-1].bytes_done == seen[-1].bytes_total == 2 * MiB
    assert seen[-1].bytes_read == 2 * MiB and seen[-1].bytes_stored > 0 and seen[-1].rate > 0


def test_cancel_leaves_no_point_and_no_temp_files(ds: Datastore, files: Files) -> None:
    f = files("d", [rand(6 * MiB)])
    calls = iter(range(1000))
    with pytest.raises(Cancelled):
        ds.backup("vm", [SourceFile("d", f)], cancel=lambda: next(calls) >= 10)
    root = Path(ds.root)
    assert ds.points() == []
    assert list((root / "points").iterdir()) == []
    assert list((root / "in-progress").glob("*.json")) == []
    assert not leftovers(root)
    assert ds.verify().ok


def test_unreadable_source(ds: Datastore, files: Files, tmp_path: Path) -> None:
    good = files("good", [rand(MiB)])
    with pytest.raises(SourceReadError, match="cannot open"):
        ds.backup("vm", [SourceFile("good", good), SourceFile("bad", tmp_path / "nope")])
    bad = files("unreadable", [b"x"])
    bad.chmod(0)
    if os.access(bad, os.R_OK):  # root ignores modes: use a directory instead
        bad = tmp_path / "a-directory"
        bad.mkdir()
    with pytest.raises(SourceReadError):
        ds.backup("vm", [SourceFile("bad", bad, size=10)])

    class Broken(io.BytesIO):
        def readinto(self, b):  # type: ignore[no-untyped-def]
            raise OSError(5, "Input/output error")

    with pytest.raises(SourceReadError, match="Input/output error"):
        ds.backup("vm", [SourceFile("b", lambda: Broken(b"x" * 10))])
    assert ds.points() == []
    assert not leftovers(Path(ds.root))


def test_bad_input(ds: Datastore, files: Files) -> None:
    f = files("d", [rand(1000)])
    with pytest.raises(InvalidSource, match="outside the file"):
        ds.backup("vm", [SourceFile("d", f, changed_ranges=[(900, 200)])])
    with pytest.raises(InvalidSource, match="relative"):
        ds.backup("vm", [SourceFile("/abs", f)])
    with pytest.raises(InvalidSource, match=r"'\.\.'"):
        ds.backup("vm", [SourceFile("../up", f)])
    with pytest.raises(InvalidSource, match="backslash"):
        ds.backup("vm", [SourceFile("..\\up", f)])
    with pytest.raises(InvalidSource, match="twice"):
        ds.backup("vm", [SourceFile("d", f), SourceFile("d", f)])
    with pytest.raises(InvalidSource, match="consistency"):
        ds.backup("vm", [SourceFile("d", f)], consistency="bogus")
    with pytest.raises(InvalidSource, match="JSON"):
        ds.backup("vm", [SourceFile("d", f)], metadata={"x": object()})
    with pytest.raises(InvalidSource):
        ds.backup("", [SourceFile("d", f)])
    assert ds.points() == []


def test_full_disk_gives_clear_error_and_keeps_datastore_consistent(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        ds = Datastore.create(mnt / "ds", chunk_size=CHUNK)
        small = write_file(tmp_path / "small.bin", [rand(2 * MiB)])
        p1 = ds.backup("vm", [SourceFile("small.bin", small)])
        big = write_file(tmp_path / "big.bin", [rand(12 * MiB, 7)])
        with pytest.raises(NoSpace, match="no space left"):
            ds.backup("vm", [SourceFile("big.bin", big)])
        assert [p.id for p in ds.points()] == [p1.id]
        assert not leftovers(mnt)
        assert ds.verify().ok
        out = tmp_path / "out"
        ds.restore(p1.id, out)
        assert sha(out / "small.bin") == sha(small)
        # Once space is back (GC of the orphaned chunks), backups work again.
        ds.gc(grace_seconds=0)
        p3 = ds.backup("vm", [SourceFile("small.bin", small)])
        assert p3.bytes_new == 0
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_memory_is_bounded_by_the_pool(ds: Datastore, files: Files) -> None:
    """The number of buffers in flight never exceeds 2 x workers."""
    import tracemalloc

    f = files("d", [rand(24 * MiB)])
    tracemalloc.start()
    ds.backup("vm", [SourceFile("d", f)], workers=2)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 12 * MiB, peak


def test_many_small_files(ds: Datastore, tmp_path: Path) -> None:
    srcs = []
    for i in range(40):
        p = write_file(tmp_path / "s" / f"f{i}", [rand(i * 997, seed=i)])
        srcs.append(SourceFile(f"dir{i % 3}/f{i}", p))
    pt = ds.backup("vm", srcs)
    out = restored(ds, pt.id, tmp_path)
    for s in srcs:
        assert sha(out / s.name) == sha(s.source)  # type: ignore[arg-type]
