"""Restoring items to a folder: content, timestamps, names, conflicts, and never writing outside."""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from recovery.itemlevel import (
    Conflict,
    CopyCancelled,
    CopyProgress,
    DestinationError,
    FsKind,
    ItemResult,
    ItemStatus,
    NameStyle,
    VirtualDisk,
    Volume,
    copy_items,
    list_volumes,
)
from recovery.itemlevel.writer import TMP_PREFIX
from storage.vdisk.filesystems import Adapter, Child, NodeInfo

from .conftest import (
    EXT_FILES,
    EXT_LATIN1,
    FAT_FILES,
    HOSTILE_MOUNT_NAMES,
    HOSTILE_PATCHES,
    NTFS_FILES,
    T_2001,
    T_2010,
    Image,
    nothing_written_outside,
)


def by_source(results: list[ItemResult]) -> dict[str, ItemResult]:
    return {r.source: r for r in results}


def ntfs_volume(image: Image) -> Iterator[Volume]:
    with image.open() as disk:
        yield list_volumes(disk)[1]


@pytest.fixture
def ntfs(ntfs_image: Image) -> Iterator[Volume]:
    yield from ntfs_volume(ntfs_image)


def test_files_and_folders_keep_content_and_times(ntfs: Volume, ntfs_image: Image, tmp_path: Path) -> None:
    dest = tmp_path / "restore"
    wanted = ["/Docs", "/big.bin", "/Données", "/empty.txt", "/sparse.bin", "/Hidden.txt"]
    with nothing_written_outside(tmp_path, dest):
        results = copy_items(ntfs, wanted, dest, durable=False)
    assert all(r.status is ItemStatus.OK for r in results), results
    got = by_source(results)
    assert set(got) == {
        "/Docs", "/Docs/readme.txt", "/Docs/Reports", "/Docs/Reports/2024", "/Docs/Reports/2024/q1.csv",
        "/big.bin", "/Données", "/Données/résumé - ünïcødé ☃.txt", "/empty.txt", "/sparse.bin", "/Hidden.txt",
    }  # fmt: skip
    assert got["/Docs/Reports/2024/q1.csv"].target == "Docs/Reports/2024/q1.csv"
    assert got["/big.bin"].bytes == len(NTFS_FILES["big.bin"][0]) and got["/Docs"].kind == "dir"
    for rel in ["Docs/readme.txt", "Docs/Reports/2024/q1.csv", "big.bin", "empty.txt", "Hidden.txt"]:
        data, mtime = NTFS_FILES[rel]
        out = dest / rel
        assert out.read_bytes() == data, rel
        cat = subprocess.run(
            ["ntfscat", str(ntfs_image.parts[2]), rel], capture_output=True, check=True
        ).stdout
        assert out.read_bytes() == cat
        assert out.stat().st_mtime_ns == mtime, rel
    uni = dest / "Données" / "résumé - ünïcødé ☃.txt"
    assert uni.read_bytes() == NTFS_FILES["Données/résumé - ünïcødé ☃.txt"][0]
    assert (dest / "Docs").stat().st_mtime_ns == T_2010  # folders get their times after their contents
    assert (dest / "Docs" / "Reports").stat().st_mtime_ns == T_2001
    sparse = dest / "sparse.bin"
    assert sparse.stat().st_size == 2 * 1024 * 1024
    assert sparse.stat().st_blocks * 512 < 1024 * 1024  # the zero middle stayed a hole
    assert not [p for p in dest.rglob("*") if p.name.startswith(TMP_PREFIX)]


def test_keep_path_and_progress_and_throttle(ntfs: Volume, tmp_path: Path) -> None:
    dest = tmp_path / "restore"
    reports: list[CopyProgress] = []
    throttled: list[int] = []
    results = copy_items(
        ntfs,
        ["/Docs/Reports/2024/q1.csv", "/Docs/readme.txt", "/Docs/Reports/2024", "/big.bin"],
        dest,
        keep_path=True,
        progress=reports.append,
        throttle=throttled.append,
        durable=False,
    )
    assert (dest / "Docs/Reports/2024/q1.csv").read_bytes() == NTFS_FILES["Docs/Reports/2024/q1.csv"][0]
    assert (dest / "Docs/readme.txt").read_bytes() == NTFS_FILES["Docs/readme.txt"][0]
    # q1.csv was inside the selected folder 2024: copied once
    assert [r.source for r in results].count("/Docs/Reports/2024/q1.csv") == 1
    size = sum(len(NTFS_FILES[k][0]) for k in ("Docs/Reports/2024/q1.csv", "Docs/readme.txt", "big.bin"))
    last = reports[-1]
    assert (last.bytes_done, last.bytes_total) == (size, size)
    assert last.items_done == last.items_total == len(results) == 4
    assert sum(throttled) == size  # no holes in these files: every byte was written and counted


def test_selection_in_another_case_restores_the_stored_name(ntfs: Volume, tmp_path: Path) -> None:
    results = copy_items(ntfs, ["/docs/README.TXT"], tmp_path / "r", durable=False)
    assert [(r.source, r.target, r.status) for r in results] == [
        ("/Docs/readme.txt", "readme.txt", ItemStatus.OK)
    ]


def test_whole_volume_from_the_root(fat_image: Image, tmp_path: Path) -> None:
    dest = tmp_path / "restore"
    with fat_image.open() as disk:
        (vol,) = list_volumes(disk)
        with nothing_written_outside(tmp_path, dest):
            results = copy_items(vol, ["/"], dest, durable=False)
    assert all(r.status is ItemStatus.OK for r in results)
    for rel, (data, mtime) in FAT_FILES.items():
        assert (dest / rel).read_bytes() == data
        assert (dest / rel).stat().st_mtime_ns == mtime


def test_ext_links_are_never_followed_or_recreated(ext_image: Image, tmp_path: Path) -> None:
    dest = tmp_path / "restore"
    with ext_image.open() as disk:
        (vol,) = list_volumes(disk)
        with nothing_written_outside(tmp_path, dest):
            results = copy_items(vol, ["/"], dest, durable=False)
    got = by_source(results)
    for link, target in [
        ("/link-rel", "docs/readme.txt"),
        ("/link-abs", "/etc/passwd"),
        ("/link-dir", "docs"),
    ]:
        assert got[link].status is ItemStatus.SKIPPED and got[link].kind == "link"
        assert target in got[link].reason and "never followed" in got[link].reason
    assert got["/docs/link-up"].status is ItemStatus.SKIPPED
    assert got["/pipe"].status is ItemStatus.SKIPPED and "special file" in got["/pipe"].reason
    assert not any(p.is_symlink() for p in dest.rglob("*"))
    assert not (dest / "pipe").exists()
    # a backslash is a separator to Windows (and to whoever copies the folder there): mapped everywhere
    assert (dest / "back_slash.txt").read_bytes() == EXT_FILES["back\\slash.txt"][0]
    assert "path separator" in got["/back\\slash.txt"].notes[0]
    latin = os.path.join(os.fsencode(dest / "docs" / "latin"), EXT_LATIN1)
    with open(latin, "rb") as f:  # undecodable bytes come back exactly
        assert f.read() == b"latin-1 name\n"
    assert (dest / "docs/a/b/c/deep.txt").read_bytes() == b"deep\n"
    assert (dest / "lost+found").is_dir()


def test_hostile_ntfs_names_stay_inside(ntfs: Volume, tmp_path: Path) -> None:
    dest = tmp_path / "deep" / "restore"
    with nothing_written_outside(tmp_path, dest):
        results = copy_items(ntfs, ["/evil"], dest, durable=False)
    assert all(r.status is ItemStatus.OK for r in results), [
        r for r in results if r.status is not ItemStatus.OK
    ]
    evil = dest / "evil"
    written = {p.name for p in evil.iterdir()}
    expected = {"__", "_", ".._.._pwned", ".._.._pwn2", "_etc_pwned3", "C:_pwned4", "nul_byte", "sub"}
    assert expected <= written
    assert {"a_b", "c:d", "CON", "trail.", "trail ", 'e<f>|?*"', "ctl_x", "Case.txt", "case.txt"} <= written
    assert len(written) == len(HOSTILE_MOUNT_NAMES) + len(HOSTILE_PATCHES) + 2  # + long name + sub
    got = by_source(results)
    dotdot = got["/evil/.."]
    assert dotdot.target == "evil/__" and "'.' or '..'" in dotdot.notes[0]
    assert "path separator" in got["/evil/../../pwned"].notes[0]
    assert "NUL" in got["/evil/nul\0byte"].notes[0]
    long = [r for r in results if r.source.endswith(".txt") and "longer than 255 bytes" in " ".join(r.notes)]
    assert len(long) == 1 and long[0].target is not None
    assert len(long[0].target.split("/")[-1].encode()) <= 255 and long[0].target.endswith(".txt")
    assert (dest / long[0].target).read_bytes() == b"long name\n"
    for r in results:  # every target is a plain relative path inside the destination
        if r.target:
            assert not r.target.startswith("/") and ".." not in r.target.split("/")
            assert os.path.realpath(dest / r.target).startswith(str(dest) + os.sep)


def test_hostile_names_on_a_windows_share(ntfs: Volume, tmp_path: Path) -> None:
    dest = tmp_path / "share"
    with nothing_written_outside(tmp_path, dest):
        results = copy_items(ntfs, ["/evil"], dest, style=NameStyle.WINDOWS, durable=False)
    assert all(r.status is ItemStatus.OK for r in results)
    got = {r.source.removeprefix("/evil/"): r.target.removeprefix("evil/") for r in results if r.target}
    assert got["CON"] == "_CON" and got["aux.txt"] == "_aux.txt"
    assert got["c:d"] == "c_d" and got['e<f>|?*"'] == "e_f_____"
    assert {got["trail."], got["trail "]} == {"trail_", "trail_~2"}
    assert {got["Case.txt"], got["case.txt"]} == {"Case.txt", "case~2.txt"}
    assert got["C:\\pwned4"] == "C__pwned4"
    names = [p.name for p in (dest / "evil").iterdir()]
    assert len({n.upper() for n in names}) == len(names)  # distinct on a case-insensitive share too
    for n in names:
        assert not set(n) & set('<>:"|?*\\/') and not n.endswith((".", " "))


def test_conflicts(ntfs: Volume, tmp_path: Path) -> None:
    dest = tmp_path / "restore"
    copy_items(ntfs, ["/Docs", "/tiny.txt"], dest, durable=False)
    (dest / "tiny.txt").write_bytes(b"changed by someone")
    skipped = copy_items(ntfs, ["/Docs", "/tiny.txt"], dest, on_conflict=Conflict.SKIP, durable=False)
    assert [r.status for r in skipped] == [ItemStatus.SKIPPED, ItemStatus.SKIPPED]
    assert (dest / "tiny.txt").read_bytes() == b"changed by someone"
    renamed = by_source(copy_items(ntfs, ["/Docs", "/tiny.txt"], dest, durable=False))
    assert renamed["/Docs"].target == "Docs~2" and renamed["/tiny.txt"].target == "tiny~2.txt"
    assert "already taken" in renamed["/tiny.txt"].notes[0]
    assert (dest / "tiny~2.txt").read_bytes() == b"tiny data\n"
    assert (dest / "tiny.txt").read_bytes() == b"changed by someone"
    over = copy_items(ntfs, ["/Docs", "/tiny.txt"], dest, on_conflict=Conflict.OVERWRITE, durable=False)
    assert all(r.status is ItemStatus.OK for r in over)
    assert (dest / "tiny.txt").read_bytes() == b"tiny data\n"
    assert sorted(p.name for p in dest.iterdir()) == ["Docs", "Docs~2", "tiny.txt", "tiny~2.txt"]


def test_links_planted_in_the_destination_redirect_nothing(ntfs: Volume, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_bytes(b"precious")
    dest = tmp_path / "restore"
    dest.mkdir()
    (dest / "Docs").symlink_to(outside, target_is_directory=True)
    (dest / "tiny.txt").symlink_to(outside / "precious.txt")
    with nothing_written_outside(tmp_path, dest):
        over = by_source(copy_items(ntfs, ["/Docs", "/tiny.txt"], dest, on_conflict=Conflict.OVERWRITE))
        assert over["/Docs"].status is ItemStatus.FAILED and "not a folder" in over["/Docs"].reason
        assert over["/tiny.txt"].status is ItemStatus.OK
        assert not (dest / "tiny.txt").is_symlink()  # the link itself was replaced
        renamed = by_source(copy_items(ntfs, ["/Docs"], dest))
        assert renamed["/Docs"].target == "Docs~2"
    assert (outside / "precious.txt").read_bytes() == b"precious"
    assert sorted(p.name for p in outside.iterdir()) == ["precious.txt"]


def test_cancel_leaves_no_partial_file(ntfs: Volume, tmp_path: Path) -> None:
    dest = tmp_path / "restore"
    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > 5

    with pytest.raises(CopyCancelled) as exc:
        copy_items(ntfs, ["/Docs", "/data"], dest, cancel=cancel, durable=False)
    assert exc.value.results and all(r.status is ItemStatus.OK for r in exc.value.results)
    assert not [p for p in dest.rglob("*") if p.name.startswith(TMP_PREFIX) or p.name == "large.bin"]


def test_bad_destination(ntfs: Volume, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    with pytest.raises(DestinationError, match="cannot open the destination"):
        copy_items(ntfs, ["/tiny.txt"], blocker)
    with pytest.raises(TypeError):
        copy_items(ntfs, "/tiny.txt", tmp_path / "d")  # type: ignore[arg-type]
    missing = copy_items(ntfs, ["/nope", "/tiny.txt/x"], tmp_path / "d")
    assert [r.status for r in missing] == [ItemStatus.FAILED, ItemStatus.FAILED]


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_full_destination_stops_the_copy(ntfs: Volume, small_tmpfs: Path) -> None:
    with pytest.raises(DestinationError, match="is full") as exc:
        copy_items(ntfs, ["/tiny.txt", "/big.bin", "/Docs"], small_tmpfs, durable=False)
    assert [r.source for r in exc.value.results] == ["/tiny.txt"]
    assert not [p for p in small_tmpfs.rglob("*") if p.name.startswith(TMP_PREFIX)]


# -- a fake file system: hostile names no tool makes, loops and damage ------------------------


class FakeFS(Adapter):
    kind, name = "ntfs", "fake"

    def __init__(self, tree: dict[int, tuple[NodeInfo, list[tuple[str, int | None, str | None]]]]) -> None:
        self.tree = tree

    def root(self) -> Any:
        return 1

    def children(self, node: Any) -> Iterator[Child]:
        for name, child, error in self.tree[node][1]:
            if child == -1:
                raise ValueError("damaged index")
            yield Child(name, child, error)

    def info(self, node: Any) -> NodeInfo:
        return self.tree[node][0]

    def open(self, node: Any) -> BinaryIO:
        return io.BytesIO(f"data of {node}".encode().ljust(self.tree[node][0].size, b"."))


def fake_volume(fs: FakeFS) -> Volume:
    disk = VirtualDisk("fake.vhdx", "vhdx", 1 << 30, 512, ["fake.vhdx"], [], io.BytesIO())
    return Volume(0, 1, 0, 1 << 30, "test", "", FsKind.NTFS, "fake", "", "", disk, fs)


def file(n: int, size: int = 20, **kw: Any) -> NodeInfo:
    return NodeInfo("file", size, T_2010, T_2010, None, node_id=n, **kw)


def folder(n: int) -> NodeInfo:
    return NodeInfo("dir", 0, T_2001, T_2001, None, node_id=n)


HOSTILE_FAKE = [
    "..", ".", "", "../../../../escape", "..\\..\\escape2", "/etc/abs", "C:\\Windows\\x", "x\0y", "a/b/c",
    "\\\\server\\share", "dup", "dup",
]  # fmt: skip


def test_fake_volume_with_hostile_names_loops_and_damage(tmp_path: Path) -> None:
    kids: list[tuple[str, int | None, str | None]] = [(n, 10 + i, None) for i, n in enumerate(HOSTILE_FAKE)]
    kids += [
        ("loop", 2, None),  # the folder itself again
        ("up", 1, None),  # its parent
        ("broken", None, "its file record is damaged"),
        ("link", 50, None),
        ("efs.txt", 51, None),
        ("fifo", 52, None),
        ("sub", 3, None),
    ]
    tree: dict[int, tuple[NodeInfo, list[tuple[str, int | None, str | None]]]] = {
        1: (folder(1), [("top", 2, None)]),
        2: (folder(2), kids),
        3: (folder(3), [("ok.txt", 60, None), ("boom", -1, None)]),
        50: (NodeInfo("link", 0, T_2010, None, None, link_target="C:\\Windows\\System32", node_id=50), []),
        51: (file(51, unreadable="it is encrypted with EFS"), []),
        52: (NodeInfo("other", 0, None, None, None, node_id=52), []),
        60: (file(60), []),
    }
    for i in range(len(HOSTILE_FAKE)):
        tree[10 + i] = (file(10 + i), [])
    vol = fake_volume(FakeFS(tree))
    dest = tmp_path / "restore"
    for style in (NameStyle.POSIX, NameStyle.WINDOWS):
        out = dest / style.value
        with nothing_written_outside(tmp_path, out):
            results = copy_items(vol, ["/top"], out, style=style, durable=False)
        got = {(r.source, r.status) for r in results}
        assert ("/top/loop", ItemStatus.SKIPPED) in got
        # "up" is the root folder again: copied once, and the loop back to "top" inside it is cut
        assert ("/top/up", ItemStatus.OK) in got and ("/top/up/top", ItemStatus.SKIPPED) in got
        assert ("/top/broken", ItemStatus.FAILED) in got and ("/top/efs.txt", ItemStatus.FAILED) in got
        assert ("/top/link", ItemStatus.SKIPPED) in got and ("/top/fifo", ItemStatus.SKIPPED) in got
        sub = by_source(results)["/top/sub"]
        assert sub.status is ItemStatus.FAILED and "listing is damaged" in sub.reason
        assert (out / "top" / "sub" / "ok.txt").exists()
        written = list((out / "top").iterdir())
        files = [p for p in written if p.is_file()]
        assert len(files) == len(HOSTILE_FAKE)  # both "dup"s kept, nothing overwritten
        for p in written:
            assert p.parent == out / "top"
            assert p.name not in ("", ".", "..") and "/" not in p.name and "\0" not in p.name
        assert (out / "top").stat().st_mtime_ns == T_2001
