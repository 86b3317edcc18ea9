"""A loopback TCP proxy a test controls: cut, restore, delay, or hold connections half-open.

It sits between a client and one etcd member so a test can break the network on purpose:
``cut()`` resets every connection and refuses new ones (like a dead link), ``blackhole()``
keeps connections open but forwards nothing (a half-open link: no FIN, no RST), ``delay(s)``
adds latency per chunk, ``restore()`` returns to normal.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from typing import Self

from .ports import free_port

_CHUNK = 65536


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``upstream`` (host:port) until closed."""

    def __init__(self, upstream: str, port: int | None = None) -> None:
        host, _, upstream_port = upstream.rpartition(":")
        self.upstream = (host or "127.0.0.1", int(upstream_port))
        self.port = port or free_port()
        self._mode = "pass"  # pass | cut | blackhole
        self._delay = 0.0
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._closed = threading.Event()
        self._server = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._server.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:PORT`` to hand to the client under test."""
        return f"127.0.0.1:{self.port}"

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until ``restore``."""
        with self._lock:
            self._mode = "cut"
            conns = list(self._conns)
        for conn in conns:
            _reset(conn)

    def blackhole(self) -> None:
        """Keep connections open but forward nothing (a frozen peer: no FIN, no RST)."""
        with self._lock:
            self._mode = "blackhole"

    def delay(self, seconds: float) -> None:
        """Add ``seconds`` of latency to every forwarded chunk."""
        self._delay = seconds

    def restore(self) -> None:
        """Forward normally again (connections cut earlier stay closed)."""
        with self._lock:
            self._mode = "pass"
        self._delay = 0.0

    def close(self) -> None:
        """Stop the proxy and close every connection."""
        self._closed.set()
        self.cut()
        self._server.close()
        self._thread.join(2)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            if self._mode == "cut":
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=2)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(_CHUNK)
                if not data:
                    break
                while self._mode == "blackhole" and not self._closed.is_set():
                    time.sleep(0.05)
                if self._mode == "cut" or self._closed.is_set():
                    break
                if self._delay:
                    time.sleep(self._delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                _reset(sock)
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)


def _reset(sock: socket.socket) -> None:
    # SO_LINGER 0 makes close() send RST: the peer sees the link die at once.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()
