"""Chunk digests and the on-disk chunk blob encoding.

Blob layout (see docs/datastore-format.md):
  byte 0: 0x10 | flags   (bit0 = zstd, bit1 = AES-256-GCM)
  plain:      payload
  encrypted:  12-byte nonce || AESGCM(payload, aad = byte0 || digest)
"""

from __future__ import annotations

import secrets
import threading
from typing import Any

import blake3
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import CorruptChunk
from .format import Keys

DIGEST_SIZE = 32
# Zero chunks are recorded with this sentinel instead of their real digest: one
# well-known value, independent of the key and of the chunk's length.
ZERO_DIGEST = bytes(DIGEST_SIZE)

_VERSION = 0x10
_F_ZSTD = 0x01
_F_ENC = 0x02
_SAMPLE = 64 * 1024


class ChunkCodec:
    """Thread-safe: zstd contexts are per thread, everything else is immutable."""

    def __init__(self, chunk_size: int, level: int, keys: Keys | None) -> None:
        self.chunk_size = chunk_size
        self.level = level
        self.keys = keys
        self._aes: Any = None
        if keys is not None:
            self._aes = AESGCM(keys.enc_key)
        self._local = threading.local()
        self._zero_digests: dict[int, bytes] = {}
        self._zero_lock = threading.Lock()
        self.zero_full = self.zero_digest_of(chunk_size)

    def digest(self, data: bytes | memoryview | bytearray) -> bytes:
        if self.keys is not None:
            return blake3.blake3(data, key=self.keys.id_key).digest()
        return blake3.blake3(data).digest()

    def zero_digest_of(self, length: int) -> bytes:
        """The real digest of ``length`` zero bytes (to recognise zero chunks by
        their digest: the hash is computed anyway, so detection costs nothing)."""
        d = self._zero_digests.get(length)
        if d is None:
            with self._zero_lock:
                d = self.digest(bytes(length))
                self._zero_digests[length] = d
        return d

    def is_zero(self, digest: bytes, length: int) -> bool:
        if length == self.chunk_size:
            return digest == self.zero_full
        return digest == self.zero_digest_of(length)

    def _cctx(self) -> zstandard.ZstdCompressor:
        c: zstandard.ZstdCompressor | None = getattr(self._local, "c", None)
        if c is None:
            c = zstandard.ZstdCompressor(level=self.level)
            self._local.c = c
            self._local.fast = zstandard.ZstdCompressor(level=1)
        return c

    def _dctx(self) -> zstandard.ZstdDecompressor:
        d: zstandard.ZstdDecompressor | None = getattr(self._local, "d", None)
        if d is None:
            d = zstandard.ZstdDecompressor()
            self._local.d = d
        return d

    def encode(self, data: memoryview, digest: bytes) -> bytes:
        n = len(data)
        flags = 0
        payload: bytes | memoryview = data
        cctx = self._cctx()
        # A cheap level-1 probe on a sample skips the full compression attempt
        # for incompressible data (encrypted guest volumes, media, archives).
        compressible = True
        if n > 2 * _SAMPLE:
            probe = self._local.fast.compress(data[:_SAMPLE])
            compressible = len(probe) < _SAMPLE * 0.97
        if compressible:
            packed = cctx.compress(data)
            if len(packed) < n:
                payload = packed
                flags |= _F_ZSTD
        if self._aes is not None:
            flags |= _F_ENC
            head = bytes((_VERSION | flags,))
            nonce = secrets.token_bytes(12)
            return head + nonce + self._aes.encrypt(nonce, bytes(payload), head + digest)
        return bytes((_VERSION | flags,)) + payload

    def decode(self, blob: bytes, digest: bytes, *, check: bool = True) -> bytes:
        hexd = digest.hex()
        if not blob:
            raise CorruptChunk(hexd, "empty file")
        head = blob[0]
        if head & 0xF0 != _VERSION or head & 0x0C:
            raise CorruptChunk(hexd, "unknown header")
        flags = head & 0x0F
        payload: bytes = blob[1:]
        if flags & _F_ENC:
            if self._aes is None:
                raise CorruptChunk(hexd, "encrypted chunk in an unencrypted datastore")

            try:
                payload = self._aes.decrypt(blob[1:13], blob[13:], blob[:1] + digest)
            except InvalidTag as exc:
                raise CorruptChunk(hexd, "authentication failed") from exc
        elif self._aes is not None:
            raise CorruptChunk(hexd, "unencrypted chunk in an encrypted datastore")
        if flags & _F_ZSTD:
            try:
                payload = self._dctx().decompress(payload, max_output_size=self.chunk_size)
            except zstandard.ZstdError as exc:
                raise CorruptChunk(hexd, f"cannot decompress ({exc})") from exc
        if len(payload) > self.chunk_size:
            raise CorruptChunk(hexd, "longer than the chunk size")
        if check and self.digest(payload) != digest:
            raise CorruptChunk(hexd, "content does not match its digest")
        return payload
