from __future__ import annotations

import os

import pytest

from storage.engine.chunks import ChunkCodec
from storage.engine.errors import CorruptChunk
from storage.engine.format import Keys

CS = 256 * 1024
KEYS = Keys(enc_key=bytes(range(32)), id_key=bytes(range(32, 64)))


@pytest.mark.parametrize("keys", [None, KEYS], ids=["plain", "encrypted"])
@pytest.mark.parametrize("data", [os.urandom(CS), b"log line\n" * (CS // 9), os.urandom(1000), b""], ids=str)
def test_round_trip(keys: Keys | None, data: bytes) -> None:
    c = ChunkCodec(CS, 3, keys)
    d = c.digest(data)
    blob = c.encode(memoryview(data), d)
    assert c.decode(blob, d) == data


def test_compressible_data_is_compressed_and_random_is_not() -> None:
    c = ChunkCodec(CS, 3, None)
    text = b"2025-01-01 INFO something happened\n" * (CS // 35)
    assert len(c.encode(memoryview(text), c.digest(text))) < len(text) // 10
    rnd = os.urandom(CS)
    assert len(c.encode(memoryview(rnd), c.digest(rnd))) == CS + 1


def test_keyed_digest_differs_and_zero_detection() -> None:
    plain = ChunkCodec(CS, 3, None)
    keyed = ChunkCodec(CS, 3, KEYS)
    data = b"x" * 100
    assert plain.digest(data) != keyed.digest(data)
    for c in (plain, keyed):
        assert c.is_zero(c.digest(bytes(CS)), CS)
        assert c.is_zero(c.digest(bytes(777)), 777)
        assert not c.is_zero(c.digest(b"\0" * 776 + b"\1"), 777)


@pytest.mark.parametrize("keys", [None, KEYS], ids=["plain", "encrypted"])
def test_tampering_is_detected(keys: Keys | None) -> None:
    c = ChunkCodec(CS, 3, keys)
    data = os.urandom(5000)
    d = c.digest(data)
    blob = bytearray(c.encode(memoryview(data), d))
    blob[len(blob) // 2] ^= 0x40
    with pytest.raises(CorruptChunk):
        c.decode(bytes(blob), d)
    with pytest.raises(CorruptChunk, match="empty"):
        c.decode(b"", d)
    with pytest.raises(CorruptChunk):
        c.decode(bytes(blob[: len(blob) // 2]), d)


def test_encrypted_blob_bound_to_its_digest() -> None:
    c = ChunkCodec(CS, 3, KEYS)
    a, b = b"a" * 100, b"b" * 100
    blob_a = c.encode(memoryview(a), c.digest(a))
    with pytest.raises(CorruptChunk, match="authentication"):
        c.decode(blob_a, c.digest(b))
