"""(offset, length) merging."""

from __future__ import annotations

from storage.vdisk.ranges import merge_ranges


def test_merge_ranges() -> None:
    assert merge_ranges([(10, 5), (0, 10), (30, 1), (31, 0), (29, 1)]) == [(0, 15), (29, 2)]
