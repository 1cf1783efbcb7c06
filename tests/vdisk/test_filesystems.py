"""The file-system adapters over dissect, on disks made by the builder."""

from __future__ import annotations

from pathlib import Path

from storage.vdisk import FsKind, list_volumes, open_path
from storage.vdisk.filesystems import Adapter
from tests.fixtures.build_vhdx import LINUX_FILES, WINDOWS_FILES


def _lookup(fs: Adapter, path: str) -> object:
    node = fs.root()
    for part in path.split("/"):
        child = fs.find(node, part)
        assert child is not None and child.error is None, path
        node = child.node
    return node


def test_ntfs_lists_user_files_only_and_reads_them(disk_images: dict[str, Path]) -> None:
    with open_path(disk_images["windows-dynamic.vhdx"]) as disk:
        vol = next(v for v in list_volumes(disk) if v.filesystem is FsKind.NTFS)
        fs = vol.adapter()
        assert (fs.kind, fs.name, fs.label) == ("ntfs", "NTFS", "Windows")
        names = {c.name for c in fs.children(fs.root())}
        assert names == set(WINDOWS_FILES)  # no $MFT, $Bitmap...
        for name, content in WINDOWS_FILES.items():
            node = _lookup(fs, name)
            info = fs.info(node)
            assert (info.kind, info.size, info.unreadable) == ("file", len(content), None)
            assert fs.open(node).read() == content
        assert fs.find(fs.root(), "NOTES.TXT") is not None  # case-insensitive when no exact match
        assert fs.find(fs.root(), "missing.txt") is None


def test_ext_walks_folders_and_reads_files(disk_images: dict[str, Path]) -> None:
    with open_path(disk_images["linux-dynamic.vhdx"]) as disk:
        vol = next(v for v in list_volumes(disk) if v.filesystem is FsKind.EXT)
        fs = vol.adapter()
        assert (fs.kind, fs.name, fs.label) == ("ext", "ext4", "root")
        assert {"etc", "home", "var"} <= {c.name for c in fs.children(fs.root())}
        assert "." not in {c.name for c in fs.children(fs.root())}
        for path, content in LINUX_FILES.items():
            node = _lookup(fs, path)
            assert fs.info(node).kind == "file" and fs.open(node).read() == content
        assert fs.info(_lookup(fs, "home/admin")).kind == "dir"
