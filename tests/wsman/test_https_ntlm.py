"""pywinrm over HTTPS with NTLM against the endpoint: the paths the Hyper-V connector uses."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import requests
import winrm
from winrm.exceptions import InvalidCredentialsError
from winrm.protocol import Protocol

from tests.wsman.echo import PASSWORD, USERNAME, USERS, echo
from tests.wsman.fixtures import EndpointFactory
from tests.wsman.server import WSManEndpoint
from tests.wsman.shell import CommandReply, CommandRequest
from tests.wsman.tls import TestCA

CLIXML_ERROR = (
    b"#< CLIXML\r\n"
    b'<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
    b'<S S="Error">Get-VM : Hyper-V was unable to find a virtual machine with name "db01"._x000D__x000A_</S>'
    b'<S S="Error">    + CategoryInfo          : InvalidArgument_x000D__x000A_</S>'
    b"</Objs>"
)


def session(endpoint: WSManEndpoint, **options: Any) -> winrm.Session:
    options.setdefault("server_cert_validation", "validate")
    options.setdefault("ca_trust_path", str(endpoint.ca_file))
    return winrm.Session(endpoint.url, auth=(USERNAME, PASSWORD), transport="ntlm", **options)


def protocol(endpoint: WSManEndpoint, **options: Any) -> Protocol:
    options.setdefault("server_cert_validation", "validate")
    options.setdefault("ca_trust_path", str(endpoint.ca_file))
    return Protocol(endpoint.url, transport="ntlm", username=USERNAME, password=PASSWORD, **options)


def run_with_stdin(client: Protocol, stdin: bytes, *, codepage: int = 65001) -> tuple[bytes, bytes, int]:
    """The connector's call sequence (the contract's bootstrap reads the script from stdin)."""
    shell_id = client.open_shell(codepage=codepage)
    command_id = client.run_command(
        shell_id,
        "powershell.exe",
        [*BOOTSTRAP_ARGUMENTS, "-EncodedCommand", "AAAA"],
    )
    client.send_command_input(shell_id, command_id, stdin, end=True)
    result = client.get_command_output(shell_id, command_id)
    client.cleanup_command(shell_id, command_id)
    client.close_shell(shell_id)
    return result


BOOTSTRAP_ARGUMENTS = ["-NoLogo", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass"]


def test_run_cmd_round_trip_authenticates_the_connection_once(wsman_endpoint: EndpointFactory) -> None:
    endpoint = wsman_endpoint(echo, tls=True, users=USERS)

    response = session(endpoint).run_cmd("ipconfig", ["/all", '"C:\\Program Files"'])

    assert response.status_code == 0
    assert json.loads(response.std_out) == {
        "executable": "ipconfig",
        "arguments": ["/all", "C:\\Program Files"],
        "user": USERNAME,
    }
    exchanges = endpoint.exchanges
    # 401 without Authorization, 401 with the challenge, then the SOAP traffic; the keep-alive
    # connection stays authenticated and later requests carry no Authorization header.
    assert [(e.status, e.authorization) for e in exchanges[:3]] == [
        (401, ""),
        (401, "Negotiate"),
        (200, "Negotiate"),
    ]
    assert [e.action for e in exchanges[2:]] == ["Create", "Command", "Receive", "Signal", "Delete"]
    assert {e.authorization for e in exchanges[3:]} == {""}
    assert {e.connection for e in exchanges} == {1}
    assert endpoint.open_shells() == 0
    assert endpoint.connection_errors == []


def test_run_ps_sends_the_script_as_an_encoded_command(wsman_endpoint: EndpointFactory) -> None:
    endpoint = wsman_endpoint(echo, tls=True, users=USERS)

    response = session(endpoint).run_ps("Get-VM | ConvertTo-Json")

    line = json.loads(response.std_out)
    assert line["executable"] == "powershell"
    assert line["arguments"][0] == "-encodedcommand"
    assert base64.b64decode(line["arguments"][1]).decode("utf-16-le") == "Get-VM | ConvertTo-Json"


def test_run_ps_decodes_clixml_on_stderr(wsman_endpoint: EndpointFactory) -> None:
    endpoint = wsman_endpoint(lambda request: CommandReply(stderr=CLIXML_ERROR, exit_code=1), users=USERS)

    response = session(endpoint).run_ps("Get-VM -Name db01")

    assert response.status_code == 1
    assert response.std_err.decode().startswith(
        'Get-VM : Hyper-V was unable to find a virtual machine with name "db01".\n'
    )
    assert "CategoryInfo" in response.std_err.decode()


def test_stdin_of_200_kb_reaches_the_handler_whole(wsman_endpoint: EndpointFactory) -> None:
    endpoint = wsman_endpoint(echo, tls=True, users=USERS)
    script = b"# hvbackup-script: inventory\n" + bytes(range(32, 127)) * (200 * 1024 // 95)

    stdout, stderr, exit_code = run_with_stdin(protocol(endpoint), script)

    assert (stdout, stderr, exit_code) == (script, b"", 0)
    [request] = endpoint.requests
    assert request == CommandRequest(
        executable="powershell.exe",
        arguments=[*BOOTSTRAP_ARGUMENTS, "-EncodedCommand", "AAAA"],
        stdin=script,
        user=USERNAME,
        codepage=65001,
    )


def test_utf8_stdin_and_stdout_survive(wsman_endpoint: EndpointFactory) -> None:
    text = "Ünïcødé VM «Прод-01» 数据库 🚀\n"

    def shout(request: CommandRequest) -> CommandReply:
        assert request.codepage == 65001
        return CommandReply(stdout=request.stdin.decode("utf-8").upper().encode("utf-8"))

    endpoint = wsman_endpoint(shout, tls=True, users=USERS)

    stdout, _, exit_code = run_with_stdin(protocol(endpoint), text.encode("utf-8"))

    assert exit_code == 0
    assert stdout.decode("utf-8") == text.upper()
    assert endpoint.handler_errors == []


def test_long_output_arrives_over_several_receives(wsman_endpoint: EndpointFactory) -> None:
    stdout = bytes(range(256)) * 1200  # 300 KiB: more than one reply may carry
    stderr = b"warning\r\n" * 20_000
    endpoint = wsman_endpoint(lambda request: CommandReply(stdout, stderr, 7), users=USERS)

    response = session(endpoint).run_cmd("type", ["big.bin"])

    assert (response.std_out, response.std_err, response.status_code) == (stdout, stderr, 7)
    assert [e.action for e in endpoint.exchanges].count("Receive") >= 5


def test_a_server_certificate_from_another_ca_is_refused(wsman_endpoint: EndpointFactory) -> None:
    endpoint = wsman_endpoint(echo, tls=True, users=USERS)
    other_ca = endpoint.ca_file.with_name("other-ca.pem")
    other_ca.write_bytes(TestCA().cert_pem)

    with pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        session(endpoint, ca_trust_path=str(other_ca)).run_cmd("hostname")
    assert endpoint.requests == []


@pytest.mark.parametrize(
    "credentials",
    [(USERNAME, "wrong password"), ("HOST\\intruder", PASSWORD), ("backup", PASSWORD)],
    ids=["wrong-password", "unknown-user", "domain-left-out"],  # names match exactly
)
def test_bad_credentials_are_rejected(wsman_endpoint: EndpointFactory, credentials: tuple[str, str]) -> None:
    endpoint = wsman_endpoint(echo, tls=True, users=USERS)
    client = winrm.Session(
        endpoint.url, auth=credentials, transport="ntlm", ca_trust_path=str(endpoint.ca_file)
    )

    with pytest.raises(InvalidCredentialsError):
        client.run_cmd("hostname")
    assert endpoint.requests == []
    assert endpoint.open_shells() == 0


def test_channel_bindings_are_checked_when_the_client_sends_them(wsman_endpoint: EndpointFactory) -> None:
    endpoint = wsman_endpoint(echo, tls=True, users=USERS)

    # Bindings of another certificate (a TLS-terminating man in the middle): refused.
    good = endpoint._channel_binding_data
    endpoint._channel_binding_data = b"tls-server-end-point:" + b"\x00" * 31 + b"\x01"
    with pytest.raises(InvalidCredentialsError):
        session(endpoint).run_cmd("hostname")

    # A client that sends none is let in, as under Windows' default CbtHardeningLevel=Relaxed.
    endpoint._channel_binding_data = good
    assert session(endpoint, send_cbt=False).run_cmd("hostname").status_code == 0
    assert session(endpoint).run_cmd("hostname").status_code == 0


def test_endpoints_with_different_users_coexist(wsman_endpoint: EndpointFactory) -> None:
    first = wsman_endpoint(echo, tls=True, users=USERS)
    second = wsman_endpoint(echo, tls=True, users={"OTHER\\admin": "another"})

    assert session(first).run_cmd("hostname").status_code == 0
    with pytest.raises(InvalidCredentialsError):
        session(second).run_cmd("hostname")
    other = winrm.Session(
        second.url, auth=("OTHER\\admin", "another"), transport="ntlm", ca_trust_path=str(second.ca_file)
    )
    assert json.loads(other.run_cmd("hostname").std_out)["user"] == "OTHER\\admin"
