"""storage.views.datastores: the datastore page, maintenance now, colocation, the recovery key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from backupsite.core.models import AuditEvent, Job, JobKind, JobState
from protection.models import ProtectionGroup
from storage.maintenance import due_maintenance, schedule_maintenance
from storage.models import Datastore, new_recovery_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def datastore(tmp_path: Path) -> Datastore:
    return Datastore.objects.create_with_store("Primary", str(tmp_path / "ds"))


def url(datastore: Datastore, task: str = "verify") -> str:
    return reverse("storage:datastore-maintenance", args=[datastore.pk, task])


def test_pages_show_usage_and_actions(
    admin_client: Client, readonly_client: Client, datastore: Datastore
) -> None:
    assert b"Primary" in admin_client.get(reverse("storage:datastore-list")).content
    page = admin_client.get(datastore.get_absolute_url()).content
    assert b"Verify now" in page and b"Collect garbage now" in page
    assert b"Verify now" not in readonly_client.get(datastore.get_absolute_url()).content


def test_verify_now_runs_a_real_verify(
    admin_client: Client,
    datastore: Datastore,
    django_capture_on_commit_callbacks,  # type: ignore[no-untyped-def]
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url(datastore))
    assert response.status_code == 302
    job = Job.objects.get(kind=JobKind.VERIFY, datastore=datastore)
    # Synchronous django-q2 in tests: the job ran against a real (empty) engine datastore.
    assert job.state == JobState.SUCCEEDED, job.traceback
    assert job.result["chunks_checked"] == 0 and job.result["damaged_points"] == []
    datastore.refresh_from_db()
    assert datastore.last_verified_at is not None
    assert AuditEvent.objects.filter(action="datastore.verify").exists()


def test_collect_garbage_now(admin_client: Client, datastore: Datastore) -> None:
    assert admin_client.post(url(datastore, "gc")).status_code == 302
    assert Job.objects.filter(kind=JobKind.GARBAGE_COLLECTION, datastore=datastore).count() == 1
    # A second click while one is queued does not queue another.
    admin_client.post(url(datastore, "gc"))
    assert Job.objects.filter(kind=JobKind.GARBAGE_COLLECTION, datastore=datastore).count() == 1


def test_unknown_task_is_404(admin_client: Client, datastore: Datastore) -> None:
    assert admin_client.post(url(datastore, "format")).status_code == 404
    assert not Job.objects.exists()


def test_wrong_method(admin_client: Client, datastore: Datastore) -> None:
    assert admin_client.get(url(datastore)).status_code == 405
    assert not Job.objects.exists()


def test_no_access(outsider_client: Client, datastore: Datastore) -> None:
    assert outsider_client.post(url(datastore)).status_code == 404
    assert not Job.objects.exists()


@pytest.mark.parametrize("client_name", ["readonly_client", "operator_client", "recovery_client"])
def test_only_administrators(request: pytest.FixtureRequest, client_name: str, datastore: Datastore) -> None:
    client = request.getfixturevalue(client_name)
    assert client.post(url(datastore)).status_code == 403
    assert not Job.objects.exists()


def test_scheduled_maintenance_is_daily_gc_and_weekly_verify(datastore: Datastore) -> None:
    created = datastore.created
    assert due_maintenance(created + timedelta(hours=23)) == []
    assert due_maintenance(created + timedelta(days=1)) == [(JobKind.GARBAGE_COLLECTION, datastore)]
    Datastore.objects.filter(pk=datastore.pk).update(last_gc_at=created + timedelta(days=6, hours=12))
    assert due_maintenance(created + timedelta(days=7)) == [(JobKind.VERIFY, datastore)]
    ids = schedule_maintenance(created + timedelta(days=7))
    assert Job.objects.get(pk=ids[0]).kind == JobKind.VERIFY
    # Not submitted twice while the first is still queued.
    assert schedule_maintenance(created + timedelta(days=7, minutes=1)) == []


# --------------------------------------------------------------------------- colocation


def colocation_url(datastore: Datastore) -> str:
    return reverse("storage:datastore-colocation", args=[datastore.pk])


def test_the_page_lists_the_groups_sharing_it(admin_client: Client, datastore: Datastore) -> None:
    ProtectionGroup.objects.create(name="Web servers", datastore=datastore)
    ProtectionGroup.objects.create(name="SQL servers", datastore=datastore)
    page = admin_client.get(datastore.get_absolute_url()).content.decode()
    assert "Protection groups sharing this datastore" in page
    assert "Web servers" in page and "SQL servers" in page and "Make dedicated" in page


def test_switch_colocation(admin_client: Client, datastore: Datastore) -> None:
    ProtectionGroup.objects.create(name="Web servers", datastore=datastore)
    response = admin_client.post(colocation_url(datastore), {})  # the unticked checkbox: off
    assert response.status_code == 302 and response["Location"] == datastore.get_absolute_url()
    assert not Datastore.objects.get(pk=datastore.pk).colocate
    page = admin_client.get(datastore.get_absolute_url()).content.decode()
    assert "Colocation of Primary is off" in page and "Dedicated:" in page
    admin_client.post(colocation_url(datastore), {"colocate": "on"})
    assert Datastore.objects.get(pk=datastore.pk).colocate
    assert AuditEvent.objects.filter(action="datastore.colocation").count() == 2


def test_colocation_stays_on_while_groups_share_it(admin_client: Client, datastore: Datastore) -> None:
    ProtectionGroup.objects.create(name="Web servers", datastore=datastore)
    ProtectionGroup.objects.create(name="SQL servers", datastore=datastore)
    response = admin_client.post(colocation_url(datastore), {}, follow=True)
    assert "2 protection groups share this datastore (SQL servers, Web servers)" in response.content.decode()
    assert Datastore.objects.get(pk=datastore.pk).colocate
    assert not AuditEvent.objects.filter(action="datastore.colocation").exists()


def test_colocation_wrong_method(admin_client: Client, datastore: Datastore) -> None:
    assert admin_client.get(colocation_url(datastore)).status_code == 405
    assert Datastore.objects.get(pk=datastore.pk).colocate


def test_colocation_no_access(outsider_client: Client, datastore: Datastore) -> None:
    assert outsider_client.post(colocation_url(datastore), {}).status_code == 404
    assert Datastore.objects.get(pk=datastore.pk).colocate


@pytest.mark.parametrize("client_name", ["readonly_client", "operator_client"])
def test_colocation_only_administrators(
    request: pytest.FixtureRequest, client_name: str, datastore: Datastore
) -> None:
    assert request.getfixturevalue(client_name).post(colocation_url(datastore), {}).status_code == 403
    assert Datastore.objects.get(pk=datastore.pk).colocate


# --------------------------------------------------------------------------- recovery key
# The full encrypted round trip through the pages is in test_encryption.py.


@pytest.fixture
def vault(tmp_path: Path) -> Datastore:
    return Datastore.objects.create_with_store("Vault", str(tmp_path / "vault"), key=new_recovery_key())


def key_url(datastore: Datastore) -> str:
    return reverse("storage:datastore-recovery-key", args=[datastore.pk])


def test_recovery_key_confirmed(admin_client: Client, vault: Datastore) -> None:
    assert vault.recovery_key() in admin_client.get(key_url(vault)).content.decode()
    assert admin_client.post(key_url(vault), {"saved": "on"}).status_code == 302
    assert not Datastore.objects.get(pk=vault.pk).recovery_key_pending


def test_recovery_key_wrong_method(admin_client: Client, vault: Datastore) -> None:
    assert admin_client.put(key_url(vault), {"saved": "on"}).status_code == 405
    assert Datastore.objects.get(pk=vault.pk).recovery_key_pending


def test_recovery_key_no_access(outsider_client: Client, vault: Datastore) -> None:
    assert outsider_client.get(key_url(vault)).status_code == 404
    assert outsider_client.post(key_url(vault), {"saved": "on"}).status_code == 404
    assert Datastore.objects.get(pk=vault.pk).recovery_key_pending


@pytest.mark.parametrize("client_name", ["readonly_client", "operator_client", "recovery_client"])
def test_recovery_key_only_administrators(
    request: pytest.FixtureRequest, client_name: str, vault: Datastore
) -> None:
    client = request.getfixturevalue(client_name)
    assert client.get(key_url(vault)).status_code == 403
    assert client.post(key_url(vault), {"saved": "on"}).status_code == 403
    assert Datastore.objects.get(pk=vault.pk).recovery_key_pending


def test_an_unencrypted_datastore_has_no_key_to_show(admin_client: Client, datastore: Datastore) -> None:
    page = admin_client.get(key_url(datastore))
    assert page.status_code == 200 and "no recovery key to show" in page.content.decode()
