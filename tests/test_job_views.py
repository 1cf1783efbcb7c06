from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from django_htmx.http import HTMX_STOP_POLLING

from backupsite.core.models import AuditEvent, JobKind, JobState
from tests.factories import make_job, make_vm

pytestmark = pytest.mark.django_db


def test_job_list_filters(admin_client: Client) -> None:
    vm = make_vm("sql01")
    make_job(vm=vm, state=JobState.FAILED, message="boom")
    make_job(kind=JobKind.GARBAGE_COLLECTION, state=JobState.SUCCEEDED)
    page = admin_client.get(reverse("protection:job-list"))
    assert (
        page.status_code == 200
        and b"sql01" in page.content
        and b"<td>Garbage collection</td>" in page.content
    )
    failed = admin_client.get(reverse("protection:job-list"), {"state": "failed"})
    assert b"sql01" in failed.content and b"<td>Garbage collection</td>" not in failed.content
    by_name = admin_client.get(reverse("protection:job-list"), {"q": "nothing-like-this"})
    assert b"No job matches" in by_name.content
    partial = admin_client.get(reverse("protection:job-list"), {"kind": "gc"}, headers={"HX-Request": "true"})
    assert b"<html" not in partial.content and b'id="job-table"' in partial.content


def test_job_list_filters_by_group_and_vm(admin_client: Client) -> None:
    from protection.models import ProtectionGroup
    from storage.models import Datastore

    group = ProtectionGroup.objects.create(
        name="Gold", datastore=Datastore.objects.create(name="d", path="/d")
    )
    in_group, other = make_vm("in-group"), make_vm("other")
    make_job(vm=in_group, group=group)
    make_job(vm=other)
    by_group = admin_client.get(reverse("protection:job-list"), {"group": group.pk}).content
    assert b"in-group" in by_group and b">other<" not in by_group
    by_vm = admin_client.get(reverse("protection:job-list"), {"vm": other.pk}).content
    assert b">other<" in by_vm and b"in-group" not in by_vm


def test_job_detail_full_page_and_polling_fragment(readonly_client: Client) -> None:
    job = make_job(
        state=JobState.RUNNING, bytes_done=512 * 1024, bytes_total=1024 * 1024, message="Reading disk0.vhdx"
    )
    url = reverse("protection:job-detail", args=[job.pk])
    page = readonly_client.get(url)
    assert page.status_code == 200 and b"<html" in page.content and b'hx-trigger="every 1s"' in page.content
    fragment = readonly_client.get(url, headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert b"<html" not in fragment.content and b'value="50"' in fragment.content
    assert b"Reading disk0.vhdx" in fragment.content

    job.state = JobState.SUCCEEDED
    job.save()
    done = readonly_client.get(url, headers={"HX-Request": "true"})
    assert done.status_code == HTMX_STOP_POLLING
    assert b"every 1s" not in done.content and b'value="100"' in done.content


def test_missing_job_is_404(admin_client: Client) -> None:
    assert admin_client.get(reverse("protection:job-detail", args=[999999])).status_code == 404


def test_cancel_running_job(operator_client: Client) -> None:
    job = make_job(state=JobState.RUNNING)
    response = operator_client.post(reverse("protection:job-cancel", args=[job.pk]))
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.cancel_requested and job.state == JobState.RUNNING
    assert AuditEvent.objects.filter(action="job.cancel", object_id=str(job.pk)).exists()


def test_cancel_queued_job_is_immediate(admin_client: Client) -> None:
    job = make_job()
    admin_client.post(reverse("protection:job-cancel", args=[job.pk]))
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED


def test_cancel_wrong_method(admin_client: Client) -> None:
    job = make_job(state=JobState.RUNNING)
    assert admin_client.get(reverse("protection:job-cancel", args=[job.pk])).status_code == 405
    job.refresh_from_db()
    assert not job.cancel_requested


def test_cancel_no_access(outsider_client: Client) -> None:
    job = make_job(state=JobState.RUNNING)
    assert outsider_client.post(reverse("protection:job-cancel", args=[job.pk])).status_code == 404
    job.refresh_from_db()
    assert not job.cancel_requested


def test_cancel_read_only(readonly_client: Client) -> None:
    job = make_job(state=JobState.RUNNING)
    response = readonly_client.post(reverse("protection:job-cancel", args=[job.pk]))
    assert response.status_code == 403 and b"Not allowed" in response.content
    job.refresh_from_db()
    assert not job.cancel_requested


def test_recovery_operator_cancels_recoveries_only(recovery_client: Client) -> None:
    recovery = make_job(kind=JobKind.RECOVERY, state=JobState.RUNNING)
    backup = make_job(kind=JobKind.SYNCHRONIZATION, state=JobState.RUNNING)
    assert recovery_client.post(reverse("protection:job-cancel", args=[recovery.pk])).status_code == 302
    assert recovery_client.post(reverse("protection:job-cancel", args=[backup.pk])).status_code == 403
    recovery.refresh_from_db()
    backup.refresh_from_db()
    assert recovery.cancel_requested and not backup.cancel_requested


@pytest.mark.parametrize(
    "query",
    [
        {"group": "1" * 30},
        {"vm": "1" * 30},
        {"group": str(2**63)},
        {"vm": "-1"},
        {"group": "abc"},
        {"vm": "1.5"},
        {"group": "1e3"},
        {"state": "exploded"},
        {"kind": "nonsense"},
        {"period": "1y"},
        {"page": "x" * 40},
    ],
)
def test_job_list_ignores_bad_filter_values(admin_client: Client, query: dict[str, str]) -> None:
    vm = make_vm("sql01")
    make_job(vm=vm)
    page = admin_client.get(reverse("protection:job-list"), query)
    assert page.status_code == 200 and b"sql01" in page.content  # the filter is dropped, not a 500


def test_job_list_filters_by_period_and_search(admin_client: Client) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from backupsite.core.models import Job

    recent, old = make_vm("recent-vm"), make_vm("old-vm")
    make_job(vm=recent)
    Job.objects.filter(pk=make_job(vm=old).pk).update(created=timezone.now() - timedelta(days=3))
    last_day = admin_client.get(reverse("protection:job-list"), {"period": "24h"}).content
    assert b"recent-vm" in last_day and b"old-vm" not in last_day
    searched = admin_client.get(reverse("protection:job-list"), {"q": "  OLD-v  "}).content
    assert b"old-vm" in searched and b"recent-vm" not in searched
    assert b'value="OLD-v"' in searched  # the search shows again, trimmed


def test_job_detail_shows_the_warnings_of_a_succeeded_backup(readonly_client: Client) -> None:
    """A committed backup whose cleanup failed succeeds, but the page says so, not only the log."""
    job = make_job(
        kind=JobKind.SYNCHRONIZATION,
        state=JobState.SUCCEEDED,
        result={"notes": ["Read 12 MiB", "Warning: the previous reference point X could not be destroyed"]},
    )
    page = readonly_client.get(reverse("protection:job-detail", args=[job.pk])).content.decode()
    assert 'data-testid="job-warning"' in page
    assert "the previous reference point X could not be destroyed" in page
    assert page.count('data-testid="job-warning"') == 1  # plain notes stay in the log


def test_a_running_job_whose_worker_went_silent_is_not_shown_running(readonly_client: Client) -> None:
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    alive = make_job(state=JobState.RUNNING, started=now, heartbeat=now)
    silent = make_job(state=JobState.RUNNING, started=now, heartbeat=now - timedelta(minutes=5))
    for job, shown in [(alive, "Running"), (silent, "Not responding")]:
        fragment = readonly_client.get(
            reverse("protection:job-detail", args=[job.pk]), headers={"HX-Request": "true"}
        )
        text = fragment.content.decode()
        assert f">{shown}</span>" in text
    listing = readonly_client.get(reverse("protection:job-list")).content.decode()
    assert listing.count('data-testid="not-responding"') == 1
