"""The add-host page for a Hyper-V host, against the emulated host behind a real endpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from backupsite.core.models import Job, JobKind, JobState
from protection.models import Host
from tests.hyperv.control.conftest import PASSWORD, USERNAME, Wired

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

ADD = reverse("protection:host-add")
TEST = reverse("protection:host-test-connection")
HTMX = {"HX-Request": "true"}


def pem(name: str, text: str) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode(), content_type="application/x-pem-file")


def form_data(w: Wired, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "HV07",
        "connection_kind": "hyperv",
        "address": "127.0.0.1",
        "scheme": "https",
        "port": str(w.endpoint.port),
        "auth_kind": "ntlm",
        "user_name": USERNAME,
        "password": PASSWORD,
        "ca_certificate": pem("ca.pem", w.endpoint.ca_pem),
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_test_connection_shows_every_step(admin_client: Client, wire: Callable[..., Wired]) -> None:
    w = wire()
    response = admin_client.post(TEST, form_data(w), headers=HTMX)
    page = response.content.decode()
    assert response.status_code == 200 and "Connection works" in page
    for step in ("resolve", "connect", "tls", "authenticate", "powershell", "hyperv", "rights"):
        assert f'data-step="{step}" data-status="ok"' in page
    assert PASSWORD not in page and not Host.objects.exists()


def test_test_connection_with_a_wrong_password_says_what_to_do(
    admin_client: Client, wire: Callable[..., Wired]
) -> None:
    w = wire()
    response = admin_client.post(TEST, form_data(w, password=PASSWORD + "-old"), headers=HTMX)
    page = response.content.decode()
    assert "Connection failed" in page and 'data-step="authenticate" data-status="failed"' in page
    assert (
        'data-step="tls" data-status="ok"' in page and 'data-step="powershell" data-status="skipped"' in page
    )
    assert "refused the user name or password" in page and "What to do: Check the user name" in page
    assert PASSWORD not in page


def test_add_hyperv_host_stores_everything_encrypted_and_reads_inventory(
    admin_client: Client,
    wire: Callable[..., Wired],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    w = wire()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            ADD,
            form_data(w, smb_user_name="HV07\\reader", smb_password="smb-" + PASSWORD, smb_port="1445"),
        )
    host = Host.objects.get(name="HV07")
    assert response.status_code == 302 and host.connection_kind == "hyperv"
    assert host.credentials == {
        "auth": "ntlm",
        "scheme": "https",
        "port": w.endpoint.port,
        "username": USERNAME,
        "password": PASSWORD,
        "ca_pem": w.endpoint.ca_pem,
        "smb_username": "HV07\\reader",
        "smb_password": "smb-" + PASSWORD,
        "smb_port": 1445,
    }
    assert host.connector().smb.port == 1445  # type: ignore[attr-defined]
    raw = Host.objects.filter(pk=host.pk).values_list("credentials_encrypted", flat=True).get()
    assert PASSWORD not in raw and "BEGIN CERTIFICATE" not in raw
    job = Job.objects.get(kind=JobKind.INVENTORY, host=host)
    assert job.state == JobState.SUCCEEDED, job.error
    assert sorted(host.virtual_machines.values_list("name", flat=True)) == ["LNX01", "WIN01"]
    assert (
        PASSWORD
        not in str(job.result) + str(job.error) + admin_client.get(host.get_absolute_url()).content.decode()
    )


def test_add_with_a_client_certificate(
    admin_client: Client, wire: Callable[..., Wired], django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    w = wire(certificates=True)
    cert_pem, key_pem = w.endpoint.client_cert("HV07\\cert-backup")
    data = form_data(
        w,
        auth_kind="certificate",
        user_name=None,
        password=None,
        client_certificate=pem("client.pem", cert_pem),
        client_key=pem("client.key", key_pem),
    )
    response = admin_client.post(TEST, data, headers=HTMX)
    assert (
        "Connection works" in response.content.decode() and "HV07\\cert-backup" in response.content.decode()
    )
    data.update(
        ca_certificate=pem("ca.pem", w.endpoint.ca_pem),
        client_certificate=pem("client.pem", cert_pem),
        client_key=pem("client.key", key_pem),
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert admin_client.post(ADD, data).status_code == 302
    credentials = Host.objects.get(name="HV07").credentials
    assert credentials["cert_pem"] == cert_pem and credentials["key_pem"] == key_pem
    assert "username" not in credentials and "password" not in credentials


def _other_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _encrypted_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    ).decode()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ca_certificate": "not a certificate"}, "The CA certificate is not a PEM certificate"),
        ({"ca_certificate": b"\x30\x82\x01\xff"}, "must be a PEM (text) file"),
        ({"auth_kind": "certificate"}, "Upload the client certificate mapped on the host."),
        ({"auth_kind": "certificate", "client_key": "encrypted"}, "The private key is encrypted"),
        ({"auth_kind": "certificate", "client_key": "other"}, "does not belong to the client certificate"),
        ({"auth_kind": "certificate", "scheme": "http", "client_key": "own"}, "works over HTTPS only"),
        ({"password": ""}, "Enter the password"),
    ],
)
def test_refused_uploads_and_combinations(
    admin_client: Client, wire: Callable[..., Wired], changes: dict[str, Any], message: str
) -> None:
    w = wire(certificates=True)
    cert_pem, key_pem = w.endpoint.client_cert("HV07\\x")
    data = form_data(w)
    keys = {"encrypted": _encrypted_key_pem(), "other": _other_key_pem(), "own": key_pem}
    for name, value in changes.items():
        if name == "ca_certificate":
            data[name] = SimpleUploadedFile("ca.pem", value if isinstance(value, bytes) else value.encode())
        elif name == "client_key":
            data[name] = pem("client.key", keys[value])
            data["client_certificate"] = pem("client.pem", cert_pem)
        else:
            data[name] = value
    response = admin_client.post(ADD, data)
    assert response.status_code == 200 and message in response.content.decode()
    assert not Host.objects.exists() and w.endpoint.requests == []


def test_a_failing_inventory_job_never_logs_the_password(
    admin_client: Client, wire: Callable[..., Wired], django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    w = wire()
    with django_capture_on_commit_callbacks(execute=True):
        assert admin_client.post(ADD, form_data(w)).status_code == 302
    host = Host.objects.get(name="HV07")
    stale = "stale-" + PASSWORD  # the password was changed on Windows since
    host.credentials = {**host.credentials, "password": stale}
    host.save()
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("protection:host-refresh", args=[host.pk]))
    job = Job.objects.filter(kind=JobKind.INVENTORY, host=host).latest("pk")
    assert job.state == JobState.FAILED
    assert "refused the user name or password" in job.error + job.message
    texts = job.error + job.message + job.log + job.traceback + str(job.result)
    assert PASSWORD not in texts
    page = admin_client.get(host.get_absolute_url()).content.decode()
    assert PASSWORD not in page and "refused the user name or password" in page
