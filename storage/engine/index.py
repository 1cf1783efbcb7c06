"""Per-file binary digest index (``<n>.didx``).

Layout, all integers little-endian:
  0   8  magic b"HVBSIDX1"
  8   4  chunk size
  12  4  reserved (0)
  16  8  file size
  24  8  chunk count
  32  32*count  chunk digests (ZERO_DIGEST for all-zero chunks)
  ... 32  BLAKE3 (unkeyed) of everything before it
The index is streamed in both directions, so memory use does not grow with the
file size.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator

import blake3

from .chunks import DIGEST_SIZE
from .errors import CorruptIndex, wrap_oserror
from .util import tmp_path, unlink_quiet

MAGIC = b"HVBSIDX1"
_HEAD = struct.Struct("<8sIIQQ")
HEADER_SIZE = _HEAD.size
_BLOCK = 4096  # digests per cached block (128 KiB)


def chunk_count(size: int, chunk_size: int) -> int:
    return (size + chunk_size - 1) // chunk_size


class IndexWriter:
    def __init__(self, path: str, chunk_size: int, file_size: int) -> None:
        self.path = path
        self.count = chunk_count(file_size, chunk_size)
        self._n = 0
        self._tmp = tmp_path(path)
        self._hash = blake3.blake3()
        self._buf = bytearray()
        try:
            self._f = open(self._tmp, "xb")  # noqa: SIM115 - closed in finish/abort
        except OSError as exc:
            raise wrap_oserror(exc, f"creating index {path}") from exc
        self._put(_HEAD.pack(MAGIC, chunk_size, 0, file_size, self.count))

    def _put(self, data: bytes) -> None:
        self._hash.update(data)
        self._buf += data
        if len(self._buf) >= 1 << 20:
            self._drain()

    def _drain(self) -> None:
        try:
            self._f.write(self._buf)
        except OSError as exc:
            raise wrap_oserror(exc, f"writing index {self.path}") from exc
        self._buf.clear()

    def add(self, digest: bytes) -> None:
        self._n += 1
        self._put(digest)

    def finish(self) -> str:
        """fsync and rename into place; returns the index checksum (hex)."""
        if self._n != self.count:
            raise CorruptIndex(f"index {self.path}: {self._n} digests for {self.count} chunks")
        checksum = self._hash.digest()
        self._buf += checksum
        try:
            self._drain()
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            os.rename(self._tmp, self.path)
        except OSError as exc:
            self.abort()
            raise wrap_oserror(exc, f"writing index {self.path}") from exc
        return checksum.hex()

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._f.close()
        unlink_quiet(self._tmp)


class IndexReader:
    """Random and sequential access to an index without loading it whole."""

    def __init__(self, path: str, *, verify: bool = False, expect: str | None = None) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError as exc:
            raise CorruptIndex(f"index {path} is missing") from exc
        except OSError as exc:
            raise wrap_oserror(exc, f"opening index {path}") from exc
        try:
            head = os.pread(self._fd, HEADER_SIZE, 0)
            if len(head) != HEADER_SIZE:
                raise CorruptIndex(f"index {path} is truncated")
            magic, self.chunk_size, _, self.file_size, self.count = _HEAD.unpack(head)
            if magic != MAGIC:
                raise CorruptIndex(f"index {path} has a bad magic number")
            want = HEADER_SIZE + self.count * DIGEST_SIZE + DIGEST_SIZE
            if os.fstat(self._fd).st_size != want:
                raise CorruptIndex(f"index {path} has the wrong length")
            if verify or expect:
                self.verify(expect)
        except BaseException:
            os.close(self._fd)
            raise
        self._block_no = -1
        self._block = b""

    def verify(self, expect: str | None = None) -> None:
        h = blake3.blake3()
        end = HEADER_SIZE + self.count * DIGEST_SIZE
        off = 0
        while off < end:
            data = os.pread(self._fd, min(1 << 20, end - off), off)
            if not data:
                raise CorruptIndex(f"index {self.path} is truncated")
            h.update(data)
            off += len(data)
        stored = os.pread(self._fd, DIGEST_SIZE, end)
        actual = h.digest()
        if stored != actual:
            raise CorruptIndex(f"index {self.path} fails its checksum")
        if expect is not None and actual.hex() != expect:
            raise CorruptIndex(f"index {self.path} does not match its manifest")

    def digest(self, i: int) -> bytes:
        if not 0 <= i < self.count:
            raise IndexError(i)
        block_no = i // _BLOCK
        if block_no != self._block_no:
            start = HEADER_SIZE + block_no * _BLOCK * DIGEST_SIZE
            n = min(_BLOCK, self.count - block_no * _BLOCK) * DIGEST_SIZE
            self._block = os.pread(self._fd, n, start)
            if len(self._block) != n:
                raise CorruptIndex(f"index {self.path} is truncated")
            self._block_no = block_no
        o = (i - block_no * _BLOCK) * DIGEST_SIZE
        return self._block[o : o + DIGEST_SIZE]

    def __iter__(self) -> Iterator[bytes]:
        for i in range(self.count):
            yield self.digest(i)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> IndexReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
