"""A lazy, seekable file object over one file of a recovery point."""

from __future__ import annotations

import io
import os
from collections import OrderedDict
from typing import Any

from .chunks import ZERO_DIGEST
from .index import IndexReader
from .store import ChunkStore

DEFAULT_CACHE_BYTES = 64 << 20


class PointFileReader(io.RawIOBase):
    """Reads chunks only when asked for, keeping an LRU cache of decoded chunks.

    Item-level recovery hands this to a VHDX/NTFS parser, so browsing a large disk
    reads only the chunks the parser touches. Every chunk is checked against its
    digest when loaded (``CorruptChunk`` on mismatch).
    """

    def __init__(
        self,
        store: ChunkStore,
        index_path: str,
        *,
        name: str = "",
        expect_checksum: str | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        super().__init__()
        self.name = name
        self._store = store
        self._index = IndexReader(index_path, expect=expect_checksum)
        self.size = self._index.file_size
        self.chunk_size = self._index.chunk_size
        self._pos = 0
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cache_max = max(1, cache_bytes // self.chunk_size)
        self._zero = bytes(self.chunk_size)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def digest_at(self, i: int) -> bytes:
        return self._index.digest(i)

    def chunk(self, i: int) -> bytes:
        """Decoded chunk ``i`` (zero chunks come from a shared zero buffer)."""
        d = self._index.digest(i)
        if d == ZERO_DIGEST:
            ln = min(self.chunk_size, self.size - i * self.chunk_size)
            return self._zero if ln == self.chunk_size else bytes(ln)
        data = self._cache.get(i)
        if data is not None:
            self._cache.move_to_end(i)
            return data
        data = self._store.load(d)
        self._cache[i] = data
        if len(self._cache) > self._cache_max:
            self._cache.popitem(last=False)
        return data

    def readinto(self, b: Any) -> int:
        mv = memoryview(b).cast("B")
        want = min(len(mv), max(0, self.size - self._pos))
        got = 0
        cs = self.chunk_size
        while got < want:
            pos = self._pos + got
            i, o = divmod(pos, cs)
            data = self.chunk(i)
            n = min(want - got, len(data) - o)
            mv[got : got + n] = data[o : o + n]
            got += n
        self._pos += got
        return got

    def readall(self) -> bytes:
        out = bytearray()
        buf = bytearray(1 << 20)
        while True:
            n = self.readinto(buf)
            if not n:
                return bytes(out)
            out += buf[:n]

    def close(self) -> None:
        if not self.closed:
            self._index.close()
            self._cache.clear()
        super().close()
