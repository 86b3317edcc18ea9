"""Conformance helpers: the two services PD's clients may talk to, side by side -- the
writer's app and the replica's sidecar app (which reads from its cache and forwards writes to
that writer).

Each conformance test sends the SAME request to both (``Services.both``) and checks both
answers, so a difference between the services fails the test that pins the behaviour.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from sidecar_support import running_replica, serve
from writer_support import WriterNode, nodes

from rmwatch.http.pd import PREFIX
from rmwatch.http.sidecar_app import create_sidecar_app
from rmwatch.http.writer_app import create_writer_app
from rmwatch.store.keys import KeyLayout
from rmwatch.store.keyspaces import KeyspaceResolver
from rmwatch.watcher.replica import Replica

KEYSPACE_NAME = "ks1"
KEYSPACE_ID = 7


@dataclass
class Services:
    """An HTTP client on each service, the writer node and the replica behind them."""

    writer: httpx.Client
    replica: httpx.Client
    node: WriterNode
    cache: Replica

    @property
    def layout(self) -> KeyLayout:
        """The key layout both services use."""
        return self.node.layout

    def both(self, method: str, path: str, **kwargs: Any) -> dict[str, httpx.Response]:
        """``method path`` (under PD's prefix) sent to each service; answers by service.

        A read on the replica waits for the writer's last commit (``min_revision``), so it
        sees what the writer's answer saw.
        """
        out: dict[str, httpx.Response] = {}
        for name, client in (("writer", self.writer), ("replica", self.replica)):
            params = dict(kwargs.pop("params", None) or {})
            if name == "replica" and method == "GET":
                params["min_revision"] = str(self.revision())
            out[name] = client.request(method, PREFIX + path, params=params or None, **kwargs)
            kwargs = dict(kwargs)
        return out

    def revision(self) -> int:
        """The etcd revision now."""
        return int(self.node.client.get_response("/").header.revision)


@contextmanager
def running_services(etcd_endpoints: list[str], root_prefix: str) -> Iterator[Services]:
    """Writer (leading, no token) and replica sidecar on one etcd prefix, with keyspace
    ``ks1`` = 7 in PD's keyspace index; everything stopped at the end."""
    node = WriterNode(etcd_endpoints, root_prefix, name="conf").start()
    with nodes(node):
        node.client.put(node.layout.keyspace_index(KEYSPACE_NAME), str(KEYSPACE_ID))
        node.serve(create_writer_app(node.writer, token=None))
        with running_replica(etcd_endpoints, root_prefix) as replica:
            replica.wait_ready(10)
            app = create_sidecar_app(
                replica,
                writer_url=node.address,
                discover_leader=None,
                resolve_keyspace=KeyspaceResolver(node.client, node.layout),
            )
            with (
                serve(app) as url,
                httpx.Client(base_url=node.address, timeout=10) as writer,
                httpx.Client(base_url=url, timeout=10) as sidecar,
            ):
                yield Services(writer=writer, replica=sidecar, node=node, cache=replica)
