"""The volumes of a recovery point's disk, as item-level recovery reports them.

storage.vdisk finds the partitions and mounts the file systems; this module turns
its errors (and the backup store's) into item-level errors.
"""

from __future__ import annotations

from storage import vdisk
from storage.vdisk.filesystems import Adapter
from storage.vdisk.volumes import BITLOCKER_MESSAGE, RAW_HINT, FsKind, Volume

from .disk import VirtualDisk
from .errors import ItemNotFound, item_errors

__all__ = ["BITLOCKER_MESSAGE", "RAW_HINT", "FsKind", "Volume", "find_volume", "list_volumes", "mount"]


def list_volumes(disk: VirtualDisk) -> list[Volume]:
    """The volumes of ``disk``, in partition-table order; an unpartitioned disk is one volume."""
    with item_errors(disk.name or "the disk"):
        return vdisk.list_volumes(disk)


def mount(volume: Volume) -> Adapter:
    """The volume's file system (parsed once, then reused)."""
    with item_errors("this disk"):
        return volume.adapter()


def find_volume(volumes: list[Volume], index: int) -> Volume:
    for v in volumes:
        if v.index == index:
            return v
    raise ItemNotFound(f"there is no volume {index + 1} on this disk")
