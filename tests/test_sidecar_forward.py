"""Writes sent to the sidecar: forwarded to the real writer leader over real HTTP, its answer
passed through unchanged; or refused with the reason (403, 404, 503, 413, 508)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from harness import free_port
from sidecar_support import API, layout, replica, revision_of, serve
from writer_support import WriterNode, nodes

from rmwatch.http.forward import SIDECAR_FORWARDED_HEADER
from rmwatch.http.sidecar_app import FORBIDDEN_FORWARD_HEADER, create_sidecar_app
from rmwatch.http.writer_app import create_writer_app
from rmwatch.store.keys import KeyLayout
from rmwatch.store.keyspaces import KeyspaceResolver
from rmwatch.store.leadership import read_leader
from rmwatch.watcher.replica import Replica

__all__ = ["layout", "replica"]  # fixtures, re-exported so pytest finds them here

GROUP = {
    "name": "fw",
    "mode": 1,
    "r_u_settings": {"r_u": {"settings": {"fill_rate": 100, "burst_limit": 200}}},
    "priority": 8,
}


@pytest.fixture
def writer(etcd_endpoints: list[str], root_prefix: str) -> Iterator[WriterNode]:
    """The real writer (leading, serving its HTTP API) on this test's prefix."""
    with nodes(WriterNode(etcd_endpoints, root_prefix, name="w1").start()) as (node,):
        node.serve(create_writer_app(node.writer, token=None))
        yield node


@pytest.fixture
def sidecar_fw(
    replica: Replica, etcd_client: Any, layout: KeyLayout, writer: WriterNode
) -> Iterator[httpx.Client]:
    """A sidecar that finds the writer leader in etcd and forwards writes to it."""

    def discover() -> str | None:
        info = read_leader(etcd_client, layout)
        return None if info is None else info.address

    app = create_sidecar_app(replica, writer_url=None, discover_leader=discover,
                             resolve_keyspace=KeyspaceResolver(etcd_client, layout),
                             min_revision_timeout=5.0)  # fmt: skip
    with serve(app) as url, httpx.Client(base_url=url, timeout=20) as client:
        yield client


def _same_answer(via_sidecar: httpx.Response, direct: httpx.Response) -> None:
    assert via_sidecar.status_code == direct.status_code
    assert via_sidecar.content == direct.content
    assert via_sidecar.headers["content-type"] == direct.headers["content-type"]


class TestForwarding:
    """Each write method reaches the leader; status, body, type and X-Revision come back."""

    def test_every_write_route_is_forwarded_and_readable_at_its_revision(
        self, sidecar_fw: httpx.Client, etcd_client: Any, layout: KeyLayout
    ) -> None:
        """POST/PUT/DELETE on every write route commit through the leader; a read with
        min_revision = the forwarded X-Revision sees each write (read your writes)."""
        etcd_client.put(layout.keyspace_index("ks1"), "7")

        def write(method: str, path: str, body: Any = None) -> int:
            response = sidecar_fw.request(method, API + path, json=body)
            assert response.status_code == 200, (method, path, response.text)
            assert response.text == "Success!"
            assert response.headers["content-type"].startswith("text/plain")
            return revision_of(response)

        def read(path: str, revision: int) -> httpx.Response:
            response = sidecar_fw.get(API + path, params={"min_revision": revision})
            assert revision_of(response) >= revision
            return response

        rev = write("POST", "/config/group", GROUP)
        assert read("/config/group/fw", rev).json()["priority"] == 8
        modified = {**GROUP, "priority": 3}
        modified["r_u_settings"] = {"r_u": {"settings": {"fill_rate": 500, "burst_limit": 800}}}
        rev = write("PUT", "/config/group", modified)
        body = read("/config/group/fw", rev).json()
        assert body["priority"] == 3
        assert body["r_u_settings"]["r_u"]["settings"] == {"fill_rate": 500, "burst_limit": 800}
        rev = write("POST", "/config/controller", {"ltb-max-wait-duration": "20s"})
        assert read("/config/controller", rev).json()["ltb-max-wait-duration"] == "20s"
        rev = write("POST", "/config/keyspace/service-limit", {"service_limit": 100})
        assert read("/config/keyspace/service-limit", rev).json()["service_limit"] == 100
        rev = write("POST", "/config/keyspace/service-limit/ks1", {"service_limit": 7.5})
        assert read("/config/keyspace/service-limit/ks1", rev).json()["service_limit"] == 7.5
        rev = write("DELETE", "/config/group/fw")
        assert read("/config/group/fw", rev).status_code == 404

    def test_writer_errors_pass_through_unchanged(
        self, sidecar_fw: httpx.Client, writer: WriterNode
    ) -> None:
        """The writer's 400/404 answers come back byte for byte, as when asked directly."""
        requests: list[tuple[str, str, Any]] = [
            ("POST", "/config/group", {"name": "x" * 40}),  # 400: name too long
            ("POST", "/config/controller", {"no-such-key": 1}),  # 400: unknown key
            ("DELETE", "/config/group/ghost", None),  # 404
            ("POST", "/config/keyspace/service-limit", {"service_limit": -1}),  # 400
        ]
        with httpx.Client(base_url=writer.address, timeout=10) as direct:
            for method, path, body in requests:
                via = sidecar_fw.request(method, API + path, json=body)
                straight = direct.request(method, API + path, json=body)
                assert via.status_code in (400, 404), (path, via.text)
                _same_answer(via, straight)

    def test_configured_writer_url_is_used_without_discovery(
        self, replica: Replica, writer: WriterNode
    ) -> None:
        """With writer_url set, writes go there and discovery is never called."""

        def discover() -> str | None:
            raise AssertionError("discovery must not run when writer_url is set")

        app = create_sidecar_app(replica, writer_url=writer.address, discover_leader=discover)
        with serve(app) as url, httpx.Client(base_url=url, timeout=20) as client:
            response = client.post(f"{API}/config/group", json=GROUP)
        assert response.status_code == 200
        assert revision_of(response) > 0


class TestRefusals:
    """Writes the sidecar does not send, and why."""

    def test_forwarding_off_is_403_naming_the_leader(
        self, replica: Replica, etcd_client: Any, layout: KeyLayout, writer: WriterNode
    ) -> None:
        """With forwarding off every write is 403 and the message names the leader's address."""

        def discover() -> str | None:
            info = read_leader(etcd_client, layout)
            return None if info is None else info.address

        app = create_sidecar_app(replica, writer_url=None, discover_leader=discover,
                                 forward=False)  # fmt: skip
        with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
            for method, path in (("POST", "/config/group"), ("PUT", "/config/group"),
                                 ("DELETE", "/config/group/fw"), ("POST", "/config/controller"),
                                 ("POST", "/config/keyspace/service-limit/ks")):  # fmt: skip
                response = client.request(method, API + path, json=GROUP)
                assert response.status_code == 403, (method, path)
                assert writer.address in response.text
                assert "metadata write is disabled" in response.text
        with httpx.Client(base_url=writer.address) as direct:
            assert direct.get(f"{API}/config/group/fw").status_code == 404  # nothing written

    def test_forbidden_forward_header_is_404_and_nothing_is_sent(self, replica: Replica) -> None:
        """A write carrying X-Forbidden-Forward-To-Microservice: true is 404, as PD, unsent."""
        sent: list[str] = []

        def discover() -> str | None:
            sent.append("discover")
            return None

        app = create_sidecar_app(replica, writer_url=None, discover_leader=discover)
        with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
            response = client.post(f"{API}/config/group", json=GROUP,
                                   headers={FORBIDDEN_FORWARD_HEADER: "true"})  # fmt: skip
        assert response.status_code == 404
        assert response.text == "404 page not found\n"
        assert sent == []

    def test_no_leader_is_503(self, replica: Replica) -> None:
        """No writer leader elected: 503 naming the situation."""
        app = create_sidecar_app(replica, writer_url=None, discover_leader=lambda: None)
        with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
            response = client.post(f"{API}/config/group", json=GROUP)
        assert response.status_code == 503
        assert "no writer leader is elected" in response.text

    def test_unreachable_leader_is_503_nothing_sent(self, replica: Replica) -> None:
        """A leader address that refuses connections: asked again once, then 503."""
        dead = f"http://127.0.0.1:{free_port()}"
        calls: list[int] = []

        def discover() -> str | None:
            calls.append(1)
            return dead

        app = create_sidecar_app(replica, writer_url=None, discover_leader=discover)
        with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
            response = client.post(f"{API}/config/group", json=GROUP)
        assert response.status_code == 503
        assert dead in response.text
        assert "nothing was sent" in response.text
        assert len(calls) == 2  # looked up again after the refused connection

    def test_oversize_body_is_413(self, replica: Replica, writer: WriterNode) -> None:
        """A body over max_body is refused before anything is sent."""
        app = create_sidecar_app(replica, writer_url=writer.address, discover_leader=None,
                                 max_body=1024)  # fmt: skip
        with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
            response = client.post(f"{API}/config/group", content=b"{" + b" " * 2048 + b"}",
                                   headers={"content-type": "application/json"})  # fmt: skip
        assert response.status_code == 413

    def test_a_write_forwarded_by_a_sidecar_is_not_forwarded_again(self, replica: Replica) -> None:
        """A writer URL pointing at a sidecar cannot loop: the second sidecar answers 508."""
        app = create_sidecar_app(replica, writer_url="http://127.0.0.1:1", discover_leader=None)
        with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
            response = client.post(f"{API}/config/group", json=GROUP,
                                   headers={SIDECAR_FORWARDED_HEADER: "1"})  # fmt: skip
        assert response.status_code == 508
