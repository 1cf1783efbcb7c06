"""A datastore row means one store, identified by its format.json uuid: opening never
creates one, and a missing, unmounted, replaced or read-only store is a clear error.
Mount tests use real tmpfs mounts (root only; CI runs as root)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from backupsite.core.models import AuditEvent
from storage.engine import Datastore as EngineDatastore
from storage.engine import SourceFile
from storage.models import (
    Datastore,
    DatastoreMissing,
    DatastoreReadOnly,
    DatastoreReplaced,
    DatastoreUnavailable,
)

pytestmark = pytest.mark.django_db
KiB = 1024
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")


def store_id(path: Path) -> str:
    return str(json.loads((path / "format.json").read_text())["uuid"])


def test_create_with_store_records_the_stores_id(tmp_path: Path) -> None:
    datastore = Datastore.objects.create_with_store("Primary", str(tmp_path / "ds"), chunk_size=256 * KiB)
    assert datastore.uuid == store_id(tmp_path / "ds")
    assert Datastore.objects.get(pk=datastore.pk).uuid == datastore.uuid
    assert datastore.open_engine().chunk_size == 256 * KiB


def test_open_never_creates_a_store_in_a_missing_folder(tmp_path: Path) -> None:
    datastore = Datastore.objects.create_with_store("Primary", str(tmp_path / "ds"))
    (tmp_path / "ds").rename(tmp_path / "renamed")
    with pytest.raises(DatastoreMissing, match=r"does not exist\. Is the volume mounted\?"):
        datastore.open_engine()
    with pytest.raises(DatastoreMissing):
        datastore.open_engine(write=False)
    assert not (tmp_path / "ds").exists()


def test_an_empty_folder_is_an_unmounted_volume(tmp_path: Path) -> None:
    datastore = Datastore.objects.create_with_store("Primary", str(tmp_path / "ds"))
    (tmp_path / "ds").rename(tmp_path / "elsewhere")
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "lost+found").mkdir()  # what an empty ext4 volume's root holds
    with pytest.raises(DatastoreMissing, match=r"is empty\. Is the volume mounted"):
        datastore.open_engine()
    assert [p.name for p in (tmp_path / "ds").iterdir()] == ["lost+found"]


def test_a_folder_with_files_but_no_format_json_is_not_the_store(tmp_path: Path) -> None:
    datastore = Datastore.objects.create_with_store("Primary", str(tmp_path / "ds"))
    (tmp_path / "ds" / "format.json").unlink()
    with pytest.raises(DatastoreMissing, match=r"format\.json is missing"):
        datastore.open_engine()
    assert not (tmp_path / "ds" / "format.json").exists()


def test_another_store_at_the_path_is_refused(tmp_path: Path) -> None:
    datastore = Datastore.objects.create_with_store("Primary", str(tmp_path / "ds"))
    expected = datastore.uuid
    (tmp_path / "ds").rename(tmp_path / "old")
    EngineDatastore.create(tmp_path / "ds")
    with pytest.raises(DatastoreReplaced, match=f"expected {expected}.*Is another volume mounted there"):
        datastore.open_engine(write=False)
    assert Datastore.objects.get(pk=datastore.pk).uuid == expected  # never re-adopted


def test_a_row_from_before_ids_adopts_its_store_at_first_open(tmp_path: Path) -> None:
    EngineDatastore.create(tmp_path / "ds")
    datastore = Datastore.objects.create(name="Legacy", path=str(tmp_path / "ds"))  # as migrated: no id
    assert datastore.uuid == ""
    datastore.open_engine()
    assert Datastore.objects.get(pk=datastore.pk).uuid == store_id(tmp_path / "ds")
    # From then on it is pinned: a store swapped in afterwards is refused.
    (tmp_path / "ds").rename(tmp_path / "old")
    EngineDatastore.create(tmp_path / "ds")
    with pytest.raises(DatastoreReplaced):
        Datastore.objects.get(pk=datastore.pk).open_engine()


def test_create_datastore_command(tmp_path: Path) -> None:
    out = StringIO()
    call_command(
        "create-datastore", "Backups", str(tmp_path / "vol" / "ds"), "--chunk-size", "524288", stdout=out
    )
    datastore = Datastore.objects.get(name="Backups")
    assert f"id {datastore.uuid}" in out.getvalue() and datastore.chunk_size == 512 * KiB
    assert store_id(tmp_path / "vol" / "ds") == datastore.uuid
    assert AuditEvent.objects.filter(action="datastore.create").count() == 1


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["Other", "{tmp}/other", "--chunk-size", "3000000"], "power of two"),
        (["Backups", "{tmp}/other"], "name: Datastore with this Name already exists"),
        (["Other", "{tmp}/full"], "is not empty"),
        (["Other", "{tmp}/ds"], "path: Datastore with this Path already exists"),
    ],
)
def test_create_datastore_command_refuses(tmp_path: Path, arguments: list[str], message: str) -> None:
    Datastore.objects.create_with_store("Backups", str(tmp_path / "ds"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "somebody-elses-file").write_text("x")
    with pytest.raises(CommandError, match=message):
        call_command("create-datastore", *(a.format(tmp=tmp_path) for a in arguments), stdout=StringIO())
    assert Datastore.objects.count() == 1
    assert not (tmp_path / "other").exists()
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["somebody-elses-file"]


def test_bootstrap_registers_a_store_that_survived_the_database(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings.BACKUPSITE_DATA_DIR = tmp_path
    EngineDatastore.create(tmp_path / "datastore", chunk_size=256 * KiB)
    out = StringIO()
    call_command("bootstrap", stdout=out)
    datastore = Datastore.objects.get()
    assert "Registered the existing datastore" in out.getvalue()
    assert datastore.uuid == store_id(tmp_path / "datastore") and datastore.chunk_size == 256 * KiB


# --------------------------------------------------------------------------- real mounts


def mount_tmpfs(path: Path, *options: str) -> None:
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(("size=64m", *options)), "tmpfs", str(path)], check=True
    )


def unmount(path: Path) -> None:
    subprocess.run(["umount", str(path)], check=True)


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "volume"
    path.mkdir()
    mount_tmpfs(path)
    yield path
    while os.path.ismount(path):
        unmount(path)


@needs_root
def test_a_store_on_an_unmounted_volume_is_missing_and_nothing_is_written(volume: Path) -> None:
    datastore = Datastore.objects.create_with_store("USB", str(volume / "store"))
    unmount(volume)
    for write in (True, False):
        with pytest.raises(DatastoreMissing, match=r"does not exist\. Is the volume mounted"):
            datastore.open_engine(write=write)
    assert list(volume.iterdir()) == []  # the mount point on the root disk stays empty


@needs_root
def test_a_read_only_volume_refuses_writers_and_serves_readers(volume: Path, tmp_path: Path) -> None:
    datastore = Datastore.objects.create_with_store("RO", str(volume))
    source = tmp_path / "disk.bin"
    source.write_bytes(os.urandom(300 * KiB))
    point = datastore.open_engine().backup("vm-1", [SourceFile(name="disk.bin", source=source)])
    subprocess.run(["mount", "-o", "remount,ro", str(volume)], check=True)
    with pytest.raises(DatastoreReadOnly, match=r"is read-only\. Is the volume mounted read-write"):
        datastore.open_engine()
    # Recovery only reads: a volume mounted read-only after a disaster still restores.
    datastore.open_engine(write=False).restore(point.id, tmp_path / "restored")
    assert (tmp_path / "restored" / "disk.bin").read_bytes() == source.read_bytes()


@needs_root
def test_another_volume_mounted_in_its_place_is_refused(volume: Path) -> None:
    datastore = Datastore.objects.create_with_store("Main", str(volume))
    unmount(volume)
    mount_tmpfs(volume)
    EngineDatastore.create(volume)  # somebody else's datastore on the volume now mounted there
    with pytest.raises(DatastoreReplaced) as caught:
        datastore.open_engine()
    assert isinstance(caught.value, DatastoreUnavailable)
