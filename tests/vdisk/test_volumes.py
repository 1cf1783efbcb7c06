"""Telling a volume's file system from its first bytes, and listing the volumes of real disks."""

from __future__ import annotations

from pathlib import Path

from storage.vdisk import FsKind, list_volumes, open_path
from storage.vdisk.volumes import detect

MiB = 1024 * 1024


def test_detect_signatures() -> None:
    def boot(oem: bytes) -> bytes:
        head = bytearray(8192)
        head[3:11] = oem
        head[510:512] = b"\x55\xaa"
        return bytes(head)

    assert detect(boot(b"-FVE-FS-"))[0] is FsKind.BITLOCKER
    assert detect(boot(b"NTFS    "))[0] is FsKind.NTFS
    assert detect(boot(b"EXFAT   "))[0] is FsKind.EXFAT
    refs = detect(boot(b"ReFS\0\0\0\0"))
    assert refs[1] == "ReFS" and "cannot be browsed" in refs[3]
    lvm = bytearray(8192)
    lvm[512:521] = b"LABEL_ONE"
    assert detect(bytes(lvm))[1] == "LVM"
    swap = bytearray(8192)
    swap[4086:4096] = b"SWAPSPACE2"
    assert detect(bytes(swap))[1] == "Linux swap"
    assert detect(bytes(8192))[0] is FsKind.UNKNOWN


def test_volumes_of_builder_disks(disk_images: dict[str, Path]) -> None:
    with open_path(disk_images["windows-dynamic.vhdx"]) as disk:
        esp, data = list_volumes(disk)
    assert (esp.number, esp.offset, esp.size, esp.partition_name) == (
        1,
        1 * MiB,
        8 * MiB,
        "EFI system partition",
    )
    assert esp.filesystem is FsKind.FAT and esp.label == "SYSTEM" and esp.browsable
    assert (data.number, data.offset, data.partition_name) == (2, 9 * MiB, "Basic data partition")
    assert data.filesystem is FsKind.NTFS and data.label == "Windows" and data.message == ""
    with open_path(disk_images["linux-dynamic.vhdx"]) as disk:
        assert [v.filesystem for v in list_volumes(disk)] == [FsKind.FAT, FsKind.EXT]
    with open_path(disk_images["blank-dynamic.vhdx"]) as disk:
        (whole,) = list_volumes(disk)
    assert (whole.number, whole.offset, whole.size, whole.partition_type) == (None, 0, 64 * MiB, "whole disk")
    assert whole.filesystem is FsKind.UNKNOWN and not whole.browsable and "starts blank" in whole.message
