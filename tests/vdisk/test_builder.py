"""Building real guest disks: GPT + NTFS / ext4 in a VHDX, readable by dissect."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from dissect.extfs import ExtFS
from dissect.ntfs import NTFS

from storage.vdisk import builder
from storage.vdisk.builder import DiskSpec, MiB
from storage.vdisk.errors import ToolError
from tests.fixtures.build_vhdx import FIXED_FILES, LINUX_FILES, WINDOWS_FILES, dissect_partitions


def test_windows_disk_has_gpt_esp_and_ntfs_with_the_files(disk_images: dict[str, Path]) -> None:
    path = disk_images["windows-dynamic.vhdx"]
    parts = dissect_partitions(path)
    assert [p.name for p in parts] == ["EFI system partition", "Basic data partition"]
    assert parts[0].offset == 1 * MiB and parts[1].offset % MiB == 0
    fs = NTFS(parts[1].open())
    for name, content in WINDOWS_FILES.items():
        assert fs.mft.get(name).open().read() == content
    assert builder.qemu_img_check(path)[0]


def test_fixed_disk_and_linux_disk(disk_images: dict[str, Path]) -> None:
    fixed = NTFS(dissect_partitions(disk_images["windows-fixed.vhdx"])[1].open())
    assert fixed.mft.get("notes.txt").open().read() == FIXED_FILES["notes.txt"]
    parts = dissect_partitions(disk_images["linux-dynamic.vhdx"])
    assert parts[1].name == "Linux filesystem"
    fs = ExtFS(parts[1].open())
    for name, content in LINUX_FILES.items():
        assert fs.get(name).open().read() == content
    assert builder.qemu_img_check(disk_images["linux-dynamic.vhdx"])[0]


def test_gpt_layout_scales_with_the_disk() -> None:
    small = builder.gpt_layout(128 * MiB, "ntfs")
    assert [p.type_code for p in small] == ["EF00", "0700"]
    big = builder.gpt_layout(4096 * MiB, "ntfs")
    assert [p.type_code for p in big] == ["EF00", "0C01", "0700"]
    assert big[0].size == 100 * MiB
    for layout, size in ((small, 128 * MiB), (big, 4096 * MiB)):
        end = layout[-1].start + layout[-1].size
        assert end <= size - 1 * MiB  # room for the backup GPT
        assert all(a.start + a.size <= b.start for a, b in itertools.pairwise(layout))
    with pytest.raises(ToolError, match="too small"):
        builder.gpt_layout(16 * MiB, "ntfs")


def test_bad_specs_and_failing_tools_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="multiple of 1 MiB"):
        builder.build_disk(tmp_path / "x.vhdx", DiskSpec(1000))
    with pytest.raises(ToolError, match="unknown VHDX subformat"):
        builder.build_disk(tmp_path / "x.vhdx", DiskSpec(64 * MiB, "none", "sparse"))
    with pytest.raises(ToolError, match="ntfscp cannot create folders"):
        builder.build_disk(tmp_path / "x.vhdx", DiskSpec(64 * MiB, files={"a/b.txt": b"x"}))
    assert not (tmp_path / "x.vhdx").exists()
    assert not list(tmp_path.glob(".build-*"))  # temporary files cleaned up
    with pytest.raises(ToolError, match="qemu-img failed"):
        builder.run(["qemu-img", "info", str(tmp_path / "missing.vhdx")])
    with pytest.raises(ToolError, match="is not installed"):
        builder.run(["definitely-not-a-tool-xyz"])
    assert builder.missing_tools(["definitely-not-a-tool-xyz", "qemu-img"]) == ["definitely-not-a-tool-xyz"]


def test_qemu_img_check_reports_damage(disk_images: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.vhdx"
    bad.write_bytes(disk_images["blank-dynamic.vhdx"].read_bytes()[: 2 * MiB])
    ok, output = builder.qemu_img_check(bad)
    assert not ok and output


def test_pseudo_random_content_past_256_mib() -> None:
    # randbytes() in one call overflowed from 256 MiB on: `lab create --size-gib 4` crashed.
    size = 300 * MiB + 5
    data = builder.pseudo_random(size, "big")
    assert len(data) == size
    assert data == builder.pseudo_random(size, "big")  # reproducible
    assert data[:MiB] != data[MiB : 2 * MiB]  # blocks differ: not one block repeated
    assert builder.pseudo_random(1000, "small") == builder.pseudo_random(1000, "small")
