"""Helpers shared by the sidecar tests: a replica on the real etcd, apps served over real HTTP.

Not a conftest (that file belongs to the harness owner): test modules import these directly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pyetcd
import pytest
import uvicorn
from harness import free_port, wait_until
from writer_support import cluster_id_for, delete_keyspace_index

from rmwatch.http.pd import PREFIX
from rmwatch.http.sidecar_app import create_sidecar_app
from rmwatch.store.keys import KeyLayout
from rmwatch.store.keyspaces import KeyspaceResolver
from rmwatch.watcher.replica import Replica

API = PREFIX  # "/resource-manager/api/v1"
# Short, so the 504 test waits ~1 s; tests that wait for a write build their own app.
TEST_MIN_REVISION_TIMEOUT = 1.0


@contextmanager
def serve(app: Any, port: int | None = None, **options: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn (lifespan on) in a thread; yield its base URL; stop it.
    ``options`` go to ``uvicorn.Config`` (e.g. ``http=`` a protocol class)."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on port {port}")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def running_replica(endpoints: list[str], root_prefix: str, **kwargs: Any) -> Iterator[Replica]:
    """A started replica (not waited for), closed afterwards."""
    replica = Replica(endpoints=endpoints, root_prefix=root_prefix, **kwargs)
    replica.start()
    try:
        yield replica
    finally:
        replica.close()


@pytest.fixture
def layout(root_prefix: str, etcd_client: pyetcd.MultiEndpointEtcd3Client) -> Iterator[KeyLayout]:
    """The key layout of this test's unique root prefix and cluster id (its keyspace index
    deleted afterwards)."""
    item = KeyLayout(root_prefix, cluster_id=cluster_id_for(root_prefix))
    yield item
    delete_keyspace_index(etcd_client, item)


@pytest.fixture
def replica(etcd_endpoints: list[str], root_prefix: str) -> Iterator[Replica]:
    """A ready replica on the session etcd under this test's prefix."""
    with running_replica(etcd_endpoints, root_prefix) as item:
        item.wait_ready(10)
        yield item


@pytest.fixture
def sidecar(
    replica: Replica, etcd_client: pyetcd.MultiEndpointEtcd3Client, layout: KeyLayout
) -> Iterator[httpx.Client]:
    """An HTTP client on a sidecar (no writer) serving ``replica`` over real HTTP."""
    app = create_sidecar_app(
        replica,
        writer_url=None,
        discover_leader=None,
        resolve_keyspace=KeyspaceResolver(etcd_client, layout),
        min_revision_timeout=TEST_MIN_REVISION_TIMEOUT,
    )
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def put_keyspace(client: Any, layout: KeyLayout, name: str, keyspace_id: int) -> int:
    """Create PD's keyspace index entry ``/pd/{cluster_id}/keyspaces/id/{name}`` → id; return
    the revision."""
    return int(client.put(layout.keyspace_index(name), str(keyspace_id)).header.revision)


def revision_of(response: httpx.Response) -> int:
    """The ``X-Revision`` header as an int (fails the test when missing)."""
    value = response.headers.get("x-revision")
    assert value is not None, f"no X-Revision on {response.request.url}: {response.headers}"
    return int(value)


def wait_listed_bad(sidecar: httpx.Client, bad: list[tuple[str, int]], what: str) -> None:
    """Wait until ``/status`` lists exactly ``bad`` (key, revision) as undecodable: the
    validator checks applied values off the apply path, so the registry follows the publish
    (by up to its 20 ms deferral while the stream is busy)."""

    def listed() -> bool:
        errors = sidecar.get("/status").json()["decode_errors"]
        return [(e["key"], e["revision"]) for e in errors] == bad

    wait_until(listed, 5, what)


__all__ = [
    "API",
    "layout",
    "put_keyspace",
    "replica",
    "revision_of",
    "running_replica",
    "serve",
    "sidecar",
    "wait_listed_bad",
]
