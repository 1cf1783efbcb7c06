"""Whole-disk and raw-volume copies, and the write primitives behind every restore."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from recovery.itemlevel import (
    CopyCancelled,
    CopyProgress,
    DestinationError,
    copy_disk,
    copy_volume_image,
    list_volumes,
)
from recovery.itemlevel.writer import TMP_PREFIX, Exists, commit

from .conftest import Image, MiB, nothing_written_outside


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_copy_disk_writes_the_vhdx_as_stored(ntfs_image: Image, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "web01.vhdx"
    reports: list[CopyProgress] = []
    with ntfs_image.ds.open_file(ntfs_image.point_id, ntfs_image.name) as reader:
        n = copy_disk(reader, dest, progress=reports.append, durable=False)
    assert n == ntfs_image.vhdx.stat().st_size == dest.stat().st_size
    assert sha(dest) == sha(ntfs_image.vhdx)
    assert reports[-1].bytes_done == reports[-1].bytes_total == n and reports[-1].items_done == 1
    assert dest.stat().st_blocks * 512 < n  # zero regions of the VHDX stayed holes


def test_copy_disk_never_clobbers_unless_asked(chain_image: Image, tmp_path: Path) -> None:
    dest = tmp_path / "base.vhdx"
    dest.write_bytes(b"existing")
    with chain_image.ds.open_file(chain_image.point_id, chain_image.names[0]) as reader:
        with pytest.raises(DestinationError, match="already exists"):
            copy_disk(reader, dest, durable=False)
        assert dest.read_bytes() == b"existing"
        copy_disk(reader, dest, overwrite=True, durable=False)
    assert sha(dest) == sha(Path(chain_image.vhdx).with_name("base.vhdx"))
    with (
        pytest.raises(DestinationError, match="already exists"),
        chain_image.ds.open_file(chain_image.point_id, chain_image.names[0]) as reader,
    ):
        copy_disk(reader, tmp_path, overwrite=True)  # a folder is never replaced


def test_copy_disk_replaces_a_planted_link_not_its_target(chain_image: Image, tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_bytes(b"precious")
    dest = tmp_path / "restore"
    dest.mkdir()
    (dest / "base.vhdx").symlink_to(target)
    with (
        nothing_written_outside(tmp_path, dest),
        chain_image.ds.open_file(chain_image.point_id, chain_image.names[0]) as reader,
    ):
        copy_disk(reader, dest / "base.vhdx", overwrite=True, durable=False)
    assert not (dest / "base.vhdx").is_symlink() and target.read_bytes() == b"precious"


def test_raw_volume_images(ntfs_image: Image, special_image: Image, tmp_path: Path) -> None:
    with ntfs_image.open() as disk:
        esp = list_volumes(disk)[0]
        throttled: list[int] = []
        n = copy_volume_image(esp, tmp_path / "esp.img", throttle=throttled.append, durable=False)
    assert n == 8 * MiB and sha(tmp_path / "esp.img") == sha(ntfs_image.parts[1])
    assert 0 < sum(throttled) < n  # only the non-zero parts were written
    with special_image.open() as disk:
        bitlocker = list_volumes(disk)[0]
        assert not bitlocker.browsable
        copy_volume_image(bitlocker, tmp_path / "bitlocker.img", durable=False)
    assert (tmp_path / "bitlocker.img").read_bytes()[3:11] == b"-FVE-FS-"


def test_cancelled_raw_copy_leaves_nothing(ntfs_image: Image, tmp_path: Path) -> None:
    with (
        ntfs_image.ds.open_file(ntfs_image.point_id, ntfs_image.name) as reader,
        pytest.raises(CopyCancelled),
    ):
        copy_disk(reader, tmp_path / "x.vhdx", cancel=lambda: True)
    assert list(tmp_path.iterdir()) == []


def test_commit_without_replace_never_overwrites(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        (tmp_path / f"{TMP_PREFIX}a").write_bytes(b"new")
        (tmp_path / "final").write_bytes(b"old")
        with pytest.raises(Exists):
            commit(f"{TMP_PREFIX}a", "final", fd, replace=False)
        assert (tmp_path / "final").read_bytes() == b"old"
        commit(f"{TMP_PREFIX}a", "other", fd, replace=False)
        assert (tmp_path / "other").read_bytes() == b"new" and not (tmp_path / f"{TMP_PREFIX}a").exists()
    finally:
        os.close(fd)


def test_bad_destination_file_names(ntfs_image: Image, tmp_path: Path) -> None:
    with (
        ntfs_image.ds.open_file(ntfs_image.point_id, ntfs_image.name) as reader,
        pytest.raises(DestinationError, match="invalid destination file name"),
    ):
        copy_disk(reader, tmp_path / ("x" * 300))
