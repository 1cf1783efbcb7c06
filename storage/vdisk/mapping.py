"""Virtual-disk ranges (what change tracking reports) -> VHDX file ranges (what a backup reads).

A guest write at virtual offset V lands in payload block V // block_size, which
the BAT places at some file offset; blocks not present in the file (never
written, zero, unmapped, in the parent) map to nothing, because their state
lives in the BAT, a structure range. Structure ranges (header section, log, BAT,
metadata, sector bitmaps) change with almost any write and are listed apart.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import BinaryIO

from .errors import UnreadableDisk
from .ranges import Range, merge_ranges
from .vhdx import PRESENT_STATES, VhdxLayout, read_layout

Source = str | os.PathLike[str] | BinaryIO


def metadata_ranges(src: Source | VhdxLayout) -> list[Range]:
    """``VhdxLayout.metadata_ranges`` of a file (or of an already parsed layout)."""
    lay = src if isinstance(src, VhdxLayout) else read_layout(src)
    return lay.metadata_ranges()


def virtual_to_file_ranges(
    src: Source,
    virtual_ranges: Iterable[Range],
    *,
    previous: Source | None = None,
    include_metadata: bool = True,
) -> list[Range]:
    """File ranges of ``src`` holding the given virtual-disk ranges (merged).

    With ``previous`` (the same VHDX as of the previous backup, e.g. a reader over
    the parent recovery point's copy), blocks whose BAT entry changed are
    included whole: a newly placed block is written entirely (zero fill), not
    only where the guest wrote. ``include_metadata=False`` leaves the structure
    ranges out, e.g. for an exclusion list, which must never hold the header,
    log or BAT.
    """
    lay = read_layout(src)
    bs = lay.block_size
    out = lay.virtual_to_file(virtual_ranges)
    if previous is not None:
        prev = read_layout(previous)
        if prev.block_size != bs or prev.logical_sector_size != lay.logical_sector_size:
            raise UnreadableDisk("the previous VHDX has a different block layout")
        for block in range(lay.data_blocks):
            now = lay.block_entry(block)
            was = prev.block_entry(block) if block < prev.data_blocks else (0, 0)
            if now != was and now[0] in PRESENT_STATES and now[1]:
                out.append((now[1], bs))
    if include_metadata:
        out.extend(lay.metadata_ranges())
    return merge_ranges(out)
