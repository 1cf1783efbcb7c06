from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from backupsite.core.models import AuditEvent, Job, JobKind, JobState
from protection.connectors.lab.host import write_host_json
from protection.models import ConnectionKind, Host, HostStatus, ProtectionGroup, RecoveryPoint, VirtualMachine
from storage.models import Datastore
from tests.factories import make_host, make_vm
from tests.protection.helpers import protect

pytestmark = pytest.mark.django_db

PASSWORD = "Winter-2026!hv"
ADD = reverse("protection:host-add")
TEST = reverse("protection:host-test-connection")
HTMX = {"HX-Request": "true"}


@pytest.fixture
def lab_folder(tmp_path: Path) -> Path:
    """A lab host without VMs: enough to answer a connection test and an inventory."""
    return write_host_json(tmp_path / "LAB-HV07", "LAB-HV07")


def host_data(folder: Path | str, **changes: str) -> dict[str, str]:
    data = {
        "name": "hv07",
        "connection_kind": "lab",
        "address": str(folder),
        "user_name": "CORP\\backup",
        "password": PASSWORD,
        "auth_kind": "ntlm",
    }
    return {**data, **changes}


# --------------------------------------------------------------------------- add host


def test_add_lab_host_stores_credentials_encrypted_and_reads_inventory(
    admin_client: Client, lab_folder: Path, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = admin_client.post(ADD, host_data(lab_folder))
    host = Host.objects.get(name="hv07")
    assert response.status_code == 302 and response["Location"] == host.get_absolute_url()
    assert host.connection_kind == ConnectionKind.LAB and host.address == str(lab_folder)
    raw = Host.objects.filter(pk=host.pk).values_list("credentials_encrypted", flat=True).get()
    assert raw and PASSWORD not in raw and "backup" not in raw
    assert host.credentials == {"username": "CORP\\backup", "password": PASSWORD, "auth": "ntlm"}
    job = Job.objects.get(kind=JobKind.INVENTORY, host=host)
    assert job.state == JobState.QUEUED and job.requested_by is not None
    assert len(callbacks) == 1  # enqueued only once the host row is committed
    event = AuditEvent.objects.get(action="host.add")
    assert event.object_id == str(host.pk) and PASSWORD not in json.dumps(event.details)
    page = admin_client.get(host.get_absolute_url())
    assert b"Refresh inventory" in page.content and PASSWORD.encode() not in page.content


def test_added_host_inventory_job_runs(
    admin_client: Client, lab_folder: Path, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(ADD, host_data(lab_folder, user_name="", password=""))
    host = Host.objects.get(name="hv07")
    job = Job.objects.get(kind=JobKind.INVENTORY, host=host)
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.result == {"virtual_machines": 0}
    assert host.credentials_encrypted == ""  # a lab host needs none
    host.refresh_from_db()
    assert host.status == HostStatus.OK and host.os_version


def test_add_host_refused_input_keeps_fields_but_never_the_password(
    admin_client: Client, tmp_path: Path
) -> None:
    make_host("hv07")
    response = admin_client.post(ADD, host_data(tmp_path / "missing"))
    assert response.status_code == 200
    assert b"already registered" in response.content
    assert str(tmp_path / "missing").encode() in response.content
    assert PASSWORD.encode() not in response.content
    assert Host.objects.count() == 1


def test_add_host_refused_when_the_host_does_not_answer(admin_client: Client, tmp_path: Path) -> None:
    response = admin_client.post(ADD, host_data(tmp_path / "missing"))
    assert response.status_code == 200
    assert b"The host did not answer" in response.content and b"does not exist" in response.content
    assert not Host.objects.exists() and not Job.objects.exists()


def test_add_lab_host_needs_an_absolute_folder(admin_client: Client) -> None:
    response = admin_client.post(ADD, host_data("relative/folder"))
    assert b"absolute path" in response.content and not Host.objects.exists()


def test_add_hyperv_host_that_does_not_answer_is_not_saved(admin_client: Client) -> None:
    response = admin_client.post(ADD, host_data("hv07.invalid", connection_kind="hyperv"))
    assert response.status_code == 200
    assert b"The host did not answer" in response.content
    assert b"hv07.invalid cannot be resolved" in response.content
    assert PASSWORD.encode() not in response.content
    assert not Host.objects.exists()


def test_add_hyperv_host_needs_credentials(admin_client: Client) -> None:
    data = host_data("hv07.corp.example", connection_kind="hyperv", user_name="", password="")
    response = admin_client.post(ADD, data)
    assert b"needs the user name" in response.content and b"Enter the password" in response.content


def test_add_host_page(admin_client: Client) -> None:
    page = admin_client.get(ADD)
    assert page.status_code == 200 and b"Test connection" in page.content


def test_add_host_wrong_method(admin_client: Client, lab_folder: Path) -> None:
    assert admin_client.put(ADD, host_data(lab_folder)).status_code == 405
    assert not Host.objects.exists()


@pytest.mark.parametrize(("client_name", "status"), [("outsider_client", 404), ("readonly_client", 403)])
def test_add_host_without_the_right(
    request: pytest.FixtureRequest, client_name: str, status: int, lab_folder: Path
) -> None:
    client: Client = request.getfixturevalue(client_name)
    assert client.get(ADD).status_code == status
    assert client.post(ADD, host_data(lab_folder)).status_code == status
    assert not Host.objects.exists() and not Job.objects.exists()


def test_backup_operator_cannot_add_hosts(operator_client: Client, lab_folder: Path) -> None:
    assert operator_client.post(ADD, host_data(lab_folder)).status_code == 403
    assert not Host.objects.exists()


# --------------------------------------------------------------------------- test connection


def test_connection_to_a_lab_folder_that_exists(admin_client: Client, lab_folder: Path) -> None:
    response = admin_client.post(TEST, host_data(lab_folder), headers=HTMX)
    assert response.status_code == 200 and b"<html" not in response.content
    assert b"Connection works" in response.content and b"LAB-HV07" in response.content
    assert not Host.objects.exists()


def test_connection_to_a_lab_folder_that_does_not_exist(admin_client: Client, tmp_path: Path) -> None:
    response = admin_client.post(TEST, host_data(tmp_path / "nowhere"), headers=HTMX)
    assert response.status_code == 200
    assert b"Connection failed" in response.content and b"does not exist" in response.content
    assert b"Traceback" not in response.content


def test_connection_to_hyperv_says_which_step_failed(admin_client: Client) -> None:
    response = admin_client.post(TEST, host_data("hv07.invalid", connection_kind="hyperv"), headers=HTMX)
    assert response.status_code == 200
    assert b'data-step="resolve" data-status="failed"' in response.content
    assert b'data-step="connect" data-status="skipped"' in response.content
    assert b"What to do: Check the spelling of the host name" in response.content
    assert PASSWORD.encode() not in response.content


def test_connection_without_htmx_renders_the_whole_form(admin_client: Client, lab_folder: Path) -> None:
    response = admin_client.post(TEST, host_data(lab_folder))
    assert b"<html" in response.content and b"Connection works" in response.content
    assert b'value="hv07"' in response.content and PASSWORD.encode() not in response.content


def test_connection_form_errors_are_shown(admin_client: Client) -> None:
    response = admin_client.post(TEST, host_data(""), headers=HTMX)
    assert b"Address: This field is required." in response.content


def test_connection_wrong_method_and_rights(
    admin_client: Client, outsider_client: Client, readonly_client: Client, lab_folder: Path
) -> None:
    assert admin_client.get(TEST).status_code == 405
    assert outsider_client.post(TEST, host_data(lab_folder)).status_code == 404
    assert readonly_client.post(TEST, host_data(lab_folder)).status_code == 403


# --------------------------------------------------------------------------- refresh


def test_refresh_inventory_submits_a_job(admin_client: Client) -> None:
    host = make_host()
    response = admin_client.post(reverse("protection:host-refresh", args=[host.pk]))
    assert response.status_code == 302 and response["Location"] == host.get_absolute_url()
    assert Job.objects.filter(kind=JobKind.INVENTORY, host=host, state=JobState.QUEUED).count() == 1
    assert AuditEvent.objects.filter(action="host.refresh_inventory", object_id=str(host.pk)).exists()


@pytest.mark.parametrize(
    ("client_name", "method", "status"),
    [
        ("admin_client", "get", 405),
        ("outsider_client", "post", 404),
        ("readonly_client", "post", 403),
        ("operator_client", "post", 403),
    ],
)
def test_refresh_inventory_refused(
    request: pytest.FixtureRequest, client_name: str, method: str, status: int
) -> None:
    host = make_host()
    client: Client = request.getfixturevalue(client_name)
    assert getattr(client, method)(reverse("protection:host-refresh", args=[host.pk])).status_code == status
    assert not Job.objects.exists()


# --------------------------------------------------------------------------- remove


def test_remove_host_with_unprotected_vms(admin_client: Client) -> None:
    host = make_host()
    make_vm("web01", host=host)
    response = admin_client.post(reverse("protection:host-remove", args=[host.pk]))
    assert response.status_code == 302 and response["Location"] == reverse("protection:overview")
    assert not Host.objects.exists() and not VirtualMachine.objects.exists()
    assert AuditEvent.objects.get(action="host.remove").details == {"virtual_machines": ["web01"]}


def test_remove_host_refused_while_a_vm_is_protected(admin_client: Client, datastore: Datastore) -> None:
    host = make_host()
    vm = make_vm("sql01", host=host)
    protect(vm, ProtectionGroup.objects.create(name="Gold", datastore=datastore))
    response = admin_client.post(reverse("protection:host-remove", args=[host.pk]), follow=True)
    assert b"cannot be removed while its virtual machines are protected (sql01)" in response.content
    assert Host.objects.filter(pk=host.pk).exists() and VirtualMachine.objects.filter(pk=vm.pk).exists()
    assert not AuditEvent.objects.filter(action="host.remove").exists()


def test_remove_host_refused_while_recovery_points_are_kept(
    admin_client: Client, datastore: Datastore
) -> None:
    host = make_host()
    vm = make_vm("sql01", host=host)
    RecoveryPoint.objects.create(
        point_id="p1", datastore=datastore, vm=vm, created=timezone.now(), kind="sync", consistency="crash"
    )
    response = admin_client.post(reverse("protection:host-remove", args=[host.pk]), follow=True)
    assert b"recovery points of its virtual machines are kept (sql01)" in response.content
    assert Host.objects.filter(pk=host.pk).exists()


@pytest.mark.parametrize(
    ("client_name", "method", "status"),
    [
        ("admin_client", "get", 405),
        ("outsider_client", "post", 404),
        ("readonly_client", "post", 403),
        ("operator_client", "post", 403),
    ],
)
def test_remove_host_refused(
    request: pytest.FixtureRequest, client_name: str, method: str, status: int
) -> None:
    host = make_host()
    client: Client = request.getfixturevalue(client_name)
    assert getattr(client, method)(reverse("protection:host-remove", args=[host.pk])).status_code == status
    assert Host.objects.filter(pk=host.pk).exists()


def test_host_detail_buttons_only_for_administrators(readonly_client: Client, admin_client: Client) -> None:
    host = make_host()
    url = reverse("protection:host-detail", args=[host.pk])
    assert b"Refresh inventory" not in readonly_client.get(url).content
    assert b"Change connection" not in readonly_client.get(url).content
    page = admin_client.get(url).content
    assert b"Refresh inventory" in page and b"Change connection" in page


def test_add_host_name_taken_at_the_same_moment(
    admin_client: Client, lab_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from protection.forms.hosts import HostForm

    # The form's check passed, then another administrator saved the same name.
    monkeypatch.setattr(HostForm, "clean_name", lambda form: form.cleaned_data["name"])
    make_host("hv07")
    response = admin_client.post(ADD, host_data(lab_folder))
    assert (
        response.status_code == 200
        and "A host named “hv07” is already registered." in response.content.decode()
    )
    assert Host.objects.count() == 1 and not Job.objects.exists()


# --------------------------------------------------------------------------- change connection


def connection_url(host: Host) -> str:
    return reverse("protection:host-connection", args=[host.pk])


def test_change_connection_saves_new_credentials_and_reads_inventory(
    admin_client: Client, lab_folder: Path
) -> None:
    host = make_host(
        name="hv07", address="/nowhere", status=HostStatus.CREDENTIALS, status_message="Imported"
    )
    page = admin_client.get(connection_url(host))
    assert page.status_code == 200
    assert b"Enter credentials: Imported" in page.content and b'value="/nowhere"' in page.content

    response = admin_client.post(connection_url(host), host_data(lab_folder))

    assert response.status_code == 302 and response["Location"] == host.get_absolute_url()
    host.refresh_from_db()
    assert host.address == str(lab_folder) and host.status == HostStatus.UNKNOWN and host.status_message == ""
    assert host.credentials == {"username": "CORP\\backup", "password": PASSWORD, "auth": "ntlm"}
    job = Job.objects.get(kind=JobKind.INVENTORY, host=host, state=JobState.QUEUED)
    event = AuditEvent.objects.get(action="host.change_connection")
    assert event.details["job"] == job.pk and PASSWORD not in json.dumps(event.details)
    assert PASSWORD.encode() not in admin_client.get(connection_url(host)).content


def test_change_connection_refused_when_the_host_does_not_answer(admin_client: Client) -> None:
    host = make_host(name="hv07", address="/nowhere", status=HostStatus.CREDENTIALS)
    before = Host.objects.filter(pk=host.pk).values().get()
    response = admin_client.post(connection_url(host), host_data("hv07.invalid", connection_kind="hyperv"))
    assert response.status_code == 200 and b"The host did not answer" in response.content
    assert PASSWORD.encode() not in response.content
    assert Host.objects.filter(pk=host.pk).values().get() == before
    assert not Job.objects.exists() and not AuditEvent.objects.exists()


@pytest.mark.parametrize(
    ("client_name", "method", "status"),
    [
        ("admin_client", "put", 405),
        ("outsider_client", "get", 404),
        ("outsider_client", "post", 404),
        ("readonly_client", "get", 403),
        ("readonly_client", "post", 403),
        ("operator_client", "post", 403),
    ],
)
def test_change_connection_refused(
    request: pytest.FixtureRequest, client_name: str, method: str, status: int, lab_folder: Path
) -> None:
    host = make_host(name="hv07", address="/nowhere")
    client: Client = request.getfixturevalue(client_name)
    response = getattr(client, method)(connection_url(host), host_data(lab_folder))
    assert response.status_code == status
    host.refresh_from_db()
    assert host.address == "/nowhere" and not Job.objects.exists()
