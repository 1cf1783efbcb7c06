"""Look inside a recovery point: its virtual disks, their volumes, their folders.

Everything reads lazily through the engine's point readers, so listing a folder
of a 100 GB disk reads a handful of chunks. Each call opens what it needs and
closes it again: a web request never keeps a disk open.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from protection.models import RecoveryPoint
from protection.models.groups import POINT_MISSING
from recovery.itemlevel.browse import Entry, list_dir, open_file
from recovery.itemlevel.disk import VirtualDisk, open_point_disk
from recovery.itemlevel.errors import ItemLevelError, ItemNotFound
from recovery.itemlevel.names import printable
from recovery.itemlevel.volumes import Volume, find_volume, list_volumes
from recovery.models import ItemKind
from storage.engine import Datastore as EngineDatastore
from storage.engine import EngineError, PointInfo, PointNotFound

DISK_SUFFIXES = (".vhdx", ".avhdx", ".vhd")
MAX_GUEST_PATH = 32_767  # the longest path Windows itself can address


class InvalidItem(ValueError):
    """A selected item that does not make sense for this recovery point."""


class PointUnavailable(Exception):
    """The point cannot be read: damaged, missing from its datastore, removed, or the
    datastore itself is not there (unmounted, replaced). The message is for the user."""


def open_point(point: RecoveryPoint) -> tuple[EngineDatastore, PointInfo]:
    """The point's datastore (opened for reading) and its manifest, or PointUnavailable."""
    reason = point.unavailable_reason()
    if reason:
        raise PointUnavailable(reason)
    try:
        engine = point.datastore.open_engine(write=False)
        return engine, engine.point(point.point_id)
    except PointNotFound:
        # The datastore is the right one (its id matched) and lacks the point: say so
        # everywhere from now on, not only after the next verify.
        point.mark_missing()
        raise PointUnavailable(POINT_MISSING) from None
    except EngineError as error:
        raise PointUnavailable(f"The datastore of this recovery point cannot be read: {error}") from error


@dataclass(frozen=True)
class ItemRef:
    """One thing to recover from a point: a file or folder of a volume, a volume, or a disk."""

    kind: str
    disk: str
    volume: int | None = None
    path: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "disk": self.disk, "volume": self.volume, "path": self.path}

    def token(self) -> str:
        """The value of a selection checkbox."""
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))

    def describe(self) -> str:
        disk = self.disk.rsplit("/", 1)[-1]
        if self.kind == ItemKind.DISK:
            return f"Whole disk {disk}"
        if self.kind == ItemKind.VOLUME:
            return f"Volume {(self.volume or 0) + 1} of {disk} (raw image)"
        return f"{disk}, volume {(self.volume or 0) + 1}: {self.path}"


def clean_guest_path(path: object) -> str:
    """A guest path as ``/a/b``: refuses ``.``/``..``/empty parts, NUL and relative paths.

    Guest names are looked up literally, so ``..`` could never climb out of a
    volume; it is refused anyway because it can only come from a forged request.
    """
    if not isinstance(path, str) or not path.startswith("/") or "\x00" in path:
        raise InvalidItem(f"{path!r} is not a path inside the volume.")
    if path != printable(path):
        raise InvalidItem("Names that are not valid Unicode cannot be selected; select their folder.")
    if len(path) > MAX_GUEST_PATH:
        raise InvalidItem("The path is too long.")
    parts = path.split("/")[1:]
    if parts == [""]:
        return "/"
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidItem(f"{path!r} is not a plain path inside the volume.")
    return "/" + "/".join(parts)


def disk_names(point: RecoveryPoint) -> list[str]:
    _, info = open_point(point)
    return [f.name for f in info.files if f.name.lower().endswith(DISK_SUFFIXES)]


def parse_item(value: object, disks: list[str]) -> ItemRef:
    """An ItemRef from a checkbox value (JSON) or a stored dict; InvalidItem when forged."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise InvalidItem("The selected item is not valid.") from None
    if not isinstance(value, dict):
        raise InvalidItem("The selected item is not valid.")
    kind, disk, volume, path = value.get("kind"), value.get("disk"), value.get("volume"), value.get("path")
    if kind not in (ItemKind.FILE, ItemKind.FOLDER, ItemKind.VOLUME, ItemKind.DISK):
        raise InvalidItem(f"{kind!r} is not something that can be recovered.")
    if disk not in disks:
        raise InvalidItem(f"{disk!r} is not a virtual disk of this recovery point.")
    if kind == ItemKind.DISK:
        return ItemRef(kind, disk)
    if isinstance(volume, bool) or not isinstance(volume, int) or not 0 <= volume < 128:
        raise InvalidItem("The volume of the selected item is not valid.")
    if kind == ItemKind.VOLUME:
        return ItemRef(kind, disk, volume)
    return ItemRef(kind, disk, volume, clean_guest_path(path))


@contextlib.contextmanager
def open_disk(point: RecoveryPoint, disk: str) -> Iterator[VirtualDisk]:
    engine, info = open_point(point)
    names = [f.name for f in info.files]
    if disk not in names:
        raise ItemNotFound(f"{disk} is not part of this recovery point")

    def open_point_file(name: str) -> BinaryIO:
        reader: Any = engine.open_file(point.point_id, name)
        return reader  # type: ignore[no-any-return]

    with open_point_disk(names, open_point_file, disk) as opened:
        yield opened


@contextlib.contextmanager
def open_volume(point: RecoveryPoint, disk: str, volume: int) -> Iterator[Volume]:
    with open_disk(point, disk) as opened:
        yield find_volume(list_volumes(opened), volume)


def volumes(point: RecoveryPoint, disk: str) -> tuple[list[Volume], list[str]]:
    """The disk's volumes and its warnings (e.g. an unreplayed VHDX log)."""
    with open_disk(point, disk) as opened:
        return list_volumes(opened), list(opened.warnings)


def folder(point: RecoveryPoint, disk: str, volume: int, path: str) -> list[Entry]:
    with open_volume(point, disk, volume) as vol:
        return list_dir(vol, clean_guest_path(path))


class _DownloadReader:
    """A guest file for FileResponse: closing it also closes the disk it came from."""

    def __init__(self, stack: contextlib.ExitStack, reader: Any) -> None:
        self._stack = stack
        self._reader = reader
        self.size: int = reader.size

    def read(self, size: int = -1) -> bytes:
        return bytes(self._reader.read(size))

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self._reader.seek(offset, whence))

    def tell(self) -> int:
        return int(self._reader.tell())

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> _DownloadReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_download(point: RecoveryPoint, disk: str, volume: int, path: str) -> BinaryIO:
    """A file object over one guest file that stays readable until closed."""
    stack = contextlib.ExitStack()
    try:
        vol = stack.enter_context(open_volume(point, disk, volume))
        reader = stack.enter_context(open_file(vol, clean_guest_path(path)))
    except BaseException:
        stack.close()
        raise
    return _DownloadReader(stack, reader)  # type: ignore[return-value]


__all__ = [
    "Entry",
    "InvalidItem",
    "ItemLevelError",
    "ItemRef",
    "PointUnavailable",
    "Volume",
    "clean_guest_path",
    "disk_names",
    "folder",
    "open_download",
    "open_point",
    "open_volume",
    "parse_item",
    "volumes",
]
