"""Helpers shared by the writer tests: writers on the real session etcd, HTTP servers in threads.

Not a conftest (that file belongs to the harness owner): test modules import these directly.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pyetcd
import pytest
import uvicorn
from harness import free_port, make_client

from rmwatch.store.keys import KeyLayout
from rmwatch.store.leadership import Leadership
from rmwatch.store.roles import WriteRole
from rmwatch.store.writer import Writer

# 2 s lease: long enough that a loaded 2-core box never misses three keepalives (sent every
# 0.67 s), short enough that lease-expiry tests wait ~2 s, not 5.
TEST_TTL = 2.0
# Followers poll every 50 ms in tests, so a takeover after resign takes ~0.1 s.
TEST_POLL = 0.05


def cluster_id_for(root_prefix: str) -> int:
    """A PD cluster id of this test's own: PD's keyspace index is absolute
    (``/pd/{cluster_id}/keyspaces/id/``), so tests sharing one etcd keep their indexes apart
    by cluster id, as their RM keys by root prefix."""
    digest = hashlib.blake2b(root_prefix.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") or 1


def delete_keyspace_index(client: pyetcd.MultiEndpointEtcd3Client, layout: KeyLayout) -> None:
    """Delete the test's keyspace index (``/pd/{cluster_id}/``), outside its root prefix."""
    if layout.cluster_id is not None:
        client.delete_prefix(f"/pd/{layout.cluster_id}/")


class WriterNode:
    """One writer: its own etcd client, leadership and Writer, optionally an HTTP server."""

    def __init__(
        self,
        endpoints: list[str],
        root_prefix: str,
        *,
        name: str,
        role: WriteRole = WriteRole.LEGACY_ALL,
        ttl: float = TEST_TTL,
        port: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        fenced: bool = True,
    ) -> None:
        self.port = port or free_port()
        self.address = f"http://127.0.0.1:{self.port}"
        self.client = make_client(endpoints)
        self.layout = KeyLayout(root_prefix, cluster_id=cluster_id_for(root_prefix))
        self.leadership: Leadership | None = None
        if fenced:
            self.leadership = Leadership(
                client=self.client, layout=self.layout, name=name, address=self.address,
                ttl=ttl, poll_interval=TEST_POLL, clock=clock,
            )  # fmt: skip
        self.writer = Writer(
            client=self.client, layout=self.layout, role=role, leadership=self.leadership
        )
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, *, wait_leader: bool = True) -> WriterNode:
        """Start campaigning; by default wait until this node leads (at most 5 s)."""
        if self.leadership is not None:
            self.leadership.start()
            if wait_leader:
                assert self.leadership.wait_until_leader(5.0), "not elected within 5 s"
        return self

    def serve(self, app: Any) -> WriterNode:
        """Serve ``app`` with uvicorn on this node's port in a thread; wait until it listens.

        Lifespan on, so stopping the server closes the app's forwarding client.
        """
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on")  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.02)
        raise TimeoutError(f"uvicorn did not listen on {self.port}")

    def close(self) -> None:
        """Stop the server, resign, close the client."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(5)
        if self.leadership is not None:
            self.leadership.close()
        delete_keyspace_index(self.client, self.layout)
        self.client.close()


@contextmanager
def nodes(*items: WriterNode) -> Iterator[tuple[WriterNode, ...]]:
    """Close every node at the end, whatever happens."""
    try:
        yield items
    finally:
        for node in items:
            node.close()


def raw_get(client: pyetcd.MultiEndpointEtcd3Client, key: str) -> tuple[bytes | None, int]:
    """(value, mod_revision) of ``key`` straight from etcd; (None, 0) when absent."""
    value, meta = client.get(key)
    return (None, 0) if value is None else (bytes(value), int(meta.mod_revision))


@pytest.fixture
def node(etcd_endpoints: list[str], root_prefix: str) -> Iterator[WriterNode]:
    """A LegacyAll writer that leads, on the session etcd under a unique prefix."""
    with nodes(WriterNode(etcd_endpoints, root_prefix, name="w1").start()) as (item,):
        yield item
