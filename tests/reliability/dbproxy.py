"""A TCP proxy that a test can cut: a database outage or a dropped SMB connection, for real.

The worker cluster (or the SMB client) is pointed at the proxy; the test process keeps
its own direct connection. ``cut()`` closes every proxied connection and refuses new
ones (what a restarted or unreachable server does to its clients); ``restore()`` lets
connections through again. ``downstream_bytes_per_second`` paces what the server sends
(a slower link), so that a test can cut a transfer part way.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time


class DatabaseProxy:
    def __init__(
        self, target_host: str, target_port: int, *, downstream_bytes_per_second: int | None = None
    ) -> None:
        self.target = (target_host, target_port)
        self.rate = downstream_bytes_per_second
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self._online = threading.Event()
        self._online.set()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._stopped = False
        self._thread = threading.Thread(target=self._accept, name="db-proxy", daemon=True)
        self._thread.start()

    def cut(self) -> None:
        self._online.clear()
        with self._lock:
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
            self._sockets.clear()

    def restore(self) -> None:
        self._online.set()

    def stop(self) -> None:
        self._stopped = True
        self.cut()
        with contextlib.suppress(OSError):
            self.listener.close()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self._online.is_set():
                client.close()  # connection refused, as far as the client can tell
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        pairs = {client: upstream, upstream: client}
        sent = 0
        began = time.monotonic()
        try:
            for sock in pairs:
                selector.register(sock, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select(timeout=1):
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = source.recv(65536)
                    if not data:
                        return
                    pairs[source].sendall(data)
                    if self.rate and source is upstream:
                        sent += len(data)
                        ahead = sent / self.rate - (time.monotonic() - began)
                        if ahead > 0:
                            time.sleep(ahead)
        except (OSError, ValueError):
            return
        finally:
            selector.close()
            for sock in pairs:
                with contextlib.suppress(OSError):
                    sock.close()
            with self._lock:
                self._sockets.difference_update(pairs)


TCPProxy = DatabaseProxy  # the same proxy, for the servers that are not a database
