"""Server side of WinRM authentication: NTLM by pyspnego's acceptor, and NTLM message encryption.

pywinrm (through requests-ntlm) answers a 401 carrying `WWW-Authenticate: Negotiate` with raw
NTLMSSP tokens (not SPNEGO-wrapped) under the `Negotiate` scheme. NTLM authenticates the
TCP connection, not a request: later requests on the keep-alive connection carry no
`Authorization` header, so the state here lives as long as the connection.
"""

from __future__ import annotations

import base64
import os
import struct
import threading
from pathlib import Path

import spnego
from spnego._ntlm_raw.messages import Authenticate, AvId, NTClientChallengeV2
from spnego.channel_bindings import GssChannelBindings
from spnego.exceptions import SpnegoError

# pyspnego's NTLM acceptor reads the user store from the environment variable NTLM_USER_FILE,
# when the context is made and again when the AUTHENTICATE message is checked. Endpoints
# in one process each have their own store, so the variable is set around those calls.
_USER_FILE_LOCK = threading.Lock()

ENCRYPTED_PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
_BOUNDARY = b"--Encrypted Boundary"
_NTLM_SIGNATURE_LENGTH = 16


class AuthenticationError(Exception):
    """The client's NTLM token was refused (wrong password, unknown user, bad bindings)."""


class EncryptionError(Exception):
    """An encrypted body that cannot be unsealed."""


def write_user_file(folder: Path, users: dict[str, str]) -> Path:
    """The NTLM_USER_FILE: one `DOMAIN:USER:PASSWORD` line per user (empty DOMAIN for `user`)."""
    lines = []
    for name, password in users.items():
        domain, _, user = name.rpartition("\\")
        lines.append(f"{domain}:{user}:{password}")
    path = folder / "ntlm-users"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class _UserFile:
    """Sets NTLM_USER_FILE to one endpoint's store for the duration of an acceptor call."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        _USER_FILE_LOCK.acquire()
        self._previous = os.environ.get("NTLM_USER_FILE")
        os.environ["NTLM_USER_FILE"] = str(self.path)

    def __exit__(self, *exc: object) -> None:
        if self._previous is None:
            os.environ.pop("NTLM_USER_FILE", None)
        else:
            os.environ["NTLM_USER_FILE"] = self._previous
        _USER_FILE_LOCK.release()


def parse_authorization(header: str) -> tuple[str, bytes] | None:
    """`Negotiate <b64>` or `NTLM <b64>` -> (scheme, token); anything else -> None."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() not in ("negotiate", "ntlm") or not value:
        return None
    try:
        return scheme, base64.b64decode(value.strip(), validate=True)
    except ValueError:
        return None


class NTLMConnection:
    """The NTLM acceptor state of one client connection."""

    def __init__(self, user_file: Path, channel_binding_data: bytes | None) -> None:
        self._user_file = _UserFile(user_file)
        self._channel_binding_data = channel_binding_data
        self._context: spnego.ContextProxy | None = None
        self.user: str | None = None

    @property
    def context(self) -> spnego.ContextProxy | None:
        """The completed security context (for message encryption), or None."""
        return self._context if self.user is not None else None

    def step(self, token: bytes) -> bytes | None:
        """Feed one client token; returns the server token (the challenge) or None when done."""
        if token.startswith(b"NTLMSSP\x00\x01\x00\x00\x00") or self._context is None:
            # A NEGOTIATE message starts over, even on an authenticated connection.
            self.user = None
            with self._user_file:
                self._context = spnego.server(protocol="ntlm")
        bindings = None
        if self._channel_binding_data is not None and _sends_channel_bindings(token):
            bindings = GssChannelBindings(application_data=self._channel_binding_data)
        try:
            with self._user_file:
                answer = self._context.step(token, channel_bindings=bindings)
        except SpnegoError as error:
            self._context = None
            raise AuthenticationError(str(error)) from error
        if self._context.complete:
            self.user = self._context.client_principal
        return answer

    def reset(self) -> None:
        self._context = None
        self.user = None


def _sends_channel_bindings(token: bytes) -> bool:
    """Whether an NTLMv2 AUTHENTICATE message carries MsvAvChannelBindings.

    Windows' default CbtHardeningLevel "Relaxed" checks the bindings a client sends and lets a
    client without them in (pywinrm with send_cbt=False); pyspnego's acceptor, given bindings,
    refuses such a client, so they are only handed over when the client sent its own.
    """
    if not token.startswith(b"NTLMSSP\x00\x03\x00\x00\x00"):
        return False
    try:
        response = Authenticate.unpack(token).nt_challenge_response or b""
        if len(response) <= 24:  # NTLMv1: no AV pairs at all
            return False
        pairs = NTClientChallengeV2.unpack(response[16:]).av_pairs
    except (ValueError, struct.error):
        return False
    # Windows clients without bindings send 16 zero bytes, which means "none" as well.
    return pairs.get(AvId.channel_bindings, b"\x00" * 16) != b"\x00" * 16


def is_encrypted(content_type: str) -> bool:
    return content_type.startswith("multipart/encrypted") and ENCRYPTED_PROTOCOL in content_type


def decrypt(context: spnego.ContextProxy, body: bytes) -> bytes:
    """Unseal a `multipart/encrypted` body (MS-WSMV 2.2.9.1.1) as pywinrm frames it."""
    parts = [part for part in body.split(_BOUNDARY + b"\r\n") if part]
    if len(parts) != 2:
        raise EncryptionError(f"expected 2 MIME parts, got {len(parts)}")
    header, payload = parts
    try:
        expected_length = int(header.split(b"Length=")[1].split(b"\r\n")[0])
    except (IndexError, ValueError) as error:
        raise EncryptionError("no OriginalContent length") from error
    if payload.endswith(_BOUNDARY + b"--\r\n"):
        payload = payload[: -len(_BOUNDARY + b"--\r\n")]
    prefix = b"\tContent-Type: application/octet-stream\r\n"
    if not payload.startswith(prefix) or len(payload) < len(prefix) + 4:
        raise EncryptionError("no application/octet-stream part")
    payload = payload[len(prefix) :]
    (signature_length,) = struct.unpack("<i", payload[:4])
    signature = payload[4 : 4 + signature_length]
    sealed = payload[4 + signature_length :]
    try:
        data = context.unwrap(signature + sealed).data
    except SpnegoError as error:
        raise EncryptionError(f"cannot unseal: {error}") from error
    if len(data) != expected_length:
        raise EncryptionError(f"length {len(data)} != OriginalContent length {expected_length}")
    return data


def encrypt(context: spnego.ContextProxy, data: bytes) -> tuple[bytes, str]:
    """Seal a reply; returns (body, Content-Type)."""
    wrapped = context.wrap(data, encrypt=True).data
    signature, sealed = wrapped[:_NTLM_SIGNATURE_LENGTH], wrapped[_NTLM_SIGNATURE_LENGTH:]
    original_content = b"type=application/soap+xml;charset=UTF-8;Length=%d" % len(data)
    body = b"".join(
        [
            _BOUNDARY + b"\r\n",
            b"\tContent-Type: " + ENCRYPTED_PROTOCOL.encode() + b"\r\n",
            b"\tOriginalContent: " + original_content + b"\r\n",
            _BOUNDARY + b"\r\n",
            b"\tContent-Type: application/octet-stream\r\n",
            struct.pack("<i", len(signature)) + signature + sealed,
            _BOUNDARY + b"--\r\n",
        ]
    )
    content_type = f'multipart/encrypted;protocol="{ENCRYPTED_PROTOCOL}";boundary="Encrypted Boundary"'
    return body, content_type
