"""The data path of the Hyper-V connector: VM files read and written over SMB.

Host paths come from the PowerShell scripts as Windows paths; ``SMBSettings.to_unc``
turns them into UNC paths the way an administrator would reach them from another
machine:

- ``\\\\fileserver\\share\\...`` (a VM on an SMB 3 share) is used as is;
- ``C:\\ClusterStorage\\Volume1\\...`` (a CSV) goes through the admin share of the node
  that owns the VM (the CSV is mounted under C: on every node);
- ``D:\\Hyper-V\\...`` goes through the host's admin share ``\\\\host\\D$\\...``;
- explicit ``path_rules`` (a Windows prefix -> a UNC prefix) come first, for hosts
  whose admin shares are disabled.

``SMBFileReader`` is the seekable, read-only file object a backup reads: large
sequential reads are split into several requests sent before the first answer is
awaited (SMB credits permitting), and every byte received is counted so that tests
and job logs can tell how much really crossed the wire. ``SMBClient.write_file``
writes a restore: temporary name, then a rename over the final name.

Every smbprotocol failure becomes an ``SMBError`` whose message names the share or
file and says what went wrong in plain words; passwords never appear in messages.
"""

from __future__ import annotations

import contextlib
import io
import ntpath
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import smbclient
from smbprotocol.exceptions import (
    SMBAuthenticationError,
    SMBConnectionClosed,
    SMBException,
    SMBOSError,
    SMBResponseException,
)
from smbprotocol.header import NtStatus
from smbprotocol.open import (
    CreateDisposition,
    CreateOptions,
    FileAttributes,
    FilePipePrinterAccessMask,
    ImpersonationLevel,
    Open,
    ShareAccess,
)
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

from protection.connectors.protocol import ConnectorError, HostUnreachable

KiB = 1024
MiB = 1024 * KiB
CREDIT_SIZE = 64 * KiB  # one SMB credit pays for 64 KiB of a read or write

_DRIVE_RE = re.compile(r"^([A-Za-z]):\\(.*)$")
_CSV_RE = re.compile(r"^[A-Za-z]:\\ClusterStorage\\", re.IGNORECASE)


# --------------------------------------------------------------------------- errors


class SMBError(ConnectorError):
    """An SMB operation failed; the message says which share or file and why."""


class SMBHostUnreachable(HostUnreachable):
    pass


class SMBLogonFailure(SMBError):
    pass


class SMBAccessDenied(SMBError):
    pass


class SMBShareNotFound(SMBError):
    pass


class SMBPathNotFound(SMBError):
    pass


_STATUS_ERRORS: dict[int, tuple[type[SMBError], str]] = {
    NtStatus.STATUS_LOGON_FAILURE: (SMBLogonFailure, "the user name or password was refused"),
    NtStatus.STATUS_ACCESS_DENIED: (SMBAccessDenied, "access is denied to this account"),
    NtStatus.STATUS_BAD_NETWORK_NAME: (SMBShareNotFound, "the share does not exist on the server"),
    NtStatus.STATUS_OBJECT_NAME_NOT_FOUND: (SMBPathNotFound, "the file does not exist"),
    NtStatus.STATUS_OBJECT_PATH_NOT_FOUND: (SMBPathNotFound, "a folder of the path does not exist"),
    NtStatus.STATUS_SHARING_VIOLATION: (SMBAccessDenied, "the file is in use by another process"),
}


def smb_error(exc: BaseException, what: str) -> ConnectorError:
    """A plain-language connector error for an smbprotocol (or socket) failure on ``what``."""
    if isinstance(exc, ConnectorError):
        return exc
    status = getattr(exc, "status", None) if isinstance(exc, SMBResponseException) else None
    if status is None and isinstance(exc, SMBOSError):
        status = exc.ntstatus
    if status in _STATUS_ERRORS:
        cls, why = _STATUS_ERRORS[status]
        return cls(f"{what}: {why}")
    if isinstance(exc, SMBAuthenticationError):
        return SMBLogonFailure(f"{what}: the user name or password was refused")
    if isinstance(exc, ValueError) and "Failed to connect" in str(exc):
        return SMBHostUnreachable(f"{what}: the SMB port cannot be reached ({_reason(exc)})")
    if isinstance(exc, (TimeoutError, ConnectionError, SMBConnectionClosed)):
        # SMBConnectionClosed: the link dropped or the server went away mid-transfer.
        return SMBHostUnreachable(f"{what}: the connection to the SMB server was lost ({exc})")
    return SMBError(f"{what}: {_reason(exc)}")


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class SMBSettings:
    server: str  # the host's name or address, as the admin share is reached
    username: str
    password: str = field(repr=False)
    port: int = 445
    # (Windows path prefix, UNC prefix), tried before the built-in rules, longest first.
    path_rules: tuple[tuple[str, str], ...] = ()
    # Where to connect for a server name found in a UNC path (cluster node -> address).
    addresses: Mapping[str, str] = field(default_factory=dict)
    encrypt: bool | None = None  # None: whatever the server asks for
    connection_timeout: float = 30.0
    read_size: int = 1 * MiB  # largest single read request
    reads_in_flight: int = 8  # bounded read-ahead window (requests)

    def to_unc(self, path: str, owner_node: str | None = None) -> str:
        """The UNC path of a host path (see the module docstring for the rules)."""
        windows = path.replace("/", "\\")
        for prefix, unc in sorted(self.path_rules, key=lambda r: -len(r[0])):
            prefix = prefix.replace("/", "\\").rstrip("\\")
            if windows.lower() == prefix.lower() or windows.lower().startswith(prefix.lower() + "\\"):
                rest = windows[len(prefix) :].lstrip("\\")
                return unc.rstrip("\\") + ("\\" + rest if rest else "")
        if windows.startswith("\\\\"):
            return windows
        match = _DRIVE_RE.match(windows)
        if not match:
            raise SMBError(f"{path!r} is neither a local path of the host nor a UNC path")
        drive, rest = match.groups()
        server = (owner_node or self.server) if _CSV_RE.match(windows) else self.server
        return f"\\\\{server}\\{drive.upper()}$\\{rest}"

    def address_of(self, server: str) -> str:
        for name, address in self.addresses.items():
            if name.lower() == server.lower():
                return address
        return server


def split_unc(unc: str) -> tuple[str, str, str]:
    """``\\\\server\\share\\a\\b`` -> ("server", "share", "a\\b")."""
    if not unc.startswith("\\\\"):
        raise SMBError(f"{unc!r} is not a UNC path")
    parts = unc[2:].split("\\", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise SMBError(f"{unc!r} does not name a server and a share")
    return parts[0], parts[1], parts[2] if len(parts) > 2 else ""


# --------------------------------------------------------------------------- client


class ByteCounter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n


class SMBClient:
    """Connections, sessions and tree connects to the servers of one host, reused."""

    def __init__(self, settings: SMBSettings):
        self.settings = settings
        self.bytes_read = ByteCounter()  # payload bytes received by every reader of this client
        self.bytes_written = ByteCounter()
        self._lock = threading.Lock()
        self._trees: dict[tuple[str, str], TreeConnect] = {}
        # A private pool: smbclient's global one would share a logged-on session with any
        # other client of the same server, whatever credentials that client was given.
        self._cache: dict[str, Any] = {}

    # -- connection ---------------------------------------------------------
    def _session(self, server: str) -> Session:
        address = self.settings.address_of(server)
        try:
            return smbclient.register_session(
                address,
                username=self.settings.username or None,
                password=self.settings.password or None,
                port=self.settings.port,
                encrypt=self.settings.encrypt,
                connection_timeout=self.settings.connection_timeout,
                connection_cache=self._cache,
            )
        except Exception as exc:
            raise smb_error(exc, f"SMB logon to {server} as {self.settings.username}") from None

    def _tree(self, server: str, share: str) -> TreeConnect:
        key = (server.lower(), share.lower())
        with self._lock:
            tree = self._trees.get(key)
            if tree is not None and tree.session.connection.transport.connected:
                return tree
            session = self._session(server)
            tree = TreeConnect(session, f"\\\\{self.settings.address_of(server)}\\{share}")
            try:
                tree.connect()
            except Exception as exc:
                raise smb_error(exc, f"share \\\\{server}\\{share}") from None
            self._trees[key] = tree
            return tree

    def _kwargs(self, unc: str) -> tuple[str, dict[str, Any]]:
        """The path as smbclient must see it (server replaced by its address) + kwargs."""
        server, share, rest = split_unc(unc)
        self._session(server)
        address = self.settings.address_of(server)
        path = f"\\\\{address}\\{share}" + (f"\\{rest}" if rest else "")
        return path, {"port": self.settings.port, "connection_cache": self._cache}

    def __enter__(self) -> SMBClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            trees, self._trees = list(self._trees.values()), {}
        for tree in trees:
            with contextlib.suppress(Exception):
                tree.disconnect()
        with contextlib.suppress(Exception):
            smbclient.reset_connection_cache(connection_cache=self._cache)

    # -- reading ------------------------------------------------------------
    def open_read(self, unc: str, plan: list[tuple[int, int]] | None = None) -> SMBFileReader:
        """A reader of ``unc``; ``plan`` (sorted (offset, length) ranges) is where the caller
        will read, when it knows: read-ahead then never strays outside it."""
        server, share, rest = split_unc(unc)
        if not rest:
            raise SMBError(f"{unc} names a share, not a file")
        tree = self._tree(server, share)
        handle = Open(tree, rest)
        try:
            handle.create(
                ImpersonationLevel.Impersonation,
                FilePipePrinterAccessMask.FILE_READ_DATA
                | FilePipePrinterAccessMask.FILE_READ_ATTRIBUTES
                | FilePipePrinterAccessMask.SYNCHRONIZE,
                FileAttributes.FILE_ATTRIBUTE_NORMAL,
                # The VM's worker process keeps its disks open; never ask for more than it allows.
                ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE | ShareAccess.FILE_SHARE_DELETE,
                CreateDisposition.FILE_OPEN,
                CreateOptions.FILE_NON_DIRECTORY_FILE,
            )
        except Exception as exc:
            raise smb_error(exc, unc) from None
        return SMBFileReader(self, unc, handle, plan)

    def opener(
        self, unc: str, plan: Callable[[], list[tuple[int, int]] | None] | None = None
    ) -> Callable[[], BinaryIO]:
        def open_file() -> BinaryIO:
            return self.open_read(unc, plan() if plan else None)  # type: ignore[return-value]

        return open_file

    def stat_size(self, unc: str) -> int:
        path, kwargs = self._kwargs(unc)
        try:
            return int(smbclient.stat(path, **kwargs).st_size)
        except Exception as exc:
            raise smb_error(exc, unc) from None

    def exists(self, unc: str) -> bool:
        path, kwargs = self._kwargs(unc)
        try:
            smbclient.stat(path, **kwargs)
        except Exception as exc:
            err = smb_error(exc, unc)
            if isinstance(err, SMBPathNotFound):
                return False
            raise err from None
        return True

    # -- writing ------------------------------------------------------------
    def makedirs(self, unc: str) -> None:
        path, kwargs = self._kwargs(unc)
        try:
            smbclient.makedirs(path, exist_ok=True, **kwargs)
        except Exception as exc:
            raise smb_error(exc, unc) from None

    def remove(self, unc: str) -> None:
        path, kwargs = self._kwargs(unc)
        try:
            smbclient.remove(path, **kwargs)
        except Exception as exc:
            err = smb_error(exc, unc)
            if not isinstance(err, SMBPathNotFound):
                raise err from None

    def write_file(
        self,
        unc: str,
        source: BinaryIO,
        size: int | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> int:
        """Copy ``source`` to ``unc`` (folders created), replacing an existing file only
        once the new one is complete: written under a temporary name, then renamed."""
        folder = ntpath.dirname(unc)
        self.makedirs(folder)
        tmp = f"{folder}\\.{uuid.uuid4().hex[:12]}.restoring"
        tmp_path, kwargs = self._kwargs(tmp)
        final_path, _ = self._kwargs(unc)
        block = 4 * MiB
        zero = bytes(block)
        written = 0
        try:
            with smbclient.open_file(tmp_path, mode="xb", buffering=0, **kwargs) as out:
                while size is None or written < size:
                    want = block if size is None else min(block, size - written)
                    data = source.read(want)
                    if not data:
                        if size is not None:
                            raise SMBError(f"{unc}: the data ended after {written} of {size} bytes")
                        break
                    if data != zero[: len(data)]:  # all-zero blocks stay holes
                        out.seek(written)
                        out.write(data)
                        self.bytes_written.add(len(data))
                    written += len(data)
                    if on_bytes is not None:
                        on_bytes(len(data))
                out.truncate(written)
            smbclient.replace(tmp_path, final_path, **kwargs)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                smbclient.remove(tmp_path, **kwargs)
            if isinstance(exc, (SMBException, OSError, ValueError)):
                raise smb_error(exc, unc) from None
            raise
        return written


# --------------------------------------------------------------------------- reader


class SMBFileReader(io.RawIOBase):
    """A read-only, seekable view of one remote file.

    Each ``readinto`` is split into requests of at most ``read_size`` that are all
    sent before the first reply is awaited. Once the caller has read 4 MiB in one
    sequential run, requests for what follows are kept in flight (at most
    ``reads_in_flight``) so the server streams while the caller hashes; a seek
    elsewhere drops them. The read-ahead costs at most one window per run, and
    nothing outside the caller's ``plan`` when one is given.
    """

    SEQUENTIAL_TRIGGER = 4 * MiB

    def __init__(self, client: SMBClient, unc: str, handle: Open, plan: list[tuple[int, int]] | None = None):
        super().__init__()
        self.client = client
        self.unc = unc
        self._open = handle
        self.size = int(handle.end_of_file)
        self._pos = 0
        self.bytes_read = 0  # received over the wire for this file
        conn = handle.connection
        self._piece = max(CREDIT_SIZE, min(client.settings.read_size, conn.max_read_size))
        self._window = max(1, client.settings.reads_in_flight)
        self._pending: deque[tuple[int, int, Any]] = deque()  # (offset, length, request)
        self._buffer = b""  # received data starting at _buffer_off
        self._buffer_off = 0
        self._run = 0  # bytes read sequentially up to _pos
        self._plan = sorted((o, o + n) for o, n in plan) if plan is not None else None

    # -- io.RawIOBase -------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        if pos != self._pos:
            self._run = 0
        self._pos = pos
        return pos

    def readinto(self, b: Any) -> int:
        if self.closed:
            raise ValueError("I/O operation on a closed SMB file")
        view = memoryview(b).cast("B")
        want = min(len(view), max(0, self.size - self._pos))
        if want == 0:
            return 0
        got = 0
        try:
            while got < want:
                chunk = self._next(self._pos + got, want - got)
                if not chunk:
                    break
                view[got : got + len(chunk)] = chunk
                got += len(chunk)
            self._run += got
            if self._run >= self.SEQUENTIAL_TRIGGER:
                self._read_ahead(self._pos + got)
        except (SMBException, OSError, ValueError) as exc:
            self._drop_pending()
            raise smb_error(exc, f"reading {self.unc} at offset {self._pos + got}") from None
        self._pos += got
        return got

    def readall(self) -> bytes:
        out = bytearray()
        while True:
            block = self.read(self._piece)
            if not block:
                return bytes(out)
            out += block

    def close(self) -> None:
        if not self.closed:
            try:
                self._drop_pending()
                with contextlib.suppress(Exception):
                    self._open.close()
            finally:
                super().close()

    # -- requests -----------------------------------------------------------
    def _next(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset``: from the buffer, the window, or new requests."""
        end_buf = self._buffer_off + len(self._buffer)
        if self._buffer and self._buffer_off <= offset < end_buf:
            start = offset - self._buffer_off
            return self._buffer[start : start + length]
        if self._pending and self._pending[0][0] != offset:
            self._drop_pending()  # the caller went elsewhere: the read-ahead is useless
        if not self._pending:
            self._send_range(offset, length)
        req_off, _req_len, request = self._pending.popleft()
        data = self._receive(request)
        self._buffer, self._buffer_off = data, req_off
        if not data:
            return b""
        return data[:length]

    def _send_range(self, offset: int, length: int) -> None:
        """Requests for [offset, offset+length), all sent before any reply is read."""
        end = min(offset + length, self.size)
        pos = offset
        while pos < end:
            sent = self._send(pos, min(self._piece, end - pos))
            if not sent:
                break  # no credits left: what was sent is enough to go on
            pos += sent

    def _read_ahead(self, after: int) -> None:
        nxt = self._pending[-1][0] + self._pending[-1][1] if self._pending else after
        if not self._pending:
            end_buf = self._buffer_off + len(self._buffer)
            nxt = max(after, end_buf) if self._buffer_off <= after <= end_buf else after
        limit = self.size
        if self._plan is not None:
            # Only inside the planned range the caller is reading through.
            limit = next((min(e, self.size) for s, e in self._plan if s <= after < e), after)
        while len(self._pending) < self._window and nxt < limit:
            sent = self._send(nxt, min(self._piece, limit - nxt))
            if not sent:
                break
            nxt += sent

    def _send(self, offset: int, length: int) -> int:
        """Send one read request if the credits allow; the bytes it asks for (0: none sent)."""
        conn = self._open.connection
        charge = -(-length // CREDIT_SIZE)
        with conn.sequence_lock:
            available = conn.sequence_window["high"] - conn.sequence_window["low"]
        if available < charge:
            if self._pending:
                return 0  # wait for replies: each one brings credits back
            # Nothing in flight: read what the credits we have pay for.
            length = min(length, max(1, available) * CREDIT_SIZE)
            charge = -(-length // CREDIT_SIZE)
        tree = self._open.tree_connect
        message, _receive = self._open.read(offset, length, send=False)
        # Ask for more credits than this read costs so the window can grow.
        request = conn.send(
            message, tree.session.session_id, tree.tree_connect_id, credit_request=charge + self._window
        )
        self._pending.append((offset, length, request))
        return length

    def _receive(self, request: Any) -> bytes:
        try:
            data = self._open._read_response(request)
        except SMBResponseException as exc:
            if exc.status == NtStatus.STATUS_END_OF_FILE:
                return b""
            raise
        self.bytes_read += len(data)
        self.client.bytes_read.add(len(data))
        return data

    def _drop_pending(self) -> None:
        """Collect the replies of requests nobody wants any more (they must be received)."""
        while self._pending:
            _off, _len, request = self._pending.popleft()
            with contextlib.suppress(Exception):
                self._receive(request)
        self._buffer, self._buffer_off = b"", 0


def client_for(smb: SMBClient | SMBSettings | None) -> tuple[SMBClient, bool]:
    """(client, owned): a client made here from settings is the caller's to close."""
    if smb is None:
        raise SMBError(
            "No credentials for the host's admin share: the VM files cannot be read or written. "
            "Give SMB credentials for this host (certificate authentication does not cover SMB)."
        )
    if isinstance(smb, SMBClient):
        return smb, False
    return SMBClient(smb), True


@contextlib.contextmanager
def smb_client(smb: SMBClient | SMBSettings | None) -> Iterator[SMBClient]:
    client, owned = client_for(smb)
    try:
        yield client
    finally:
        if owned:
            client.close()
