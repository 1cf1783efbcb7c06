"""The recovery status page: live progress by htmx polling, item results, final state."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from django_htmx.http import HTMX_STOP_POLLING

from backupsite.core.models import JobKind, JobState
from recovery.models import ItemState, RecoveryItemResult
from tests.factories import make_job, make_vm

pytestmark = pytest.mark.django_db


def test_running_then_finished(readonly_client: Client) -> None:
    vm = make_vm("sql01")
    job = make_job(
        JobKind.RECOVERY,
        vm=vm,
        state=JobState.RUNNING,
        bytes_total=4 * 1024 * 1024,
        bytes_done=1024 * 1024,
        message="Copying 2 item(s)",
        parameters={
            "type": "items",
            "destination_text": "/srv/restores/t1",
            "options": {"notify": ["a@b.example"]},
        },
    )
    RecoveryItemResult.objects.create(
        job=job, kind="file", source="disk.vhdx, volume 2: /a:b", destination="/srv/restores/t1/a_b",
        state=ItemState.COPIED, size_bytes=123, message="saved as 'a_b'",
    )  # fmt: skip
    url = reverse("recovery:status", args=[job.pk])
    page = readonly_client.get(url).content.decode()
    assert "<html" in page and 'hx-trigger="every 1s"' in page
    assert "Copy to a network folder" in page and "/srv/restores/t1" in page and "a@b.example" in page
    fragment = readonly_client.get(url, headers={"HX-Request": "true"})
    text = fragment.content.decode()
    assert fragment.status_code == 200 and "<html" not in text and 'value="25"' in text
    assert "/a:b" in text and "saved as" in text and "Recovered" in text
    assert "Cancel recovery" not in text  # read-only

    job.state = JobState.FAILED
    job.error = "The destination is full"
    job.save()
    done = readonly_client.get(url, headers={"HX-Request": "true"})
    assert done.status_code == HTMX_STOP_POLLING and "every 1s" not in done.content.decode()
    assert "The destination is full" in done.content.decode()


def test_recovery_operators_can_cancel(recovery_client: Client) -> None:
    job = make_job(JobKind.RECOVERY, vm=make_vm(), state=JobState.RUNNING)
    text = recovery_client.get(reverse("recovery:status", args=[job.pk])).content.decode()
    assert "Cancel recovery" in text


def test_only_recovery_jobs_and_only_for_insiders(readonly_client: Client, outsider_client: Client) -> None:
    backup = make_job(JobKind.SYNCHRONIZATION)
    assert readonly_client.get(reverse("recovery:status", args=[backup.pk])).status_code == 404
    job = make_job(JobKind.RECOVERY)
    assert outsider_client.get(reverse("recovery:status", args=[job.pk])).status_code == 404
    assert readonly_client.post(reverse("recovery:status", args=[job.pk])).status_code == 405
