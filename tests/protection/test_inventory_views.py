from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from backupsite.core.models import AuditEvent, Job, JobKind, JobState
from protection.connectors import Finding, HostUnreachable, Severity
from protection.models import ProtectionGroup, ReplicaState, VirtualMachine
from storage.models import Datastore
from tests.factories import make_host, make_job, make_vm
from tests.protection.helpers import FakeConnector, protect, vm_with_disk

pytestmark = pytest.mark.django_db


@pytest.fixture
def group(datastore: Datastore) -> ProtectionGroup:
    return ProtectionGroup.objects.create(name="Gold", datastore=datastore)


@pytest.fixture
def protected_vm(group: ProtectionGroup) -> VirtualMachine:
    vm = vm_with_disk("sql01")
    protect(vm, group, replica_state=ReplicaState.OK)
    return vm


def run_url(vm: VirtualMachine) -> str:
    return reverse("protection:vm-run-job", args=[vm.pk])


def stop_url(vm: VirtualMachine) -> str:
    return reverse("protection:vm-stop-protection", args=[vm.pk])


# --------------------------------------------------------------------------- overview


@pytest.mark.parametrize(
    ("client_name", "create_group", "add_host"),
    [
        ("admin_client", True, True),
        ("operator_client", True, False),
        ("recovery_client", False, False),
        ("readonly_client", False, False),
    ],
)
def test_overview_buttons_follow_the_role(
    request: pytest.FixtureRequest, client_name: str, create_group: bool, add_host: bool
) -> None:
    page = request.getfixturevalue(client_name).get(reverse("protection:overview"))
    assert (b"Create protection group" in page.content) is create_group
    assert (reverse("protection:host-add").encode() in page.content) is add_host


# --------------------------------------------------------------------------- VM page


def test_vm_page_shows_findings_with_severity_and_fix(
    readonly_client: Client, connector: FakeConnector, protected_vm: VirtualMachine
) -> None:
    connector.findings[protected_vm.hyperv_id] = [
        Finding(
            "ic-version", Severity.ERROR, "Integration services are older than the host's.", "Update them."
        ),
        Finding("linux-file", Severity.WARNING, "Linux guests are file-consistent only.", "Nothing to do."),
    ]
    page = readonly_client.get(protected_vm.get_absolute_url())
    assert page.status_code == 200
    content = page.content.decode()
    assert 'class="badge badge-error">Error' in content and "Integration services are older" in content
    assert "Fix: Update them." in content and 'class="badge badge-warning">Warning' in content
    assert "disk0.vhdx" in content and "Gold" in content and "OK" in content
    # Read-only: no action buttons.
    assert "Synchronize now" not in content and "Stop protection" not in content


def test_vm_page_shows_a_connector_error_as_a_message(
    readonly_client: Client, connector: FakeConnector, protected_vm: VirtualMachine
) -> None:
    connector.failures[protected_vm.hyperv_id] = HostUnreachable("WinRM did not answer on hv01:5986.")
    page = readonly_client.get(protected_vm.get_absolute_url())
    assert page.status_code == 200
    assert b"Prerequisites could not be checked: WinRM did not answer on hv01:5986." in page.content


def test_vm_page_on_a_real_lab_host_that_is_gone(readonly_client: Client) -> None:
    vm = make_vm("web01", host=make_host(address="/nonexistent/lab-host"))
    page = readonly_client.get(vm.get_absolute_url())
    assert page.status_code == 200
    assert b"Prerequisites could not be checked: No VM with id" in page.content


def test_vm_page_actions_for_operators(
    operator_client: Client, connector: FakeConnector, protected_vm: VirtualMachine
) -> None:
    content = operator_client.get(protected_vm.get_absolute_url()).content.decode()
    for label in (
        "Create recovery point now",
        "Synchronize now",
        "Perform consistency check",
        "Express full backup",
        "Stop protection",
    ):
        assert label in content
    assert "Keep the recovery points" in content and "Delete the recovery points" in content


def test_vm_page_without_protection_has_no_actions(operator_client: Client, connector: FakeConnector) -> None:
    vm = make_vm("web01")
    content = operator_client.get(vm.get_absolute_url()).content.decode()
    assert "Unprotected" in content and "Synchronize now" not in content


def test_vm_page_outsider(outsider_client: Client) -> None:
    assert outsider_client.get(make_vm().get_absolute_url()).status_code == 404


# --------------------------------------------------------------------------- on-demand backups


@pytest.mark.parametrize(
    "kind",
    [JobKind.RECOVERY_POINT, JobKind.SYNCHRONIZATION, JobKind.CONSISTENCY_CHECK, JobKind.EXPRESS_FULL],
)
def test_run_backup_now(operator_client: Client, protected_vm: VirtualMachine, kind: JobKind) -> None:
    response = operator_client.post(run_url(protected_vm), {"kind": kind})
    assert response.status_code == 302 and response["Location"] == protected_vm.get_absolute_url()
    job = Job.objects.get()
    assert (job.kind, job.vm, job.group) == (kind, protected_vm, protected_vm.data_source.group)
    assert job.requested_by is not None and job.requested_by.username == "operator"
    event = AuditEvent.objects.get(action=f"vm.{kind}")
    assert event.object_id == str(protected_vm.pk) and event.details["job"] == job.pk


def test_run_backup_twice_is_refused(operator_client: Client, protected_vm: VirtualMachine) -> None:
    operator_client.post(run_url(protected_vm), {"kind": JobKind.SYNCHRONIZATION})
    page = operator_client.post(run_url(protected_vm), {"kind": JobKind.SYNCHRONIZATION}, follow=True)
    assert b"already queued or running" in page.content
    assert Job.objects.count() == 1


def test_run_backup_of_an_unprotected_vm(operator_client: Client) -> None:
    vm = make_vm()
    page = operator_client.post(run_url(vm), {"kind": JobKind.SYNCHRONIZATION}, follow=True)
    assert b"is not protected" in page.content and not Job.objects.exists()


def test_run_backup_unknown_kind(operator_client: Client, protected_vm: VirtualMachine) -> None:
    assert (
        operator_client.post(run_url(protected_vm), {"kind": JobKind.GARBAGE_COLLECTION}).status_code == 400
    )
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("client_name", "method", "status"),
    [
        ("operator_client", "get", 405),
        ("outsider_client", "post", 404),
        ("readonly_client", "post", 403),
        ("recovery_client", "post", 403),
    ],
)
def test_run_backup_refused(
    request: pytest.FixtureRequest, protected_vm: VirtualMachine, client_name: str, method: str, status: int
) -> None:
    client: Client = request.getfixturevalue(client_name)
    response = getattr(client, method)(run_url(protected_vm), {"kind": JobKind.SYNCHRONIZATION})
    assert response.status_code == status
    assert not Job.objects.exists() and not AuditEvent.objects.exists()


# --------------------------------------------------------------------------- stop protection


@pytest.mark.parametrize(("choice", "keep"), [("keep", True), ("delete", False)])
def test_stop_protection(
    operator_client: Client, protected_vm: VirtualMachine, choice: str, keep: bool
) -> None:
    response = operator_client.post(stop_url(protected_vm), {"recovery_points": choice})
    assert response.status_code == 302
    job = Job.objects.get()
    assert job.kind == JobKind.STOP_PROTECTION and job.vm == protected_vm
    assert job.group == protected_vm.data_source.group and job.parameters == {"keep_data": keep}
    assert AuditEvent.objects.get(action="vm.stop_protection").details["keep_data"] is keep


def test_stop_protection_needs_an_explicit_choice(
    operator_client: Client, protected_vm: VirtualMachine
) -> None:
    assert operator_client.post(stop_url(protected_vm), {}).status_code == 400
    assert not Job.objects.exists()


def test_stop_protection_already_under_way(operator_client: Client, protected_vm: VirtualMachine) -> None:
    make_job(JobKind.STOP_PROTECTION, vm=protected_vm, state=JobState.RUNNING)
    page = operator_client.post(stop_url(protected_vm), {"recovery_points": "keep"}, follow=True)
    assert b"already under way" in page.content and Job.objects.count() == 1


@pytest.mark.parametrize(
    ("client_name", "method", "status"),
    [("operator_client", "get", 405), ("outsider_client", "post", 404), ("readonly_client", "post", 403)],
)
def test_stop_protection_refused(
    request: pytest.FixtureRequest, protected_vm: VirtualMachine, client_name: str, method: str, status: int
) -> None:
    client: Client = request.getfixturevalue(client_name)
    assert (
        getattr(client, method)(stop_url(protected_vm), {"recovery_points": "delete"}).status_code == status
    )
    assert not Job.objects.exists()
