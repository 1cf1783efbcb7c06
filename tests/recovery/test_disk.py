"""Opening virtual disk files from a recovery point: VHDX, differencing chains, VHD, bad files."""

from __future__ import annotations

import io

import pytest

from recovery.itemlevel import (
    LOG_NOT_REPLAYED,
    ItemNotFound,
    ParentDiskMissing,
    ParentRef,
    UnreadableDisk,
    UnsupportedDisk,
    list_dir,
    list_volumes,
    open_disk,
    open_file,
    resolve_parent,
)
from recovery.itemlevel.disk import DiskFile

from .conftest import FAT_FILES, VHD_DIR, Image, text


def test_differencing_chain_reads_through_to_the_parent(chain_image: Image) -> None:
    with chain_image.open() as disk:
        assert disk.format == "vhdx"
        assert disk.chain == [f"{VHD_DIR}/base_6A1B.avhdx", f"{VHD_DIR}/base.vhdx"]
        assert disk.warnings == []
        (vol,) = list_volumes(disk)
        assert vol.filesystem_name == "FAT16" and vol.label == "CHAIN"
        names = {e.name.lower() for e in list_dir(vol, "/")}
        assert names == {"a.txt", "b.txt", "keep.txt"}
        with open_file(vol, "/a.txt") as f:
            assert f.read() == text(500 * 1024, "new")  # changed in the checkpoint
        with open_file(vol, "/keep.txt") as f:
            assert f.read() == text(50 * 1024, "keep")  # only in the parent


def test_the_parent_alone_is_the_older_state(chain_image: Image) -> None:
    with chain_image.open(f"{VHD_DIR}/base.vhdx") as disk:
        (vol,) = list_volumes(disk)
        assert {e.name.lower() for e in list_dir(vol, "/")} == {"a.txt", "keep.txt"}
        with open_file(vol, "/A.TXT") as f:
            assert f.read() == text(300 * 1024, "old")


def test_differencing_disk_without_a_parent(chain_image: Image) -> None:
    reader = chain_image.ds.open_file(chain_image.point_id, chain_image.name)
    with pytest.raises(ParentDiskMissing, match=r"differencing disk.*base\.vhdx"):
        open_disk(reader, name=chain_image.name)
    with pytest.raises(ParentDiskMissing, match="not in this recovery point"):
        # a point that lacks the parent
        names = [chain_image.name]
        open_disk(
            chain_image.ds.open_file(chain_image.point_id, chain_image.name),
            name=chain_image.name,
            parent_opener=lambda ref: (n := resolve_parent(ref, names), chain_image.ds.open_file("x", n)),
        )


def test_parent_linkage_mismatch_is_reported(chain_image: Image, fat_image: Image) -> None:
    def wrong_parent(ref: ParentRef) -> tuple[str, DiskFile]:
        assert ref.relative_path == ".\\base.vhdx" and ref.parent_linkage
        return fat_image.name, fat_image.ds.open_file(fat_image.point_id, fat_image.name)

    reader = chain_image.ds.open_file(chain_image.point_id, chain_image.name)
    with open_disk(reader, name=chain_image.name, parent_opener=wrong_parent) as disk:
        assert any("parent linkage mismatch" in w for w in disk.warnings)
    reader.close()


def test_log_not_replayed_warning(chain_image: Image) -> None:
    with chain_image.open(f"{VHD_DIR}/logged.vhdx") as disk:
        assert disk.warnings == [f"{VHD_DIR}/logged.vhdx: {LOG_NOT_REPLAYED}"]
        (vol,) = list_volumes(disk)  # still readable
        assert vol.browsable


def test_resolve_parent() -> None:
    names = [
        "Virtual Hard Disks/Base.VHDX",
        "Virtual Hard Disks/base_1.avhdx",
        "Other/data.vhdx",
        "Snapshots/x/data.vhdx",
        "Virtual Machines/a.vmcx",
    ]

    def ref(child: str, rel: str | None, absolute: str | None = None) -> ParentRef:
        return ParentRef(child, rel, absolute, None, None)

    assert resolve_parent(ref(names[1], ".\\base.vhdx"), names) == "Virtual Hard Disks/Base.VHDX"
    assert resolve_parent(ref(names[1], "..\\Other\\data.vhdx"), names) == "Other/data.vhdx"
    # the relative path fails; the absolute path's file name is unique among the point's files
    assert resolve_parent(ref(names[1], None, "D:\\old\\place\\BASE.vhdx"), names) == names[0]
    with pytest.raises(ParentDiskMissing):  # two files called data.vhdx, none beside the child
        resolve_parent(ref(names[1], None, "D:\\x\\data.vhdx"), names)
    with pytest.raises(ParentDiskMissing):  # a relative path may not climb out of the point
        resolve_parent(ref(names[1], "..\\..\\..\\etc\\passwd"), names)
    with pytest.raises(ParentDiskMissing, match=r"missing\.vhdx"):
        resolve_parent(ref(names[1], ".\\missing.vhdx"), names)


@pytest.mark.parametrize("name", [f"{VHD_DIR}/dynamic.vhd", f"{VHD_DIR}/fixed.vhd"])
def test_vhd(vhd_image: Image, name: str) -> None:
    with vhd_image.open(name) as disk:
        assert disk.format == "vhd" and disk.sector_size == 512
        (vol,) = list_volumes(disk)
        assert vol.filesystem_name == "FAT32"
        with open_file(vol, "/Folder/Sub/file.txt") as f:
            assert f.read() == FAT_FILES["Folder/Sub/file.txt"][0]


def test_differencing_vhd_is_refused_clearly(vhd_image: Image) -> None:
    with pytest.raises(UnsupportedDisk, match="differencing VHD"):
        vhd_image.open(f"{VHD_DIR}/diff.vhd")


def test_not_a_disk() -> None:
    with pytest.raises(UnsupportedDisk, match="not a VHD or VHDX"):
        open_disk(io.BytesIO(b"MZ" + bytes(100_000)), name="x.vmcx")


def test_damaged_vhdx(chain_image: Image) -> None:
    data = bytearray(chain_image.vhdx.read_bytes()[: 2 * 1024 * 1024])
    data[3 * 65536 : 5 * 65536] = bytes(2 * 65536)  # both region tables
    with pytest.raises(UnreadableDisk, match="could not be read as a VHDX file"):
        open_disk(io.BytesIO(bytes(data)), name="broken.vhdx")
    truncated = chain_image.vhdx.read_bytes()[:100_000]
    with pytest.raises(UnreadableDisk):
        open_disk(io.BytesIO(truncated), name="short.vhdx")


def test_a_disk_the_point_does_not_hold_is_an_item_level_error(fat_image: Image) -> None:
    # The engine's FileNotInPoint escaped item-level recovery's error family.
    with pytest.raises(ItemNotFound, match=r"holds no disk file named Virtual Hard Disks/gone\.vhdx"):
        fat_image.open(f"{VHD_DIR}/gone.vhdx")
    listed_but_lost = Image(**{**fat_image.__dict__, "names": [*fat_image.names, f"{VHD_DIR}/lost.vhdx"]})
    with pytest.raises(UnreadableDisk, match="cannot be read"):
        listed_but_lost.open(f"{VHD_DIR}/lost.vhdx")


def test_star_import_of_the_package_works() -> None:
    namespace: dict[str, object] = {}
    exec("from recovery.itemlevel import *", namespace)  # noqa: S102 - what `__all__` promises
    assert "DiskFile" in namespace and "ItemLevelError" in namespace
