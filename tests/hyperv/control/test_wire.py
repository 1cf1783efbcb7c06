"""The control half through the real protocol: pywinrm -> WS-Management endpoint -> emulated Windows.

Each failure is produced the way a real host would produce it (a closed port, a
certificate from another CA, a 401, a WSMan fault, a slow command, CLIXML on
stderr) and must come back as its typed error, with the step of "Test connection"
it belongs to, and without the password anywhere.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from protection.connectors.hyperv.connector import HyperVConnectionTest
from protection.connectors.hyperv.envelope import HEADER_PREFIX
from protection.connectors.hyperv.errors import (
    AccessDenied,
    AuthenticationFailed,
    ConnectionFailed,
    ConnectionRefused,
    HostNotFound,
    HostTimeout,
    HyperVError,
    NotHyperVHost,
    ScriptError,
    TLSError,
    WinRMNotEnabled,
    hint_of,
)
from protection.connectors.protocol import ConnectorError, VMNotFound
from tests.hyperv.control.conftest import PASSWORD, USERNAME, LabHost, Wired
from tests.hyperv.windows import error_reply
from tests.wsman.tls import TestCA

pytestmark = pytest.mark.slow


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Everything logged at any level, by us and by pywinrm, requests, urllib3, spnego."""
    with caplog.at_level(logging.DEBUG):
        yield caplog


def assert_no_password(*texts: Any) -> None:
    for text in texts:
        assert PASSWORD not in str(text)
        assert PASSWORD.encode("utf-8") not in str(text).encode("utf-8", "replace")


def steps_of(result: HyperVConnectionTest) -> dict[str, str]:
    return {step.key: step.status for step in result.steps}


def failed_step(result: HyperVConnectionTest) -> Any:
    return next(step for step in result.steps if step.status == "failed")


def everything(result: HyperVConnectionTest) -> str:
    return result.message + "".join(f"{s.message}{s.hint}" for s in result.steps)


# --------------------------------------------------------------------------- success


def test_https_ntlm_test_connection_and_inventory(
    wire: Callable[..., Wired], lab_host: LabHost, logs: pytest.LogCaptureFixture
) -> None:
    w = wire()
    connector = w.connector()
    result = connector.test_connection()
    assert result.ok, result.message
    assert steps_of(result) == dict.fromkeys(
        ["resolve", "connect", "tls", "authenticate", "powershell", "hyperv", "rights"], "ok"
    )
    assert result.host_name == "HV07" and result.os_version == "Windows Server 2022"
    assert f"answered as {USERNAME}" in result.message

    inventory = connector.inventory()
    assert {vm.name: vm.id for vm in inventory.vms} == lab_host.ids
    assert inventory.host.os_version == "Windows Server 2022"
    win = connector.get_vm(lab_host.ids["WIN01"])
    assert win.name == "WIN01" and win.disks[0].path.endswith("WIN01.vhdx")
    assert {f.code for f in connector.prerequisites(lab_host.ids["LNX01"])} == {"linux-file-consistent"}

    # What crossed the wire: our bootstrap, a UTF-8 shell, the script on stdin, NTLM.
    request = w.endpoint.requests[-1]
    assert request.executable == "powershell.exe" and "-EncodedCommand" in request.arguments
    assert request.codepage == 65001 and request.user == USERNAME
    assert request.stdin.startswith(f"{HEADER_PREFIX}inventory\n".encode())
    assert {e.authorization for e in w.endpoint.exchanges} <= {"", "Negotiate", "NTLM"}
    assert w.endpoint.open_shells() == 0  # every shell deleted after its script
    assert [run[0] for run in w.host.runs] == ["test-connection", "inventory", "inventory", "inventory"]
    assert_no_password(logs.text, result, inventory, [r.stdin for r in w.endpoint.requests])


def test_unknown_vm(wire: Callable[..., Wired]) -> None:
    with pytest.raises(VMNotFound, match="No VM with id 00000000-0000-4000-8000-000000000000 on HV07"):
        wire().connector().get_vm("00000000-0000-4000-8000-000000000000")


def test_certificate_authentication(wire: Callable[..., Wired], logs: pytest.LogCaptureFixture) -> None:
    w = wire(certificates=True)
    cert_pem, key_pem = w.endpoint.client_cert("HV07\\cert-backup")
    connector = w.connector(auth="certificate", username="", password="", cert_pem=cert_pem, key_pem=key_pem)
    result = connector.test_connection()
    assert result.ok, result.message
    assert "answered as HV07\\cert-backup" in result.message
    assert {e.authorization for e in w.endpoint.exchanges} == {"certificate"}
    assert len(connector.inventory().vms) == 2
    assert "PRIVATE KEY" not in logs.text


def test_an_unmapped_client_certificate_is_refused(wire: Callable[..., Wired]) -> None:
    w = wire(certificates=True)
    cert_pem, key_pem = w.endpoint.client_cert("HV07\\stranger", mapped=False)
    result = w.connector(
        auth="certificate", username="", password="", cert_pem=cert_pem, key_pem=key_pem
    ).test_connection()
    assert not result.ok and failed_step(result).key == "authenticate"
    assert "refused the client certificate" in result.message and "ClientCertificate" in result.message


def test_plain_http_with_message_encryption(wire: Callable[..., Wired], lab_host: LabHost) -> None:
    w = wire(tls=False)
    connector = w.connector()
    result = connector.test_connection()
    assert result.ok, result.message
    assert steps_of(result)["tls"] == "skipped"
    assert len(connector.inventory().vms) == 2
    soap = [e for e in w.endpoint.exchanges if e.action]
    assert soap and all(e.encrypted for e in soap)  # never a SOAP body in clear


def test_large_parameters_go_in_several_sends(wire: Callable[..., Wired]) -> None:
    w = wire()
    result = w.transport().run_script("inventory", {"padding": "é" * 150_000})
    assert len(result["vms"]) == 2
    assert len(w.endpoint.requests[-1].stdin) > 300_000


def test_non_ascii_vm_names_survive(wire: Callable[..., Wired], lab_host: LabHost, disk_images: Any) -> None:
    vm_id = lab_host.add(disk_images, "Büro-Ünïcode ✓ 😀", "blank-dynamic.vhdx")
    assert wire().connector().get_vm(vm_id).name == "Büro-Ünïcode ✓ 😀"


# --------------------------------------------------------------------------- failures


def test_bad_password(wire: Callable[..., Wired], logs: pytest.LogCaptureFixture) -> None:
    w = wire()
    wrong = PASSWORD + "x"
    connector = w.connector(password=wrong)
    result = connector.test_connection()
    assert not result.ok
    assert steps_of(result) == {
        "resolve": "ok",
        "connect": "ok",
        "tls": "ok",
        "authenticate": "failed",
        "powershell": "skipped",
        "hyperv": "skipped",
        "rights": "skipped",
    }
    assert "refused the user name or password for HV07\\hvbackup" in result.message
    with pytest.raises(AuthenticationFailed) as caught:
        connector.inventory()
    assert w.endpoint.requests == []
    assert_no_password(everything(result), caught.value, hint_of(caught.value), logs.text)
    assert wrong not in logs.text and wrong not in str(caught.value)


def test_a_certificate_from_another_ca(wire: Callable[..., Wired]) -> None:
    w = wire()
    rogue = TestCA("rogue CA").cert_pem.decode()
    connector = w.connector(ca_pem=rogue)
    result = connector.test_connection()
    assert not result.ok and failed_step(result).key == "tls"
    assert "not trusted" in result.message and "Upload the certificate of the CA" in result.message
    with pytest.raises(TLSError, match="not trusted"):
        connector.inventory()
    assert w.endpoint.requests == []


def test_system_trust_store_does_not_trust_the_test_ca(wire: Callable[..., Wired]) -> None:
    with pytest.raises(TLSError):
        wire().transport(ca_pem=None).run_script("test-connection")


def test_https_to_the_http_port(wire: Callable[..., Wired]) -> None:
    w = wire(tls=False)
    result = w.connector(scheme="https", ca_pem=w.endpoint.ca_pem).test_connection()
    assert not result.ok and failed_step(result).key == "connect"
    assert "not with TLS" in result.message and "5985" in result.message
    with pytest.raises(WinRMNotEnabled):
        w.transport(scheme="https", ca_pem=w.endpoint.ca_pem).run_script("test-connection")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_refused_port(wire: Callable[..., Wired]) -> None:
    w = wire()
    port = _closed_port()
    result = w.connector(port=port).test_connection()
    assert not result.ok and failed_step(result).key == "connect"
    assert f"127.0.0.1:{port} refused the connection" in result.message
    assert "Enable-PSRemoting" in result.message and "firewall" in result.message
    with pytest.raises(ConnectionRefused):
        w.transport(port=port).run_script("test-connection")


def test_dns_failure(wire: Callable[..., Wired]) -> None:
    w = wire()
    result = w.connector(address="hv07.invalid").test_connection()
    assert not result.ok and failed_step(result).key == "resolve"
    assert steps_of(result)["connect"] == "skipped"
    assert "The name hv07.invalid cannot be resolved." in result.message
    with pytest.raises(HostNotFound, match=r"hv07\.invalid"):
        w.transport(address="hv07.invalid").run_script("inventory")


def test_clixml_error(wire: Callable[..., Wired]) -> None:
    w = wire()
    w.host.fail_next["inventory"] = lambda request: error_reply(
        "Get-VM : The Virtual Machine Management service on HV07 is stopping._x"
    )
    with pytest.raises(ScriptError) as caught:
        w.connector().inventory()
    assert str(caught.value) == (
        "PowerShell failed running inventory: "
        "Get-VM : The Virtual Machine Management service on HV07 is stopping._x"
    )
    assert "CategoryInfo" in caught.value.details
    assert len(w.connector().inventory().vms) == 2  # injected once only


def test_an_error_inside_the_emulated_script_is_a_clixml_error(
    wire: Callable[..., Wired], lab_host: LabHost
) -> None:
    (lab_host.folder / "host.json").write_text("{")  # the host's own configuration is unreadable
    with pytest.raises(
        ScriptError, match=r"PowerShell failed running inventory: HostUnreachable: .*not valid JSON"
    ):
        wire().connector().inventory()


def test_timeout(wire: Callable[..., Wired], logs: pytest.LogCaptureFixture) -> None:
    w = wire()
    w.host.delay["inventory"] = 30.0
    started = time.monotonic()
    with pytest.raises(HostTimeout, match=r"inventory did not finish on 127.0.0.1 within 3 seconds"):
        w.transport(script_timeout=3.0).run_script("inventory")
    assert time.monotonic() - started < 15
    deadline = time.monotonic() + 5
    while w.endpoint.open_shells() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert w.endpoint.open_shells() == 0  # the command was stopped and the shell deleted
    assert_no_password(logs.text)


def test_host_that_stops_answering(wire: Callable[..., Wired]) -> None:
    w = wire()
    w.endpoint.stall_seconds = 20
    with pytest.raises(HostTimeout, match="did not answer within 3 seconds"):
        w.transport(operation_timeout=1, read_timeout=3).run_script("inventory")


def test_not_a_hyperv_host(wire: Callable[..., Wired]) -> None:
    w = wire()
    w.host.hyperv_installed = False
    result = w.connector().test_connection()
    assert not result.ok and failed_step(result).key == "hyperv"
    assert steps_of(result)["powershell"] == "ok"
    assert (
        "HV07 does not have the Hyper-V role" in result.message and "Install-WindowsFeature" in result.message
    )
    with pytest.raises(NotHyperVHost):
        w.transport().run_script("test-connection")


def test_winrm_access_denied(wire: Callable[..., Wired]) -> None:
    w = wire()
    w.endpoint.access_denied_users = {USERNAME}
    result = w.connector().test_connection()
    assert not result.ok and failed_step(result).key == "rights"
    # Signed in, but no script ran: what lies between was never checked.
    assert steps_of(result)["authenticate"] == "ok" and steps_of(result)["hyperv"] == "skipped"
    assert "refused WinRM access to this account" in result.message and "Administrator" in result.message
    with pytest.raises(AccessDenied):
        w.connector().inventory()


def test_account_without_hyperv_rights(wire: Callable[..., Wired]) -> None:
    w = wire()
    w.host.administrators = set()
    result = w.connector().test_connection()
    assert not result.ok and failed_step(result).key == "rights"
    assert "neither a local Administrator nor a member of Hyper-V Administrators" in result.message


def test_hyperv_administrators_only_is_a_warning(wire: Callable[..., Wired]) -> None:
    w = wire()
    w.host.administrators = set()
    w.host.hyperv_administrators = {USERNAME}
    result = w.connector().test_connection()
    assert result.ok and steps_of(result)["rights"] == "warning"
    assert "not a local Administrator" in result.message


def test_injected_access_denied_from_a_script(wire: Callable[..., Wired]) -> None:
    w = wire()
    w.host.fail_next["inventory"] = ("AccessDenied", "HV07\\hvbackup may not read VM settings.")
    with pytest.raises(AccessDenied, match=r"^HV07\\hvbackup may not read VM settings\.$") as caught:
        w.connector().inventory()
    assert "Administrator" in caught.value.hint


def test_cluster_over_ntlm_is_flagged(wire: Callable[..., Wired], lab_host: LabHost) -> None:
    data = json.loads((lab_host.folder / "host.json").read_text())
    (lab_host.folder / "host.json").write_text(
        json.dumps({**data, "cluster_name": "HVCLUSTER", "nodes": ["HV07", "HV08"]})
    )
    connector = wire().connector()
    result = connector.test_connection()
    assert result.ok and steps_of(result)["authenticate"] == "warning"
    assert "certificate authentication" in result.message
    assert "cluster-needs-certificate" in {f.code for f in connector.inventory().findings}


def test_no_error_ever_carries_the_password(
    wire: Callable[..., Wired], logs: pytest.LogCaptureFixture
) -> None:
    """Every failure above once more, collecting every text a user or a log could see."""
    w = wire()
    seen: list[str] = []
    cases: list[dict[str, Any]] = [
        {"password": PASSWORD + "!"},
        {"port": _closed_port()},
        {"address": "hv07.invalid"},
        {"ca_pem": TestCA("other").cert_pem.decode()},
        {"script_timeout": 1.0},
    ]
    w.host.delay["test-connection"] = 5.0
    for changes in cases:
        result = w.connector(**changes).test_connection()
        seen.append(everything(result))
        try:
            w.transport(**changes).run_script("test-connection")
        except ConnectorError as error:
            seen.append(f"{error} {hint_of(error)} {error!r} {getattr(error, 'details', '')}")
            assert isinstance(error, HyperVError)
    assert_no_password(*seen, logs.text)


def test_host_that_drops_every_connection(wire: Callable[..., Wired]) -> None:
    w = wire()
    w.endpoint.refuse_all = True
    result = w.connector().test_connection()
    # The port accepts, then the connection is dropped: during the handshake, or after it.
    assert not result.ok and failed_step(result).key in ("connect", "tls")
    assert "Check that the host is on" in result.message
    with pytest.raises(ConnectionFailed):
        w.transport().run_script("inventory")
