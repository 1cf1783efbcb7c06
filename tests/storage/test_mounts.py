"""The live-system probes behind the storage pool: mountinfo parsing and real tmpfs mounts."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from storage.mounts import (
    Mount,
    contains,
    disk_space,
    mount_of,
    parse_mountinfo,
    read_only,
    unescape,
    writable,
)
from tests.storage.conftest import Mounter, needs_root

ROOT = Path(__file__).resolve().parents[2]
MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
40 27 8:17 / /mnt/backup\\040disk rw,noatime shared:20 master:3 - xfs /dev/sdb1 rw,attr2
41 40 0:50 / /mnt/backup\\040disk/inner ro,relatime - tmpfs tmp\\134fs ro,size=8192k
42 27 8:33 / /srv rw - ext4 /dev/sdc1 rw
43 27 8:49 / /srv rw - btrfs /dev/sdd1 rw,subvol=/
44 27 0:60 / /srv2 rw - tmpfs tmpfs rw
not a mountinfo line
"""


def test_octal_escapes() -> None:
    assert unescape("/mnt/backup\\040disk\\011tab\\134x") == "/mnt/backup disk\ttab\\x"


def test_parse_mountinfo_reads_type_device_and_read_only() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert len(mounts) == 7  # the line it does not understand is skipped
    assert mounts[2] == Mount("/mnt/backup disk", "xfs", "/dev/sdb1", read_only=False)
    assert mounts[3] == Mount("/mnt/backup disk/inner", "tmpfs", "tmp\\fs", read_only=True)


def test_a_file_system_the_kernel_made_read_only_after_an_error_is_read_only() -> None:
    # ext4 with errors=remount-ro on Linux 6.x: the mount stays "rw" and statvfs says
    # nothing, only the super options tell; every write fails with EROFS.
    failed = "45 27 7:0 / /mnt/failed rw,relatime - ext4 /dev/loop0 rw,errors=remount-ro,emergency_ro\n"
    read_only_sb = "46 27 7:1 / /mnt/sb rw,relatime - ext4 /dev/loop1 ro\n"
    healthy = "47 27 7:2 / /mnt/ok rw,relatime - ext4 /dev/loop2 rw,errors=remount-ro\n"
    assert [m.read_only for m in parse_mountinfo(failed + read_only_sb + healthy)] == [True, True, False]


def test_longest_mount_point_wins_and_the_last_of_stacked_mounts() -> None:
    table = parse_mountinfo(MOUNTINFO)

    def mount(path: str) -> Mount:
        found = mount_of(path, table)
        assert found is not None
        return found

    assert mount("/mnt/backup disk/store").device == "/dev/sdb1"
    assert mount("/mnt/backup disk/inner/x").fs_type == "tmpfs"
    assert mount("/mnt/backup").mount_point == "/"
    assert mount("/srv/ds").fs_type == "btrfs"
    assert mount("/srv2x").mount_point == "/"  # a prefix of the name is not a parent


def test_contains_is_by_path_component() -> None:
    assert contains("/srv", "/srv") and contains("/srv", "/srv/a") and contains("/", "/srv")
    assert not contains("/srv", "/srv2") and not contains("/srv/a", "/srv")


@needs_root
def test_a_real_tmpfs(tmpfs: Mounter) -> None:
    volume = tmpfs("vol", "size=8m")
    mount = mount_of(str(volume / "not-yet-there"))
    assert mount is not None and mount.mount_point == str(volume) and mount.fs_type == "tmpfs"
    space = disk_space(str(volume))
    assert space is not None and space.total == 8 * 1024 * 1024
    assert writable(str(volume)) and not read_only(str(volume))
    subprocess.run(["mount", "-o", "remount,ro", str(volume)], check=True)
    assert read_only(str(volume)) and not writable(str(volume))  # root too
    assert mount_of(str(volume)).read_only  # type: ignore[union-attr]


@needs_root
def test_a_mount_point_with_a_space_in_its_name(tmpfs: Mounter) -> None:
    volume = tmpfs("backup disk")
    mount = mount_of(str(volume))
    assert mount is not None and mount.mount_point == str(volume)


def test_nothing_there(tmp_path: Path) -> None:
    assert disk_space(str(tmp_path / "missing")) is None
    assert not writable(str(tmp_path / "missing"))


@needs_root
@pytest.mark.skipif(not os.path.exists("/usr/bin/python3"), reason="needs Debian's python3 to run as nobody")
def test_a_folder_the_server_user_cannot_write() -> None:
    """Root may write anywhere, so the check runs as nobody, in a real process of that user
    (Debian's python3: the test's own interpreter may live where nobody cannot read)."""
    top = Path(tempfile.mkdtemp(prefix="hvbackup-writable-"))  # /tmp: nobody can reach it
    try:
        top.chmod(0o755)
        folder = top / "root-only"
        folder.mkdir(mode=0o755)
        source = (ROOT / "storage" / "mounts.py").read_text()
        probe = f"{source}\nprint(writable({str(folder)!r}))"
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-"]
        nobody = subprocess.run(command, input=probe, capture_output=True, text=True, check=True)
        assert nobody.stdout.strip() == "False"
        folder.chmod(0o777)
        nobody = subprocess.run(command, input=probe, capture_output=True, text=True, check=True)
        assert nobody.stdout.strip() == "True"
    finally:
        shutil.rmtree(top)
