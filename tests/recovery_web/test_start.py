"""Starting a recovery: drafts, the whole-draft check at submit time, the job it creates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from backupsite.core.models import Job, JobKind, JobState
from recovery.models import WizardStep
from recovery.services import start
from recovery.services.browse import ItemRef
from tests.recovery_web.conftest import BackedUpLab, make_draft

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"deleted_at": timezone.now()}, "was removed"),
        ({"damaged": True}, "is damaged"),
        ({"missing": True}, "missing from its datastore"),
    ],
)
def test_damaged_missing_or_removed_points_cannot_be_recovered(
    backed_up_lab: BackedUpLab, admin_user: Any, change: dict[str, Any], message: str
) -> None:
    point = backed_up_lab.windows_point
    draft = make_draft(admin_user, point, type="original")
    for field, value in change.items():
        setattr(point, field, value)
    point.save()
    with pytest.raises(start.RecoveryNotPossible, match=message):
        start.create_draft(point, admin_user)
    draft.point.refresh_from_db()
    with pytest.raises(start.RecoveryNotPossible, match=message):
        start.check_draft(draft)  # a draft started before verify found it out is refused at submit


@pytest.mark.parametrize(
    ("data", "step", "message"),
    [
        ({}, WizardStep.TYPE, "Choose a recovery type"),
        ({"type": "alternate", "target": {}}, WizardStep.TARGET, "destination host"),
        ({"type": "items", "items": []}, WizardStep.ITEMS, "at least one item"),
        (
            {"type": "items", "items": [{"kind": "file", "disk": "x", "volume": 0, "path": "/a"}]},
            WizardStep.ITEMS,
            "not a virtual disk",
        ),
        (
            {"type": "items", "items": "DISK", "destination": {"kind": "server", "folder": "/etc"}},
            WizardStep.TARGET,
            "outside",
        ),
        ({"type": "items", "items": "DISK", "destination": {}}, WizardStep.TARGET, "Choose where"),
    ],
)
def test_incomplete_drafts_name_the_step_to_fix(
    backed_up_lab: BackedUpLab,
    admin_user: Any,
    recovery_root: Path,
    data: dict[str, Any],
    step: str,
    message: str,
) -> None:
    if data.get("items") == "DISK":
        data["items"] = [ItemRef("disk", backed_up_lab.disk_name(backed_up_lab.windows)).as_dict()]
    draft = make_draft(admin_user, backed_up_lab.windows_point, WizardStep.SUMMARY, **data)
    with pytest.raises(start.RecoveryNotPossible, match=message) as caught:
        start.check_draft(draft)
    assert caught.value.step == step


def test_submit_creates_one_queued_job_that_runs_on_commit(
    backed_up_lab: BackedUpLab, admin_user: Any, recovery_root: Path, django_capture_on_commit_callbacks: Any
) -> None:
    lab = backed_up_lab
    item = ItemRef("disk", lab.disk_name(lab.linux)).as_dict()
    draft = make_draft(
        admin_user, lab.linux_point, WizardStep.SUMMARY, type="items", items=[item],
        destination={"kind": "server", "folder": str(recovery_root)}, options={"throttle": "none"},
        input={"options": {"notify": ["x"]}},
    )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = start.submit(draft, admin_user)
    assert len(callbacks) == 1  # enqueued only once the transaction commits
    job.refresh_from_db()
    assert job.kind == JobKind.RECOVERY and job.state == JobState.QUEUED
    assert job.vm == lab.linux and job.datastore == lab.lab.datastore and job.requested_by == admin_user
    assert job.parameters["items"] == [item] and job.parameters["destination_text"] == str(recovery_root)
    assert "input" not in job.parameters
    draft.refresh_from_db()
    assert draft.job == job
    callbacks[0]()
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.traceback
    assert Job.objects.filter(kind=JobKind.RECOVERY).count() == 1
