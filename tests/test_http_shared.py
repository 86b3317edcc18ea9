"""The shared pieces of the HTTP layer answer alike on the writer's app and the sidecar's.

One table each, run through both apps on a real etcd: ``with_stats`` values, keyspace
parameters, errors and their answers; and the forwarding client's one classification of
failures, against a real socket that accepts and then stalls, and a port nobody listens on;
one pooled client per app, closed when it stops; the ``X-Rmwatch-Not-Applied`` handshake.

PD's behaviour pinned here is read from tikv/pd (commit a186e0cc61de):
- ``with_stats``: ``strings.EqualFold(c.Query("with_stats"), "true")`` in
  pkg/mcs/resourcemanager/metadataapi/config_service.go:365 (GET config/group/:name) and :386
  (GET config/groups), which pkg/mcs/resourcemanager/server/apis/v1/api.go:204-205 and
  :217-218 delegate to. Only ``true`` in any case turns ``ru_consumption`` on; ``1`` and
  ``yes`` do not.
- unknown ``keyspace_name``: ``GetKeyspaceIDByName`` returns ``ErrKeyspaceNotExistsByName``
  (pkg/mcs/resourcemanager/server/manager.go:745-746), defined as
  ``"keyspace not found with name: %s"`` with RFC code
  ``PD:resourcemanager:ErrKeyspaceNotExistsByName`` (pkg/errs/errno.go:537), and
  ``respondKeyspaceLookupError`` answers it 404 with its text (config_service.go:489-495) on
  every route that takes a keyspace name: group GET/list/DELETE and service-limit GET/POST.
- a repeated query parameter: ``c.Query`` is ``url.Values.Get``, the first value.
"""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import Response
from fastapi.testclient import TestClient
from harness import free_port
from sidecar_support import layout, put_keyspace, running_replica
from starlette.requests import Request
from writer_support import WriterNode, nodes

from rmwatch.errors import (
    AlreadyExistsError,
    BodyTooLargeError,
    ConflictError,
    DecodeError,
    DrainingError,
    EtcdUnavailableError,
    InvalidInputError,
    NotFoundError,
    NotLeaderError,
    NotReadyError,
    ReservedGroupError,
    RevisionTimeoutError,
    WriteRefusedError,
)
from rmwatch.http.body import read_body
from rmwatch.http.errors import Refusal, error_response
from rmwatch.http.forward import (
    FORWARDED_HEADER,
    NOT_APPLIED_HEADER,
    Delivery,
    ForwardClient,
    delivery,
)
from rmwatch.http.pd import PREFIX, text
from rmwatch.http.sidecar_app import create_sidecar_app
from rmwatch.http.writer_app import create_writer_app
from rmwatch.store.keys import KeyLayout
from rmwatch.store.keyspaces import KeyspaceResolver

__all__ = ["layout"]  # fixture, re-exported so pytest finds it here

APPS = ["writer", "sidecar"]
GROUP = {
    "mode": 1,
    "r_u_settings": {"r_u": {"settings": {"fill_rate": 100, "burst_limit": 200}}},
    "priority": 8,
}
STATES = b'{"ru_consumption":{"r_r_u":1.5,"w_r_u":0}}'
MAX_BODY = 1024
GHOST = "[PD:resourcemanager:ErrKeyspaceNotExistsByName]keyspace not found with name: ghost"


@pytest.fixture
def apps(
    etcd_endpoints: list[str], root_prefix: str, etcd_client: Any, layout: KeyLayout
) -> Iterator[dict[str, TestClient]]:
    """Both apps on one prefix: ``g1`` (with RU consumption) in the null keyspace, ``g7`` in
    keyspace 7 named ``ks1``; the replica has caught up with all of it."""
    node = WriterNode(etcd_endpoints, root_prefix, name="shared").start()
    with nodes(node):
        writer = TestClient(create_writer_app(node.writer, token=None, max_body=MAX_BODY))
        with writer:
            for name, params in (("g1", {}), ("g7", {"keyspace_id": "7"})):
                answer = writer.post(f"{PREFIX}/config/group", params=params,
                                     json={"name": name, **GROUP})  # fmt: skip
                assert answer.status_code == 200, answer.text
            etcd_client.put(layout.states("g1"), STATES)
            revision = put_keyspace(etcd_client, layout, "ks1", 7)
            with running_replica(etcd_endpoints, root_prefix) as replica:
                replica.wait_ready(10)
                replica.wait_for_revision(revision, 5)
                app = create_sidecar_app(replica, writer_url=node.address, discover_leader=None,
                                         resolve_keyspace=KeyspaceResolver(etcd_client, layout),
                                         max_body=MAX_BODY)  # fmt: skip
                with TestClient(app) as sidecar:
                    yield {"writer": writer, "sidecar": sidecar}


@pytest.mark.parametrize("app", APPS)
def test_with_stats_values(apps: dict[str, TestClient], app: str) -> None:
    """``ru_consumption`` appears for ``true`` in any case and for nothing else, on a group GET (the
    sidecar's fast path, and its routed path with ``min_revision``) and on the list."""
    client = apps[app]
    table: list[tuple[str | None, bool]] = [
        ("true", True), ("TRUE", True), ("True", True),
        ("1", False), ("yes", False), ("on", False), ("false", False), ("", False), (None, False),
    ]  # fmt: skip
    for value, shown in table:
        stats = {} if value is None else {"with_stats": value}
        for extra in ({}, {"min_revision": "1"}):
            one = client.get(f"{PREFIX}/config/group/g1", params={**stats, **extra})
            assert one.status_code == 200, (value, extra, one.text)
            assert ("ru_consumption" in one.json()) is shown, (value, extra)
        listed = client.get(f"{PREFIX}/config/groups", params=stats).json()
        (g1,) = [group for group in listed if group["name"] == "g1"]
        assert ("ru_consumption" in g1) is shown, value
        if shown:
            assert g1["ru_consumption"]["r_r_u"] == 1.5


@pytest.mark.parametrize("app", APPS)
def test_a_repeated_parameter_counts_once_by_its_first_value(
    apps: dict[str, TestClient], app: str
) -> None:
    """``with_stats`` and ``keyspace_name`` given twice: the first value counts, as gin's
    ``c.Query`` (Go's url.Values.Get) reads it; on the fast path, the routed one and the list."""
    client = apps[app]
    for first, second, shown in (("true", "false", True), ("false", "true", False)):
        query = f"with_stats={first}&with_stats={second}"
        for extra in ("", "&min_revision=1"):
            one = client.get(f"{PREFIX}/config/group/g1?{query}{extra}")
            assert ("ru_consumption" in one.json()) is shown, (query, extra)
        listed = client.get(f"{PREFIX}/config/groups?{query}").json()
        assert ("ru_consumption" in next(g for g in listed if g["name"] == "g1")) is shown
    named = client.get(f"{PREFIX}/config/group/g7?keyspace_name=ks1&keyspace_name=ghost")
    assert named.status_code == 200, named.text
    assert named.json()["name"] == "g7"


@pytest.mark.parametrize("app", APPS)
def test_keyspace_parameters(apps: dict[str, TestClient], app: str) -> None:
    """Keyspace names and ids select the same keyspace on both apps; an unknown name is 404
    with PD's text on every route, a malformed id 400 naming ``keyspace_id``."""
    client = apps[app]
    found: list[tuple[str, dict[str, str], str]] = [
        ("/config/groups", {"keyspace_name": "ks1"}, "g7"),
        ("/config/groups", {"keyspace_id": "7"}, "g7"),
        ("/config/groups", {}, "g1"),
        ("/config/groups", {"keyspace_id": ""}, "g1"),
        ("/config/group/g7", {"keyspace_name": "ks1"}, "g7"),
    ]
    for path, params, name in found:
        answer = client.get(PREFIX + path, params=params)
        assert answer.status_code == 200, (path, params, answer.text)
        body = answer.json()
        names = [g["name"] for g in body] if isinstance(body, list) else [body["name"]]
        assert name in names, (path, params, names)
    refused: list[tuple[str, str, dict[str, str], int, str]] = [
        ("GET", "/config/groups", {"keyspace_name": "ghost"}, 404, GHOST),
        ("GET", "/config/group/g7", {"keyspace_name": "ghost"}, 404, GHOST),
        ("GET", "/config/keyspace/service-limit/ghost", {}, 404, GHOST),
        ("GET", "/config/groups", {"keyspace_id": "x"}, 400,
         "invalid keyspace_id: keyspace id 'x' is not a decimal number"),
        ("GET", "/config/groups", {"keyspace_id": "07"}, 400,
         "invalid keyspace_id: keyspace id '07' is zero-padded"),
        ("GET", "/config/groups", {"keyspace_id": "4294967296"}, 400,
         "invalid keyspace_id: keyspace id 4294967296 exceeds 4294967295"),
    ]  # fmt: skip
    for method, path, params, status, message in refused:
        answer = client.request(method, PREFIX + path, params=params)
        assert (answer.status_code, answer.text) == (status, message), (path, params)
        assert answer.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize("raw", ["soon", "\u0663", "9" * 5000])
def test_sidecar_bad_min_revision_is_400(apps: dict[str, TestClient], raw: str) -> None:
    """``min_revision`` that is not at most 20 ASCII digits is 400 naming it: 5000 digits
    (which ``int`` refuses) were a 500, an Arabic-Indic three was read as 3."""
    answer = apps["sidecar"].get(f"{PREFIX}/config/group/g1", params={"min_revision": raw})
    assert answer.status_code == 400, answer.text
    assert "min_revision" in answer.text
    assert "not a non-negative integer" in answer.text


@pytest.mark.parametrize("app", APPS)
def test_body_too_large_is_413(apps: dict[str, TestClient], app: str) -> None:
    """A write body over the cap is 413 with the same text on both apps, before anything is
    written or forwarded."""
    body = b"{" + b" " * (2 * MAX_BODY) + b"}"
    answer = apps[app].post(f"{PREFIX}/config/group", content=body)
    assert (answer.status_code, answer.text) == (413, f"request body over {MAX_BODY} bytes")


@pytest.mark.parametrize(
    ("declared", "body", "too_large"),
    [("9" * 5000, b"{}", True), ("9" * 21, b"{}", True), ("\u0663", b"{}", False)],
    ids=["5000-digits", "21-digits", "arabic-indic-three"],
)
def test_declared_length_never_breaks_the_read(declared: str, body: bytes, too_large: bool) -> None:
    """A Content-Length too long for ``int`` (5000 digits: a ValueError, once a 500) or not ASCII
    is not trusted: the body's own bytes decide. An oversize body that arrives as one last
    chunk is refused by its count (the drain finds the stream already ended: once a 500); a
    short one is read."""
    sent = body if not too_large else b"x" * (MAX_BODY + 1)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": sent, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"",
             "headers": [(b"content-length", declared.encode())]}  # fmt: skip
    request = Request(scope, receive)
    if too_large:
        with pytest.raises(BodyTooLargeError):
            asyncio.run(read_body(request, MAX_BODY))
    else:
        assert asyncio.run(read_body(request, MAX_BODY)) == body


@dataclass(frozen=True)
class Mapped:
    """What ``error_response`` must answer for one error."""

    status: int
    body: str
    headers: tuple[tuple[str, str], ...] = ()


ERRORS: list[tuple[Exception, Mapped]] = [
    (BodyTooLargeError(1024), Mapped(413, "request body over 1024 bytes")),
    (InvalidInputError("priority", "must be at most 16"),
     Mapped(400, "invalid priority: must be at most 16")),
    (WriteRefusedError("metadata write is disabled"), Mapped(403, "metadata write is disabled")),
    (ReservedGroupError("cannot delete reserved group"),
     Mapped(403, "cannot delete reserved group")),
    (NotFoundError("resource group not found"), Mapped(404, "resource group not found")),
    (AlreadyExistsError("group g already exists"), Mapped(400, "group g already exists")),
    (ConflictError("g changed", current_revision=12),
     Mapped(409, "g changed; current revision 12", (("x-revision", "12"),))),
    (NotLeaderError("not the leader"), Mapped(503, "not the leader")),
    (DrainingError("draining"), Mapped(503, "draining")),
    (NotReadyError("LOADING", "loading the first snapshot"),
     Mapped(503, '{"state":"LOADING","reason":"loading the first snapshot","revision":41}')),
    (RevisionTimeoutError(50, 41, 1.0),
     Mapped(504, '{"error":"revision 50 not reached within 1s (at 41)","min_revision":50,'
                 '"revision":41}', (("x-revision", "41"),))),
    (EtcdUnavailableError("etcd did not answer"), Mapped(503, "etcd did not answer")),
    (DecodeError("/k", "bad bytes"), Mapped(500, "cannot decode value of '/k': bad bytes")),
    (RuntimeError("secret detail"), Mapped(500, "internal error: RuntimeError")),
    (Refusal(text(401, "missing or invalid bearer token", {"WWW-Authenticate": "Bearer"})),
     Mapped(401, "missing or invalid bearer token", (("www-authenticate", "Bearer"),))),
]  # fmt: skip


class TestErrorMapping:
    """``rmwatch.http.errors.error_response``: one table from the error tree to answers."""

    @pytest.mark.parametrize(("exc", "mapped"), ERRORS, ids=lambda v: type(v).__name__)
    def test_status_body_and_headers(self, exc: Exception, mapped: Mapped) -> None:
        """Each error gets its status, its body, and the headers that go with it."""
        answer: Response = error_response(exc, revision=41)
        assert answer.status_code == mapped.status
        assert bytes(answer.body).decode() == mapped.body
        for name, value in mapped.headers:
            assert answer.headers[name] == value


# ---- the forwarding client ---------------------------------------------------------------


@contextmanager
def listener(*, answer_then_close: bool) -> Iterator[int]:
    """A real socket on a free port that accepts connections and reads the request; then
    either never answers (stalls) or closes the connection without an answer. Yields the
    port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(2)
            with suppress(OSError):
                conn.recv(65536)
            if answer_then_close:
                conn.close()
            else:
                held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        server.close()
        for conn in held:
            conn.close()


def _send(port: int) -> httpx.HTTPError:
    async def run() -> httpx.HTTPError:
        client = ForwardClient(timeout=0.5)
        try:
            await client.send(method="POST", url=f"http://127.0.0.1:{port}{PREFIX}/config/group",
                              params=[], body=b"{}", headers={}, mark="X-Test")  # fmt: skip
        except httpx.HTTPError as exc:
            return exc
        finally:
            await client.aclose()
        raise AssertionError("the send was answered")

    return asyncio.run(run())


class TestForwardClassification:
    """A connect-phase failure is "not sent"; a failure after sending "may have applied"."""

    @pytest.mark.parametrize(
        ("exc", "expected"),
        [
            (httpx.ConnectError("refused"), Delivery.NOT_SENT),
            (httpx.ConnectTimeout("connect timed out"), Delivery.NOT_SENT),
            (httpx.PoolTimeout("no free connection"), Delivery.NOT_SENT),
            (httpx.ReadTimeout("no answer"), Delivery.MAY_HAVE_APPLIED),
            (httpx.WriteTimeout("half sent"), Delivery.MAY_HAVE_APPLIED),
            (httpx.RemoteProtocolError("disconnected"), Delivery.MAY_HAVE_APPLIED),
            (httpx.ReadError("reset"), Delivery.MAY_HAVE_APPLIED),
        ],
        ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
    )
    def test_table(self, exc: httpx.HTTPError, expected: Delivery) -> None:
        """Every httpx failure falls on the side of whether its request can have left."""
        assert delivery(exc) is expected

    def test_closed_port_is_not_sent(self) -> None:
        """Nobody listens: the connect is refused, nothing was sent."""
        failure = _send(free_port())
        assert isinstance(failure, httpx.ConnectError)
        assert delivery(failure) is Delivery.NOT_SENT

    def test_accepted_then_stalled_may_have_applied(self) -> None:
        """The server took the request and never answered: the outcome is unknown."""
        with listener(answer_then_close=False) as port:
            failure = _send(port)
        assert isinstance(failure, httpx.ReadTimeout)
        assert delivery(failure) is Delivery.MAY_HAVE_APPLIED

    def test_closed_after_the_request_may_have_applied(self) -> None:
        """The server read the request and dropped the connection: the outcome is unknown."""
        with listener(answer_then_close=True) as port:
            failure = _send(port)
        # A close seen as a clean EOF is RemoteProtocolError; if the kernel answers with a reset
        # (the close raced the rest of the request) httpx raises ReadError. Both happened in CI.
        assert isinstance(failure, httpx.RemoteProtocolError | httpx.ReadError)
        assert delivery(failure) is Delivery.MAY_HAVE_APPLIED


@contextmanager
def _forwarding(app: str, port: int, etcd_endpoints: list[str], root_prefix: str
                ) -> Iterator[TestClient]:  # fmt: skip
    """The ``app`` that forwards its writes to the leader at ``127.0.0.1:port`` (the writer: a
    follower whose leader announces that address; the sidecar: ``writer_url``)."""
    if app == "sidecar":
        with running_replica(etcd_endpoints, root_prefix) as replica:
            replica.wait_ready(10)
            sidecar = create_sidecar_app(replica, writer_url=f"http://127.0.0.1:{port}",
                                         discover_leader=None, forward_timeout=0.5)  # fmt: skip
            with TestClient(sidecar) as client:
                yield client
        return
    leader = WriterNode(etcd_endpoints, root_prefix, name="away", port=port).start()
    follower = WriterNode(etcd_endpoints, root_prefix, name="here").start(wait_leader=False)
    with nodes(leader, follower):
        writer = create_writer_app(follower.writer, token=None, forward_wait=0.5,
                                   forward_timeout=0.5)  # fmt: skip
        with TestClient(writer) as client:
            yield client


@pytest.mark.parametrize("app", APPS)
def test_forward_to_a_stalled_leader_is_504_may_have_applied(
    etcd_endpoints: list[str], root_prefix: str, app: str
) -> None:
    """Both apps answer a write the leader took and never answered with 504, saying it may
    or may not have been applied (and do not send it again)."""
    with (
        listener(answer_then_close=False) as port,
        _forwarding(app, port, etcd_endpoints, root_prefix) as client,
    ):
        answer = client.post(f"{PREFIX}/config/group", json={"name": "fw", **GROUP})
    assert answer.status_code == 504, answer.text
    assert f"sent to http://127.0.0.1:{port}" in answer.text
    assert "may or may not have been applied" in answer.text


@pytest.mark.parametrize("app", APPS)
def test_forward_to_a_closed_port_is_503_not_sent(
    etcd_endpoints: list[str], root_prefix: str, app: str
) -> None:
    """Both apps answer 503 when the leader's port refuses connections: nothing was sent."""
    port = free_port()
    with _forwarding(app, port, etcd_endpoints, root_prefix) as client:
        answer = client.post(f"{PREFIX}/config/group", json={"name": "fw", **GROUP})
    assert answer.status_code == 503, answer.text
    assert "may or may not" not in answer.text
    expected = "nothing was sent" if app == "sidecar" else "no leader to forward to"
    assert expected in answer.text


@pytest.mark.parametrize("app", APPS)
def test_one_forwarding_client_per_app_closed_on_shutdown(
    etcd_endpoints: list[str], root_prefix: str, app: str
) -> None:
    """Every forward of an app goes through one pooled client, closed when the app stops."""
    with _forwarding(app, free_port(), etcd_endpoints, root_prefix) as client:
        forward_client: ForwardClient = client.app.state.forward_client  # type: ignore[attr-defined]
        assert forward_client.pooled is None  # opened on first use, in the serving loop
        pooled: list[httpx.AsyncClient | None] = []
        for name in ("fw1", "fw2"):
            client.post(f"{PREFIX}/config/group", json={"name": name, **GROUP})
            pooled.append(forward_client.pooled)
        assert pooled[0] is not None
        assert pooled[0] is pooled[1]
    assert forward_client.pooled is None
    assert pooled[0].is_closed


@contextmanager
def fake_leader(*, not_applied: bool) -> Iterator[tuple[int, list[dict[str, str]]]]:
    """An HTTP server on a free port that answers every POST 503, marked
    ``X-Rmwatch-Not-Applied: 1`` or not; yields its port and the headers of each request."""
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            seen.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(503)
            if not_applied:
                self.send_header(NOT_APPLIED_HEADER, "1")
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", "7")
            self.end_headers()
            self.wfile.write(b"refused")

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test reads ``seen``."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1]), seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class TestNotAppliedHandshake:
    """``X-Rmwatch-Not-Applied`` lets a forwarding writer look for the next leader safely."""

    def test_a_forwarded_write_is_not_forwarded_again(self, etcd_endpoints: list[str],
                                                      root_prefix: str) -> None:  # fmt: skip
        """A follower given an already-forwarded write answers 503 marked not applied."""
        leader = WriterNode(etcd_endpoints, root_prefix, name="lead").start()
        follower = WriterNode(etcd_endpoints, root_prefix, name="follow").start(wait_leader=False)
        with (
            nodes(leader, follower),
            TestClient(create_writer_app(follower.writer, token=None, forward_wait=0.5)) as client,
        ):
            answer = client.post(f"{PREFIX}/config/group", json={"name": "hop", **GROUP},
                                 headers={FORWARDED_HEADER: "1"})  # fmt: skip
        assert answer.status_code == 503
        assert answer.headers[NOT_APPLIED_HEADER] == "1"
        assert "already forwarded" in answer.text

    @pytest.mark.parametrize("not_applied", [True, False])
    def test_the_forwarder_looks_again_only_when_nothing_was_applied(
        self, etcd_endpoints: list[str], root_prefix: str, not_applied: bool
    ) -> None:
        """A leader's 503 marked not applied is retried until ``forward_wait`` runs out; an
        unmarked 503 may have applied and is passed back as is, after one send."""
        # 2 s to look: the first forward also opens the client and its connection, which on
        # a loaded 2-core box can take most of a second.
        with fake_leader(not_applied=not_applied) as (port, seen):
            leader = WriterNode(etcd_endpoints, root_prefix, name="lead", port=port).start()
            follower = WriterNode(etcd_endpoints, root_prefix,
                                  name="follow").start(wait_leader=False)  # fmt: skip
            with (
                nodes(leader, follower),
                TestClient(
                    create_writer_app(follower.writer, token=None, forward_wait=2.0)
                ) as client,
            ):
                answer = client.post(f"{PREFIX}/config/group", json={"name": "hop", **GROUP})
        assert answer.status_code == 503, answer.text
        assert all(request[FORWARDED_HEADER.lower()] == "1" for request in seen)
        if not_applied:
            assert len(seen) >= 2, "looked for the next leader again"
            assert "no leader to forward to" in answer.text
        else:
            assert len(seen) == 1, "a write that may have applied is never resent"
            assert answer.text == "refused"
