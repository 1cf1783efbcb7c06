"""Telling a volume's file system from its first bytes, and listing the volumes of real disks."""

from __future__ import annotations

from storage.vdisk import FsKind
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
