from __future__ import annotations

from datetime import time

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from backupsite.core.models import AuditEvent, Job, JobKind, JobState
from protection.models import ProtectionGroup, ProtectionGroupDraft, RecoveryPoint, ReplicaState
from storage.models import Datastore
from tests.factories import make_job, make_vm
from tests.protection.helpers import protect

pytestmark = pytest.mark.django_db


@pytest.fixture
def group(datastore: Datastore) -> ProtectionGroup:
    group = ProtectionGroup.objects.create(
        name="Gold",
        datastore=datastore,
        retention_days=14,
        sync_frequency_minutes=None,
        recovery_point_times=["08:00", "20:00"],
        recovery_point_days=list(range(7)),
        consistency_check_daily_at=time(2, 30),
    )
    protect(make_vm("sql01"), group, replica_state=ReplicaState.OK, last_sync_at=timezone.now())
    protect(
        make_vm("web01"), group, replica_state=ReplicaState.INCONSISTENT, inconsistency_reason="disk changed"
    )
    return group


def url(name: str, group: ProtectionGroup) -> str:
    return reverse(f"protection:{name}", args=[group.pk])


# --------------------------------------------------------------------------- page


def test_group_page(operator_client: Client, group: ProtectionGroup) -> None:
    vm = group.members.get(vm__name="sql01").vm
    RecoveryPoint.objects.create(
        point_id="p1", datastore=group.datastore, vm=vm, group=group, created=timezone.now(), kind="sync",
        consistency="crash",
    )  # fmt: skip
    make_job(JobKind.SYNCHRONIZATION, vm=vm, group=group, state=JobState.SUCCEEDED)
    content = operator_client.get(group.get_absolute_url()).content.decode()
    for text in (
        "sql01",
        "web01",
        "Replica is inconsistent",
        "disk changed",
        "14 days",
        "Just before a recovery point",
        "08:00, 20:00 every day",
        "daily at 02:30",
        "Modify group",
        "Perform consistency check",
        "Stop protection",
        "Synchronization",
    ):
        assert text in content, text


def test_group_page_read_only_has_no_actions(readonly_client: Client, group: ProtectionGroup) -> None:
    content = readonly_client.get(group.get_absolute_url()).content.decode()
    assert "sql01" in content and "Modify group" not in content and "Stop protection" not in content


def test_group_page_outsider(outsider_client: Client, group: ProtectionGroup) -> None:
    assert outsider_client.get(group.get_absolute_url()).status_code == 404


# --------------------------------------------------------------------------- wizard entry points


def test_create_group_starts_an_empty_draft(operator_client: Client) -> None:
    response = operator_client.post(reverse("protection:group-create"))
    draft = ProtectionGroupDraft.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("protection:wizard-members", args=[draft.pk])
    assert draft.group is None and draft.data == {} and draft.user.username == "operator"


def test_create_group_replaces_the_users_abandoned_draft(operator_client: Client) -> None:
    operator_client.post(reverse("protection:group-create"))
    operator_client.post(reverse("protection:group-create"))
    assert ProtectionGroupDraft.objects.count() == 1


def test_modify_group_starts_a_prefilled_draft(operator_client: Client, group: ProtectionGroup) -> None:
    response = operator_client.post(url("group-modify", group))
    draft = ProtectionGroupDraft.objects.get()
    assert response["Location"] == reverse("protection:wizard-members", args=[draft.pk])
    assert draft.group == group
    assert sorted(draft.data["members"]["vms"]) == sorted(str(m.vm_id) for m in group.members.all())
    assert draft.data["method"]["name"] == "Gold"
    assert draft.data["goals"]["retention_days"] == "14"
    assert draft.data["goals"]["recovery_point_times"] == "08:00, 20:00"
    assert draft.data["consistency"]["consistency_check_daily_at"] == "02:30"


@pytest.mark.parametrize(
    ("client_name", "method", "status"),
    [
        ("operator_client", "get", 405),
        ("outsider_client", "post", 404),
        ("readonly_client", "post", 403),
        ("recovery_client", "post", 403),
    ],
)
def test_wizard_entry_points_refused(
    request: pytest.FixtureRequest, group: ProtectionGroup, client_name: str, method: str, status: int
) -> None:
    client: Client = request.getfixturevalue(client_name)
    assert getattr(client, method)(reverse("protection:group-create")).status_code == status
    assert getattr(client, method)(url("group-modify", group)).status_code == status
    assert not ProtectionGroupDraft.objects.exists()


# --------------------------------------------------------------------------- consistency check


def test_group_consistency_check_one_job_per_member(operator_client: Client, group: ProtectionGroup) -> None:
    response = operator_client.post(url("group-consistency-check", group), follow=True)
    jobs = Job.objects.filter(kind=JobKind.CONSISTENCY_CHECK, group=group)
    assert sorted(jobs.values_list("vm__name", flat=True)) == ["sql01", "web01"]
    assert b"Consistency check submitted for 2 member(s)" in response.content
    assert AuditEvent.objects.get(action="group.consistency_check").details["jobs"] == sorted(
        jobs.values_list("pk", flat=True)
    )


def test_group_consistency_check_skips_members_already_checking(
    operator_client: Client, group: ProtectionGroup
) -> None:
    busy = group.members.get(vm__name="web01").vm
    make_job(JobKind.CONSISTENCY_CHECK, vm=busy, group=group, state=JobState.RUNNING)
    operator_client.post(url("group-consistency-check", group))
    queued = Job.objects.filter(kind=JobKind.CONSISTENCY_CHECK, state=JobState.QUEUED)
    assert list(queued.values_list("vm__name", flat=True)) == ["sql01"]


def test_group_consistency_check_without_members(operator_client: Client, datastore: Datastore) -> None:
    empty = ProtectionGroup.objects.create(name="Empty", datastore=datastore)
    page = operator_client.post(url("group-consistency-check", empty), follow=True)
    assert b"has no members to check" in page.content and not Job.objects.exists()


@pytest.mark.parametrize(
    ("client_name", "method", "status"),
    [("operator_client", "get", 405), ("outsider_client", "post", 404), ("readonly_client", "post", 403)],
)
def test_group_consistency_check_refused(
    request: pytest.FixtureRequest, group: ProtectionGroup, client_name: str, method: str, status: int
) -> None:
    client: Client = request.getfixturevalue(client_name)
    assert getattr(client, method)(url("group-consistency-check", group)).status_code == status
    assert not Job.objects.exists()


# --------------------------------------------------------------------------- stop protection


@pytest.mark.parametrize(("choice", "keep"), [("keep", True), ("delete", False)])
def test_group_stop_protection(
    operator_client: Client, group: ProtectionGroup, choice: str, keep: bool
) -> None:
    response = operator_client.post(url("group-stop-protection", group), {"recovery_points": choice})
    assert response.status_code == 302
    job = Job.objects.get()
    # One job for the group: its handler fans out per member, then removes the empty group.
    assert (job.kind, job.group, job.vm, job.parameters) == (
        JobKind.STOP_PROTECTION,
        group,
        None,
        {"keep_data": keep},
    )
    assert AuditEvent.objects.get(action="group.stop_protection").details["keep_data"] is keep


def test_group_stop_protection_twice(operator_client: Client, group: ProtectionGroup) -> None:
    operator_client.post(url("group-stop-protection", group), {"recovery_points": "keep"})
    page = operator_client.post(url("group-stop-protection", group), {"recovery_points": "keep"}, follow=True)
    assert b"already under way" in page.content and Job.objects.count() == 1


def test_group_stop_protection_needs_a_choice(operator_client: Client, group: ProtectionGroup) -> None:
    assert operator_client.post(url("group-stop-protection", group), {}).status_code == 400
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("client_name", "method", "status"),
    [("operator_client", "get", 405), ("outsider_client", "post", 404), ("readonly_client", "post", 403)],
)
def test_group_stop_protection_refused(
    request: pytest.FixtureRequest, group: ProtectionGroup, client_name: str, method: str, status: int
) -> None:
    client: Client = request.getfixturevalue(client_name)
    response = getattr(client, method)(url("group-stop-protection", group), {"recovery_points": "delete"})
    assert response.status_code == status
    assert not Job.objects.exists()
