from __future__ import annotations

import os
from pathlib import Path

import pytest

from storage.engine.errors import CorruptIndex
from storage.engine.index import HEADER_SIZE, IndexReader, IndexWriter


def _write(path: Path, n: int, size: int) -> tuple[list[bytes], str]:
    w = IndexWriter(str(path), 1024, size)
    ds = [os.urandom(32) for _ in range(n)]
    for d in ds:
        w.add(d)
    return ds, w.finish()


def test_round_trip_many_blocks(tmp_path: Path) -> None:
    n = 10_000  # crosses the reader's 4096-entry cache blocks
    digests, checksum = _write(tmp_path / "i", n, n * 1024 - 5)
    with IndexReader(str(tmp_path / "i"), expect=checksum) as r:
        assert r.count == n and r.file_size == n * 1024 - 5 and r.chunk_size == 1024
        assert list(r) == digests
        assert r.digest(4097) == digests[4097]
        assert r.digest(3) == digests[3]


def test_wrong_count_refused(tmp_path: Path) -> None:
    w = IndexWriter(str(tmp_path / "i"), 1024, 4096)
    w.add(bytes(32))
    with pytest.raises(CorruptIndex):
        w.finish()
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_corruption_detected(tmp_path: Path) -> None:
    _write(tmp_path / "i", 10, 10 * 1024)
    raw = bytearray((tmp_path / "i").read_bytes())
    raw[HEADER_SIZE + 40] ^= 1
    (tmp_path / "i").write_bytes(raw)
    IndexReader(str(tmp_path / "i")).close()  # structure is fine ...
    with pytest.raises(CorruptIndex, match="checksum"):
        IndexReader(str(tmp_path / "i"), verify=True)  # ... content is not
    (tmp_path / "i").write_bytes(raw[:-3])
    with pytest.raises(CorruptIndex, match="length"):
        IndexReader(str(tmp_path / "i"))
    with pytest.raises(CorruptIndex, match="missing"):
        IndexReader(str(tmp_path / "nope"))
