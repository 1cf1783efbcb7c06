"""Open a recovery point's virtual disk file (VHDX, AVHDX chain, VHD) as a readable disk.

The file object is the engine's lazy ``PointFileReader``, so parsing reads only the
chunks it touches. storage.vdisk opens the disk; this module supplies what a
recovery point needs around it: a parent opener that looks inside the point
(not on the local file system), and errors as item-level recovery reports them.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable

from storage import vdisk
from storage.engine.errors import EngineError
from storage.vdisk import LOG_NOT_REPLAYED, VirtualDisk
from storage.vdisk.chain import DiskFile, ParentOpener, ParentRef

from .errors import ItemNotFound, ParentDiskMissing, item_errors

__all__ = [
    "LOG_NOT_REPLAYED",
    "DiskFile",
    "ParentOpener",
    "ParentRef",
    "VirtualDisk",
    "open_disk",
    "open_point_disk",
    "resolve_parent",
]


def open_disk(
    fh: DiskFile,
    *,
    name: str = "",
    parent_opener: ParentOpener | None = None,
) -> VirtualDisk:
    """Open ``fh`` (a VHDX, AVHDX or VHD file object) as a virtual disk.

    ``parent_opener`` is called for each differencing disk's parent with a
    :class:`ParentRef` and returns ``(name, file object)``; without it a
    differencing disk raises :class:`ParentDiskMissing`. The returned disk owns
    the parents' file objects (``close()`` closes them), not ``fh``.
    """
    with item_errors(name or "the disk"):
        return vdisk.open_disk(fh, name=name, parent_opener=parent_opener, source_errors=(EngineError,))


def resolve_parent(ref: ParentRef, names: Iterable[str]) -> str:
    """The name, among a recovery point's file names, of the parent ``ref`` describes.

    Hyper-V writes ``relative_path`` relative to the child's folder (``.\\base.vhdx``);
    the point keeps the VM's folder layout, so that is tried first. The absolute
    path's file name is the fallback for chains whose parent lived in another folder.
    """
    names = list(names)
    by_lower: dict[str, list[str]] = {}
    for n in names:
        by_lower.setdefault(n.lower(), []).append(n)
    child_dir = posixpath.dirname(ref.child_name)
    if ref.relative_path:
        rel = ref.relative_path.replace("\\", "/")
        candidate = posixpath.normpath(posixpath.join(child_dir, rel)).lstrip("/")
        if not candidate.startswith("../") and candidate.lower() in by_lower:
            hits = by_lower[candidate.lower()]
            return candidate if candidate in hits else hits[0]
    for path in (ref.absolute_path, ref.relative_path):
        if not path:
            continue
        base = path.replace("\\", "/").rsplit("/", 1)[-1].lower()
        hits = [n for n in names if posixpath.basename(n).lower() == base and n != ref.child_name]
        same_dir = [n for n in hits if posixpath.dirname(n) == child_dir]
        if len(same_dir) == 1:
            return same_dir[0]
        if len(hits) == 1:
            return hits[0]
    wanted = ref.relative_path or ref.absolute_path or "its parent"
    raise ParentDiskMissing(
        f"the differencing disk {ref.child_name} needs its parent {wanted}, which is not in this "
        "recovery point"
    )


def open_point_disk(
    names: Iterable[str],
    open_file: Callable[[str], DiskFile],
    name: str,
) -> VirtualDisk:
    """Open the disk ``name`` of a recovery point, following a differencing chain inside it.

    ``names`` are all file names of the point and ``open_file(name)`` opens one
    (e.g. ``lambda n: datastore.open_file(point_id, n)``). The disk owns every file
    it opened: ``close()`` (or ``with``) releases them.
    """
    names = list(names)

    def parent_opener(ref: ParentRef) -> tuple[str, DiskFile]:
        parent = resolve_parent(ref, names)
        return parent, open_file(parent)

    if name not in names:
        raise ItemNotFound(f"the recovery point holds no disk file named {name}")
    with item_errors(name):  # e.g. the store lost the file since the page listed it
        fh = open_file(name)
    try:
        disk = open_disk(fh, name=name, parent_opener=parent_opener)
    except BaseException:
        fh.close()
        raise
    disk.own(fh)
    return disk
