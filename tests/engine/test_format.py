from __future__ import annotations

import json
from pathlib import Path

import pytest

from storage.engine import (
    Datastore,
    DatastoreExists,
    DatastoreNotFound,
    EngineError,
    FormatVersionError,
    SourceFile,
    WrongKey,
    check_chunk_size,
    read_settings,
)
from storage.engine.format import FORMAT_VERSION

from .conftest import sha


def test_create_writes_versioned_format_json(tmp_path: Path) -> None:
    Datastore.create(tmp_path / "ds", chunk_size=512 * 1024, compression_level=5)
    doc = json.loads((tmp_path / "ds" / "format.json").read_text())
    assert doc["version"] == FORMAT_VERSION
    assert doc["chunk_size"] == 512 * 1024
    assert doc["compression"] == {"algorithm": "zstd", "level": 5}
    assert doc["encryption"] is None
    ds = Datastore.open(tmp_path / "ds")
    assert ds.chunk_size == 512 * 1024


@pytest.mark.parametrize("size", [128 * 1024, 8 * 1024 * 1024, 1000 * 1000])
def test_chunk_size_bounds(tmp_path: Path, size: int) -> None:
    with pytest.raises(EngineError, match="chunk size"):
        Datastore.create(tmp_path / "ds", chunk_size=size)


@pytest.mark.parametrize("size", [256 * 1024, 512 * 1024, 1024 * 1024, 4 * 1024 * 1024])
def test_check_chunk_size_accepts_powers_of_two_in_range(size: int) -> None:
    assert check_chunk_size(size) == size


@pytest.mark.parametrize(
    "size", [0, -1, 3 * 1024 * 1024, 256 * 1024 + 1, 8 * 1024 * 1024, 1.0 * 1024 * 1024, True]
)
def test_check_chunk_size_refuses(size: object) -> None:
    with pytest.raises(EngineError, match="power of two between 256 KiB and 4 MiB"):
        check_chunk_size(size)


def test_read_settings_needs_no_key(tmp_path: Path) -> None:
    Datastore.create(tmp_path / "plain", chunk_size=256 * 1024)
    Datastore.create(tmp_path / "secret", chunk_size=2 * 1024 * 1024, key=b"k" * 32)
    plain, secret = read_settings(str(tmp_path / "plain")), read_settings(str(tmp_path / "secret"))
    assert (plain.chunk_size, plain.encrypted) == (256 * 1024, False)
    assert (secret.chunk_size, secret.encrypted) == (2 * 1024 * 1024, True)
    with pytest.raises(DatastoreNotFound):
        read_settings(str(tmp_path / "nothing"))


def test_format_json_with_a_chunk_size_the_engine_refuses(tmp_path: Path) -> None:
    Datastore.create(tmp_path / "ds")
    p = tmp_path / "ds" / "format.json"
    doc = json.loads(p.read_text())
    doc["chunk_size"] = 3 * 1024 * 1024  # in range, but not a power of two
    p.write_text(json.dumps(doc))
    with pytest.raises(FormatVersionError, match="invalid chunk size 3145728"):
        Datastore.open(tmp_path / "ds")


def test_refuses_existing_or_non_empty(tmp_path: Path) -> None:
    Datastore.create(tmp_path / "ds")
    with pytest.raises(DatastoreExists):
        Datastore.create(tmp_path / "ds")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("x")
    with pytest.raises(DatastoreExists):
        Datastore.create(tmp_path / "other")


def test_missing_datastore(tmp_path: Path) -> None:
    with pytest.raises(DatastoreNotFound, match="no datastore"):
        Datastore.open(tmp_path / "nothing")


def test_wrong_format_version(tmp_path: Path) -> None:
    Datastore.create(tmp_path / "ds")
    p = tmp_path / "ds" / "format.json"
    doc = json.loads(p.read_text())
    doc["version"] = 99
    p.write_text(json.dumps(doc))
    with pytest.raises(FormatVersionError, match="version 99"):
        Datastore.open(tmp_path / "ds")
    p.write_text("{not json")
    with pytest.raises(FormatVersionError):
        Datastore.open(tmp_path / "ds")


def test_encrypted_round_trip_and_wrong_key(tmp_path: Path) -> None:
    src = tmp_path / "disk.bin"
    data = b"secret guest data " * 100_000
    src.write_bytes(data)
    ds = Datastore.create(tmp_path / "ds", chunk_size=256 * 1024, key=b"correct key")
    p = ds.backup("vm", [SourceFile("disk.bin", src)])
    # Neither plaintext nor unkeyed digests appear on disk.
    import blake3

    plain_digest = blake3.blake3(data[: 256 * 1024]).hexdigest()
    names = [c.name for c in (tmp_path / "ds" / "chunks").rglob("*") if c.is_file()]
    assert names and plain_digest not in names
    for c in (tmp_path / "ds" / "chunks").rglob("*"):
        if c.is_file():
            assert b"secret guest data" not in c.read_bytes()

    with pytest.raises(WrongKey, match="wrong encryption key"):
        Datastore.open(tmp_path / "ds", key=b"wrong key")
    with pytest.raises(WrongKey, match="key is required"):
        Datastore.open(tmp_path / "ds")

    ds2 = Datastore.open(tmp_path / "ds", key="correct key")
    ds2.restore(p.id, tmp_path / "out")
    assert sha(tmp_path / "out" / "disk.bin") == sha(src)
    assert ds2.verify().ok
