"""Certificate authentication: TLS with a client certificate from the test CA, mapped to a user."""

from __future__ import annotations

import json
import ssl
import time
from pathlib import Path

import pytest
import requests
import winrm
from winrm.exceptions import InvalidCredentialsError

from tests.wsman.echo import PASSWORD, USERNAME, USERS, echo
from tests.wsman.fixtures import EndpointFactory
from tests.wsman.server import WSManEndpoint
from tests.wsman.tls import TestCA


def certificate_session(endpoint: WSManEndpoint, cert_pem: str, key_pem: str, folder: Path) -> winrm.Session:
    cert_file, key_file = folder / "client.pem", folder / "client.key"
    cert_file.write_text(cert_pem)
    key_file.write_text(key_pem)
    return winrm.Session(
        endpoint.url,
        auth=("", ""),
        transport="certificate",
        cert_pem=str(cert_file),
        cert_key_pem=str(key_file),
        ca_trust_path=str(endpoint.ca_file),
    )


def test_a_mapped_certificate_runs_commands_as_its_user(
    wsman_endpoint: EndpointFactory, tmp_path: Path
) -> None:
    endpoint = wsman_endpoint(echo, tls=True, users={}, client_cert_users={})
    cert_pem, key_pem = endpoint.client_cert("HOST\\hvbackup")

    response = certificate_session(endpoint, cert_pem, key_pem, tmp_path).run_ps("Get-VM")

    assert json.loads(response.std_out)["user"] == "HOST\\hvbackup"
    assert {e.authorization for e in endpoint.exchanges} == {"certificate"}


def test_a_certificate_can_be_mapped_by_subject(wsman_endpoint: EndpointFactory, tmp_path: Path) -> None:
    endpoint = wsman_endpoint(echo, tls=True, users={}, client_cert_users={"backup-server": "HOST\\hvbackup"})
    cert_pem, key_pem = endpoint.client_cert("backup-server", mapped=False)

    response = certificate_session(endpoint, cert_pem, key_pem, tmp_path).run_cmd("hostname")

    assert json.loads(response.std_out)["user"] == "HOST\\hvbackup"


def test_an_unmapped_certificate_of_the_ca_is_rejected(
    wsman_endpoint: EndpointFactory, tmp_path: Path
) -> None:
    endpoint = wsman_endpoint(echo, tls=True, users={}, client_cert_users={})
    cert_pem, key_pem = endpoint.client_cert("HOST\\stranger", mapped=False)

    with pytest.raises(InvalidCredentialsError):
        certificate_session(endpoint, cert_pem, key_pem, tmp_path).run_cmd("hostname")
    assert endpoint.requests == []


def test_a_certificate_from_another_ca_fails_the_handshake(
    wsman_endpoint: EndpointFactory, tmp_path: Path
) -> None:
    endpoint = wsman_endpoint(echo, tls=True, users={}, client_cert_users={})
    cert_pem, key_pem = TestCA("rogue CA").client_cert("HOST\\hvbackup")
    endpoint.client_cert_users = {"HOST\\hvbackup": "HOST\\hvbackup"}  # even a matching subject

    # Under TLS 1.3 the server checks the client certificate after the client has finished
    # its side of the handshake, so the client sees the alert (SSLError) or, when the close
    # wins the race, a reset connection: both are ConnectionErrors.
    with pytest.raises(requests.exceptions.ConnectionError):
        certificate_session(endpoint, cert_pem.decode(), key_pem.decode(), tmp_path).run_cmd("hostname")
    assert endpoint.requests == []
    deadline = time.monotonic() + 2
    while not endpoint.connection_errors and time.monotonic() < deadline:
        time.sleep(0.01)
    assert isinstance(endpoint.connection_errors[0], ssl.SSLCertVerificationError)


def test_ntlm_still_works_where_certificates_are_enabled(wsman_endpoint: EndpointFactory) -> None:
    endpoint = wsman_endpoint(echo, tls=True, users=USERS, client_cert_users={})

    client = winrm.Session(
        endpoint.url, auth=(USERNAME, PASSWORD), transport="ntlm", ca_trust_path=str(endpoint.ca_file)
    )
    assert json.loads(client.run_cmd("hostname").std_out)["user"] == USERNAME


def test_without_a_certificate_the_mutual_profile_is_rejected(
    wsman_endpoint: EndpointFactory,
) -> None:
    endpoint = wsman_endpoint(echo, tls=True, users=USERS, client_cert_users={})
    # pywinrm's certificate transport adds this header; a client without a certificate
    # that sends it anyway gets nothing.
    client = winrm.Session(
        endpoint.url, auth=(USERNAME, PASSWORD), transport="ntlm", ca_trust_path=str(endpoint.ca_file)
    )
    transport = client.protocol.transport
    transport.build_session().headers["Authorization"] = (
        "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/mutual"
    )
    transport.session.auth = None  # type: ignore[union-attr]
    with pytest.raises(InvalidCredentialsError):
        client.run_cmd("hostname")
