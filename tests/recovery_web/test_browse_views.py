"""Browsing a recovery point's disks, volumes and folders, and downloading single files."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from backupsite.core.models import AuditEvent
from recovery.models import WizardStep
from recovery.services.browse import ItemRef
from tests.recovery.conftest import Image
from tests.recovery_web.conftest import BackedUpLab, make_draft, ntfscat, user_of
from tests.recovery_web.test_items import catalog_point

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def browse(client: Client, draft: Any, **query: Any) -> str:
    response = client.get(reverse("recovery:browse", args=[draft.pk]), query, headers={"HX-Request": "true"})
    assert response.status_code == 200
    return response.content.decode()


def download(client: Client, point: Any, **query: Any) -> Any:
    return client.get(reverse("recovery:download", args=[point.pk]), query)


def test_tree_from_disks_to_files(recovery_client: Client, backed_up_lab: BackedUpLab) -> None:
    lab = backed_up_lab
    disk = lab.disk_name(lab.windows)
    draft = make_draft(
        user_of(recovery_client), lab.windows_point, WizardStep.ITEMS, type="items",
        items=[ItemRef("file", disk, 1, "/notes.txt").as_dict()],
    )  # fmt: skip
    disks = browse(recovery_client, draft)
    assert disk in disks and "Select whole disk" in disks and "vm.json" not in disks
    volumes = browse(recovery_client, draft, disk=disk)
    assert "FAT" in volumes and "NTFS" in volumes and "“Windows”" in volumes
    files = browse(recovery_client, draft, disk=disk, volume=1, path="/")
    assert "database.mdf" in files and "ledger.csv" in files
    assert "Select database.mdf" in files and "Select notes.txt" not in files  # already selected
    assert "(selected)" in files and files.count('data-testid="download"') == 6


def test_forged_and_broken_browse_requests_give_messages(
    recovery_client: Client, backed_up_lab: BackedUpLab
) -> None:
    lab = backed_up_lab
    disk = lab.disk_name(lab.windows)
    draft = make_draft(user_of(recovery_client), lab.windows_point, WizardStep.ITEMS, type="items")
    for query in (
        {"disk": "../../etc/passwd"},
        {"disk": "vm.json", "volume": "0"},
        {"disk": disk, "volume": "x"},
        {"disk": disk, "volume": "7", "path": "/"},
        {"disk": disk, "volume": "1", "path": "/../../etc"},
        {"disk": disk, "volume": "1", "path": "etc/passwd"},
        {"disk": disk, "volume": "1", "path": "/no-such-folder"},
        {"disk": disk, "volume": "1", "path": "/notes.txt"},
    ):
        text = browse(recovery_client, draft, **query)
        assert 'data-testid="browse-error"' in text, query


def test_hostile_and_unbrowsable_volumes(
    recovery_client: Client,
    ntfs_image: Image,
    special_image: Image,
) -> None:
    hostile = make_draft(user_of(recovery_client), catalog_point(ntfs_image, "web01"), WizardStep.ITEMS)
    evil = browse(recovery_client, hostile, disk=ntfs_image.name, volume=1, path="/evil")
    assert "../../pwned" in evil and "..\\..\\pwn2" in evil  # shown as they are, escaped by the template
    assert "<script" not in evil
    special = make_draft(
        user_of(recovery_client), catalog_point(special_image, "special01"), WizardStep.ITEMS
    )
    volumes = browse(recovery_client, special, disk=special_image.name)
    assert "BitLocker" in volumes and "looks damaged" in volumes
    assert "Select image of volume 1" in volumes  # an encrypted volume can still be recovered raw
    encrypted = browse(recovery_client, special, disk=special_image.name, volume=0, path="/")
    assert 'data-testid="browse-error"' in encrypted and "BitLocker" in encrypted


def test_download_matches_ntfscat_with_a_safe_filename(
    recovery_client: Client, backed_up_lab: BackedUpLab, tmp_path: Any
) -> None:
    from recovery.services.browse import volumes
    from tests.recovery_web.conftest import engine_restore, extract_partition

    lab = backed_up_lab
    disk = lab.disk_name(lab.windows)
    response = download(recovery_client, lab.windows_point, disk=disk, volume=1, path="/report.docx")
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="report.docx"'
    assert response["Content-Type"] == "application/octet-stream"
    body = b"".join(response.streaming_content)
    volume = next(v for v in volumes(lab.windows_point, disk)[0] if v.index == 1)
    reference = engine_restore(lab.windows_point, tmp_path / "ref") / disk
    assert body == ntfscat(extract_partition(reference, volume.offset, volume.size, tmp_path), "/report.docx")
    event = AuditEvent.objects.get(action="recovery.download")
    assert event.details["path"] == "/report.docx" and event.details["bytes"] == len(body)


def test_download_of_hostile_names(recovery_client: Client, ntfs_image: Image) -> None:
    point = catalog_point(ntfs_image, "web01")
    for guest, expected in (
        ("/evil/CON", "_CON"),
        ("/evil/..\\..\\pwn2", ".._.._pwn2"),
        ("/evil/c:d", "c_d"),
    ):
        response = download(recovery_client, point, disk=ntfs_image.name, volume=1, path=guest)
        assert response.status_code == 200, guest
        assert response["Content-Disposition"] == f'attachment; filename="{expected}"'
        assert b"".join(response.streaming_content).startswith(b"hostile")


def test_download_refusals(
    recovery_client: Client, readonly_client: Client, outsider_client: Client, backed_up_lab: BackedUpLab
) -> None:
    lab = backed_up_lab
    point = lab.windows_point
    disk = lab.disk_name(lab.windows)
    good: dict[str, Any] = {"disk": disk, "volume": 1, "path": "/notes.txt"}
    assert readonly_client.get(reverse("recovery:download", args=[point.pk]), good).status_code == 403
    assert outsider_client.get(reverse("recovery:download", args=[point.pk]), good).status_code == 404
    assert recovery_client.post(reverse("recovery:download", args=[point.pk]), good).status_code == 405
    for query, status in (
        ({**good, "path": "/../../etc/passwd"}, 400),
        ({**good, "path": "../etc/passwd"}, 400),
        ({**good, "disk": "/etc/passwd"}, 400),
        ({**good, "volume": "-1"}, 400),
        ({**good, "path": "/"}, 400),
        ({**good, "path": "/missing.txt"}, 404),
    ):
        response = download(recovery_client, point, **query)
        assert response.status_code == status, query
        assert 'data-testid="download-error"' in response.content.decode()
    assert not AuditEvent.objects.filter(action="recovery.download").exists()
