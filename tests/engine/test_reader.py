from __future__ import annotations

import io
import os
import random
import shutil
from pathlib import Path

import pytest

from storage.engine import CorruptChunk, Datastore, FileNotInPoint, SourceFile

from .conftest import CHUNK, MiB, rand, write_file


@pytest.fixture
def point(ds: Datastore, tmp_path: Path) -> tuple[str, bytes]:
    data = rand(3 * MiB + 777) + bytes(2 * CHUNK) + b"tail" * 1000
    f = write_file(tmp_path / "f", [data])
    return ds.backup("vm", [SourceFile("disk.vhdx", f)]).id, data


def test_random_seeks_and_reads_match(ds: Datastore, point: tuple[str, bytes]) -> None:
    pid, data = point
    rng = random.Random(1)
    with ds.open_file(pid, "disk.vhdx") as r:
        assert isinstance(r, io.RawIOBase) and r.readable() and r.seekable()
        assert r.seek(0, os.SEEK_END) == len(data)
        for _ in range(300):
            off = rng.randrange(0, len(data) + 10)
            n = rng.randrange(0, 3 * CHUNK)
            r.seek(off)
            assert r.read(n) == data[off : off + n]
            assert r.tell() == min(off + n, max(off, len(data))) or off > len(data)
        r.seek(-4, os.SEEK_END)
        assert r.read() == b"tail"
        r.seek(10)
        r.seek(5, os.SEEK_CUR)
        assert r.read(3) == data[15:18]
        with pytest.raises(ValueError):
            r.seek(-1)


def test_works_with_buffered_reader_and_copyfileobj(ds: Datastore, point: tuple[str, bytes]) -> None:
    pid, data = point
    out = io.BytesIO()
    with io.BufferedReader(ds.open_file(pid, "disk.vhdx"), 64 * 1024) as r:
        shutil.copyfileobj(r, out)
    assert out.getvalue() == data


def test_cache_is_bounded_and_corruption_raises(ds: Datastore, point: tuple[str, bytes]) -> None:
    pid, _ = point
    with ds.open_file(pid, "disk.vhdx", cache_bytes=2 * CHUNK) as r:
        r.read()
        assert len(r._cache) <= 2
        first = r.digest_at(0)
    path = Path(ds.store.path(first))
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0xFF
    path.write_bytes(raw)
    with ds.open_file(pid, "disk.vhdx") as r, pytest.raises(CorruptChunk):
        r.read(10)


def test_unknown_file(ds: Datastore, point: tuple[str, bytes]) -> None:
    with pytest.raises(FileNotInPoint):
        ds.open_file(point[0], "other")
