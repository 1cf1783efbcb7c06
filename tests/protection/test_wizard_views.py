from __future__ import annotations

import importlib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from backupsite.core.jobs.context import JobContext
from backupsite.core.jobs.registry import handler_override
from backupsite.core.models import AuditEvent, Job, JobKind, JobState
from backupsite.core.permissions import Role
from protection.connectors import HostUnreachable
from protection.forms import wizard as wizard_forms
from protection.models import (
    ProtectedDataSource,
    ProtectionGroup,
    ProtectionGroupDraft,
    ReplicaCreationMethod,
    ReplicaState,
    VirtualMachine,
)
from protection.views import wizard as wizard_views
from storage.models import Datastore
from tests.protection.helpers import FakeConnector, protect, vm_with_disk

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
STEPS = ["members", "method", "goals", "allocation", "replica", "consistency"]
Input = dict[str, dict[str, Any]]


@pytest.fixture
def vms(connector: FakeConnector) -> list[VirtualMachine]:
    return [vm_with_disk("sql01"), vm_with_disk("web01")]


@pytest.fixture
def draft(operator_client: Client) -> ProtectionGroupDraft:
    operator_client.post(reverse("protection:group-create"))
    return ProtectionGroupDraft.objects.get()


@pytest.fixture
def valid(vms: list[VirtualMachine], datastore: Datastore) -> Input:
    return {
        "members": {"vms": [str(vm.pk) for vm in vms]},
        "method": {"name": "Gold", "description": "SQL and web", "short_term_on_disk": "on"},
        "goals": {
            "retention_days": "10",
            "sync_frequency_minutes": "60",
            "recovery_point_times": "20:00, 8:00",
            "recovery_point_days": ["0", "1", "2", "3", "4"],
            "express_full_times": "",
            "keep_daily": "7",
            "keep_weekly": "4",
            "keep_monthly": "",
            "keep_yearly": "0",
        },
        "allocation": {"datastore": str(datastore.pk), "daily_churn_percent": "5"},
        "replica": {"replica_creation_method": "now", "replica_creation_at": "", "manual_import_path": ""},
        "consistency": {"consistency_check_if_inconsistent": "on", "consistency_check_daily_at": "02:30"},
    }


def url(draft: ProtectionGroupDraft, step: str) -> str:
    return reverse(f"protection:wizard-{step}", args=[draft.pk])


def post(client: Client, draft: ProtectionGroupDraft, step: str, data: dict[str, Any], nav: str = "next",
         **extra: Any) -> Any:  # fmt: skip
    return client.post(url(draft, step), {**data, "nav": nav} if nav else data, **extra)


def fill(client: Client, draft: ProtectionGroupDraft, data: Input, steps: list[str] = STEPS) -> None:
    for step in steps:
        response = post(client, draft, step, data[step])
        following = [*STEPS, "summary"][STEPS.index(step) + 1]
        assert response.status_code == 302, response.content.decode()[-3000:]
        assert response["Location"] == url(draft, following)


# --------------------------------------------------------------------------- happy path


def test_create_a_group_through_every_step(
    operator_client: Client,
    draft: ProtectionGroupDraft,
    valid: Input,
    vms: list[VirtualMachine],
    datastore: Datastore,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    for step in STEPS:
        page = operator_client.get(url(draft, step))
        assert page.status_code == 200 and b"<html" in page.content and b'id="wizard"' in page.content
        fill(operator_client, draft, valid, [step])

    summary = operator_client.get(url(draft, "summary")).content.decode()
    for text in (
        "Gold",
        "SQL and web",
        "sql01",
        "web01",
        "10 days",
        "Every hour",
        "08:00, 20:00 on Monday, Tuesday, Wednesday, Thursday, Friday",
        "7 daily, 4 weekly, 0 monthly, 0 yearly",
        "Over the network, now",
        "every day at 02:30",
        "6.0\xa0GB",  # 2 x 2 GiB x (1 + 10 days x 5 %)
    ):
        assert text in summary, text
    assert summary.count(">Change</a>") == 6

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = operator_client.post(url(draft, "summary"))
    group = ProtectionGroup.objects.get(name="Gold")
    assert response.status_code == 302 and response["Location"] == group.get_absolute_url()
    assert (group.retention_days, group.sync_frequency_minutes, group.datastore) == (10, 60, datastore)
    assert group.recovery_point_times == ["08:00", "20:00"] and group.recovery_point_days == [0, 1, 2, 3, 4]
    assert (group.express_full_times, group.express_full_days) == ([], [])
    assert (group.keep_daily, group.keep_weekly, group.keep_monthly, group.keep_yearly) == (7, 4, 0, 0)
    assert group.short_term_on_disk and not group.online_protection
    assert group.replica_creation_method == ReplicaCreationMethod.NOW and group.replica_creation_at is None
    assert group.consistency_check_if_inconsistent and str(group.consistency_check_daily_at) == "02:30:00"
    assert group.created_by is not None and group.created_by.username == "operator"
    members = ProtectedDataSource.objects.filter(group=group)
    assert sorted(m.vm.name for m in members) == ["sql01", "web01"]
    assert {m.replica_state for m in members} == {ReplicaState.CREATING}
    jobs = Job.objects.filter(kind=JobKind.INITIAL_REPLICA, group=group)
    assert sorted(jobs.values_list("vm__name", flat=True)) == ["sql01", "web01"]
    assert all(job.state == JobState.QUEUED and job.parameters == {} for job in jobs)
    assert len(callbacks) == 2  # one enqueue per job, after the commit
    event = AuditEvent.objects.get(action="group.create")
    assert event.details["added"] == ["sql01", "web01"] and event.details["replica_creation_method"] == "now"
    assert not ProtectionGroupDraft.objects.exists()

    group_page = operator_client.get(group.get_absolute_url()).content.decode()
    assert "sql01" in group_page and "Creating replica" in group_page and "Initial replica" in group_page


def test_steps_render_as_htmx_partials(
    operator_client: Client, draft: ProtectionGroupDraft, valid: Input
) -> None:
    fill(operator_client, draft, valid)
    for step in [*STEPS, "summary"]:
        partial = operator_client.get(url(draft, step), headers=HTMX)
        assert partial.status_code == 200, step
        assert b"<html" not in partial.content and partial.content.lstrip().startswith(b'<div id="wizard"')
    refused = post(operator_client, draft, "goals", {**valid["goals"], "retention_days": "0"}, headers=HTMX)
    assert refused.status_code == 200 and b"<html" not in refused.content
    assert b"The retention range is 1 to 448 days." in refused.content


def test_allocation_recalculates_without_moving(
    operator_client: Client, draft: ProtectionGroupDraft, valid: Input
) -> None:
    fill(operator_client, draft, valid, STEPS[:3])
    # A change event posts the form without a nav button: the step comes back recalculated.
    changed = {**valid["allocation"], "daily_churn_percent": "10"}
    response = post(operator_client, draft, "allocation", changed, nav="", headers=HTMX)
    assert response.status_code == 200 and b"<html" not in response.content
    assert "8.0\xa0GB" in response.content.decode()  # 4 GiB x (1 + 10 x 10 %)
    draft.refresh_from_db()
    assert draft.data["allocation"]["daily_churn_percent"] == "10"


def test_handlers_run_after_commit(
    operator_client: Client,
    draft: ProtectionGroupDraft,
    valid: Input,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def fake_initial_replica(context: JobContext) -> dict[str, Any]:
        assert context.job.vm is not None
        seen.append((context.job.vm.name, context.job.parameters))
        return {"ok": True}

    fill(operator_client, draft, valid)
    # The runner imports the real handlers on first use; import them first so the override wins.
    importlib.import_module("protection.jobs")
    with (
        handler_override(JobKind.INITIAL_REPLICA, fake_initial_replica),
        django_capture_on_commit_callbacks(execute=True),
    ):
        operator_client.post(url(draft, "summary"))
    assert sorted(seen) == [("sql01", {}), ("web01", {})]
    assert set(Job.objects.values_list("state", flat=True)) == {JobState.SUCCEEDED}


# --------------------------------------------------------------------------- replica methods


def test_scheduled_replica_leaves_members_pending(
    operator_client: Client, draft: ProtectionGroupDraft, valid: Input
) -> None:
    when = timezone.localtime() + timedelta(days=1)
    valid["replica"] = {
        "replica_creation_method": "scheduled",
        "replica_creation_at": f"{when:%Y-%m-%dT%H:%M}",
    }
    fill(operator_client, draft, valid)
    assert (
        "Over the network, at a scheduled time at"
        in operator_client.get(url(draft, "summary")).content.decode()
    )
    operator_client.post(url(draft, "summary"))
    group = ProtectionGroup.objects.get()
    assert group.replica_creation_method == ReplicaCreationMethod.SCHEDULED
    assert group.replica_creation_at is not None
    assert (
        timezone.localtime(group.replica_creation_at).strftime("%Y-%m-%dT%H:%M") == f"{when:%Y-%m-%dT%H:%M}"
    )
    assert set(group.members.values_list("replica_state", flat=True)) == {ReplicaState.PENDING}
    assert not Job.objects.exists()  # the scheduler submits them when the time comes


def test_manual_replica_imports_from_offline_media(
    operator_client: Client, draft: ProtectionGroupDraft, valid: Input, tmp_path: Path
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    valid["replica"] = {"replica_creation_method": "manual", "manual_import_path": f" {media}/ "}
    fill(operator_client, draft, valid)
    operator_client.post(url(draft, "summary"))
    group = ProtectionGroup.objects.get()
    assert group.replica_creation_method == ReplicaCreationMethod.MANUAL and group.manual_import_path == str(
        media
    )
    assert set(group.members.values_list("replica_state", flat=True)) == {ReplicaState.AWAITING_MEDIA}
    jobs = Job.objects.filter(kind=JobKind.INITIAL_REPLICA)
    assert jobs.count() == 2 and all(job.parameters == {"import_path": str(media)} for job in jobs)


# --------------------------------------------------------------------------- back / next


def test_back_and_next_keep_input(operator_client: Client, draft: ProtectionGroupDraft, valid: Input) -> None:
    fill(operator_client, draft, valid, STEPS[:3])
    back = post(
        operator_client, draft, "allocation", {**valid["allocation"], "daily_churn_percent": "12"}, "back"
    )
    assert back["Location"] == url(draft, "goals")
    goals = operator_client.get(url(draft, "goals")).content.decode()
    assert 'value="10"' in goals and 'value="20:00, 8:00"' in goals and 'value="7"' in goals
    assert 'value="4" id="id_recovery_point_days_4" checked' in goals
    assert 'value="5" id="id_recovery_point_days_5" checked' not in goals
    assert 'value="12"' in operator_client.get(url(draft, "allocation")).content.decode()
    members = operator_client.get(url(draft, "members")).content.decode()
    assert members.count(" checked>") == 2

    # Refused input going back is kept too, and still refused when the step is shown again.
    back = post(operator_client, draft, "goals", {**valid["goals"], "retention_days": "0"}, "back")
    assert back.status_code == 302 and back["Location"] == url(draft, "method")
    again = operator_client.get(url(draft, "goals")).content.decode()
    assert 'value="0"' in again and "The retention range is 1 to 448 days." in again


def test_step_links_jump_back_without_validation_but_not_forward(
    operator_client: Client, draft: ProtectionGroupDraft, valid: Input
) -> None:
    fill(operator_client, draft, valid, STEPS[:2])
    forward = post(operator_client, draft, "goals", {**valid["goals"], "retention_days": "0"}, "summary")
    assert forward.status_code == 200 and b"The retention range" in forward.content
    assert post(operator_client, draft, "goals", valid["goals"], "summary")["Location"] == url(
        draft, "summary"
    )


# --------------------------------------------------------------------------- refused input


WRONG = [
    ("members", {"vms": []}, "Select at least one virtual machine to protect."),
    ("method", {"short_term_on_disk": None}, "Short-term protection on disk is required"),
    ("method", {"name": "  "}, "This field is required."),
    ("goals", {"retention_days": "0"}, "The retention range is 1 to 448 days."),
    ("goals", {"retention_days": "449"}, "The retention range is 1 to 448 days."),
    ("goals", {"retention_days": "ten"}, "Enter a whole number."),
    ("goals", {"sync_frequency_minutes": "7"}, "Select a valid choice. 7 is not one of the"),
    ("goals", {"recovery_point_times": ""}, "Enter at least one time of day for recovery points."),
    ("goals", {"recovery_point_days": []}, "Choose at least one day of the week for recovery points."),
    ("goals", {"recovery_point_days": ["9"]}, "Select a valid choice. 9 is not one of the"),
    ("goals", {"recovery_point_times": "08:00, 25:00"}, "“25:00” is not a time of day: use HH:MM"),
    ("goals", {"recovery_point_times": "noon"}, "“noon” is not a time of day"),
    ("goals", {"express_full_times": "03:00"}, "needs both times of day and days of the week"),
    ("goals", {"keep_weekly": "1001"}, "Ensure this value is less than or equal to 1000."),
    ("goals", {"keep_daily": "-1"}, "Ensure this value is greater than or equal to 0."),
    ("allocation", {"daily_churn_percent": "120"}, "Ensure this value is less than or equal to 100."),
    ("replica", {"replica_creation_method": "scheduled"}, "Choose when the replica is to be created."),
    ("replica", {"replica_creation_method": "scheduled", "replica_creation_at": "2001-01-01T10:00"},
     "The scheduled time must be in the future."),
    ("replica", {"replica_creation_method": "scheduled", "replica_creation_at": "tomorrow"},
     "Enter a valid date/time."),
    ("replica", {"replica_creation_method": "manual"}, "Enter the folder on this server that holds"),
    ("replica", {"replica_creation_method": "manual", "manual_import_path": "/nonexistent/media"},
     "The folder /nonexistent/media does not exist on this server."),
    ("replica", {"replica_creation_method": "manual", "manual_import_path": "media"},
     "“media” is not an absolute path on this server."),
    ("replica", {"replica_creation_method": "tape"}, "Select a valid choice. tape is not one"),
    ("consistency", {"consistency_check_daily_at": "7pm"}, "“7pm” is not a time of day"),
]  # fmt: skip


CHOICE_FIELDS = {"replica_creation_method", "sync_frequency_minutes"}


@pytest.mark.parametrize(("step", "change", "message"), WRONG)
def test_wrong_input_is_refused_at_its_step(
    operator_client: Client,
    draft: ProtectionGroupDraft,
    valid: Input,
    step: str,
    change: dict[str, Any],
    message: str,
) -> None:
    fill(operator_client, draft, valid, STEPS[: STEPS.index(step)])
    data = {key: value for key, value in {**valid[step], **change}.items() if value is not None}
    response = post(operator_client, draft, step, data)
    assert response.status_code == 200
    content = response.content.decode()
    assert message in content
    assert 'aria-invalid="true"' in content or 'role="alert"' in content
    draft.refresh_from_db()
    for key, value in change.items():  # kept as typed
        assert draft.data[step].get(key) == value
    for key, value in change.items():
        if isinstance(value, str) and value.strip() and key not in CHOICE_FIELDS:
            assert f'value="{value}"' in content  # shown again as typed
    assert not ProtectionGroup.objects.exists()


def test_manual_folder_that_is_a_file(
    operator_client: Client, draft: ProtectionGroupDraft, valid: Input, tmp_path: Path
) -> None:
    media = tmp_path / "media.iso"
    media.write_bytes(b"x")
    fill(operator_client, draft, valid, STEPS[:4])
    response = post(
        operator_client,
        draft,
        "replica",
        {"replica_creation_method": "manual", "manual_import_path": str(media)},
    )
    assert f"{media} is not a folder." in response.content.decode()


def test_duplicate_group_name(
    operator_client: Client, draft: ProtectionGroupDraft, valid: Input, datastore: Datastore
) -> None:
    ProtectionGroup.objects.create(name="Gold", datastore=datastore)
    fill(operator_client, draft, valid, STEPS[:1])
    response = post(operator_client, draft, "method", {**valid["method"], "name": "gold"})
    assert "A protection group named “gold” already exists" in response.content.decode()


def test_unreachable_datastore(operator_client: Client, draft: ProtectionGroupDraft, valid: Input) -> None:
    lost = Datastore.objects.create(name="usb", path="/nonexistent-hvbackup-volume/usb/store")
    fill(operator_client, draft, valid, STEPS[:3])
    response = post(operator_client, draft, "allocation", {**valid["allocation"], "datastore": str(lost.pk)})
    content = response.content.decode()
    assert "Datastore usb (/nonexistent-hvbackup-volume/usb/store) is not reachable" in content
    assert "<strong>not reachable</strong>" in content


def test_no_datastore_at_all(operator_client: Client, draft: ProtectionGroupDraft, valid: Input) -> None:
    Datastore.objects.all().delete()
    fill(operator_client, draft, valid, STEPS[:3])
    response = post(operator_client, draft, "allocation", {"daily_churn_percent": "5"})
    assert "Choose the datastore that will hold this group" in response.content.decode()


def test_underprovisioned_datastore_is_a_warning(
    operator_client: Client, draft: ProtectionGroupDraft, valid: Input, datastore: Datastore
) -> None:
    huge = vm_with_disk("archive01", file_size=2**60)
    ProtectionGroup.objects.create(name="Silver", datastore=datastore)
    valid["members"] = {"vms": [str(huge.pk)]}
    fill(operator_client, draft, valid, STEPS[:3])
    page = operator_client.get(url(draft, "allocation")).content.decode()
    assert (
        "Underprovisioned by" in page
        and "data size \N{MULTIPLICATION SIGN} (1 + retention range in days" in page
    )
    assert "shared with Silver" in page
    fill(operator_client, draft, valid, STEPS[3:])  # allowed to continue
    assert "Underprovisioned by" in operator_client.get(url(draft, "summary")).content.decode()


# --------------------------------------------------------------------------- members


def test_vm_protected_elsewhere_is_shown_disabled_and_refused(
    operator_client: Client, draft: ProtectionGroupDraft, vms: list[VirtualMachine], datastore: Datastore
) -> None:
    protect(vms[0], ProtectionGroup.objects.create(name="Silver", datastore=datastore))
    page = operator_client.get(url(draft, "members")).content.decode()
    assert (
        f'value="{vms[0].pk}" id="vm-{vms[0].pk}" aria-describedby="vm-{vms[0].pk}-status" disabled' in page
    )
    assert "Silver</a>" in page
    forged = post(operator_client, draft, "members", {"vms": [str(vms[0].pk), str(vms[1].pk)]})
    assert forged.status_code == 200
    assert "sql01 is already protected in group Silver." in forged.content.decode()


def test_vm_with_a_blocking_finding_cannot_be_selected(
    operator_client: Client, draft: ProtectionGroupDraft, vms: list[VirtualMachine], connector: FakeConnector
) -> None:
    connector.block(vms[1])
    connector.failures[vms[0].hyperv_id] = HostUnreachable("WinRM did not answer.")
    page = operator_client.get(url(draft, "members")).content.decode()
    assert 'class="badge badge-error">Error</span> Pass-through disks cannot be backed up.' in page
    assert "Fix: Convert the disk to a VHDX." in page
    assert "Prerequisites could not be checked: WinRM did not answer." in page
    assert page.count("disabled>") == 2
    forged = post(operator_client, draft, "members", {"vms": [str(vms[1].pk)]}).content.decode()
    assert "web01 cannot be protected: Pass-through disks cannot be backed up." in forged


def test_vm_protected_by_someone_else_before_create(
    operator_client: Client, draft: ProtectionGroupDraft, valid: Input, vms: list[VirtualMachine],
    datastore: Datastore,
) -> None:  # fmt: skip
    fill(operator_client, draft, valid)
    protect(vms[1], ProtectionGroup.objects.create(name="Silver", datastore=datastore))
    summary = operator_client.get(url(draft, "summary")).content.decode()
    assert "web01 is already protected in group Silver." in summary
    response = operator_client.post(url(draft, "summary"), follow=True)
    assert response.redirect_chain[-1][0] == url(draft, "members")
    assert "web01 is already protected in group Silver." in response.content.decode()
    assert ProtectionGroup.objects.get().name == "Silver" and not Job.objects.exists()


def test_vm_taken_between_the_last_check_and_create(
    operator_client: Client,
    draft: ProtectionGroupDraft,
    valid: Input,
    vms: list[VirtualMachine],
    datastore: Datastore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fill(operator_client, draft, valid)
    draft.refresh_from_db()
    stale = wizard_forms.clean_draft(draft)
    protect(vms[1], ProtectionGroup.objects.create(name="Silver", datastore=datastore))
    # The summary's own check passes on the stale policy; the service's locked check must not.
    monkeypatch.setattr(wizard_views, "clean_draft", lambda _draft: stale)
    response = operator_client.post(url(draft, "summary"), follow=True)
    assert response.redirect_chain[-1][0] == url(draft, "members")
    assert "Already protected in another protection group: web01 (in Silver)." in response.content.decode()
    assert list(ProtectionGroup.objects.values_list("name", flat=True)) == ["Silver"]
    assert not Job.objects.exists() and ProtectionGroupDraft.objects.filter(pk=draft.pk).exists()


def test_unfinished_draft_cannot_be_created(
    operator_client: Client, draft: ProtectionGroupDraft, valid: Input
) -> None:
    fill(operator_client, draft, valid, STEPS[:1])
    summary = operator_client.get(url(draft, "summary")).content.decode()
    assert "Step 2, Data protection method, has not been completed." in summary
    response = operator_client.post(url(draft, "summary"))
    assert response["Location"] == url(draft, "method") and not ProtectionGroup.objects.exists()


# --------------------------------------------------------------------------- modify


def test_modify_a_group(operator_client: Client, connector: FakeConnector, datastore: Datastore) -> None:
    group = ProtectionGroup.objects.create(
        name="Gold",
        datastore=datastore,
        retention_days=5,
        recovery_point_times=["20:00"],
        recovery_point_days=[6],
    )
    sql, web, files = vm_with_disk("sql01"), vm_with_disk("web01"), vm_with_disk("files01")
    protect(sql, group, replica_state=ReplicaState.OK)
    protect(web, group, replica_state=ReplicaState.OK)
    operator_client.post(reverse("protection:group-modify", args=[group.pk]))
    draft = ProtectionGroupDraft.objects.get(group=group)

    members = operator_client.get(url(draft, "members")).content.decode()
    assert members.count("Member of this group") == 2 and members.count(" checked>") == 2
    assert 'value="Gold"' in operator_client.get(url(draft, "method")).content.decode()
    allocation = operator_client.get(url(draft, "allocation")).content.decode()
    assert "The datastore of an existing group does not change." in allocation

    post(operator_client, draft, "members", {"vms": [str(sql.pk), str(files.pk)]})
    goals = dict(draft.data["goals"], retention_days="30")
    goals["recovery_point_days"] = ["5", "6"]
    assert post(operator_client, draft, "goals", goals)["Location"] == url(draft, "allocation")
    summary = operator_client.get(url(draft, "summary")).content.decode()
    assert "Protection ends for web01" in summary and "added" in summary

    response = operator_client.post(url(draft, "summary"))
    assert response["Location"] == group.get_absolute_url()
    group.refresh_from_db()
    assert group.retention_days == 30 and group.recovery_point_days == [5, 6] and group.name == "Gold"
    states = dict(group.members.values_list("vm__name", "replica_state"))
    # web01 leaves when its stop-protection job runs; its recovery points are kept.
    assert states == {"sql01": "ok", "web01": "ok", "files01": "creating"}
    initial = Job.objects.get(kind=JobKind.INITIAL_REPLICA)
    assert initial.vm == files and initial.group == group
    stop = Job.objects.get(kind=JobKind.STOP_PROTECTION)
    assert stop.vm == web and stop.group == group and stop.parameters == {"keep_data": True}
    event = AuditEvent.objects.get(action="group.modify")
    assert (event.details["added"], event.details["removed"]) == (["files01"], ["web01"])
    assert not ProtectionGroupDraft.objects.exists()


def test_modify_without_new_members_keeps_the_replica_settings(
    operator_client: Client, connector: FakeConnector, datastore: Datastore
) -> None:
    when = timezone.now() + timedelta(days=2)
    group = ProtectionGroup.objects.create(
        name="Gold", datastore=datastore, recovery_point_times=["20:00"], recovery_point_days=[6],
        replica_creation_method=ReplicaCreationMethod.SCHEDULED, replica_creation_at=when,
    )  # fmt: skip
    protect(vm_with_disk("sql01"), group)
    operator_client.post(reverse("protection:group-modify", args=[group.pk]))
    draft = ProtectionGroupDraft.objects.get()
    assert b"no initial replica is created" in operator_client.get(url(draft, "replica")).content
    post(operator_client, draft, "method", {"name": "Platinum", "short_term_on_disk": "on"})
    assert operator_client.post(url(draft, "summary")).status_code == 302
    group.refresh_from_db()
    assert group.name == "Platinum" and group.replica_creation_method == ReplicaCreationMethod.SCHEDULED
    assert group.replica_creation_at == when and not Job.objects.exists()


def test_adding_now_keeps_a_scheduled_replica_of_waiting_members(
    operator_client: Client, connector: FakeConnector, datastore: Datastore
) -> None:
    when = timezone.now() + timedelta(hours=6)
    group = ProtectionGroup.objects.create(
        name="Gold", datastore=datastore, recovery_point_times=["20:00"], recovery_point_days=[6],
        replica_creation_method=ReplicaCreationMethod.SCHEDULED, replica_creation_at=when,
    )  # fmt: skip
    waiting, new = vm_with_disk("sql01"), vm_with_disk("web01")
    protect(waiting, group, replica_state=ReplicaState.PENDING)
    operator_client.post(reverse("protection:group-modify", args=[group.pk]))
    draft = ProtectionGroupDraft.objects.get()
    post(operator_client, draft, "members", {"vms": [str(waiting.pk), str(new.pk)]})
    assert operator_client.post(url(draft, "summary")).status_code == 302
    group.refresh_from_db()
    assert (
        group.replica_creation_method == ReplicaCreationMethod.SCHEDULED and group.replica_creation_at == when
    )
    assert dict(group.members.values_list("vm__name", "replica_state")) == {
        "sql01": "pending",
        "web01": "creating",
    }
    assert list(Job.objects.values_list("kind", "vm__name")) == [(JobKind.INITIAL_REPLICA, "web01")]


# --------------------------------------------------------------------------- who may use a draft


def test_draft_of_another_user_is_404(
    draft: ProtectionGroupDraft, valid: Input, make_user: Callable[..., Any]
) -> None:
    other = Client()
    other.force_login(make_user("operator2", Role.BACKUP_OPERATOR))
    for step in [*STEPS, "summary"]:
        assert other.get(url(draft, step)).status_code == 404
    assert post(other, draft, "members", valid["members"]).status_code == 404
    assert other.post(url(draft, "summary")).status_code == 404
    assert other.post(reverse("protection:wizard-cancel", args=[draft.pk])).status_code == 404
    draft.refresh_from_db()
    assert draft.data == {} and not ProtectionGroup.objects.exists()


def test_outsider_gets_404(outsider_client: Client, draft: ProtectionGroupDraft, valid: Input) -> None:
    assert outsider_client.get(url(draft, "members")).status_code == 404
    assert post(outsider_client, draft, "members", valid["members"]).status_code == 404


def test_owner_who_lost_the_protect_role_gets_403(make_user: Callable[..., Any], valid: Input) -> None:
    viewer = make_user("demoted", Role.READ_ONLY)
    draft = ProtectionGroupDraft.objects.create(user=viewer)
    client = Client()
    client.force_login(viewer)
    assert client.get(url(draft, "members")).status_code == 403
    assert post(client, draft, "members", valid["members"]).status_code == 403
    draft.refresh_from_db()
    assert draft.data == {}


def test_wrong_methods(operator_client: Client, draft: ProtectionGroupDraft) -> None:
    for step in [*STEPS, "summary"]:
        assert operator_client.put(url(draft, step)).status_code == 405
    assert operator_client.get(reverse("protection:wizard-cancel", args=[draft.pk])).status_code == 405
    assert ProtectionGroupDraft.objects.filter(pk=draft.pk).exists()


def test_cancel(operator_client: Client, draft: ProtectionGroupDraft) -> None:
    response = operator_client.post(reverse("protection:wizard-cancel", args=[draft.pk]))
    assert response["Location"] == reverse("protection:overview")
    assert not ProtectionGroupDraft.objects.exists()
