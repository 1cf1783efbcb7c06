"""(offset, length) pairs, the unit every mapping in this package speaks."""

from __future__ import annotations

from collections.abc import Iterable

Range = tuple[int, int]


def merge_ranges(ranges: Iterable[Range]) -> list[Range]:
    """Sorted, overlapping and adjacent ranges merged, empty ones dropped."""
    spans = sorted((o, o + n) for o, n in ranges if n > 0)
    out: list[list[int]] = []
    for s, e in spans:
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e - s) for s, e in out]
