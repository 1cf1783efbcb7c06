"""The storage pool's rules (storage.services, the models): adding volumes and creating
datastores on them, with real directories and real tmpfs mounts."""

from __future__ import annotations

import os
import subprocess
from io import StringIO
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError

from protection.models import ProtectionGroup
from storage.models import Datastore, Volume
from storage.services import add_volume, create_datastore
from tests.storage.conftest import Mounter, needs_root

pytestmark = pytest.mark.django_db
MiB = 1024 * 1024


def refused(path: str, match: str) -> None:
    before = (Volume.objects.count(), list(Datastore.objects.values_list("pk", "volume")))
    with pytest.raises(ValidationError, match=match) as caught:
        add_volume(path)
    assert set(caught.value.message_dict) == {"path"}
    assert (Volume.objects.count(), list(Datastore.objects.values_list("pk", "volume"))) == before


# --------------------------------------------------------------------------- adding volumes


@needs_root
def test_a_mounted_volume_is_added_and_probed_live(tmpfs: Mounter) -> None:
    path = tmpfs("usb", "size=16m")
    volume = add_volume(str(path) + "/", "  USB disk  ")
    assert (volume.path, volume.label, volume.mount_point) == (str(path), "USB disk", str(path))
    status = volume.status()
    assert status.problem == "" and not status.read_only
    assert status.mount is not None and status.mount.fs_type == "tmpfs" and status.mount.device == "tmpfs"
    assert status.space is not None and status.space.total == 16 * MiB


def test_a_plain_folder_is_a_volume_too(tmp_path: Path) -> None:
    volume = add_volume(str(tmp_path))
    assert volume.status().reachable and str(volume) == str(tmp_path)


@pytest.mark.parametrize(
    ("path", "match"),
    [
        ("relative/folder", "Give an absolute path"),
        ("", "Give an absolute path"),
        ("{tmp}/missing", "does not exist"),
        ("{tmp}/file", "is not a folder"),
    ],
)
def test_bad_paths_are_refused(tmp_path: Path, path: str, match: str) -> None:
    (tmp_path / "file").write_text("x")
    refused(path.format(tmp=tmp_path), match)


@needs_root
def test_a_read_only_mount_is_refused(tmpfs: Mounter) -> None:
    path = tmpfs("ro", "ro,size=8m")
    refused(str(path), f"is on a read-only mount \\(the file system mounted at {path}\\)")


def test_a_folder_inside_a_datastore_is_refused(tmp_path: Path) -> None:
    datastore = Datastore.objects.create_with_store("Primary", str(tmp_path / "ds"))
    refused(str(tmp_path / "ds"), "inside datastore Primary's folder")
    refused(str(tmp_path / "ds" / "chunks"), "inside datastore Primary's folder")
    os.symlink(tmp_path / "ds", tmp_path / "link")
    refused(str(tmp_path / "link"), "inside datastore Primary's folder")  # symbolic links resolved
    assert Datastore.objects.get(pk=datastore.pk).volume is None


@needs_root
def test_volumes_do_not_nest(tmpfs: Mounter, tmp_path: Path) -> None:
    outer = tmpfs("outer", "size=16m")
    volume = add_volume(str(outer), "Outer")
    (outer / "sub").mkdir()
    refused(str(outer), "already registered as volume Outer")
    refused(str(outer / "sub"), f"lies inside volume Outer \\({outer}\\)")
    refused(str(tmp_path), f"holds volume Outer \\({outer}\\); volumes cannot nest")
    inner = tmpfs("outer/inner-mount", "size=8m")  # even another file system mounted inside
    refused(str(inner), "lies inside volume Outer")
    assert list(Volume.objects.all()) == [volume]


@needs_root
def test_a_volume_too_small_for_its_datastores_is_refused(tmpfs: Mounter) -> None:
    path = tmpfs("small", "size=16m")
    first = Datastore.objects.create_with_store("First", str(path / "first"))
    second = Datastore.objects.create_with_store("Second", str(path / "second"))
    # Capacity planning wrote what their groups need; the second also holds more than planned.
    Datastore.objects.filter(pk=first.pk).update(assigned_bytes=12 * MiB)
    Datastore.objects.filter(pk=second.pk).update(assigned_bytes=2 * MiB, used_bytes=8 * MiB)
    refused(
        str(path),
        r"is too small: it holds 16\.0 MiB, but the datastores in it need 20\.0 MiB "
        r"\(First \(12\.0 MiB\), Second \(8\.0 MiB\)\)",
    )
    Datastore.objects.filter(pk=first.pk).update(assigned_bytes=6 * MiB)
    volume = add_volume(str(path))
    assert {ds.name for ds in volume.datastores.all()} == {"First", "Second"}  # adopted
    assert volume.planned_need() == 14 * MiB


@needs_root
def test_an_unmounted_volume_says_so(tmpfs: Mounter, tmp_path: Path) -> None:
    path = tmpfs("usb", "size=16m")
    volume = add_volume(str(path))
    subprocess.run(["umount", str(path)], check=True)
    status = volume.status()
    assert not status.reachable and status.space is None
    assert status.problem.startswith(f"Not mounted: {path} is now on ")
    assert f"it was on {path} when it was added" in status.problem
    path.rmdir()
    assert "does not exist. Is the volume mounted?" in volume.status().problem


@needs_root
def test_a_volume_remounted_read_only_says_so(tmpfs: Mounter) -> None:
    path = tmpfs("usb", "size=16m")
    volume = add_volume(str(path))
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
    status = volume.status()
    assert status.reachable and status.read_only and status.problem.startswith("Mounted read-only")


def test_add_volume_command(tmp_path: Path) -> None:
    Datastore.objects.create_with_store("Primary", str(tmp_path / "pool" / "ds"))
    out = StringIO()
    call_command("add-volume", str(tmp_path / "pool"), "--label", "Pool", stdout=out)
    volume = Volume.objects.get()
    assert volume.label == "Pool" and f"Added volume {tmp_path / 'pool'}" in out.getvalue()
    assert "Datastores in it: Primary." in out.getvalue()
    with pytest.raises(CommandError, match="already registered as volume Pool"):
        call_command("add-volume", str(tmp_path / "pool"), stdout=StringIO())
    with pytest.raises(CommandError, match="Give an absolute path"):
        call_command("add-volume", "pool", stdout=StringIO())
    assert Volume.objects.count() == 1


def test_bootstrap_adds_the_data_directory_as_a_volume(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings.BACKUPSITE_DATA_DIR = tmp_path
    out = StringIO()
    call_command("bootstrap", stdout=out)
    volume = Volume.objects.get()
    assert volume.path == str(tmp_path) and volume.label == "Data directory"
    assert Datastore.objects.get().volume == volume
    assert "Added the data directory" in out.getvalue()


# --------------------------------------------------------------------------- datastores on a volume


@pytest.fixture
def volume(tmp_path: Path) -> Volume:
    (tmp_path / "pool").mkdir()
    return add_volume(str(tmp_path / "pool"), "Pool")


def test_create_a_datastore_on_a_volume(volume: Volume) -> None:
    created = create_datastore(
        volume, "Fast", "fast", chunk_size=256 * 1024, compression_level=3, colocate=False
    )
    datastore = Datastore.objects.get(pk=created.datastore.pk)
    assert created.recovery_key is None
    assert (datastore.volume, datastore.path, datastore.colocate) == (volume, f"{volume.path}/fast", False)
    engine = datastore.open_engine()
    assert (engine.settings.chunk_size, engine.settings.compression_level) == (256 * 1024, 3)
    assert not engine.encrypted and datastore.compression_level == 3


@pytest.mark.parametrize(
    ("folder", "match"),
    [
        ("", "Give the name of the folder"),
        ("..", "a single name"),
        (".", "a single name"),
        ("a/b", "a single name"),
        ("/etc", "a single name"),
        ("nul\x00byte", "a single name"),
        (".hidden", "may not start with '.'"),
        ("full", "exists and is not empty"),
        ("file", "exists and is not a folder"),
    ],
)
def test_unsafe_or_used_folders_are_refused(volume: Volume, folder: str, match: str) -> None:
    Path(volume.path, "full").mkdir()
    Path(volume.path, "full", "keep").write_text("x")
    Path(volume.path, "file").write_text("x")
    with pytest.raises(ValidationError, match=match) as caught:
        create_datastore(volume, "New", folder)
    assert set(caught.value.message_dict) == {"folder"}
    assert not Datastore.objects.exists()
    assert sorted(os.listdir(volume.path)) == ["file", "full"]


def test_an_empty_existing_folder_is_fine(volume: Volume) -> None:
    Path(volume.path, "empty").mkdir()
    assert create_datastore(volume, "New", "empty").datastore.volume == volume


@needs_root
def test_no_datastore_on_a_read_only_volume(tmpfs: Mounter) -> None:
    path = tmpfs("usb", "size=16m")
    volume = add_volume(str(path))
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
    with pytest.raises(ValidationError, match="Mounted read-only"):
        create_datastore(volume, "New", "ds")
    assert not Datastore.objects.exists()


def test_create_with_store_finds_the_volume_and_refuses_nesting(volume: Volume, tmp_path: Path) -> None:
    datastore = Datastore.objects.create_with_store("Old", f"{volume.path}/old")  # the old signature
    assert datastore.volume == volume and datastore.colocate
    elsewhere = Datastore.objects.create_with_store("Elsewhere", str(tmp_path / "elsewhere"))
    assert elsewhere.volume is None
    with pytest.raises(ValidationError, match="is inside datastore Old"):
        Datastore.objects.create_with_store("Inner", f"{volume.path}/old/inner")
    with pytest.raises(ValidationError, match="holds datastore Old"):
        Datastore.objects.create_with_store("Outer", str(tmp_path / "pool"))
    with pytest.raises(ValidationError, match="is not on volume Pool"):
        Datastore.objects.create_with_store("Off", str(tmp_path / "off"), volume=volume)
    assert Datastore.objects.count() == 2 and not (tmp_path / "off").exists()


# --------------------------------------------------------------------------- colocation


def test_colocation_and_new_groups(volume: Volume) -> None:
    shared = create_datastore(volume, "Shared", "shared").datastore
    dedicated = create_datastore(volume, "Dedicated", "dedicated", colocate=False).datastore
    spare = create_datastore(volume, "Spare", "spare", colocate=False).datastore
    ProtectionGroup.objects.create(name="Web", datastore=shared)
    ProtectionGroup.objects.create(name="SQL", datastore=shared)
    ProtectionGroup.objects.create(name="Files", datastore=dedicated)
    # Shared ones, and dedicated ones nobody uses yet.
    assert list(Datastore.objects.accepting_new_group()) == [shared, spare]

    with pytest.raises(ValidationError, match=r"2 protection groups share this datastore \(SQL, Web\)"):
        shared.set_colocate(False)
    assert Datastore.objects.get(pk=shared.pk).colocate
    dedicated.set_colocate(True)
    assert Datastore.objects.get(pk=dedicated.pk).colocate
    dedicated.set_colocate(False)  # one group: fine
    assert not Datastore.objects.get(pk=dedicated.pk).colocate
