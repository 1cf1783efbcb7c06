"""Plain HTTP: NTLM message encryption is required, as on Windows with AllowUnencrypted=false."""

from __future__ import annotations

import json

import pytest
import winrm
from winrm.exceptions import WinRMTransportError
from winrm.protocol import Protocol

from tests.wsman.echo import PASSWORD, USERNAME, USERS, echo
from tests.wsman.fixtures import EndpointFactory
from tests.wsman.test_https_ntlm import run_with_stdin


def test_auto_encrypts_every_soap_message(wsman_endpoint: EndpointFactory) -> None:
    endpoint = wsman_endpoint(echo, tls=False, users=USERS)
    assert endpoint.url.startswith("http://")

    client = winrm.Session(
        endpoint.url,
        auth=(USERNAME, PASSWORD),
        transport="ntlm",
        message_encryption="auto",
        ca_trust_path=None,
    )
    response = client.run_cmd("hostname")

    assert json.loads(response.std_out)["executable"] == "hostname"
    soap_exchanges = [e for e in endpoint.exchanges if e.action]
    assert [e.action for e in soap_exchanges] == ["Create", "Command", "Receive", "Signal", "Delete"]
    assert all(e.encrypted for e in soap_exchanges)
    # pywinrm authenticates with an empty POST first, then seals everything with that context.
    assert [(e.status, e.action) for e in endpoint.exchanges[:3]] == [(401, ""), (401, ""), (200, "")]


def test_always_carries_200_kb_of_stdin_sealed(wsman_endpoint: EndpointFactory) -> None:
    endpoint = wsman_endpoint(echo, tls=False, users=USERS)
    script = ('$Params = ConvertFrom-Json @\'\n{"vm": "Prod-01"}\n\'@\n' * 4200).encode()
    assert len(script) > 200 * 1024
    client = Protocol(
        endpoint.url,
        transport="ntlm",
        username=USERNAME,
        password=PASSWORD,
        message_encryption="always",
        server_cert_validation="ignore",  # plain HTTP: nothing to validate
    )

    assert run_with_stdin(client, script) == (script, b"", 0)
    assert endpoint.requests[0].stdin == script


def test_an_unencrypted_body_over_http_is_refused(wsman_endpoint: EndpointFactory) -> None:
    endpoint = wsman_endpoint(echo, tls=False, users=USERS)
    client = winrm.Session(
        endpoint.url,
        auth=(USERNAME, PASSWORD),
        transport="ntlm",
        message_encryption="never",
        server_cert_validation="ignore",
    )

    with pytest.raises(WinRMTransportError) as raised:
        client.run_cmd("hostname")
    assert raised.value.code == 500
    assert endpoint.requests == []
    assert endpoint.open_shells() == 0
