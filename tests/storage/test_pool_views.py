"""storage.views.pool: the storage pool overview, volumes, and creating a datastore on a volume."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from backupsite.core.models import AuditEvent
from protection.models import ProtectionGroup
from storage.models import Datastore, Volume
from storage.services import add_volume
from tests.storage.conftest import Mounter, needs_root

pytestmark = pytest.mark.django_db
ADD_VOLUME = reverse("storage:volume-add")
OVERVIEW = reverse("storage:datastore-list")


@pytest.fixture
def volume(tmp_path: Path) -> Volume:
    (tmp_path / "pool").mkdir()
    return add_volume(str(tmp_path / "pool"), "Pool")


def add_datastore_url(volume: Volume) -> str:
    return reverse("storage:datastore-add", args=[volume.pk])


def datastore_data(**fields: object) -> dict[str, object]:
    return {
        "name": "Fast",
        "folder": "fast",
        "chunk_size": 1048576,
        "compression_level": 1,
        "colocate": "on",
    } | fields


# --------------------------------------------------------------------------- overview


def test_overview_shows_volumes_their_datastores_and_the_rest(
    readonly_client: Client, volume: Volume, tmp_path: Path
) -> None:
    on_volume = Datastore.objects.create_with_store("On the pool", f"{volume.path}/ds")
    ProtectionGroup.objects.create(name="Web servers", datastore=on_volume)
    Datastore.objects.create_with_store("Elsewhere", str(tmp_path / "elsewhere"))
    page = readonly_client.get(OVERVIEW).content.decode()
    assert "Pool" in page and "On the pool" in page and "Web servers" in page
    assert "Datastores on no registered volume" in page and "Elsewhere" in page
    assert " free</strong> of " in page
    assert "Add volume" not in page and "Create datastore" not in page  # read-only


def test_overview_for_administrators(admin_client: Client, volume: Volume) -> None:
    page = admin_client.get(OVERVIEW).content.decode()
    assert "Add volume" in page and add_datastore_url(volume) in page
    assert "Datastores on no registered volume" not in page


@needs_root
def test_an_unmounted_volume_is_shown_as_such(admin_client: Client, tmpfs: Mounter) -> None:
    path = tmpfs("usb", "size=16m")
    volume = add_volume(str(path), "USB disk")
    subprocess.run(["umount", str(path)], check=True)
    for url in (OVERVIEW, volume.get_absolute_url(), add_datastore_url(volume)):
        response = admin_client.get(url)
        assert response.status_code == 200
        assert "Not mounted:" in response.content.decode()
    # Creating a datastore there is refused: it would land on the disk below.
    response = admin_client.post(add_datastore_url(volume), datastore_data())
    assert response.status_code == 200 and "Not mounted:" in response.content.decode()
    assert not Datastore.objects.exists() and list(path.iterdir()) == []


def test_overview_outsider_and_method(outsider_client: Client, admin_client: Client) -> None:
    assert outsider_client.get(OVERVIEW).status_code == 404
    assert admin_client.post(OVERVIEW).status_code == 405


# --------------------------------------------------------------------------- add volume


def test_add_volume(admin_client: Client, tmp_path: Path) -> None:
    Datastore.objects.create_with_store("Primary", str(tmp_path / "disk" / "ds"))
    assert admin_client.get(ADD_VOLUME).status_code == 200
    response = admin_client.post(ADD_VOLUME, {"path": str(tmp_path / "disk"), "label": "Disk 2"})
    volume = Volume.objects.get()
    assert response.status_code == 302 and response["Location"] == volume.get_absolute_url()
    assert volume.label == "Disk 2" and Datastore.objects.get().volume == volume
    assert AuditEvent.objects.get(action="volume.add").details["adopted"] == ["Primary"]
    page = admin_client.get(volume.get_absolute_url()).content.decode()
    assert "Volume Disk 2 added. Datastores already in it: Primary." in page


def test_add_volume_refusal_is_shown_on_the_form(admin_client: Client, tmp_path: Path) -> None:
    Datastore.objects.create_with_store("Primary", str(tmp_path / "ds"))
    response = admin_client.post(ADD_VOLUME, {"path": str(tmp_path / "ds" / "chunks"), "label": ""})
    assert response.status_code == 200
    assert "is inside datastore Primary&#x27;s folder" in response.content.decode()
    response = admin_client.post(ADD_VOLUME, {"path": "", "label": ""})
    assert response.status_code == 200 and "This field is required." in response.content.decode()
    assert not Volume.objects.exists()


@needs_root
def test_add_volume_refuses_a_read_only_mount(admin_client: Client, tmpfs: Mounter) -> None:
    path = tmpfs("ro", "ro,size=8m")
    response = admin_client.post(ADD_VOLUME, {"path": str(path), "label": ""})
    assert response.status_code == 200 and "is on a read-only mount" in response.content.decode()
    assert not Volume.objects.exists()


def test_add_volume_wrong_method(admin_client: Client, tmp_path: Path) -> None:
    assert admin_client.put(ADD_VOLUME, {"path": str(tmp_path)}).status_code == 405
    assert not Volume.objects.exists()


def test_add_volume_no_access(outsider_client: Client, tmp_path: Path) -> None:
    assert outsider_client.get(ADD_VOLUME).status_code == 404
    assert outsider_client.post(ADD_VOLUME, {"path": str(tmp_path)}).status_code == 404
    assert not Volume.objects.exists()


@pytest.mark.parametrize("client_name", ["readonly_client", "operator_client", "recovery_client"])
def test_add_volume_only_administrators(
    request: pytest.FixtureRequest, client_name: str, tmp_path: Path
) -> None:
    client = request.getfixturevalue(client_name)
    assert client.get(ADD_VOLUME).status_code == 403
    assert client.post(ADD_VOLUME, {"path": str(tmp_path)}).status_code == 403
    assert not Volume.objects.exists()


# --------------------------------------------------------------------------- volume page


def test_volume_page(readonly_client: Client, volume: Volume) -> None:
    datastore = Datastore.objects.create_with_store("On the pool", f"{volume.path}/ds")
    Datastore.objects.filter(pk=datastore.pk).update(assigned_bytes=3 * 1024**3)
    page = readonly_client.get(volume.get_absolute_url()).content.decode()
    assert "On the pool" in page and "3.0\xa0GB" in page and "File system" in page
    assert "Create datastore" not in page


def test_volume_page_no_access_and_method(
    outsider_client: Client, admin_client: Client, volume: Volume
) -> None:
    assert outsider_client.get(volume.get_absolute_url()).status_code == 404
    assert admin_client.post(volume.get_absolute_url()).status_code == 405
    assert admin_client.get(reverse("storage:volume-detail", args=[volume.pk + 1])).status_code == 404


# --------------------------------------------------------------------------- create datastore


def test_create_datastore_on_a_volume(admin_client: Client, volume: Volume) -> None:
    form = admin_client.get(add_datastore_url(volume)).content.decode()
    assert "256 KiB" in form and "4 MiB" in form and "1 (fast, recommended)" in form
    response = admin_client.post(
        add_datastore_url(volume), datastore_data(chunk_size=524288, compression_level=9, colocate="")
    )
    datastore = Datastore.objects.get()
    assert response.status_code == 302 and response["Location"] == datastore.get_absolute_url()
    assert (datastore.volume, datastore.path) == (volume, f"{volume.path}/fast")
    assert (datastore.chunk_size, datastore.compression_level, datastore.colocate) == (524288, 9, False)
    assert not datastore.encrypted and Path(datastore.path, "format.json").exists()
    assert AuditEvent.objects.get(action="datastore.create").details["colocate"] is False


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"folder": ".."}, "The folder must be a single name"),
        ({"folder": ".store"}, "may not start with"),
        ({"chunk_size": 3000000}, "Select a valid choice"),
        ({"compression_level": 0}, "Select a valid choice"),
        ({"name": "Taken"}, "Datastore with this Name already exists"),
    ],
)
def test_create_datastore_refusals(
    admin_client: Client, volume: Volume, fields: dict[str, object], message: str
) -> None:
    Datastore.objects.create_with_store("Taken", f"{volume.path}/taken")
    response = admin_client.post(add_datastore_url(volume), datastore_data(**fields))
    assert response.status_code == 200 and message in response.content.decode()
    assert Datastore.objects.count() == 1
    assert sorted(p.name for p in Path(volume.path).iterdir()) == ["taken"]


def test_create_datastore_wrong_method(admin_client: Client, volume: Volume) -> None:
    assert admin_client.put(add_datastore_url(volume), datastore_data()).status_code == 405
    assert not Datastore.objects.exists()


def test_create_datastore_no_access(outsider_client: Client, volume: Volume) -> None:
    assert outsider_client.get(add_datastore_url(volume)).status_code == 404
    assert outsider_client.post(add_datastore_url(volume), datastore_data()).status_code == 404
    assert not Datastore.objects.exists()


@pytest.mark.parametrize("client_name", ["readonly_client", "operator_client", "recovery_client"])
def test_create_datastore_only_administrators(
    request: pytest.FixtureRequest, client_name: str, volume: Volume
) -> None:
    client = request.getfixturevalue(client_name)
    assert client.get(add_datastore_url(volume)).status_code == 403
    assert client.post(add_datastore_url(volume), datastore_data()).status_code == 403
    assert not Datastore.objects.exists() and list(Path(volume.path).iterdir()) == []


def test_volume_page_warns_when_its_datastores_outgrow_it(admin_client: Client, volume: Volume) -> None:
    datastore = Datastore.objects.create_with_store("On the pool", f"{volume.path}/ds")
    assert b"volume-too-small" not in admin_client.get(volume.get_absolute_url()).content
    Datastore.objects.filter(pk=datastore.pk).update(assigned_bytes=2**62)  # planned after it was added
    assert b"volume-too-small" in admin_client.get(volume.get_absolute_url()).content
