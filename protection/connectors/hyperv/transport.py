"""WinRM to a Hyper-V host: run one of our PowerShell scripts, get its JSON back.

pywinrm's low-level ``Protocol`` is used, not ``run_ps``: the command line only
carries a bootstrap, the script goes on stdin (see ``envelope.py``). Every
failure leaves here as a typed error from ``errors.py`` whose message never
holds a password or a private key.

Security rules (they are the product's, not pywinrm's defaults):
- HTTPS (5986) by default, the server certificate always validated, against the
  CA the administrator uploaded or else requests' CA bundle (certifi);
- plain HTTP (5985) only with message encryption (NTLM, Kerberos or CredSSP
  seal every message), so nothing travels in clear; never Basic authentication.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import ssl
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import requests
from winrm.exceptions import (
    InvalidCredentialsError,
    WinRMError,
    WinRMOperationTimeoutError,
    WinRMTransportError,
    WSManFaultError,
)
from winrm.protocol import Protocol

from protection.connectors.hyperv import envelope
from protection.connectors.hyperv.errors import (
    STEP_AUTHENTICATE,
    STEP_CONNECT,
    STEP_HYPERV,
    STEP_POWERSHELL,
    STEP_RESOLVE,
    STEP_RIGHTS,
    STEP_TLS,
    STEPS,
    AccessDenied,
    AuthenticationFailed,
    ConnectionFailed,
    ConnectionRefused,
    HostNotFound,
    HostTimeout,
    HyperVError,
    InvalidConnectionSettings,
    ProtocolError,
    ScriptError,
    TLSError,
    WinRMNotEnabled,
    hint_of,
    step_of,
)
from protection.connectors.protocol import ConnectorError

logger = logging.getLogger(__name__)

AUTH_KINDS = ("ntlm", "certificate", "kerberos", "credssp")
SCHEMES = ("https", "http")
DEFAULT_PORTS = {"https": 5986, "http": 5985}
# What a WinRM Send may carry comfortably below the default 150 KiB envelope
# (base64 makes it a third larger).
STDIN_CHUNK = 64 * 1024
ERROR_ACCESS_DENIED = 5


@dataclass(frozen=True)
class WinRMSettings:
    """How to reach one host. Secrets are kept out of ``repr``."""

    address: str
    port: int = 5986
    scheme: str = "https"
    auth: str = "ntlm"
    username: str = ""
    password: str = field(default="", repr=False)
    cert_pem: str = field(default="", repr=False)  # client certificate (certificate auth)
    key_pem: str = field(default="", repr=False)  # its private key
    ca_pem: str | None = field(default=None, repr=False)  # None: requests' CA bundle (certifi)
    operation_timeout: int = 20  # seconds one WS-Management call may block on the host
    read_timeout: int = 30  # seconds to wait for an HTTP answer (> operation_timeout)
    script_timeout: float = 600.0  # seconds one script may run in all

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise InvalidConnectionSettings(problem)

    def problem(self) -> str:
        """Why these settings cannot be used, or ""."""
        if not self.address.strip():
            return "The host address is empty."
        if self.scheme not in SCHEMES:
            return f"Unknown scheme {self.scheme!r}: use https or http."
        if self.auth not in AUTH_KINDS:
            return f"Unknown authentication {self.auth!r}: use {', '.join(AUTH_KINDS)}."
        if not 0 < self.port < 65536:
            return f"Port {self.port} is not a TCP port."
        if self.auth == "certificate":
            if self.scheme != "https":
                return "Certificate authentication works over HTTPS only."
            if not self.cert_pem or not self.key_pem:
                return "Certificate authentication needs the client certificate and its private key."
        elif self.auth in ("ntlm", "credssp") and (not self.username or not self.password):
            return f"{self.auth.upper()} authentication needs a user name and a password."
        if not 1 <= self.operation_timeout < self.read_timeout:
            return "The read timeout must be longer than the operation timeout."
        return ""

    @classmethod
    def from_credentials(cls, address: str, credentials: Mapping[str, Any] | None) -> WinRMSettings:
        """Settings from a host row's stored credentials (see protection/forms/hosts.py)."""
        creds = dict(credentials or {})
        scheme = str(creds.get("scheme") or "https")
        try:
            port = int(creds.get("port") or DEFAULT_PORTS.get(scheme, 5986))
        except (TypeError, ValueError):
            raise InvalidConnectionSettings(f"Port {creds.get('port')!r} is not a number.") from None
        return cls(
            address=address.strip(),
            port=port,
            scheme=scheme,
            auth=str(creds.get("auth") or "ntlm"),
            username=str(creds.get("username") or ""),
            password=str(creds.get("password") or ""),
            cert_pem=str(creds.get("cert_pem") or ""),
            key_pem=str(creds.get("key_pem") or ""),
            ca_pem=str(creds["ca_pem"]) if creds.get("ca_pem") else None,
        )

    @property
    def host_for_url(self) -> str:
        return f"[{self.address}]" if ":" in self.address else self.address

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://{self.host_for_url}:{self.port}/wsman"

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.password, self.key_pem) if s)


@dataclass(frozen=True, slots=True)
class Step:
    """One step of "Test connection": ok, warning, failed, or skipped (not reached)."""

    key: str
    label: str
    status: str
    message: str = ""
    hint: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "warning", "skipped")


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and everything it wraps (requests -> urllib3 -> socket)."""
    seen: set[int] = set()
    todo: list[BaseException] = [error]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        todo.extend(a for a in current.args if isinstance(a, BaseException))
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            todo.append(reason)


def _tls_problem(error: BaseException) -> HyperVError:
    text = str(error)
    for item in _chain(error):
        if isinstance(item, ssl.SSLCertVerificationError):
            text = item.verify_message or str(item)
            break
    lowered = text.lower()
    if isinstance(error, ssl.SSLEOFError) or "unexpected_eof" in lowered or "eof occurred" in lowered:
        return ConnectionFailed("The host closed the connection during the TLS handshake.")
    if "wrong version number" in lowered or "record layer failure" in lowered or "http request" in lowered:
        return WinRMNotEnabled(
            "The port answered, but not with TLS: it is probably WinRM's plain HTTP port.",
            "Use HTTPS on port 5986, or choose HTTP with port 5985.",
        )
    if "mismatch" in lowered or "doesn't match" in lowered:
        return TLSError(
            f"The host's certificate does not name this address ({text}).",
            "Enter the name the certificate was issued for, or issue the host a certificate "
            "whose subject alternative name holds this address.",
        )
    if "certificate verify failed" in lowered or "self-signed" in lowered or "issuer" in lowered:
        return TLSError(f"The host's certificate is not trusted ({text}).")
    return TLSError(f"The TLS handshake with the host failed ({text}).")


class WinRMTransport:
    """Runs our scripts on one host; one WinRM shell per script run."""

    def __init__(self, settings: WinRMSettings):
        self.settings = settings

    # ------------------------------------------------------------------ errors

    def _scrub(self, error: ConnectorError) -> ConnectorError:
        """The same error without any secret in its text (defence in depth)."""
        text = str(error)
        if not any(secret in text for secret in self.settings.secrets):
            return error
        for secret in self.settings.secrets:
            text = text.replace(secret, "********")
        if isinstance(error, HyperVError):
            return type(error)(text, error.hint)
        return type(error)(text)

    def _where(self) -> str:
        return f"{self.settings.address}:{self.settings.port}"

    def translate(self, error: BaseException) -> HyperVError:
        """A typed error for whatever pywinrm, requests or the socket raised."""
        s = self.settings
        if isinstance(error, HyperVError):
            return error
        if isinstance(error, InvalidCredentialsError):
            if s.auth == "certificate":
                return AuthenticationFailed("The host refused the client certificate.")
            return AuthenticationFailed(f"The host refused the user name or password for {s.username}.")
        if isinstance(error, WSManFaultError):
            reason = (error.reason or "").strip()
            if error.wsman_fault_code == ERROR_ACCESS_DENIED or "access is denied" in reason.lower():
                return AccessDenied(f"The host refused WinRM access to this account: {reason}")
            return ScriptError(f"WinRM on the host refused the request: {reason}")
        if isinstance(error, WinRMTransportError):
            if error.code in (401,):
                return AuthenticationFailed("The host refused the credentials.")
            if error.code == 403:
                return AccessDenied(f"The host answered HTTP 403 (forbidden) on {self._where()}.")
            return WinRMNotEnabled(f"{self._where()} answered HTTP {error.code}, which is not WinRM.")
        if isinstance(error, requests.exceptions.SSLError):
            return _tls_problem(error)
        if isinstance(error, (requests.exceptions.ReadTimeout, TimeoutError)):
            return HostTimeout(f"{self._where()} did not answer within {s.read_timeout} seconds.")
        if isinstance(error, requests.exceptions.ConnectTimeout):
            return HostTimeout(
                f"Nothing answered on {self._where()} within {s.read_timeout} seconds.",
                ConnectionRefused.default_hint,
            )
        if isinstance(error, (requests.exceptions.ConnectionError, OSError)):
            for item in _chain(error):
                if isinstance(item, socket.gaierror) or type(item).__name__ == "NameResolutionError":
                    return HostNotFound(f"The name {s.address} cannot be resolved.")
                if isinstance(item, ConnectionRefusedError):
                    return ConnectionRefused(
                        f"{self._where()} refused the connection: WinRM is not listening."
                    )
                if isinstance(item, ssl.SSLError):
                    return _tls_problem(item)
            return ConnectionFailed(f"The connection to {self._where()} failed ({type(error).__name__}).")
        if isinstance(error, WinRMError):
            # pywinrm's own refusals (an auth kind whose package is missing, ...): no secrets in them.
            return InvalidConnectionSettings(f"WinRM client: {error}")
        if isinstance(error, (StopIteration, ValueError)):
            return ProtocolError(f"{self._where()} answered a WinRM request with something unexpected.")
        return ProtocolError(f"Unexpected {type(error).__name__} talking to {self._where()}.")

    # ------------------------------------------------------------------ files

    @contextmanager
    def _pem_files(self) -> Iterator[dict[str, str]]:
        """requests reads the CA and the client certificate from files: write them
        to a private folder (mode 0700, files 0600) that is gone afterwards."""
        folder = tempfile.mkdtemp(prefix="hvbackup-winrm-")
        try:
            paths = {}
            for key, text in (
                ("ca", self.settings.ca_pem),
                ("cert", self.settings.cert_pem),
                ("key", self.settings.key_pem),
            ):
                if text:
                    path = os.path.join(folder, f"{key}.pem")
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "w", encoding="ascii") as handle:
                        handle.write(text)
                    paths[key] = path
            yield paths
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _protocol(self, files: Mapping[str, str]) -> Protocol:
        s = self.settings
        certificate = s.auth == "certificate"
        return Protocol(
            endpoint=s.endpoint,
            transport=s.auth,  # type: ignore[arg-type]
            username=None if certificate else s.username or None,
            password=None if certificate else s.password,
            # None: requests' own CA bundle (certifi); REQUESTS_CA_BUNDLE & co. are ignored.
            ca_trust_path=files.get("ca"),  # type: ignore[arg-type]
            cert_pem=files.get("cert"),
            cert_key_pem=files.get("key"),
            server_cert_validation="validate",
            read_timeout_sec=s.read_timeout,
            operation_timeout_sec=s.operation_timeout,
            # Over HTTP every message is sealed by the authentication; over HTTPS TLS does it.
            message_encryption="always" if s.scheme == "http" else "never",
            proxy=None,
        )

    # ------------------------------------------------------------------ running

    def run_script(
        self, name: str, params: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """Run ``scripts/<name>.ps1`` with ``params`` and return its decoded ``result``."""
        script = envelope.build_script(name, dict(params or {})).encode("utf-8")
        limit = self.settings.script_timeout if timeout is None else timeout
        logger.debug("running %s on %s", name, self._where())
        try:
            with self._pem_files() as files:
                stdout, stderr, code = self._execute(self._protocol(files), script, limit, name)
        except ConnectorError as error:
            raise self._scrub(error) from None
        except Exception as error:  # every library failure becomes a typed, plain error
            raise self._scrub(self.translate(error)) from error
        try:
            return envelope.parse_reply(stdout, stderr, code, script=name)
        except ConnectorError as error:
            scrubbed = self._scrub(error)
            # The script ran: "Test connection" can tell PowerShell worked.
            scrubbed.script_ran = True  # type: ignore[attr-defined]
            raise scrubbed from None

    def _execute(
        self, protocol: Protocol, script: bytes, limit: float, name: str
    ) -> tuple[bytes, bytes, int]:
        shell = protocol.open_shell(codepage=65001, noprofile=True)
        command = None
        try:
            command = protocol.run_command(shell, envelope.EXECUTABLE, envelope.command_arguments())
            chunks = [script[i : i + STDIN_CHUNK] for i in range(0, len(script), STDIN_CHUNK)] or [b""]
            for index, chunk in enumerate(chunks):
                protocol.send_command_input(shell, command, chunk, end=index == len(chunks) - 1)
            return self._receive(protocol, shell, command, limit, name)
        finally:
            self._close(protocol, shell, command)

    def _receive(
        self, protocol: Protocol, shell: str, command: str, limit: float, name: str
    ) -> tuple[bytes, bytes, int]:
        # pywinrm's get_command_output would poll forever on a host that never finishes.
        deadline = time.monotonic() + limit
        out: list[bytes] = []
        err: list[bytes] = []
        while True:
            try:
                stdout, stderr, code, done = protocol.get_command_output_raw(shell, command)
            except WinRMOperationTimeoutError:
                stdout, stderr, code, done = b"", b"", 0, False
            out.append(stdout)
            err.append(stderr)
            if done:
                return b"".join(out), b"".join(err), code
            if time.monotonic() >= deadline:
                raise HostTimeout(
                    f"{name} did not finish on {self.settings.address} within {limit:g} seconds."
                )

    def _close(self, protocol: Protocol, shell: str, command: str | None) -> None:
        """Stop the command and drop the shell; a failure here must not hide the real one."""
        try:
            if command is not None:
                protocol.cleanup_command(shell, command)
            protocol.close_shell(shell)
        except Exception as error:  # best effort on a host that is already failing
            logger.debug("closing the WinRM shell on %s failed: %s", self._where(), type(error).__name__)
            with suppress(Exception):
                protocol.transport.close_session()

    # ------------------------------------------------------------------ test connection

    def _probe_network(self, done: list[Step]) -> None:
        """Resolve, connect and (HTTPS) check the certificate ourselves, so the page
        can say which of the three failed; raises the typed error of the first failure."""
        s = self.settings
        try:
            infos = socket.getaddrinfo(s.address, s.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            raise HostNotFound(f"The name {s.address} cannot be resolved.") from None
        addresses = sorted({str(info[4][0]) for info in infos})
        done.append(self._ok(STEP_RESOLVE, f"{s.address} is {', '.join(addresses[:3])}."))
        family, kind, proto, _name, sockaddr = infos[0]
        timeout = min(s.read_timeout, 10)
        try:
            sock = socket.socket(family, kind, proto)
            sock.settimeout(timeout)
            sock.connect(sockaddr)
        except ConnectionRefusedError:
            raise ConnectionRefused(
                f"{self._where()} refused the connection: WinRM is not listening."
            ) from None
        except TimeoutError:
            raise HostTimeout(
                f"Nothing answered on {self._where()} within {timeout} seconds.",
                ConnectionRefused.default_hint,
            ) from None
        except OSError as error:
            raise ConnectionFailed(f"Cannot connect to {self._where()}: {error.strerror or error}.") from None
        with sock:
            done.append(self._ok(STEP_CONNECT, f"Port {s.port} is open."))
            if s.scheme != "https":
                done.append(
                    Step(
                        STEP_TLS,
                        _label(STEP_TLS),
                        "skipped",
                        "Plain HTTP: each message is encrypted by the authentication instead.",
                    )
                )
                return
            # The same trust as the WinRM calls: the uploaded CA, else requests' CA bundle.
            if s.ca_pem:
                context = ssl.create_default_context(cadata=s.ca_pem)
            else:
                context = ssl.create_default_context(cafile=requests.certs.where())
            try:
                with context.wrap_socket(sock, server_hostname=s.address) as tls:
                    version = tls.version()
            except ssl.SSLError as error:
                raise _tls_problem(error) from None
            except OSError as error:
                raise ConnectionFailed(
                    f"The TLS handshake with {self._where()} failed: {error.strerror or error}."
                ) from None
        done.append(self._ok(STEP_TLS, f"The certificate is trusted and names {s.address} ({version})."))

    @staticmethod
    def _ok(key: str, message: str) -> Step:
        return Step(key, _label(key), "ok", message)

    def check_connection(self) -> tuple[list[Step], dict[str, Any] | None]:
        """Every step of "Test connection", and what the host said about itself."""
        steps: list[Step] = []
        try:
            self._probe_network(steps)
            facts = self.run_script("test-connection", {}, timeout=min(self.settings.script_timeout, 120))
            if not isinstance(facts, dict):
                raise ProtocolError("test-connection answered something that is not an object.")
        except HyperVError as error:
            return _failed_at(steps, error), None
        steps += _judge_facts(facts, self.settings)
        return _complete(steps), facts

    def test_steps(self) -> list[Step]:
        return self.check_connection()[0]


def _label(key: str) -> str:
    return dict(STEPS)[key]


def _complete(steps: list[Step]) -> list[Step]:
    """Steps in STEPS order; those never reached are "skipped"."""
    have = {step.key: step for step in steps}
    return [have.get(key) or Step(key, label, "skipped") for key, label in STEPS]


def _failed_at(done: list[Step], error: HyperVError) -> list[Step]:
    order = [key for key, _label in STEPS]
    failed_index = order.index(step_of(error)) if step_of(error) in order else order.index(STEP_POWERSHELL)
    have = {step.key: step for step in done}
    # An answer from WinRM proves authentication worked; a reply from the script proves
    # PowerShell ran. Steps after that and before the failure were never checked.
    proven = order.index(STEP_POWERSHELL if getattr(error, "script_ran", False) else STEP_AUTHENTICATE)
    out = []
    for index, (key, label) in enumerate(STEPS):
        if index < failed_index:
            out.append(have.get(key) or Step(key, label, "ok" if index <= proven else "skipped"))
        elif index == failed_index:
            out.append(Step(key, label, "failed", error.message, hint_of(error)))
        else:
            out.append(Step(key, label, "skipped"))
    return out


def _judge_facts(facts: dict[str, Any], settings: WinRMSettings) -> list[Step]:
    """The steps after a successful test-connection run (see test-connection.ps1)."""
    who = str(facts.get("user") or settings.username or "the account")
    steps = [
        WinRMTransport._ok(STEP_AUTHENTICATE, f"Signed in as {who} ({settings.auth})."),
        WinRMTransport._ok(
            STEP_POWERSHELL, f"PowerShell {facts.get('powershell_version', '?')} ran our script."
        ),
        WinRMTransport._ok(
            STEP_HYPERV,
            f"{facts.get('computer_name', '?')} runs Hyper-V on {facts.get('os_caption', 'Windows')}.",
        ),
    ]
    if facts.get("is_admin"):
        steps.append(WinRMTransport._ok(STEP_RIGHTS, f"{who} is a local Administrator."))
    else:
        steps.append(
            Step(
                STEP_RIGHTS,
                _label(STEP_RIGHTS),
                "warning",
                f"{who} is a member of Hyper-V Administrators but not a local Administrator.",
                "Reading disks through the administrative share (\\\\host\\C$) needs a local "
                "Administrator; add the account to the Administrators group.",
            )
        )
    return steps
