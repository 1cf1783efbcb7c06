"""Recovery points: ``points/<id>/manifest.json`` plus one ``<n>.didx`` per file.

A point directory without ``manifest.json`` is not a recovery point (a backup in
progress or one that died); only GC ever looks at those.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .errors import Busy, EngineError, PointNotFound, wrap_oserror
from .inprogress import DirLock, pinned_points
from .util import atomic_write, fsync_dir

MANIFEST = "manifest.json"
VERIFY = "verify.json"
DELETING = ".deleting"
POINT_FORMAT = "hvbs-point"
POINT_VERSION = 1
CONSISTENCY = ("application", "crash", "file")


@dataclass(frozen=True)
class FileInfo:
    name: str
    size: int
    chunks: int
    index: str = ""
    index_checksum: str = ""
    bytes_read: int = 0
    bytes_new: int = 0
    zero_chunks: int = 0


@dataclass(frozen=True)
class PointInfo:
    id: str
    vm_id: str
    vm_name: str
    created: datetime
    files: list[FileInfo]
    total_bytes: int
    bytes_new: int
    consistency: str
    parent: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    damaged: bool = False
    chunk_size: int = 0
    bytes_read: int = 0
    duration: float = 0.0
    verified: datetime | None = None

    def file(self, name: str) -> FileInfo | None:
        for f in self.files:
            if f.name == name:
                return f
        return None


def new_point_id(now: datetime) -> str:
    """Sortable by time (string order == time order), unique by a random tail."""
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ") + "-" + secrets.token_hex(4)


def points_dir(root: str) -> str:
    return os.path.join(root, "points")


def point_dir(root: str, point_id: str) -> str:
    if not point_id or "/" in point_id or point_id.startswith(".") or "\\" in point_id:
        raise PointNotFound(f"invalid recovery point id {point_id!r}")
    return os.path.join(points_dir(root), point_id)


def manifest_doc(info: PointInfo) -> dict[str, Any]:
    return {
        "format": POINT_FORMAT,
        "version": POINT_VERSION,
        "id": info.id,
        "vm_id": info.vm_id,
        "vm_name": info.vm_name,
        "created": info.created.isoformat(),
        "consistency": info.consistency,
        "parent": info.parent,
        "chunk_size": info.chunk_size,
        "files": [
            {
                "name": f.name,
                "size": f.size,
                "chunks": f.chunks,
                "index": f.index,
                "index_blake3": f.index_checksum,
                "bytes_read": f.bytes_read,
                "bytes_new": f.bytes_new,
                "zero_chunks": f.zero_chunks,
            }
            for f in info.files
        ],
        "totals": {
            "bytes": info.total_bytes,
            "bytes_read": info.bytes_read,
            "bytes_new": info.bytes_new,
            "duration_seconds": round(info.duration, 3),
        },
        "metadata": info.metadata,
    }


def write_manifest(root: str, info: PointInfo) -> None:
    data = json.dumps(manifest_doc(info), indent=1, sort_keys=False).encode() + b"\n"
    atomic_write(os.path.join(point_dir(root, info.id), MANIFEST), data, what="committing recovery point")
    fsync_dir(points_dir(root))


def _parse(doc: dict[str, Any], pdir: str) -> PointInfo:
    if doc.get("format") != POINT_FORMAT or doc.get("version") != POINT_VERSION:
        raise EngineError(f"{pdir}: unsupported manifest version {doc.get('version')}")
    damaged = False
    verified = None
    try:
        with open(os.path.join(pdir, VERIFY), "rb") as f:
            v = json.load(f)
        damaged = not v.get("ok", True)
        verified = datetime.fromisoformat(v["verified"]) if v.get("verified") else None
    except (OSError, ValueError, KeyError, TypeError):
        pass
    totals = doc.get("totals", {})
    return PointInfo(
        id=doc["id"],
        vm_id=doc["vm_id"],
        vm_name=doc.get("vm_name", doc["vm_id"]),
        created=datetime.fromisoformat(doc["created"]),
        files=[
            FileInfo(
                name=f["name"],
                size=int(f["size"]),
                chunks=int(f["chunks"]),
                index=f["index"],
                index_checksum=f.get("index_blake3", ""),
                bytes_read=int(f.get("bytes_read", 0)),
                bytes_new=int(f.get("bytes_new", 0)),
                zero_chunks=int(f.get("zero_chunks", 0)),
            )
            for f in doc["files"]
        ],
        total_bytes=int(totals.get("bytes", 0)),
        bytes_new=int(totals.get("bytes_new", 0)),
        consistency=doc.get("consistency", "crash"),
        parent=doc.get("parent"),
        metadata=doc.get("metadata") or {},
        damaged=damaged,
        chunk_size=int(doc["chunk_size"]),
        bytes_read=int(totals.get("bytes_read", 0)),
        duration=float(totals.get("duration_seconds", 0.0)),
        verified=verified,
    )


def load_point(root: str, point_id: str) -> PointInfo:
    pdir = point_dir(root, point_id)
    try:
        with open(os.path.join(pdir, MANIFEST), "rb") as f:
            doc = json.load(f)
    except FileNotFoundError as exc:
        raise PointNotFound(f"no recovery point {point_id!r}") from exc
    except ValueError as exc:
        raise EngineError(f"manifest of recovery point {point_id} is not valid JSON") from exc
    except OSError as exc:
        raise wrap_oserror(exc, f"reading recovery point {point_id}") from exc
    try:
        return _parse(doc, pdir)
    except (KeyError, TypeError, ValueError) as exc:
        raise EngineError(f"manifest of recovery point {point_id} is incomplete: {exc}") from exc


def _point_names(root: str) -> list[str]:
    try:
        return [name for name in os.listdir(points_dir(root)) if not name.startswith(".")]
    except FileNotFoundError:
        return []


def list_points(root: str, vm_id: str | None = None) -> list[PointInfo]:
    """All committed points whose manifest can be read, oldest first; rebuilt from the
    datastore alone.

    A damaged manifest is left out rather than raised: one bad point must not stop the
    backups of every VM in the datastore. ``scan_points`` names such points, and verify
    reports them as damaged.
    """
    scan = scan_points(root)
    return [info for info in scan.points if vm_id is None or info.vm_id == vm_id]


@dataclass(frozen=True)
class PointScan:
    """Every committed point that could be read, and why the others could not."""

    points: list[PointInfo]
    unreadable: list[tuple[str, str]]  # (point directory name, the engine's message)


def scan_points(root: str) -> PointScan:
    """Like ``list_points``, but a manifest that cannot be read is reported, not raised:
    rebuilding a catalog must get every good point even when one manifest is damaged."""
    good: list[PointInfo] = []
    bad: list[tuple[str, str]] = []
    for name in _point_names(root):
        try:
            good.append(load_point(root, name))
        except PointNotFound:
            continue
        except EngineError as error:
            bad.append((name, str(error)))
    good.sort(key=lambda p: (p.created, p.id))
    bad.sort()
    return PointScan(good, bad)


def delete_point(root: str, point_id: str) -> None:
    """Uncommit first (manifest renamed away), then check pins, then remove.

    A running backup pins its parent before it checks that the parent's manifest
    exists, and we check pins after the manifest is gone: so either the backup
    sees no parent, or we see its pin and put the manifest back.
    """
    pdir = point_dir(root, point_id)
    mpath = os.path.join(pdir, MANIFEST)
    gone = mpath + DELETING
    try:
        lock = DirLock(pdir)
    except FileNotFoundError as exc:
        raise PointNotFound(f"no recovery point {point_id!r}") from exc
    try:
        try:
            os.rename(mpath, gone)
        except FileNotFoundError as exc:
            raise PointNotFound(f"no recovery point {point_id!r}") from exc
        fsync_dir(pdir)
        if point_id in pinned_points(root):
            os.rename(gone, mpath)
            fsync_dir(pdir)
            raise Busy(f"recovery point {point_id} is the parent of a running backup; not deleted")
        shutil.rmtree(pdir, onexc=ignore_missing)
        fsync_dir(points_dir(root))
    except OSError as exc:
        raise wrap_oserror(exc, f"deleting recovery point {point_id}") from exc
    finally:
        lock.release()


def ignore_missing(func: object, path: str, exc: BaseException) -> None:
    if not isinstance(exc, FileNotFoundError):
        raise exc


def write_verify(root: str, point_id: str, doc: dict[str, Any]) -> None:
    atomic_write(
        os.path.join(point_dir(root, point_id), VERIFY),
        json.dumps(doc, indent=1).encode() + b"\n",
        what=f"recording verify result of {point_id}",
    )
