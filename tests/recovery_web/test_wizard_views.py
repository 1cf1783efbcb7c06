"""The recovery wizard: start, steps with back/next, validation, submit, discard, permissions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from backupsite.core.models import AuditEvent, Job, JobKind, JobState
from protection.connectors.lab.host import write_host_json
from protection.models import ConnectionKind, Host
from recovery.models import RecoveryDraft, WizardStep
from recovery.services.browse import ItemRef
from tests.recovery_web.conftest import BackedUpLab, make_draft, user_of

pytestmark = pytest.mark.django_db


def wizard_url(draft: RecoveryDraft) -> str:
    return reverse("recovery:wizard", args=[draft.pk])


def step(client: Client, draft: RecoveryDraft, action: str = "next", htmx: bool = True, **fields: Any) -> Any:
    draft.refresh_from_db()
    data: dict[str, Any] = {"step": draft.step, "action": action, **fields}
    headers = {"HX-Request": "true"} if htmx else {}
    response = client.post(wizard_url(draft), data, headers=headers)
    draft.refresh_from_db()
    return response


@pytest.fixture
def lab(backed_up_lab: BackedUpLab) -> BackedUpLab:
    return backed_up_lab


# --------------------------------------------------------------------------- start


@pytest.mark.slow
def test_start_creates_a_draft(recovery_client: Client, lab: BackedUpLab) -> None:
    url = reverse("recovery:start", args=[lab.windows_point.pk])
    response = recovery_client.post(url)
    draft = RecoveryDraft.objects.get()
    assert response.status_code == 302 and response["Location"] == wizard_url(draft)
    assert draft.user == user_of(recovery_client) and draft.step == WizardStep.REVIEW
    assert AuditEvent.objects.filter(action="recovery.draft.create").count() == 1
    htmx = recovery_client.post(url, headers={"HX-Request": "true"})
    assert htmx.status_code == 200 and htmx["HX-Redirect"].startswith("/recovery/drafts/")
    page = recovery_client.get(response["Location"]).content.decode()
    assert "Review your selection" in page and lab.windows.name in page


@pytest.mark.slow
def test_start_permissions(
    readonly_client: Client,
    outsider_client: Client,
    operator_client: Client,
    recovery_client: Client,
    lab: BackedUpLab,
) -> None:
    url = reverse("recovery:start", args=[lab.windows_point.pk])
    assert recovery_client.get(url).status_code == 405
    assert outsider_client.post(url).status_code == 404
    assert readonly_client.post(url).status_code == 403
    assert operator_client.post(url).status_code == 403
    assert not RecoveryDraft.objects.exists()
    lab.windows_point.damaged = True
    lab.windows_point.save()
    refused = recovery_client.post(url)
    assert refused.status_code == 302 and not RecoveryDraft.objects.exists()


# --------------------------------------------------------------------------- whole-VM flows


@pytest.mark.slow
def test_original_instance_flow_through_summary_and_submit(
    recovery_client: Client, lab: BackedUpLab, mailoutbox: list, django_capture_on_commit_callbacks: Any
) -> None:
    draft = make_draft(user_of(recovery_client), lab.windows_point)
    assert step(recovery_client, draft).status_code == 200 and draft.step == WizardStep.TYPE
    typed = step(recovery_client, draft, recovery_type="original")
    assert draft.step == WizardStep.TARGET and 'data-testid="target-ok"' in typed.content.decode()
    step(recovery_client, draft)
    assert draft.step == WizardStep.OPTIONS
    options = step(recovery_client, draft, throttle="none", notify="ops@example.com, not an address")
    assert draft.step == WizardStep.OPTIONS and "not a valid email address" in options.content.decode()
    summary = step(recovery_client, draft, throttle="none", notify="ops@example.com")
    text = summary.content.decode()
    assert draft.step == WizardStep.SUMMARY and "<html" not in text
    assert "Original instance on LAB-HV01" in text and "ops@example.com" in text
    assert "no hardware snapshot provider is configured" in text and 'data-testid="recover-button"' in text

    with django_capture_on_commit_callbacks(execute=True):
        response = recovery_client.post(reverse("recovery:submit", args=[draft.pk]))
    job = Job.objects.get(kind=JobKind.RECOVERY)
    assert response.status_code == 302 and response["Location"] == reverse("recovery:status", args=[job.pk])
    assert job.state == JobState.SUCCEEDED, job.traceback
    assert job.vm == lab.windows and job.requested_by == user_of(recovery_client)
    assert job.parameters["type"] == "original" and job.parameters["options"]["notify"] == ["ops@example.com"]
    assert AuditEvent.objects.filter(action="recovery.start", object_id=str(job.pk)).exists()
    assert len(mailoutbox) == 1 and "succeeded" in mailoutbox[0].subject
    draft.refresh_from_db()
    assert draft.job == job
    # The submitted draft only leads to its recovery now.
    assert recovery_client.get(wizard_url(draft))["Location"] == reverse("recovery:status", args=[job.pk])
    again = recovery_client.post(reverse("recovery:submit", args=[draft.pk]))
    assert again.status_code == 302 and Job.objects.filter(kind=JobKind.RECOVERY).count() == 1


@pytest.mark.slow
def test_back_keeps_input_even_when_it_is_not_valid_yet(recovery_client: Client, lab: BackedUpLab) -> None:
    draft = make_draft(
        user_of(recovery_client), lab.windows_point, WizardStep.OPTIONS, type="original", options={}
    )
    step(recovery_client, draft, "back", throttle="rate", rate_mbps="", notify="me@example.com")
    assert draft.step == WizardStep.TARGET
    assert draft.data["input"]["options"]["notify"] == ["me@example.com"]
    shown = step(recovery_client, draft).content.decode()
    assert draft.step == WizardStep.OPTIONS
    assert 'value="me@example.com"' in shown and "Enter the rate to throttle to." in shown
    step(recovery_client, draft, throttle="rate", rate_mbps="40", notify="me@example.com")
    assert draft.step == WizardStep.SUMMARY and draft.data["options"]["rate_mbps"] == 40.0
    assert "options" not in draft.data["input"]
    step(recovery_client, draft, "back")
    back = recovery_client.get(wizard_url(draft)).content.decode()
    assert draft.step == WizardStep.OPTIONS and 'value="40.0"' in back  # valid input comes back too
    full = step(recovery_client, draft, "next", htmx=False, throttle="rate", rate_mbps="40")
    assert full.status_code == 302 and full["Location"] == wizard_url(draft)  # post/redirect/get


@pytest.mark.slow
def test_missing_original_host_is_refused_and_alternate_offered(
    recovery_client: Client, lab: BackedUpLab
) -> None:
    folder = Path(lab.lab.host.address)
    folder.rename(folder.with_name("gone"))
    draft = make_draft(user_of(recovery_client), lab.windows_point, WizardStep.TARGET, type="original")
    page = recovery_client.get(wizard_url(draft)).content.decode()
    assert 'data-testid="original-refused"' in page and "original host is gone" in page
    refused = step(recovery_client, draft).content.decode()
    assert draft.step == WizardStep.TARGET and "alternate location" in refused
    switched = step(recovery_client, draft, "alternate").content.decode()
    assert draft.data["type"] == "alternate" and 'name="path"' in switched


@pytest.mark.slow
def test_alternate_host_paths_are_checked(recovery_client: Client, lab: BackedUpLab, tmp_path: Path) -> None:
    other = write_host_json(tmp_path / "LAB-HV02", "LAB-HV02")
    host = Host.objects.create(name="LAB-HV02", connection_kind=ConnectionKind.LAB, address=str(other))
    draft = make_draft(user_of(recovery_client), lab.linux_point, WizardStep.TARGET, type="alternate")
    long = step(recovery_client, draft, host=host.pk, path="x" * 260).content.decode()
    assert draft.step == WizardStep.TARGET and "260" in long
    outside = step(recovery_client, draft, host=host.pk, path=str(tmp_path / "elsewhere")).content.decode()
    assert draft.step == WizardStep.TARGET and "is not a folder of lab host" in outside
    step(recovery_client, draft, host=host.pk, path="Restored/LNX")
    assert draft.step == WizardStep.OPTIONS and draft.data["target"] == {
        "host": host.pk,
        "path": "Restored/LNX",
    }


# --------------------------------------------------------------------------- item-level flow


@pytest.mark.slow
def test_item_level_flow_refuses_forged_items_and_bad_destinations(
    recovery_client: Client, lab: BackedUpLab, recovery_root: Path, django_capture_on_commit_callbacks: Any
) -> None:
    disk = lab.disk_name(lab.windows)
    draft = make_draft(user_of(recovery_client), lab.windows_point, WizardStep.TYPE)
    step(recovery_client, draft, recovery_type="items")
    assert draft.step == WizardStep.ITEMS
    page = recovery_client.get(wizard_url(draft)).content.decode()
    assert reverse("recovery:browse", args=[draft.pk]) in page

    nothing = step(recovery_client, draft).content.decode()
    assert "Select at least one" in nothing
    forged = [
        json.dumps({"kind": "file", "disk": disk, "volume": 1, "path": "/../../etc/passwd"}),
        json.dumps({"kind": "file", "disk": "../../etc/passwd", "volume": 1, "path": "/x"}),
        json.dumps({"kind": "file", "disk": disk, "volume": 1, "path": "etc/passwd"}),
        json.dumps({"kind": "shell", "disk": disk, "volume": 1, "path": "/x"}),
        "not json",
    ]
    for value in forged:
        response = step(recovery_client, draft, item=value).content.decode()
        assert draft.step == WizardStep.ITEMS and 'data-testid="wizard-error"' in response, value
    good = ItemRef("file", disk, 1, "/notes.txt").token()
    step(recovery_client, draft, item=[good, good])
    assert draft.step == WizardStep.TARGET and draft.data["items"] == [json.loads(good)]

    for folder, reason in [
        ("relative/x", "not an absolute path"),
        ("/etc", "outside the folders"),
        (str(recovery_root / ".." / "escape"), "contains"),
        (lab.lab.datastore.path, "outside the folders"),
    ]:
        response = step(recovery_client, draft, kind="server", folder=folder).content.decode()
        assert draft.step == WizardStep.TARGET and reason in response, folder
    step(recovery_client, draft, kind="server", folder=str(recovery_root / "ticket-1"))
    assert draft.step == WizardStep.OPTIONS
    step(recovery_client, draft, throttle="none")
    summary = recovery_client.get(wizard_url(draft)).content.decode()
    assert str(recovery_root / "ticket-1") in summary and "/notes.txt" in summary
    with django_capture_on_commit_callbacks(execute=True):
        recovery_client.post(reverse("recovery:submit", args=[draft.pk]))
    job = Job.objects.get(kind=JobKind.RECOVERY)
    assert job.state == JobState.SUCCEEDED, job.traceback
    assert (recovery_root / "ticket-1" / "notes.txt").stat().st_size == 6000


@pytest.mark.slow
def test_smb_password_is_kept_encrypted(recovery_client: Client, lab: BackedUpLab) -> None:
    item = ItemRef("disk", lab.disk_name(lab.windows))
    draft = make_draft(user_of(recovery_client), lab.windows_point, WizardStep.TARGET, type="items")
    fields: dict[str, Any] = {"kind": "smb", "unc": r"\\fs01\restores\t1", "port": "445", "username": "bob"}
    step(recovery_client, draft, "back", password="s3cret-Pass", unc="not a share", kind="smb")
    assert draft.step == WizardStep.ITEMS and "s3cret-Pass" not in json.dumps(draft.data)
    step(recovery_client, draft, item=item.token())
    step(recovery_client, draft, password="s3cret-Pass", **fields)
    assert draft.step == WizardStep.OPTIONS
    saved = draft.data["destination"]
    assert saved["password"] and "s3cret-Pass" not in json.dumps(draft.data)
    step(recovery_client, draft, "back")
    step(recovery_client, draft, **fields)  # empty password: the one entered before is kept
    assert draft.data["destination"]["password"] == saved["password"]
    bad = step(recovery_client, draft, "back")
    assert bad.status_code == 200
    invalid = step(recovery_client, draft, kind="smb", unc="C:\\share").content.decode()
    assert r"\\server\share\folder" in invalid


@pytest.mark.slow
def test_submit_with_an_incomplete_draft_goes_back_to_the_step(
    recovery_client: Client, lab: BackedUpLab
) -> None:
    draft = make_draft(
        user_of(recovery_client), lab.windows_point, WizardStep.SUMMARY, type="items", items=[]
    )
    response = recovery_client.post(reverse("recovery:submit", args=[draft.pk]))
    draft.refresh_from_db()
    assert response.status_code == 302 and draft.step == WizardStep.ITEMS and draft.job is None
    assert not Job.objects.filter(kind=JobKind.RECOVERY).exists()


# --------------------------------------------------------------------------- permissions


@pytest.mark.slow
def test_state_changing_views_check_method_and_roles(
    recovery_client: Client,
    readonly_client: Client,
    outsider_client: Client,
    admin_client: Client,
    lab: BackedUpLab,
) -> None:
    draft = make_draft(user_of(recovery_client), lab.windows_point)
    for name in ("wizard", "submit", "discard"):
        url = reverse(f"recovery:{name}", args=[draft.pk])
        method = recovery_client.put if name == "wizard" else recovery_client.get
        assert method(url).status_code == 405, name
        assert outsider_client.post(url).status_code == 404, name
        assert readonly_client.post(url).status_code == 403, name
        assert admin_client.post(url).status_code == 404, name  # another user's draft
    assert readonly_client.get(wizard_url(draft)).status_code == 403
    assert readonly_client.get(reverse("recovery:browse", args=[draft.pk])).status_code == 403
    draft.refresh_from_db()
    assert draft.step == WizardStep.REVIEW and draft.job is None


@pytest.mark.slow
def test_discard(recovery_client: Client, lab: BackedUpLab) -> None:
    draft = make_draft(user_of(recovery_client), lab.windows_point)
    response = recovery_client.post(reverse("recovery:discard", args=[draft.pk]))
    assert response.status_code == 302 and response["Location"] == reverse(
        "recovery:vm", args=[lab.windows.pk]
    )
    assert not RecoveryDraft.objects.exists()
    assert AuditEvent.objects.filter(action="recovery.draft.discard").exists()


def test_a_step_the_recovery_type_does_not_walk_starts_the_steps_again(
    recovery_client: Client, lab: BackedUpLab
) -> None:
    # A draft at "destination" with no recovery type chosen: posting it was a 500.
    draft = make_draft(user_of(recovery_client), lab.windows_point, WizardStep.TARGET)
    url = reverse("recovery:wizard", args=[draft.pk])
    answer = recovery_client.post(url, {"step": WizardStep.TARGET, "action": "next"})
    assert answer.status_code == 302
    draft.refresh_from_db()
    assert draft.step == WizardStep.REVIEW
    assert recovery_client.get(url).status_code == 200
