"""The public entry point: ``Datastore``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import format as fmt
from .backup import CancelFn, ProgressFn, run_backup
from .chunks import ChunkCodec
from .errors import Busy, FileNotInPoint, PointNotFound
from .gc import GCReport, run_gc
from .points import PointInfo, PointScan, delete_point, list_points, load_point, point_dir, scan_points
from .reader import DEFAULT_CACHE_BYTES, PointFileReader
from .restore import RestoreResult, Throttle, run_restore
from .retention import RetentionPolicy, select_removals
from .source import SourceFile
from .store import ChunkStore
from .util import utcnow
from .verify import VerifyProgressFn, VerifyReport, run_verify


@dataclass(frozen=True)
class Usage:
    chunk_count: int
    chunk_bytes: int  # allocated on disk
    index_bytes: int
    points: int

    @property
    def total_bytes(self) -> int:
        return self.chunk_bytes + self.index_bytes


class Datastore:
    """A datastore directory. Safe to use from several threads and processes."""

    def __init__(self, root: str, settings: fmt.Settings, keys: fmt.Keys | None) -> None:
        self.root = os.path.abspath(root)
        self.settings = settings
        self.chunk_size = settings.chunk_size
        self.encrypted = keys is not None
        self.codec = ChunkCodec(settings.chunk_size, settings.compression_level, keys)
        self.store = ChunkStore(self.root, self.codec)

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        chunk_size: int = fmt.DEFAULT_CHUNK,
        compression_level: int = fmt.DEFAULT_LEVEL,
        key: bytes | str | None = None,
    ) -> Datastore:
        root = os.fspath(path)
        settings, keys = fmt.create(
            root,
            chunk_size=chunk_size,
            compression_level=compression_level,
            key=fmt.normalise_key(key),
        )
        return cls(root, settings, keys)

    @classmethod
    def open(cls, path: str | os.PathLike[str], key: bytes | str | None = None) -> Datastore:
        root = os.fspath(path)
        settings, keys = fmt.load(root, fmt.normalise_key(key))
        return cls(root, settings, keys)

    # -- backup -----------------------------------------------------------
    def backup(
        self,
        vm_id: str,
        sources: Sequence[SourceFile],
        *,
        vm_name: str | None = None,
        parent: str | None = "latest",
        consistency: str = "crash",
        metadata: dict[str, Any] | None = None,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
        workers: int | None = None,
    ) -> PointInfo:
        return run_backup(
            self,
            vm_id,
            sources,
            vm_name=vm_name,
            parent=parent,
            consistency=consistency,
            metadata=metadata,
            progress=progress,
            cancel=cancel,
            workers=workers,
        )

    # -- catalog ----------------------------------------------------------
    def points(self, vm_id: str | None = None) -> list[PointInfo]:
        return list_points(self.root, vm_id)

    def scan_points(self) -> PointScan:
        """Every readable point, and the manifests that could not be read (with why)."""
        return scan_points(self.root)

    def point(self, point_id: str) -> PointInfo:
        return load_point(self.root, point_id)

    def delete_point(self, point_id: str) -> None:
        delete_point(self.root, point_id)

    # -- restore ----------------------------------------------------------
    def open_file(
        self, point_id: str, name: str, *, cache_bytes: int = DEFAULT_CACHE_BYTES
    ) -> PointFileReader:
        info = load_point(self.root, point_id)
        f = info.file(name)
        if f is None:
            raise FileNotInPoint(f"recovery point {point_id} has no file {name!r}")
        return PointFileReader(
            self.store,
            os.path.join(point_dir(self.root, point_id), f.index),
            name=name,
            expect_checksum=f.index_checksum or None,
            cache_bytes=cache_bytes,
        )

    def restore(
        self,
        point_id: str,
        target_dir: str | os.PathLike[str],
        files: Iterable[str] | None = None,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
        throttle: Throttle | object | None = None,
        *,
        durable: bool = True,
        workers: int | None = None,
    ) -> RestoreResult:
        return run_restore(
            self,
            point_id,
            os.fspath(target_dir),
            files=files,
            progress=progress,
            cancel=cancel,
            throttle=throttle,
            durable=durable,
            workers=workers,
        )

    # -- maintenance ------------------------------------------------------
    def verify(
        self, point_ids: Iterable[str] | None = None, progress: VerifyProgressFn | None = None
    ) -> VerifyReport:
        return run_verify(self, point_ids, progress)

    def prune(
        self, policy: RetentionPolicy, now: datetime | None = None, *, dry_run: bool = False
    ) -> list[PointInfo]:
        """Delete the points the policy does not keep; returns those removed.

        A point that is the parent of a running backup is skipped this time.
        """
        removals = select_removals(self.points(), policy, now or utcnow())
        if dry_run:
            return removals
        removed = []
        for p in removals:
            try:
                delete_point(self.root, p.id)
            except (Busy, PointNotFound):
                continue
            removed.append(p)
        return removed

    def gc(self, grace_seconds: float = 3600.0) -> GCReport:
        return run_gc(self, grace_seconds)

    def usage(self) -> Usage:
        count = size = 0
        for _, path in self.store.iter_digests():
            try:
                size += os.stat(path).st_blocks * 512
                count += 1
            except FileNotFoundError:
                continue
        index_bytes = 0
        pts = self.points()
        for p in pts:
            pdir = point_dir(self.root, p.id)
            for name in os.listdir(pdir):
                try:
                    index_bytes += os.stat(os.path.join(pdir, name)).st_blocks * 512
                except FileNotFoundError:
                    continue
        return Usage(count, size, index_bytes, len(pts))
