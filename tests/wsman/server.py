"""`WSManEndpoint`: a WS-Management listener on 127.0.0.1 that pywinrm talks to for real.

HTTPS (test CA) or plain HTTP with mandatory NTLM message encryption; NTLM by pyspnego's
acceptor, or a client certificate mapped to a user. What the commands do is the `Handler`.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import shutil
import socket
import socketserver
import ssl
import struct
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.wsman import auth, soap
from tests.wsman import tls as certificates
from tests.wsman.shell import Answer, CommandRequest, Handler, ShellService

CERTIFICATE_AUTHORIZATION = "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/mutual"
# Windows' default MaxEnvelopeSizekb; larger requests get HTTP 413.
DEFAULT_MAX_ENVELOPE_KB = 500
_STOP_GRACE_SECONDS = 0.8


@dataclass(frozen=True)
class Exchange:
    """One HTTP request as the endpoint saw it (for tests that check the protocol itself)."""

    connection: int  # a number per TCP connection
    status: int
    authorization: str  # "", "Negotiate", "NTLM", "certificate"
    encrypted: bool
    action: str  # the SOAP action's last segment, "" when there was no SOAP body
    user: str


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    endpoint: WSManEndpoint

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can stall on DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def verify_request(self, request: Any, client_address: Any) -> bool:
        if self.endpoint.refuse_all:
            # Reset instead of a polite close: the client sees the connection dropped, as
            # against a host whose WinRM service is stopped behind a listening proxy.
            request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        return True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that drop connections or fail the TLS handshake are expected in these
        # tests; keep the record for assertions instead of printing tracebacks.
        self.endpoint._record_connection_error()


class _RequestHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: NTLM authenticates the connection
    server: _Server

    def setup(self) -> None:
        endpoint = self.server.endpoint
        self.connection_number = endpoint._connection_opened(self.request)
        self.ntlm: auth.NTLMConnection | None = None
        self.user: str | None = None
        if endpoint._ssl_context is not None:
            raw = self.request
            self.request = endpoint._ssl_context.wrap_socket(raw, server_side=True)
            endpoint._connection_replaced(raw, self.request)
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.endpoint._connection_closed(self.request)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def version_string(self) -> str:
        return "Microsoft-HTTPAPI/2.0"  # what a Windows listener (HTTP.sys) answers

    # -- HTTP --------------------------------------------------------------------------

    def _send(self, status: int, body: bytes = b"", headers: list[tuple[str, str]] | None = None) -> None:
        self.send_response(status)
        for name, value in headers or []:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self) -> bytes | None:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return None
        return self.rfile.read(int(length))

    def do_POST(self) -> None:
        endpoint = self.server.endpoint
        body = self._read_body()
        if body is None:
            self.close_connection = True
            self._send(411)
            return
        if self.path.split("?")[0].rstrip("/").lower() != "/wsman":
            self._send(404)
            return
        try:
            self._post(endpoint, body)
        except (ConnectionError, ssl.SSLError, TimeoutError):
            raise
        except Exception:
            # Never let a bug here kill the connection thread silently: answer 500 and keep
            # the traceback for the test to see.
            endpoint._record_connection_error()
            self.close_connection = True
            self._send(500)

    def _post(self, endpoint: WSManEndpoint, body: bytes) -> None:
        authorization = self.headers.get("Authorization", "")
        scheme = self._authenticate(endpoint, authorization)
        if scheme is None:
            return
        user = self.user or ""
        content_type = self.headers.get("Content-Type", "")
        encrypted = auth.is_encrypted(content_type)

        def answer(status: int, reply: bytes, action: str = "") -> None:
            endpoint._log(Exchange(self.connection_number, status, scheme, encrypted, action, user))
            context = self.ntlm.context if self.ntlm is not None else None
            if encrypted and reply and context is not None:
                sealed, sealed_type = auth.encrypt(context, reply)
                self._send(status, sealed, [("Content-Type", sealed_type)])
            elif reply:
                self._send(status, reply, [("Content-Type", "application/soap+xml;charset=UTF-8")])
            else:
                self._send(status)

        if encrypted:
            context = self.ntlm.context if self.ntlm is not None else None
            if context is None:
                answer(400, b"")
                return
            try:
                payload = auth.decrypt(context, body)
            except auth.EncryptionError:
                encrypted = False
                answer(400, b"")
                return
        elif body and endpoint._ssl_context is None:
            # AllowUnencrypted=false (the Windows default): a readable SOAP body over HTTP is
            # refused with an empty 500.
            answer(500, b"")
            return
        else:
            payload = body
        if not payload:
            answer(200, b"")  # pywinrm's empty POST that sets up message encryption
            return
        if len(payload) > endpoint.max_envelope_kb * 1024:
            answer(413, b"")
            return
        try:
            request = soap.parse_request(payload)
        except soap.MalformedRequest as error:
            reply = soap.fault(
                "",
                code="s:Sender",
                subcode="w:SchemaValidationError",
                reason=f"The WS-Management service cannot process the request: {error}",
                wsman_code=soap.CODE_INVALID_XML,
            )
            answer(400, reply)
            return
        action = request.action.rsplit("/", 1)[-1]
        if endpoint.stall_seconds and endpoint._stopping.wait(endpoint.stall_seconds):
            return
        if endpoint.access_denied or user.lower() in {name.lower() for name in endpoint.access_denied_users}:
            reply = soap.fault(
                request.message_id,
                code="s:Sender",
                subcode="w:AccessDenied",
                reason="Access is denied.",
                wsman_code=soap.CODE_ACCESS_DENIED,
            )
            answer(500, reply, action)
            return
        result: Answer = endpoint._shells.dispatch(request, user)
        answer(result.status, result.body, action)

    def _authenticate(self, endpoint: WSManEndpoint, authorization: str) -> str | None:
        """The scheme that authenticated this request, or None after answering 401."""
        challenge = [("WWW-Authenticate", "Negotiate")]
        if authorization == CERTIFICATE_AUTHORIZATION:
            user = self._certificate_user(endpoint)
            if user is None:
                self._unauthorized(endpoint, "certificate", challenge)
                return None
            self.user = user
            return "certificate"
        parsed = auth.parse_authorization(authorization) if authorization else None
        if parsed is not None:
            scheme, token = parsed
            if self.ntlm is None:
                self.ntlm = auth.NTLMConnection(endpoint._user_file, endpoint._channel_binding_data)
            try:
                out = self.ntlm.step(token)
            except auth.AuthenticationError:
                self.user = None
                self._unauthorized(endpoint, scheme, challenge)
                return None
            if self.ntlm.user is None:
                token_text = base64.b64encode(out or b"").decode()
                self._unauthorized(endpoint, scheme, [("WWW-Authenticate", f"{scheme} {token_text}")])
                return None
            self.user = self.ntlm.user
            return scheme
        if authorization:
            self._unauthorized(endpoint, "", challenge)
            return None
        if self.user is not None:
            return "" if self.ntlm is not None else "certificate"
        self._unauthorized(endpoint, "", challenge)
        return None

    def _unauthorized(self, endpoint: WSManEndpoint, scheme: str, headers: list[tuple[str, str]]) -> None:
        endpoint._log(Exchange(self.connection_number, 401, scheme, False, "", ""))
        self._send(401, b"", headers)

    def _certificate_user(self, endpoint: WSManEndpoint) -> str | None:
        if endpoint._ssl_context is None or endpoint.client_cert_users is None:
            return None
        der = self.connection.getpeercert(binary_form=True)
        if not der:
            return None
        # Thumbprints as Windows prints them, in any case, with or without separators.
        mapping = {_normalise_key(key): user for key, user in endpoint.client_cert_users.items()}
        by_thumbprint = mapping.get(_normalise_key(certificates.fingerprint(der)))
        return by_thumbprint or mapping.get(_normalise_key(certificates.subject_common_name(der)))


def _normalise_key(key: str) -> str:
    return "".join(key.split()).replace(":", "").upper()


class WSManEndpoint:
    """A WS-Management endpoint on 127.0.0.1:<free port>, used as a context manager.

    Knobs for failure tests (set at any time): `refuse_all` (connections are reset, like a
    host without WinRM), `access_denied` / `access_denied_users` (HTTP 500 fault code 5, as
    for an account outside Administrators / Remote Management Users), `stall_seconds` (every
    SOAP answer is held back, a host that does not answer: the client's read timeout),
    `max_envelope_kb` (Windows' MaxEnvelopeSizekb).
    """

    def __init__(
        self,
        handler: Handler,
        *,
        tls: bool,
        users: dict[str, str],
        client_cert_users: dict[str, str] | None = None,
    ) -> None:
        self.handler = handler
        self.tls = tls
        self.users = dict(users)
        self.client_cert_users = dict(client_cert_users) if client_cert_users is not None else None
        self.refuse_all = False
        self.access_denied = False
        self.access_denied_users: set[str] = set()
        self.stall_seconds = 0.0
        self.max_envelope_kb = DEFAULT_MAX_ENVELOPE_KB
        self._folder = Path(tempfile.mkdtemp(prefix="wsman-"))
        self._ca = certificates.TestCA()
        self.ca_file = self._folder / "ca.pem"
        self.ca_file.write_bytes(self._ca.cert_pem)
        self._user_file = auth.write_user_file(self._folder, self.users)
        self._stopping = threading.Event()
        self._shells = ShellService(handler, self._stopping)
        self._lock = threading.Lock()
        self._connections: dict[int, socket.socket] = {}
        self._connection_count = 0
        self._threads: list[threading.Thread] = []
        self._exchanges: list[Exchange] = []
        self.connection_errors: list[BaseException] = []
        self._ssl_context: ssl.SSLContext | None = None
        self._channel_binding_data: bytes | None = None
        if tls:
            self._ssl_context, server_der = certificates.server_context(
                self._ca, self._folder, ask_client_cert=client_cert_users is not None
            )
            self._channel_binding_data = certificates.tls_server_end_point(server_der)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- public ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None, "the endpoint is not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/wsman"

    @property
    def ca_pem(self) -> str:
        return self._ca.cert_pem.decode()

    def client_cert(self, user: str, *, mapped: bool = True) -> tuple[str, str]:
        """A client certificate signed by the test CA, mapped to `user` by its thumbprint."""
        cert_pem, key_pem = self._ca.client_cert(user)
        if mapped:
            assert self.client_cert_users is not None, "certificate authentication is not enabled"
            der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
            self.client_cert_users[certificates.fingerprint(der)] = user
        return cert_pem.decode(), key_pem.decode()

    @property
    def requests(self) -> list[CommandRequest]:
        with self._shells._lock:
            return list(self._shells.requests)

    @property
    def exchanges(self) -> list[Exchange]:
        with self._lock:
            return list(self._exchanges)

    @property
    def handler_errors(self) -> list[str]:
        with self._shells._lock:
            return list(self._shells.handler_errors)

    def open_shells(self) -> int:
        return self._shells.open_shells()

    def start(self) -> WSManEndpoint:
        server = _Server(("127.0.0.1", 0), _RequestHandler, bind_and_activate=False)
        server.endpoint = self
        server.allow_reuse_address = True
        server.server_bind()
        server.server_activate()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="wsman-endpoint", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        with self._lock:
            connections = list(self._connections.values())
        for connection in connections:
            # The plain socket call: SSLSocket.shutdown would drop its TLS state under a
            # thread that is still reading from it.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(connection, socket.SHUT_RDWR)
        self._server.block_on_close = False  # joined below, with a deadline
        self._server.server_close()
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        with self._lock:
            threads = list(self._threads)
        if self._thread is not None:
            threads.append(self._thread)
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        self._server = None
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> WSManEndpoint:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- used by the request handler ---------------------------------------------------

    def _connection_opened(self, connection: socket.socket) -> int:
        with self._lock:
            self._connection_count += 1
            self._connections[id(connection)] = connection
            self._threads = [thread for thread in self._threads if thread.is_alive()]
            self._threads.append(threading.current_thread())
            return self._connection_count

    def _connection_replaced(self, old: socket.socket, new: socket.socket) -> None:
        with self._lock:
            self._connections.pop(id(old), None)
            self._connections[id(new)] = new

    def _connection_closed(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.pop(id(connection), None)

    def _record_connection_error(self) -> None:
        error = sys.exc_info()[1]
        if error is not None:
            with self._lock:
                self.connection_errors.append(error)

    def _log(self, exchange: Exchange) -> None:
        with self._lock:
            self._exchanges.append(exchange)
