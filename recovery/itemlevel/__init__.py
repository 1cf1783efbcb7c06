"""Item-level recovery: browse a recovery point's virtual disks and restore items from them.

Pure Python, no Django: the recovery wizard and its jobs call these functions.
Typical use::

    with open_point_disk([f.name for f in point.files], lambda n: ds.open_file(point.id, n), name) as disk:
        volumes = list_volumes(disk)              # disk.warnings: show them
        entries = list_dir(volumes[1], "/Users")
        results = copy_items(volumes[1], ["/Users/ann/Documents"], "/srv/restore/ticket-42")

See docs/item-level-recovery.md.
"""

from .browse import Entry, ItemReader, iter_dir, list_dir, open_file, stat
from .disk import (
    LOG_NOT_REPLAYED,
    DiskFile,
    ParentOpener,
    ParentRef,
    VirtualDisk,
    open_disk,
    open_point_disk,
    resolve_parent,
)
from .errors import (
    CopyCancelled,
    DestinationError,
    EncryptedVolume,
    IsADirectory,
    ItemLevelError,
    ItemNotFound,
    NotADirectory,
    NotBrowsable,
    ParentDiskMissing,
    UnreadableDisk,
    UnreadableFileSystem,
    UnsupportedDisk,
)
from .extract import Conflict, copy_items
from .names import NameStyle, SafeName, safe_name
from .volumes import BITLOCKER_MESSAGE, FsKind, Volume, find_volume, list_volumes
from .writer import CopyProgress, ItemResult, ItemStatus, copy_disk, copy_volume_image

__all__ = [
    "BITLOCKER_MESSAGE",
    "LOG_NOT_REPLAYED",
    "Conflict",
    "CopyCancelled",
    "CopyProgress",
    "DestinationError",
    "DiskFile",
    "EncryptedVolume",
    "Entry",
    "FsKind",
    "IsADirectory",
    "ItemLevelError",
    "ItemNotFound",
    "ItemReader",
    "ItemResult",
    "ItemStatus",
    "NameStyle",
    "NotADirectory",
    "NotBrowsable",
    "ParentDiskMissing",
    "ParentOpener",
    "ParentRef",
    "SafeName",
    "UnreadableDisk",
    "UnreadableFileSystem",
    "UnsupportedDisk",
    "VirtualDisk",
    "Volume",
    "copy_disk",
    "copy_items",
    "copy_volume_image",
    "find_volume",
    "iter_dir",
    "list_dir",
    "list_volumes",
    "open_disk",
    "open_file",
    "open_point_disk",
    "resolve_parent",
    "safe_name",
    "stat",
]
