from __future__ import annotations

import random

from protection.connectors.ranges import intersect, normalize, subtract, total


def _bits(ranges: list[tuple[int, int]], size: int) -> list[bool]:
    out = [False] * size
    for off, length in ranges:
        for i in range(off, off + length):
            out[i] = True
    return out


def test_normalize_merges_overlaps_and_adjacent_and_drops_empty() -> None:
    assert normalize([(10, 5), (0, 5), (5, 5), (30, 0), (12, 10)]) == [(0, 22)]
    assert normalize([(5, 1), (7, 1)]) == [(5, 1), (7, 1)]


def test_subtract_and_intersect_match_a_bitmap_model() -> None:
    rng = random.Random(7)
    for _ in range(200):
        a = [(rng.randrange(100), rng.randrange(1, 20)) for _ in range(rng.randrange(6))]
        b = [(rng.randrange(100), rng.randrange(1, 20)) for _ in range(rng.randrange(6))]
        ba, bb = _bits(a, 130), _bits(b, 130)
        assert _bits(subtract(a, b), 130) == [x and not y for x, y in zip(ba, bb, strict=True)]
        assert _bits(intersect(a, b), 130) == [x and y for x, y in zip(ba, bb, strict=True)]
        assert total(a) == sum(ba)
        assert subtract(a, b) == normalize(subtract(a, b))
