"""Datastore pages and their maintenance actions (verify, garbage collection)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from backupsite.core.models import AuditEvent, Job, JobKind, JobState
from storage.maintenance import due_maintenance, schedule_maintenance
from storage.models import Datastore

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
