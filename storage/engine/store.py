"""The chunk directory: ``chunks/<first 4 hex>/<64 hex digest>``.

Writers never expose a partial chunk under its final name. Backups use a
``ChunkBatch``: chunk blobs go to temporary names, and every few hundred MiB one
``syncfs`` makes them durable before they are renamed to their final names. So a
file named by a digest is always complete. One journal commit per batch instead
of one per chunk: measured 1.3-1.8x faster than per-file ``fdatasync`` (and
per-directory fsyncs) on ext4, even though ``syncfs`` also waits for other
writers' dirty data on the same filesystem.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Iterator

from .chunks import ChunkCodec
from .errors import ChunkMissing, wrap_oserror
from .util import atomic_write, fsync_dir, syncfs, unlink_quiet

TMP_MARK = ".tmp-"
BAD_SUFFIX = ".bad"
TRASH_SUFFIX = ".trash"


class ChunkStore:
    def __init__(self, root: str, codec: ChunkCodec) -> None:
        self.root = root
        self.dir = os.path.join(root, "chunks")
        self.codec = codec

    def path(self, digest: bytes) -> str:
        h = digest.hex()
        return os.path.join(self.dir, h[:4], h)

    def touch(self, digest: bytes) -> bool:
        """Refresh the chunk's mtime; False when it does not exist.

        One syscall answers "is it stored?" and tells a concurrent GC sweep that
        the chunk is in use again (see the GC safety argument in the docs).
        """
        try:
            os.utime(self.path(digest))
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise wrap_oserror(exc, f"touching chunk {digest.hex()}") from exc

    def exists(self, digest: bytes) -> bool:
        return os.path.exists(self.path(digest))

    def read_blob(self, digest: bytes) -> bytes:
        p = self.path(digest)
        try:
            fd = os.open(p, os.O_RDONLY)
            try:
                return os.read(fd, 2 * self.codec.chunk_size + 1024)
            finally:
                os.close(fd)
        except FileNotFoundError:
            # A GC sweep may hold it under its trash name for an instant.
            try:
                with open(p + TRASH_SUFFIX, "rb", buffering=0) as f:
                    return f.read()
            except FileNotFoundError:
                raise ChunkMissing(digest.hex()) from None
        except OSError as exc:
            raise wrap_oserror(exc, f"reading chunk {digest.hex()}") from exc

    def load(self, digest: bytes, *, check: bool = True) -> bytes:
        return self.codec.decode(self.read_blob(digest), digest, check=check)

    def set_aside(self, digest: bytes) -> None:
        """Rename a damaged chunk to ``<digest>.bad`` so the next backup re-stores it."""
        p = self.path(digest)
        try:
            os.replace(p, p + BAD_SUFFIX)
            os.utime(p + BAD_SUFFIX)  # keeps it for a GC grace period, for inspection
            fsync_dir(os.path.dirname(p))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise wrap_oserror(exc, f"setting chunk {digest.hex()} aside") from exc

    def write_durable(self, digest: bytes, blob: bytes) -> None:
        """Store one chunk now (used outside backups, e.g. by tests and tools)."""
        batch = ChunkBatch(self)
        batch.add(digest, blob)
        batch.flush()

    def iter_subdirs(self) -> Iterator[str]:
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return
        for name in names:
            if len(name) == 4:
                yield os.path.join(self.dir, name)

    def iter_digests(self) -> Iterator[tuple[bytes, str]]:
        """Every stored chunk (final names only) as (digest, path)."""
        for sub in self.iter_subdirs():
            try:
                entries = os.listdir(sub)
            except FileNotFoundError:
                continue
            for name in sorted(entries):
                if len(name) == 64:
                    try:
                        yield bytes.fromhex(name), os.path.join(sub, name)
                    except ValueError:
                        continue


class ChunkBatch:
    """Collects new chunks of one backup and publishes them durably in batches."""

    def __init__(self, store: ChunkStore, max_bytes: int = 256 << 20, max_files: int = 2048):
        self.store = store
        self.max_bytes = max_bytes
        self.max_files = max_files
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._pending: list[tuple[str, str]] = []
        self._pending_digests: set[bytes] = set()
        self._pending_bytes = 0
        self._token = f"{os.getpid()}-{secrets.token_hex(3)}"
        self._made_dirs: set[str] = set()
        # At most 65536 short strings: the chunk subdirectories we renamed into.
        self._renamed_dirs: set[str] = set()

    def is_pending(self, digest: bytes) -> bool:
        with self._lock:
            return digest in self._pending_digests

    def add(self, digest: bytes, blob: bytes) -> int:
        """Write a chunk under a temporary name; returns bytes written (0 if a
        duplicate is already pending in this batch)."""
        with self._lock:
            if digest in self._pending_digests:
                return 0
            self._pending_digests.add(digest)
        final = self.store.path(digest)
        sub = os.path.dirname(final)
        tmp = f"{final}{TMP_MARK}{self._token}-{secrets.token_hex(2)}"
        try:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileNotFoundError:
                os.makedirs(sub, exist_ok=True)
                with self._lock:
                    self._made_dirs.add(sub)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(blob)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        except OSError as exc:
            unlink_quiet(tmp)
            with self._lock:
                self._pending_digests.discard(digest)
            raise wrap_oserror(exc, f"writing chunk {digest.hex()}") from exc
        with self._lock:
            self._pending.append((tmp, final))
            self._pending_bytes += len(blob)
            full = self._pending_bytes >= self.max_bytes or len(self._pending) >= self.max_files
        if full:
            self.flush()
        return len(blob)

    def flush(self) -> None:
        """Make pending chunks durable, then publish them under their final names."""
        with self._flush_lock:
            with self._lock:
                pending, self._pending = self._pending, []
                digests = self._pending_digests
                self._pending_digests = set()
                self._pending_bytes = 0
                made, self._made_dirs = self._made_dirs, set()
            if not pending and not made:
                return
            try:
                if not syncfs(self.store.dir):
                    for tmp, _ in pending:
                        fd = os.open(tmp, os.O_RDONLY)
                        try:
                            os.fdatasync(fd)
                        finally:
                            os.close(fd)
                for tmp, final in pending:
                    os.rename(tmp, final)
                    self._renamed_dirs.add(os.path.dirname(final))
                if made:
                    fsync_dir(self.store.dir)
            except OSError as exc:
                for tmp, _ in pending:
                    unlink_quiet(tmp)
                raise wrap_oserror(exc, "publishing chunks") from exc
            finally:
                del digests

    def abort(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            self._pending_digests = set()
        for tmp, _ in pending:
            unlink_quiet(tmp)

    def commit_renames(self) -> None:
        """Make the renames themselves durable (before anything references them)."""
        self.flush()
        try:
            if not syncfs(self.store.dir):
                for d in sorted(self._renamed_dirs):
                    fsync_dir(d)
        except OSError as exc:
            raise wrap_oserror(exc, "syncing the chunk directory") from exc
        self._renamed_dirs.clear()


HEAL_FILE = "heal-chunks"


def load_heal(root: str) -> set[bytes]:
    """Digests verify found damaged or missing: backups must not trust a parent
    index for these, but check the store and re-write them."""
    try:
        with open(os.path.join(root, HEAL_FILE), "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return set()
    return {raw[i : i + 32] for i in range(0, len(raw) - len(raw) % 32, 32)}


def save_heal(root: str, digests: set[bytes]) -> None:
    if not digests and not os.path.exists(os.path.join(root, HEAL_FILE)):
        return
    atomic_write(os.path.join(root, HEAL_FILE), b"".join(sorted(digests)), what="recording damaged chunks")


def chunk_age(path: str, now: float | None = None) -> float:
    return (now or time.time()) - os.stat(path).st_mtime
