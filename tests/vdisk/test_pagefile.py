"""Finding a guest's files, and its paging files, on its virtual disk."""

from __future__ import annotations

from pathlib import Path

from dissect.hypervisor.disk.vhdx import VHDX

from protection.connectors.ranges import intersect, subtract, total
from storage.vdisk.pagefile import guest_files, volatile_virtual_ranges
from tests.fixtures.build_vhdx import LINUX_FILES, WINDOWS_FILES, dissect_ntfs

MiB = 1024 * 1024
USER_FILES = ["notes.txt", "report.docx", "ledger.csv", "database.mdf"]


def test_guest_files_are_found_with_their_content(disk_images: dict[str, Path]) -> None:
    files = {f.path: f for f in guest_files(disk_images["windows-dynamic.vhdx"])}
    assert set(files) == {f"/{n}" for n in WINDOWS_FILES}
    with disk_images["windows-dynamic.vhdx"].open("rb") as fh:
        vdisk = VHDX(fh)
        ledger = files["/ledger.csv"]
        data = b""
        for off, length in ledger.virtual_ranges:
            vdisk.seek(off)
            data += vdisk.read(length)
        assert data[: len(WINDOWS_FILES["ledger.csv"])] == WINDOWS_FILES["ledger.csv"]
    linux = {f.path for f in guest_files(disk_images["linux-dynamic.vhdx"])}
    assert linux == {f"/{n}" for n in LINUX_FILES}


def test_volatile_ranges_are_exactly_the_paging_files(disk_images: dict[str, Path]) -> None:
    path = disk_images["windows-dynamic.vhdx"]
    volatile = volatile_virtual_ranges(path)
    fs, part = dissect_ntfs(path)
    expected = []
    for name in ("pagefile.sys", "swapfile.sys"):
        for lcn, count in fs.mft.get(name).dataruns():
            expected.append((part.offset + lcn * fs.cluster_size, count * fs.cluster_size))
    assert subtract(volatile, expected) == [] and subtract(expected, volatile) == []
    assert total(volatile) >= 16 * MiB + 1 * MiB  # pagefile + swapfile
    for name in USER_FILES:
        user = [
            (part.offset + lcn * fs.cluster_size, n * fs.cluster_size)
            for lcn, n in fs.mft.get(name).dataruns()
        ]
        assert intersect(volatile, user) == []
    assert volatile_virtual_ranges(disk_images["linux-dynamic.vhdx"]) == []


def test_unreadable_guests_exclude_nothing(disk_images: dict[str, Path], tmp_path: Path) -> None:
    assert volatile_virtual_ranges(disk_images["blank-dynamic.vhdx"]) == []
    junk = tmp_path / "junk.vhdx"
    junk.write_bytes(b"\0" * 4096)
    assert volatile_virtual_ranges(junk) == []
