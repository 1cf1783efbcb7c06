"""Finding the volumes of a disk and what file system each holds."""

from __future__ import annotations

import pytest

from recovery.itemlevel import (
    BITLOCKER_MESSAGE,
    EncryptedVolume,
    FsKind,
    ItemLevelError,
    ItemNotFound,
    NotBrowsable,
    UnreadableFileSystem,
    find_volume,
    list_dir,
    list_volumes,
)

from .conftest import Image, MiB


def test_gpt_disk_with_esp_and_ntfs(ntfs_image: Image) -> None:
    with ntfs_image.open() as disk:
        esp, data = list_volumes(disk)
    assert (esp.index, esp.number, esp.offset, esp.size) == (0, 1, 1 * MiB, 8 * MiB)
    assert esp.partition_name == "EFI system partition" and esp.partition_type == "EFI System partition"
    assert esp.filesystem is FsKind.FAT and esp.label == "SYSTEM" and esp.browsable
    assert (data.index, data.number, data.offset, data.size) == (1, 2, 9 * MiB, 86 * MiB)
    assert data.filesystem is FsKind.NTFS and data.filesystem_name == "NTFS" and data.label == "Data"
    assert data.partition_type == "Windows Basic data partition" and data.message == ""
    assert data.describe() == "volume 2 (partition 2, NTFS 'Data')"


def test_mbr_disk_with_ext4(ext_image: Image) -> None:
    with ext_image.open() as disk:
        (vol,) = list_volumes(disk)
    assert (vol.number, vol.offset, vol.size) == (1, 1 * MiB, 48 * MiB)
    assert vol.filesystem is FsKind.EXT and vol.filesystem_name == "ext4" and vol.label == "linroot"
    assert vol.partition_type == "Linux"


def test_unpartitioned_disk_is_one_volume(fat_image: Image) -> None:
    with fat_image.open() as disk:
        (vol,) = list_volumes(disk)
        assert (vol.number, vol.offset, vol.size, vol.partition_type) == (None, 0, disk.size, "whole disk")
    assert vol.filesystem_name == "FAT32" and vol.label == "FATVOL"


def test_volumes_that_cannot_be_browsed(special_image: Image) -> None:
    with special_image.open() as disk:
        bitlocker, broken, blank, garbage, no_boot = list_volumes(disk)
        assert bitlocker.filesystem is FsKind.BITLOCKER and bitlocker.message == BITLOCKER_MESSAGE
        assert "BitLocker-encrypted volume: cannot be browsed" in BITLOCKER_MESSAGE
        with pytest.raises(EncryptedVolume, match="BitLocker-encrypted volume: cannot be browsed"):
            list_dir(bitlocker, "/")
        assert broken.filesystem is FsKind.NTFS and "looks damaged" in broken.message and not broken.browsable
        with pytest.raises(UnreadableFileSystem, match="NTFS file system looks damaged"):
            list_dir(broken, "/")
        for vol in (blank, garbage, no_boot):
            assert vol.filesystem is FsKind.UNKNOWN and not vol.browsable and vol.message
            with pytest.raises(NotBrowsable, match="cannot be browsed") as exc:
                list_dir(vol, "/")
            assert isinstance(exc.value, ItemLevelError)
            assert "Traceback" not in str(exc.value) and "dissect" not in str(exc.value)
        assert "raw volume image" in garbage.message
        with pytest.raises(ItemNotFound):
            find_volume([bitlocker], 7)
