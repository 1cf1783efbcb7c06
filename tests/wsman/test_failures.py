"""Failures as pywinrm meets them: a host that drops connections, refuses access, is slow or
hangs, and requests Windows would refuse."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import requests
import winrm
import xmltodict
from winrm.exceptions import WinRMOperationTimeoutError, WinRMTransportError, WSManFaultError
from winrm.protocol import Protocol

from tests.wsman import soap
from tests.wsman.echo import USERNAME, USERS, echo
from tests.wsman.fixtures import EndpointFactory
from tests.wsman.shell import CommandReply, CommandRequest
from tests.wsman.test_https_ntlm import protocol, run_with_stdin, session


def test_refuse_all_drops_every_connection(wsman_endpoint: EndpointFactory) -> None:
    endpoint = wsman_endpoint(echo, tls=True, users=USERS)
    endpoint.refuse_all = True

    with pytest.raises(requests.exceptions.ConnectionError):
        session(endpoint).run_cmd("hostname")

    endpoint.refuse_all = False
    assert session(endpoint).run_cmd("hostname").status_code == 0


@pytest.mark.parametrize("tls", [True, False], ids=["https", "http-encrypted"])
def test_access_denied_is_a_wsman_fault_with_code_5(wsman_endpoint: EndpointFactory, tls: bool) -> None:
    endpoint = wsman_endpoint(echo, tls=tls, users={**USERS, "HOST\\operator": "op"})
    endpoint.access_denied_users = {"host\\operator"}
    operator = winrm.Session(
        endpoint.url, auth=("HOST\\operator", "op"), transport="ntlm", ca_trust_path=str(endpoint.ca_file)
    )

    with pytest.raises(WSManFaultError) as raised:
        operator.run_cmd("hostname")
    assert (raised.value.code, raised.value.wsman_fault_code) == (500, 5)
    assert raised.value.fault_subcode == "w:AccessDenied"
    assert raised.value.reason.startswith("Access is denied.")
    assert session(endpoint).run_cmd("hostname").status_code == 0

    endpoint.access_denied = True
    with pytest.raises(WSManFaultError, match="Access is denied"):
        session(endpoint).run_cmd("hostname")
    assert endpoint.requests[0].user == USERNAME and len(endpoint.requests) == 1


@pytest.mark.slow
def test_a_slow_command_answers_operation_timeout_faults_until_it_is_done(
    wsman_endpoint: EndpointFactory,
) -> None:
    endpoint = wsman_endpoint(lambda request: CommandReply(b"late", delay_seconds=2.5), users=USERS)
    client = protocol(endpoint, operation_timeout_sec=1, read_timeout_sec=2)
    shell_id = client.open_shell()
    command_id = client.run_command(shell_id, "powershell.exe")

    started = time.monotonic()
    with pytest.raises(WinRMOperationTimeoutError):
        client.get_command_output_raw(shell_id, command_id)
    # Windows holds the Receive for the OperationTimeout the client asked for, then faults
    # (before the 2 s read timeout, or the client would have raised ReadTimeout instead).
    assert time.monotonic() - started >= 0.9

    # pywinrm's get_command_output retries the fault silently until the command is done:
    # a slow host never shows as a read timeout, only as a call that takes long.
    assert client.get_command_output(shell_id, command_id) == (b"late", b"", 0)
    assert time.monotonic() - started >= 2.4
    receives = [e for e in endpoint.exchanges if e.action == "Receive"]
    assert [e.status for e in receives] == [500, 500, 200]


def test_stdin_left_open_keeps_the_command_running(wsman_endpoint: EndpointFactory) -> None:
    endpoint = wsman_endpoint(echo, tls=True, users=USERS)
    client = protocol(endpoint, operation_timeout_sec=1, read_timeout_sec=2)
    shell_id = client.open_shell(codepage=65001)
    command_id = client.run_command(shell_id, "powershell.exe")
    client.send_command_input(shell_id, command_id, b"# hvbackup-script: inventory\n")  # no end=True

    # The bootstrap reads stdin to the end, which never comes: on Windows it hangs.
    with pytest.raises(WinRMOperationTimeoutError):
        client.get_command_output_raw(shell_id, command_id)
    assert endpoint.requests == []

    client.send_command_input(shell_id, command_id, b"'done'\n", end=True)
    assert client.get_command_output(shell_id, command_id)[0] == b"# hvbackup-script: inventory\n'done'\n"


def test_a_long_handler_does_not_hold_up_send(wsman_endpoint: EndpointFactory) -> None:
    release = threading.Event()

    def waits(request: CommandRequest) -> CommandReply:
        assert release.wait(10)
        return CommandReply(b"finished")

    endpoint = wsman_endpoint(waits, tls=True, users=USERS)
    client = protocol(endpoint, operation_timeout_sec=1, read_timeout_sec=2)
    shell_id = client.open_shell()
    command_id = client.run_command(shell_id, "powershell.exe")

    client.send_command_input(shell_id, command_id, b"work", end=True)  # returns at once
    with pytest.raises(WinRMOperationTimeoutError):
        client.get_command_output_raw(shell_id, command_id)
    release.set()
    assert client.get_command_output(shell_id, command_id) == (b"finished", b"", 0)


def test_concurrent_clients_each_authenticate_their_own_connection(wsman_endpoint: EndpointFactory) -> None:
    users = {**USERS, "HOST\\second": "two"}
    endpoint = wsman_endpoint(echo, tls=True, users=users)
    results: dict[str, bytes] = {}

    def run(name: str, username: str) -> None:
        client = Protocol(
            endpoint.url,
            transport="ntlm",
            username=username,
            password=users[username],
            ca_trust_path=str(endpoint.ca_file),
        )
        results[name] = run_with_stdin(client, name.encode() * 1000)[0]

    threads = [
        threading.Thread(target=run, args=(f"client{n}", USERNAME if n % 2 else "HOST\\second"))
        for n in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert results == {f"client{n}": f"client{n}".encode() * 1000 for n in range(6)}
    assert sorted(request.user for request in endpoint.requests) == [USERNAME] * 3 + ["HOST\\second"] * 3
    assert len({e.connection for e in endpoint.exchanges}) == 6


@pytest.mark.slow
def test_a_host_that_does_not_answer_is_a_read_timeout(wsman_endpoint: EndpointFactory) -> None:
    endpoint = wsman_endpoint(echo, tls=True, users=USERS)
    endpoint.stall_seconds = 3

    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        session(endpoint, operation_timeout_sec=1, read_timeout_sec=2).run_cmd("hostname")
    assert time.monotonic() - started < 2.8


def test_an_unknown_action_is_a_soap_fault(wsman_endpoint: EndpointFactory) -> None:
    endpoint = wsman_endpoint(echo, tls=True, users=USERS)
    client = protocol(endpoint)
    message = client.build_wsman_header(
        action="http://schemas.xmlsoap.org/ws/2004/09/transfer/Get",
        resource_uri="http://schemas.microsoft.com/wbem/wsman/1/wmi/root/cimv2/Win32_Service",
    )
    message.setdefault("env:Body", {})

    with pytest.raises(WSManFaultError) as raised:
        client.send_message(xmltodict.unparse({"env:Envelope": message}))
    assert raised.value.code == 500
    assert raised.value.fault_subcode == "a:ActionNotSupported"
    # The connection and the server thread are fine afterwards.
    assert run_with_stdin(client, b"still here") == (b"still here", b"", 0)


@pytest.mark.parametrize(
    "body",
    [
        "<env:Envelope",
        "<x>not soap</x>",
        '<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"/>',
    ],
    ids=["truncated", "not-soap", "no-header"],
)
def test_malformed_xml_is_a_400_fault_and_the_server_survives(
    wsman_endpoint: EndpointFactory, body: str
) -> None:
    endpoint = wsman_endpoint(echo, tls=True, users=USERS)
    client = protocol(endpoint)

    with pytest.raises(WSManFaultError) as raised:
        client.send_message(body)
    assert raised.value.code == 400
    assert raised.value.fault_subcode == "w:SchemaValidationError"
    assert run_with_stdin(client, b"ok") == (b"ok", b"", 0)
    assert endpoint.connection_errors == []


def test_an_envelope_over_max_envelope_size_is_refused(wsman_endpoint: EndpointFactory) -> None:
    endpoint = wsman_endpoint(echo, tls=True, users=USERS)
    endpoint.max_envelope_kb = 150  # Windows' default before WinRM 3.0

    # 200 KB of stdin is 270 KB of base64 in one Send: too big for that host.
    with pytest.raises(WinRMTransportError) as raised:
        run_with_stdin(protocol(endpoint), b"x" * 200 * 1024)
    assert raised.value.code == 413
    assert endpoint.requests == []


def test_a_handler_that_raises_is_reported_as_a_failed_command(wsman_endpoint: EndpointFactory) -> None:
    def broken(request: CommandRequest) -> CommandReply:
        raise KeyError("no such script")

    endpoint = wsman_endpoint(broken, tls=True, users=USERS)

    stdout, stderr, exit_code = run_with_stdin(protocol(endpoint), b"# hvbackup-script: nothing\n")

    assert (stdout, exit_code) == (b"", 1)
    assert b"KeyError: 'no such script'" in stderr
    assert len(endpoint.handler_errors) == 1


def test_a_deleted_shell_is_not_found(wsman_endpoint: EndpointFactory) -> None:
    endpoint = wsman_endpoint(echo, tls=True, users=USERS)
    client = protocol(endpoint)
    shell_id = client.open_shell()
    command_id = client.run_command(shell_id, "hostname")
    client.close_shell(shell_id, close_session=False)

    with pytest.raises(WSManFaultError) as raised:
        client.get_command_output_raw(shell_id, command_id)
    assert raised.value.wsman_fault_code == soap.CODE_SHELL_NOT_FOUND
    with pytest.raises(WSManFaultError):
        client.run_command(str(uuid.uuid4()).upper(), "hostname")


def test_stop_takes_under_a_second_with_a_receive_waiting(wsman_endpoint: EndpointFactory) -> None:
    endpoint = wsman_endpoint(lambda request: CommandReply(delay_seconds=60), users=USERS)
    idle = protocol(endpoint)
    idle.close_shell(idle.open_shell(), close_session=False)  # an idle keep-alive connection
    waiting = protocol(endpoint, operation_timeout_sec=20, read_timeout_sec=30)
    shell_id = waiting.open_shell()
    command_id = waiting.run_command(shell_id, "powershell.exe")
    errors: list[BaseException] = []

    def receive() -> None:
        try:
            waiting.get_command_output_raw(shell_id, command_id)
        except Exception as error:
            errors.append(error)

    client_thread = threading.Thread(target=receive)
    client_thread.start()
    while not endpoint.requests:
        time.sleep(0.01)

    started = time.monotonic()
    endpoint.stop()
    assert time.monotonic() - started < 1.0
    client_thread.join(5)
    assert errors, "the waiting Receive must end when the endpoint stops"
    assert isinstance(errors[0], WinRMTransportError)
