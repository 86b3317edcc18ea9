"""Free TCP ports on loopback for etcd client/peer listeners."""

from __future__ import annotations

import socket
import threading

LOOPBACK = "127.0.0.1"

# Ports already handed out by this process.  The kernel may return a port again
# once our probe socket is closed, and etcd binds it a few hundred ms later; never
# handing the same port out twice removes the in-process half of that race.
_handed_out: set[int] = set()
_lock = threading.Lock()


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Return ``count`` distinct free ports, holding all sockets until every one is chosen."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        with _lock:
            # 50 attempts per port is far beyond what a 2-core CI box ever needs.
            for _ in range(count * 50):
                if len(ports) == count:
                    break
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.bind((host, 0))
                held.append(sock)
                port = int(sock.getsockname()[1])
                if port in _handed_out or port in ports:
                    continue
                ports.append(port)
            if len(ports) != count:
                raise RuntimeError(f"could not find {count} free ports on {host}")
            _handed_out.update(ports)
    finally:
        for sock in held:
            sock.close()
    return ports


def free_port(host: str = LOOPBACK) -> int:
    """Return one free port (see ``free_ports``)."""
    return free_ports(1, host)[0]
