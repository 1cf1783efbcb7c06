"""WinRM settings and the mapping of library failures to typed errors (no network)."""

from __future__ import annotations

import os
import socket
import ssl
import stat
from pathlib import Path
from typing import Any

import pytest
import requests
from urllib3.exceptions import MaxRetryError, NameResolutionError, NewConnectionError
from winrm.exceptions import InvalidCredentialsError, WinRMError, WinRMTransportError, WSManFaultError

from protection.connectors.hyperv.connector import HyperVConnector, cluster_auth_findings, smb_settings
from protection.connectors.hyperv.errors import (
    STEPS,
    AccessDenied,
    AuthenticationFailed,
    ConnectionFailed,
    ConnectionRefused,
    HostNotFound,
    HostTimeout,
    InvalidConnectionSettings,
    ProtocolError,
    ScriptError,
    TLSError,
    WinRMNotEnabled,
)
from protection.connectors.hyperv.transport import WinRMSettings, WinRMTransport
from protection.connectors.protocol import HostUnreachable, VMNotFound

SECRET = "Tr0ub4dor&3-secret"


def settings(**changes: Any) -> WinRMSettings:
    values: dict[str, Any] = {"address": "hv07.corp.example", "username": "CORP\\backup", "password": SECRET}
    return WinRMSettings(**{**values, **changes})


def test_defaults_are_https_5986_ntlm() -> None:
    s = WinRMSettings.from_credentials("hv07.corp.example", {"username": "CORP\\backup", "password": SECRET})
    assert (s.scheme, s.port, s.auth, s.endpoint) == (
        "https",
        5986,
        "ntlm",
        "https://hv07.corp.example:5986/wsman",
    )
    assert WinRMSettings.from_credentials(
        "fe80::1", {"username": "u", "password": "p", "scheme": "http"}
    ).endpoint == ("http://[fe80::1]:5985/wsman")


def test_secrets_never_in_repr() -> None:
    s = settings(key_pem="-----BEGIN PRIVATE KEY-----abc", ca_pem="CA")
    assert SECRET not in repr(s) and "PRIVATE" not in repr(s)
    assert SECRET not in repr(HyperVConnector("hv07", {"username": "u", "password": SECRET}))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"auth": "basic"}, "Unknown authentication 'basic'"),
        ({"auth": "plaintext"}, "Unknown authentication"),
        ({"scheme": "ftp"}, "Unknown scheme"),
        ({"auth": "certificate", "scheme": "http", "cert_pem": "c", "key_pem": "k"}, "over HTTPS only"),
        ({"auth": "certificate"}, "needs the client certificate and its private key"),
        ({"password": ""}, "needs a user name and a password"),
        ({"port": 0}, "not a TCP port"),
        ({"address": " "}, "address is empty"),
        ({"operation_timeout": 30, "read_timeout": 30}, "read timeout must be longer"),
    ],
)
def test_settings_that_cannot_work_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidConnectionSettings, match=message):
        settings(**changes)


def test_port_must_be_a_number() -> None:
    with pytest.raises(InvalidConnectionSettings, match="not a number"):
        WinRMSettings.from_credentials("h", {"username": "u", "password": "p", "port": "https"})


def test_http_always_encrypts_and_https_validates(tmp_path: Path) -> None:
    transport = WinRMTransport(settings(scheme="http", port=5985))
    with transport._pem_files() as files:
        protocol = transport._protocol(files)
    assert protocol.transport.message_encryption == "always"
    assert protocol.transport.server_cert_validation == "validate"
    https = WinRMTransport(settings(ca_pem="-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"))
    with https._pem_files() as files:
        protocol = https._protocol(files)
        assert protocol.transport.ca_trust_path == files["ca"]
    assert protocol.transport.message_encryption == "never" and protocol.transport.proxy is None


def test_pem_files_are_private_and_removed() -> None:
    transport = WinRMTransport(
        settings(auth="certificate", password="", cert_pem="CERT", key_pem="KEY-" + SECRET, ca_pem="CA")
    )
    with transport._pem_files() as files:
        assert set(files) == {"ca", "cert", "key"}
        folder = Path(files["key"]).parent
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE(os.stat(files["key"]).st_mode) == 0o600
        assert Path(files["key"]).read_text() == "KEY-" + SECRET
    assert not folder.exists()


def _connection_error(cause: BaseException) -> requests.exceptions.ConnectionError:
    inner = NewConnectionError(None, f"Failed to establish a new connection: {cause}")  # type: ignore[arg-type]
    inner.__cause__ = cause
    return requests.exceptions.ConnectionError(MaxRetryError(None, "/wsman", inner))  # type: ignore[arg-type]


def _dns_error() -> requests.exceptions.ConnectionError:
    gai = socket.gaierror(-2, "Name or service not known")
    inner = NameResolutionError("hv07.invalid", None, gai)  # type: ignore[arg-type]
    return requests.exceptions.ConnectionError(MaxRetryError(None, "/wsman", inner))  # type: ignore[arg-type]


def _fault(code: int | None, reason: str) -> WSManFaultError:
    return WSManFaultError(500, "Bad HTTP response", "<xml/>", reason, wsman_fault_code=code)


@pytest.mark.parametrize(
    ("error", "error_class", "message", "step"),
    [
        (
            InvalidCredentialsError("rejected"),
            AuthenticationFailed,
            "refused the user name or password for CORP",
            "authenticate",
        ),
        (
            _fault(5, "Access is denied."),
            AccessDenied,
            "refused WinRM access to this account: Access is denied.",
            "rights",
        ),
        (
            _fault(2150858770, "The WinRM client cannot process the request."),
            ScriptError,
            "WinRM on the host refused",
            "powershell",
        ),
        (
            WinRMTransportError("http", 404, ""),
            WinRMNotEnabled,
            "answered HTTP 404, which is not WinRM",
            "connect",
        ),
        (WinRMTransportError("http", 403, ""), AccessDenied, "HTTP 403", "rights"),
        (_dns_error(), HostNotFound, "The name hv07.corp.example cannot be resolved.", "resolve"),
        (
            _connection_error(ConnectionRefusedError(111, "Connection refused")),
            ConnectionRefused,
            "refused the connection",
            "connect",
        ),
        (
            _connection_error(OSError(113, "No route to host")),
            ConnectionFailed,
            "connection to hv07.corp.example:5986 failed",
            "connect",
        ),
        (
            requests.exceptions.ReadTimeout("read timed out"),
            HostTimeout,
            "did not answer within 30 seconds",
            "powershell",
        ),
        (
            requests.exceptions.ConnectTimeout("connect timed out"),
            HostTimeout,
            "Nothing answered",
            "powershell",
        ),
        (
            WinRMError("requested auth method is kerberos, but pykerberos is not installed"),
            InvalidConnectionSettings,
            "pykerberos",
            "connect",
        ),
        (StopIteration(), ProtocolError, "something unexpected", "powershell"),
    ],
)
def test_library_failures_become_typed_errors(
    error: BaseException, error_class: type, message: str, step: str
) -> None:
    translated = WinRMTransport(settings()).translate(error)
    assert type(translated) is error_class
    assert message in str(translated) and translated.hint and translated.step == step
    assert SECRET not in str(translated) + translated.hint


@pytest.mark.parametrize(
    ("reason", "error_class", "message"),
    [
        (
            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
            "unable to get local issuer certificate",
            TLSError,
            "not trusted",
        ),
        (
            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate",
            TLSError,
            "not trusted",
        ),
        (
            "certificate verify failed: Hostname mismatch, certificate is not valid for 'hv07'",
            TLSError,
            "does not name this address",
        ),
        ("[SSL: WRONG_VERSION_NUMBER] wrong version number", WinRMNotEnabled, "plain HTTP port"),
        (
            "[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation of protocol",
            ConnectionFailed,
            "closed",
        ),
    ],
)
def test_tls_failures(reason: str, error_class: type, message: str) -> None:
    translated = WinRMTransport(settings()).translate(requests.exceptions.SSLError(ssl.SSLError(1, reason)))
    assert type(translated) is error_class and message in str(translated)


def test_an_error_that_quotes_the_password_is_scrubbed() -> None:
    transport = WinRMTransport(settings())
    scrubbed = transport._scrub(ScriptError(f"the host echoed {SECRET} back"))
    assert SECRET not in str(scrubbed) and "********" in str(scrubbed) and isinstance(scrubbed, ScriptError)
    other = transport._scrub(VMNotFound(f"no VM {SECRET}"))
    assert isinstance(other, VMNotFound) and SECRET not in str(other)


def test_unreachable_kinds_are_host_unreachable() -> None:
    for error_class in (
        HostNotFound,
        ConnectionRefused,
        ConnectionFailed,
        TLSError,
        HostTimeout,
        WinRMNotEnabled,
    ):
        assert issubclass(error_class, HostUnreachable)
    assert [key for key, _label in STEPS] == [
        "resolve",
        "connect",
        "tls",
        "authenticate",
        "powershell",
        "hyperv",
        "rights",
    ]


def test_smb_credentials() -> None:
    ntlm = smb_settings("hv07", {"username": "CORP\\backup", "password": SECRET})
    assert ntlm is not None and (ntlm.server, ntlm.username, ntlm.password) == (
        "hv07",
        "CORP\\backup",
        SECRET,
    )
    separate = smb_settings(
        "hv07", {"username": "a", "password": "b", "smb_username": "c", "smb_password": "d"}
    )
    assert separate is not None and (separate.username, separate.password) == ("c", "d")
    assert smb_settings("hv07", {"auth": "certificate", "cert_pem": "c", "key_pem": "k"}) is None
    assert SECRET not in repr(ntlm)


def test_cluster_rule() -> None:
    assert cluster_auth_findings(None, "ntlm") == []
    assert cluster_auth_findings("HVCLUSTER", "certificate") == []
    [finding] = cluster_auth_findings("HVCLUSTER", "ntlm")
    assert finding.code == "cluster-needs-certificate" and "certificate" in finding.fix


def test_get_vm_refuses_an_id_that_is_not_a_guid() -> None:
    with pytest.raises(VMNotFound, match="not a Hyper-V VM id"):
        HyperVConnector("hv07", {"username": "u", "password": "p"}).get_vm("../../etc")
