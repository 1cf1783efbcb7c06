"""Browsing volumes through the engine reader: listings, metadata, links, downloads, errors."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from recovery.itemlevel import (
    IsADirectory,
    ItemNotFound,
    ItemStatus,
    NotADirectory,
    copy_items,
    iter_dir,
    list_dir,
    list_volumes,
    open_file,
    stat,
)

from .conftest import (
    CHUNK,
    EXFAT_HELLO,
    EXFAT_INNER,
    EXT_FILES,
    FAT_FILES,
    HOSTILE_MOUNT_NAMES,
    HOSTILE_PATCHES,
    LONG_NAME,
    NTFS_FILES,
    T_2001,
    T_2010,
    Image,
)


def ntfscat(part: Path, path: str) -> bytes:
    return subprocess.run(["ntfscat", str(part), path], capture_output=True, check=True).stdout


def dt(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 1000 / 1e6, UTC).replace(microsecond=(ns // 1000) % 1_000_000)


def test_ntfs_root_hides_metafiles_but_not_hidden_files(ntfs_image: Image) -> None:
    with ntfs_image.open() as disk:
        vol = list_volumes(disk)[1]
        entries = list_dir(vol, "/")
    names = [e.name for e in entries]
    assert names == [
        "data", "Docs", "Données", "evil",
        "big.bin", "empty.txt", "Hidden.txt", "pagefile.sys", "sparse.bin", "tiny.txt",
    ]  # fmt: skip
    assert not any(n.startswith("$") or n == "." for n in names)
    by = {e.name: e for e in entries}
    assert by["Hidden.txt"].hidden and not by["tiny.txt"].hidden
    assert by["Docs"].is_dir and by["Docs"].path == "/Docs" and by["Docs"].size == 0
    assert by["big.bin"].size == len(NTFS_FILES["big.bin"][0]) and not by["big.bin"].is_dir
    assert by["pagefile.sys"].size == 1024 * 1024  # an ordinary file here
    for metafile in ("/$MFT", "/$Extend", "/$Extend/$Quota", "/$Secure", "/."):
        with pytest.raises(ItemNotFound):
            stat(vol, metafile)


def test_ntfs_metadata_and_content(ntfs_image: Image) -> None:
    with ntfs_image.open() as disk:
        vol = list_volumes(disk)[1]
        readme = stat(vol, "/Docs/readme.txt")
        assert readme.mtime == dt(T_2001) == datetime(2001, 2, 3, 4, 5, 6, 789000, UTC)
        assert readme.atime is not None and readme.ctime is not None and readme.ctime.tzinfo is UTC
        assert stat(vol, "/Docs").mtime == dt(T_2010)
        reports = list_dir(vol, "/Docs/Reports/2024")
        assert [e.name for e in reports] == ["q1.csv"] and reports[0].mtime == dt(T_2010)
        unicode = list_dir(vol, "/Données")
        assert [e.name for e in unicode] == ["résumé - ünïcødé ☃.txt"]
        for rel, (data, _) in NTFS_FILES.items():
            if len(data) > 4 * 1024 * 1024:
                continue
            with open_file(vol, "/" + rel) as f:
                got = f.read()
            assert got == data, rel
            assert got == ntfscat(ntfs_image.parts[2], rel), rel
        assert stat(vol, "/docs/README.TXT").path == "/Docs/readme.txt"  # like Windows: case-insensitive
        with open_file(vol, "/sparse.bin") as f:
            sparse = f.read()
        assert sparse[:4096] == b"head" * 1024 and sparse[-4096:] == b"tail" * 1024
        assert sparse[4096:-4096] == bytes(len(sparse) - 8192)


def test_open_file_is_a_seekable_stream(ntfs_image: Image) -> None:
    data = NTFS_FILES["big.bin"][0]
    with ntfs_image.open() as disk:
        vol = list_volumes(disk)[1]
        with open_file(vol, "/big.bin") as f:
            assert f.size == len(data) and f.seekable() and f.readable()
            f.seek(CHUNK - 10)
            assert f.read(20) == data[CHUNK - 10 : CHUNK + 10]
            assert f.tell() == CHUNK + 10
            buf = bytearray(1000)
            assert f.readinto(buf) == 1000 and bytes(buf) == data[CHUNK + 10 : CHUNK + 1010]
            f.seek(-5, 2)
            assert f.read() == data[-5:]


def test_browsing_reads_a_small_fraction_of_the_disk(ntfs_image: Image) -> None:
    ds, counts = ntfs_image.counting()
    stored = ntfs_image.vhdx.stat().st_size
    with ntfs_image.open(datastore=ds) as disk:
        vol = list_volumes(disk)[1]
        list_dir(vol, "/")
        list_dir(vol, "/Docs/Reports/2024")
        list_dir(vol, "/evil")
        assert stat(vol, "/data/large.bin").size == 24 * 1024 * 1024
        with open_file(vol, "/tiny.txt") as f:
            assert f.read() == b"tiny data\n"
        browsed = dict(counts)
        with open_file(vol, "/data/large.bin") as f:
            assert len(f.read()) == 24 * 1024 * 1024
    total_chunks = -(-stored // CHUNK)
    # VHDX headers + BAT + partition table + boot sector + a few MFT records and indexes.
    assert browsed["chunks"] <= 12, browsed
    assert browsed["chunks"] < total_chunks * 0.1
    assert browsed["bytes"] < disk.size * 0.04
    # reading the 24 MiB file is what costs: the reader only loads what is asked for
    assert counts["bytes"] - browsed["bytes"] >= 24 * 1024 * 1024


def test_hostile_names_are_listed_as_they_are(ntfs_image: Image) -> None:
    with ntfs_image.open() as disk:
        vol = list_volumes(disk)[1]
        names = {e.name for e in list_dir(vol, "/evil")}
    assert names == {*HOSTILE_MOUNT_NAMES, *HOSTILE_PATCHES.values(), LONG_NAME, "sub"}


def test_ext_links_and_special_files(ext_image: Image) -> None:
    with ext_image.open() as disk:
        (vol,) = list_volumes(disk)
        root = {e.name: e for e in list_dir(vol, "/")}
        assert "." not in root and ".." not in root and "lost+found" in root
        assert root["link-rel"].is_symlink and root["link-rel"].link_target == "docs/readme.txt"
        assert root["link-abs"].link_target == "/etc/passwd" and not root["link-abs"].is_dir
        assert root["link-dir"].is_symlink and not root["link-dir"].is_dir
        assert not root["pipe"].is_dir and not root["pipe"].is_symlink and root["pipe"].size == 0
        assert root[".dotfile"].hidden
        assert root["back\\slash.txt"].size == len(EXT_FILES["back\\slash.txt"][0])
        with pytest.raises(ItemNotFound, match="links are not followed"):
            open_file(vol, "/link-rel")
        with pytest.raises(NotADirectory, match="is a link"):
            list_dir(vol, "/link-dir")
        with pytest.raises(NotADirectory, match="is a link"):
            stat(vol, "/link-dir/readme.txt")
        with pytest.raises(ItemNotFound, match="special file"):
            open_file(vol, "/pipe")
        readme = stat(vol, "/docs/readme.txt")
        assert readme.mtime == dt(T_2001 // 10**9 * 10**9)  # mkfs.ext4 -d keeps whole seconds
        assert readme.ctime is not None  # ext4 with 256-byte inodes keeps a creation time
        latin = list_dir(vol, "/docs/latin")
        assert len(latin) == 1 and latin[0].display_name == "latin\ufffd.txt"
        with open_file(vol, latin[0].path) as f:
            assert f.read() == b"latin-1 name\n"
        for rel, (data, _) in EXT_FILES.items():
            with open_file(vol, "/" + rel) as f:
                assert f.read() == data, rel


def test_fat_names_and_times(fat_image: Image) -> None:
    with fat_image.open() as disk:
        (vol,) = list_volumes(disk)
        root = {e.name: e for e in list_dir(vol, "/")}
        assert set(root) == {"Folder", "big.bin", "Long File Name With Spaces.txt", "Ünïcødé ☃.txt"}
        assert root["big.bin"].mtime == dt(T_2010)  # mcopy -m with TZ=UTC
        for rel, (data, _) in FAT_FILES.items():
            with open_file(vol, "/" + rel) as f:
                assert f.read() == data, rel


def test_path_errors(ntfs_image: Image) -> None:
    with ntfs_image.open() as disk:
        vol = list_volumes(disk)[1]
        with pytest.raises(NotADirectory):
            list_dir(vol, "/tiny.txt")
        with pytest.raises(NotADirectory):
            stat(vol, "/tiny.txt/x")
        with pytest.raises(IsADirectory):
            open_file(vol, "/Docs")
        with pytest.raises(ItemNotFound, match="/nope does not exist"):
            list_dir(vol, "/nope")
        assert stat(vol, "/").is_dir and stat(vol, "").path == "/"
        with pytest.raises(NotADirectory):  # raised when asked, not on the first next()
            iter_dir(vol, "/tiny.txt")
        first = next(iter_dir(vol, "/Docs"))
        assert first.path.startswith("/Docs/")
        assert [e.name for e in list_dir(vol, "//Docs///Reports/")] == ["2024"]


def test_exfat(exfat_image: Image, tmp_path: Path) -> None:
    with exfat_image.open() as disk:
        (vol,) = list_volumes(disk)
        assert vol.filesystem_name == "exFAT" and vol.label == "EXDATA"
        root = {e.name: e for e in list_dir(vol, "/")}
        assert set(root) == {"hello wörld.txt", "Sub"}
        hello = root["hello wörld.txt"]
        assert hello.size == len(EXFAT_HELLO) and hello.mtime == dt(T_2010)  # UTC+1 converted
        with open_file(vol, "/hello wörld.txt") as f:
            assert f.read() == EXFAT_HELLO
        assert [e.name for e in list_dir(vol, "/Sub")] == ["inner.txt"]
        results = copy_items(vol, ["/"], tmp_path / "out", durable=False)
    assert all(r.status is ItemStatus.OK for r in results)
    assert (tmp_path / "out" / "Sub" / "inner.txt").read_bytes() == EXFAT_INNER
    assert (tmp_path / "out" / "hello wörld.txt").stat().st_mtime_ns == T_2010
