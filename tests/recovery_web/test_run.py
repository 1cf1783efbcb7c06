"""The recovery job's outcome handling: cancellation, unknown input, audit and email."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import override_settings

from backupsite.core.jobs.runner import run_job
from backupsite.core.models import AuditEvent, Job, JobKind, JobState
from protection.models import Alert, AlertKind
from recovery.services.browse import ItemRef
from tests.recovery_web.conftest import BackedUpLab, SMTPServer, wait_until

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def test_cancelled_recovery_leaves_the_vm_alone_and_says_so(
    backed_up_lab: BackedUpLab, mailoutbox: list
) -> None:
    lab = backed_up_lab
    disk = lab.lab.disk(lab.windows)
    before = disk.read_bytes()
    job = Job.objects.create(
        kind=JobKind.RECOVERY,
        vm=lab.windows,
        cancel_requested=True,
        parameters={
            "point": lab.windows_point.pk,
            "type": "original",
            "options": {"notify": ["ops@example.com"]},
        },
    )
    run_job(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED
    assert disk.read_bytes() == before and not list(disk.parent.glob(".*restoring"))
    assert AuditEvent.objects.filter(action="recovery.cancelled", object_id=str(job.pk)).exists()
    assert "was cancelled" in mailoutbox[0].subject
    assert not Alert.objects.active().filter(kind=AlertKind.RECOVERY_FAILED).exists()


def test_unknown_type_fails_with_an_alert(backed_up_lab: BackedUpLab) -> None:
    lab = backed_up_lab
    job = Job.objects.create(
        kind=JobKind.RECOVERY, vm=lab.windows, parameters={"point": lab.windows_point.pk, "type": "teleport"}
    )
    run_job(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.FAILED and "Unknown recovery type" in job.error
    assert Alert.objects.active().get(kind=AlertKind.RECOVERY_FAILED).vm == lab.windows


def test_email_reaches_a_real_smtp_server(
    backed_up_lab: BackedUpLab, recovery_root: Path, smtp_server: SMTPServer
) -> None:
    lab = backed_up_lab
    item = ItemRef("file", lab.disk_name(lab.windows), 1, "/notes.txt")
    job = Job.objects.create(
        kind=JobKind.RECOVERY,
        vm=lab.windows,
        parameters={
            "point": lab.windows_point.pk,
            "type": "items",
            "items": [item.as_dict()],
            "destination": {"kind": "server", "folder": str(recovery_root)},
            "destination_text": str(recovery_root),
            "options": {"notify": ["ops@example.com"]},
        },
    )
    with override_settings(MAILERS=smtp_server.mailers()):
        run_job(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.traceback
    wait_until(lambda: len(smtp_server.messages) == 1)
    body = smtp_server.messages[0].get_payload(decode=True).decode()
    assert "succeeded" in smtp_server.messages[0]["Subject"]
    assert f"Where:       {recovery_root}" in body and "Bytes:       6,000" in body
    assert "/notes.txt" in body and "Notification sent to ops@example.com" in job.log
