from __future__ import annotations

import io
from pathlib import Path

import pytest

from storage.engine import InvalidSource, SourceFile, SourceReadError
from storage.engine.source import SourceReader, normalise_ranges
from storage.engine.util import validate_name

from .conftest import MiB, write_file


@pytest.mark.parametrize(
    "name",
    [
        "",
        "/etc/passwd",
        "../escape",
        "a/../../b",
        "a/./b",
        "a//b",
        "dir/",
        "..\\..\\windows",
        "Virtual Hard Disks\\disk.vhdx",
        "C:/disk.vhdx",
        "c:disk",
        "bad\x00name",
        "new\nline",
        "x" * 300,
    ],
)
def test_hostile_names_rejected(name: str) -> None:
    with pytest.raises(InvalidSource):
        validate_name(name)


@pytest.mark.parametrize("name", ["disk0.vhdx", "Virtual Hard Disks/disk0.vhdx", "a b/ü.vmcx"])
def test_good_names(name: str) -> None:
    assert validate_name(name) == name


def test_ranges_are_validated_sorted_and_merged() -> None:
    assert normalise_ranges("f", [(10, 5), (0, 3), (12, 10), (50, 0)], 100) == [(0, 3), (10, 22)]
    with pytest.raises(InvalidSource, match="outside the file"):
        normalise_ranges("f", [(90, 20)], 100)
    with pytest.raises(InvalidSource, match="outside the file"):
        normalise_ranges("f", [(-1, 2)], 100)
    with pytest.raises(InvalidSource):
        normalise_ranges("f", [("a", 2)], 100)  # type: ignore[list-item]


def test_hole_detection(tmp_path: Path) -> None:
    p = write_file(tmp_path / "sparse", [b"a" * MiB, 4 * MiB, b"b" * MiB, 2 * MiB])
    r = SourceReader(SourceFile("s", p))
    try:
        assert r.size == 8 * MiB
        assert not r.is_hole(0, MiB)
        assert r.is_hole(MiB, MiB) and r.is_hole(2 * MiB, 3 * MiB)
        assert not r.is_hole(4 * MiB, 2 * MiB)
        assert not r.is_hole(5 * MiB, MiB)
        assert r.is_hole(6 * MiB, 2 * MiB)
    finally:
        r.close()


def test_file_object_source_has_no_holes_and_reads() -> None:
    data = b"0123456789" * 1000
    r = SourceReader(SourceFile("s", lambda: io.BytesIO(data)))
    try:
        assert r.size == len(data) and not r.parallel
        assert not r.is_hole(0, 100)
        buf = bytearray(10)
        r.read_into(5, memoryview(buf))
        assert bytes(buf) == data[5:15]
    finally:
        r.close()


def test_short_source_is_an_error(tmp_path: Path) -> None:
    p = write_file(tmp_path / "f", [b"x" * 100])
    r = SourceReader(SourceFile("f", p, size=200))
    try:
        with pytest.raises(SourceReadError, match="before its declared size"):
            r.read_into(0, memoryview(bytearray(200)))
    finally:
        r.close()


def test_unopenable_source(tmp_path: Path) -> None:
    with pytest.raises(SourceReadError, match="cannot open"):
        SourceReader(SourceFile("f", tmp_path / "missing"))

    def boom() -> io.BytesIO:
        raise ConnectionError("SMB session lost")

    with pytest.raises(SourceReadError, match="SMB session lost"):
        SourceReader(SourceFile("f", boom))
