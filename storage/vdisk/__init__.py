"""Virtual disks: VHDX, AVHDX chains and VHD files, the volumes and file systems inside them.

Pure Python over dissect, no Django and nothing of the backup engine: the engine,
the lab connector and item-level recovery all come here to parse a disk.

- ``vhdx``: the VHDX structure, validated (checksums, truncation, log GUID).
- ``vhd``: the legacy VHD footer.
- ``mapping``: virtual-disk ranges -> VHDX file ranges through the BAT.
- ``chain``: open a disk (and its differencing chain, through a parent opener) for reading.
- ``volumes`` / ``filesystems``: GPT/MBR volumes and NTFS/FAT/exFAT/ext adapters.
- ``pagefile``: where a guest's files, and its paging files, lie on the disk.
- ``builder``: the one disk builder (qemu-img, sgdisk, mkntfs...) for the lab, tests and benchmark.

See docs/virtual-disks.md.
"""

from .chain import LOG_NOT_REPLAYED, VirtualDisk, open_disk, open_path
from .errors import (
    EncryptedVolume,
    InvalidRange,
    NotBrowsable,
    ParentDiskMissing,
    ToolError,
    UnreadableDisk,
    UnreadableFileSystem,
    UnsupportedDisk,
    VdiskError,
)
from .mapping import metadata_ranges, virtual_to_file_ranges
from .ranges import Range, merge_ranges
from .vhd import VhdFooter, read_vhd_footer
from .vhdx import PAYLOAD_BLOCK_FULLY_PRESENT, VhdxLayout, read_layout
from .volumes import FsKind, Volume, list_volumes

__all__ = [
    "LOG_NOT_REPLAYED",
    "PAYLOAD_BLOCK_FULLY_PRESENT",
    "EncryptedVolume",
    "FsKind",
    "InvalidRange",
    "NotBrowsable",
    "ParentDiskMissing",
    "Range",
    "ToolError",
    "UnreadableDisk",
    "UnreadableFileSystem",
    "UnsupportedDisk",
    "VdiskError",
    "VhdFooter",
    "VhdxLayout",
    "VirtualDisk",
    "Volume",
    "list_volumes",
    "merge_ranges",
    "metadata_ranges",
    "open_disk",
    "open_path",
    "read_layout",
    "read_vhd_footer",
    "virtual_to_file_ranges",
]
