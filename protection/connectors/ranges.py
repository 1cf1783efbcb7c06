"""(offset, length) range arithmetic shared by the connector modules."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from storage.vdisk.errors import VdiskError
from storage.vdisk.ranges import Range
from storage.vdisk.ranges import merge_ranges as normalize

# ``normalize``: sorted, non-overlapping, adjacent ranges merged, empty ones dropped; the one
# implementation lives with the virtual-disk library every connector already uses.


def subtract(ranges: Iterable[Range], holes: Iterable[Range]) -> list[Range]:
    """``ranges`` minus ``holes`` (both arbitrary; result normalized)."""
    result: list[Range] = []
    hole_list = normalize(holes)
    for off, length in normalize(ranges):
        pos, end = off, off + length
        for hoff, hlen in hole_list:
            hend = hoff + hlen
            if hend <= pos:
                continue
            if hoff >= end:
                break
            if hoff > pos:
                result.append((pos, hoff - pos))
            pos = max(pos, hend)
            if pos >= end:
                break
        if pos < end:
            result.append((pos, end - pos))
    return result


def intersect(ranges: Iterable[Range], window: Iterable[Range]) -> list[Range]:
    a, b = normalize(ranges), normalize(window)
    out: list[Range] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start = max(a[i][0], b[j][0])
        end = min(a[i][0] + a[i][1], b[j][0] + b[j][1])
        if start < end:
            out.append((start, end - start))
        if a[i][0] + a[i][1] < b[j][0] + b[j][1]:
            i += 1
        else:
            j += 1
    return out


def total(ranges: Iterable[Range]) -> int:
    return sum(length for _off, length in normalize(ranges))


def ranges_to_copy(
    changed: Iterable[Range],
    structure: Iterable[Range],
    excluded: Iterable[Range],
    file_size: int,
    size_at_reference: int,
) -> list[Range]:
    """The file ranges an incremental copies: the changed data ranges less the excluded ones,
    the VHDX structure ranges, and whatever the file grew by since the reference point."""
    growth = []
    if file_size > size_at_reference:
        growth.append((size_at_reference, file_size - size_at_reference))
    # The engine wants ranges inside the file; structure regions always are,
    # but be strict so a bad BAT entry cannot produce an out-of-file range.
    return [
        (off, min(length, file_size - off))
        for off, length in normalize([*subtract(changed, excluded), *structure, *growth])
        if off < file_size
    ]


def paging_file_exclusion(
    file_name: str, virtual: list[Range], to_file: Callable[[list[Range]], list[Range]], events: list[str]
) -> list[Range]:
    """The file ranges holding the paging files' ``virtual`` ranges, noted in ``events``;
    none when the disk cannot map them, since excluding nothing is always safe."""
    try:
        file_ranges = to_file(virtual) if virtual else []
    except VdiskError:
        file_ranges = []
    if file_ranges:
        events.append(
            f"{file_name}: {sum(n for _o, n in file_ranges)} bytes of paging files "
            "excluded from incremental reads"
        )
    return file_ranges
