"""Virtual-disk ranges (what RCT reports) -> VHDX file ranges (what the engine reads).

Thin wrapper over the engine's mapping in ``storage.engine.vhdx`` (the only VHDX
parser in the tree): results are normalized and every failure is a DiskFileError.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import BinaryIO

from protection.connectors.ranges import Range, normalize
from protection.connectors.vhdxfile import disk_file_errors
from storage.engine import vhdx

Source = BinaryIO | str | os.PathLike[str]


def virtual_to_file_ranges(source: Source, virtual: Iterable[Range]) -> list[Range]:
    with disk_file_errors():
        # include_metadata=False: callers add structure ranges themselves, and an
        # exclusion list (pagefile) must never contain the header, log or BAT.
        return normalize(vhdx.virtual_to_file_ranges(source, list(virtual), include_metadata=False))


def metadata_ranges(source: Source) -> list[Range]:
    with disk_file_errors():
        return normalize(vhdx.metadata_ranges(source))
