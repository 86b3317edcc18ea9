"""The sidecar's HTTP fast lane (``rmwatch.http.fast_lane``) in a real uvicorn over real
sockets: the same bytes as the routed answer, pipelined answers in order, connection handling
(HTTP/1.0, ``Connection: close``, the idle keep-alive timer), the forbidden-forward guard, the
metrics, and everything it must not take left to the app."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pyetcd
import pytest
from harness import put_group
from sidecar_support import API, layout, serve  # noqa: F401 (fixture)

from rmwatch.http.fast_lane import FastLane, lane_protocol
from rmwatch.http.sidecar_app import create_sidecar_app
from rmwatch.store.keys import KeyLayout
from rmwatch.watcher.replica import Replica

GROUP = f"{API}/config/group/g"


class _Lane:
    """The app's lane with a count of the requests it answered itself."""

    def __init__(self, lane: FastLane) -> None:
        self.answered = 0
        respond = lane.respond

        def counting(*args: Any) -> tuple[bytes, bool] | None:
            result = respond(*args)
            self.answered += result is not None
            return result

        lane.respond = counting  # type: ignore[method-assign,assignment]


@pytest.fixture
def served(
    etcd_endpoints: list[str], root_prefix: str, etcd_client: pyetcd.MultiEndpointEtcd3Client
) -> Iterator[tuple[str, _Lane, Replica]]:
    """(host:port, the lane's counter, the replica) of a sidecar served with the lane."""
    put_group(etcd_client, KeyLayout(root_prefix), "g")
    replica = Replica(endpoints=etcd_endpoints, root_prefix=root_prefix).start()
    try:
        replica.wait_ready(10)
        app = create_sidecar_app(replica, writer_url=None, discover_leader=None)
        counter = _Lane(app.state.fast_lane)
        protocol = lane_protocol(app.state.fast_lane)
        assert protocol is not None  # httptools and this uvicorn: the lane is on
        with serve(app, http=protocol, timeout_keep_alive=1) as url:
            yield url.removeprefix("http://"), counter, replica
    finally:
        replica.close()


def _connect(address: str) -> socket.socket:
    host, port = address.split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def _request(path: str, *, version: str = "1.1", headers: str = "") -> bytes:
    return f"GET {path} HTTP/{version}\r\nHost: t\r\n{headers}\r\n".encode()


class _Reader:
    """Reads HTTP/1.1 responses one after another from one socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def response(self) -> tuple[str, list[tuple[str, str]], bytes]:
        """(status line, headers in order with lowercase names, body)."""
        while b"\r\n\r\n" not in self.buffer:
            assert self._fill(), f"connection closed mid-response: {self.buffer!r}"
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status, *lines = head.decode().split("\r\n")
        headers = [(n.lower(), v.strip()) for n, v in (line.split(":", 1) for line in lines)]
        length = int(dict(headers)["content-length"])
        while len(self.buffer) < length:
            assert self._fill(), "connection closed mid-body"
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def closed(self) -> bool:
        """True once the server closed the connection (and sent nothing more)."""
        return not self._fill() and not self.buffer


def _status(address: str, request: bytes) -> str:
    """The status code of the answer to ``request`` on a fresh connection."""
    with _connect(address) as sock:
        sock.sendall(request)
        status, _, _ = _Reader(sock).response()
    return status.split()[1]


def _stable(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    # The date and the replica's age change between two answers; names and order must not.
    return [(n, "*" if n in ("date", "x-revision-age") else v) for n, v in headers]


class TestSameAnswer:
    def test_the_lane_sends_the_routed_answer_byte_for_byte(
        self, served: tuple[str, _Lane, Replica]
    ) -> None:
        """A plain group GET answered by the lane has the status line, header names, order
        and values (but the clock's), and body of the routed handler's answer (``?x=1`` is a
        parameter the lane and the fast read leave to the router, which ignores it, as PD)."""
        address, lane, _ = served
        with _connect(address) as sock:
            reader = _Reader(sock)
            sock.sendall(_request(GROUP))
            fast = reader.response()
            assert lane.answered == 1
            sock.sendall(_request(GROUP + "?x=1"))
            routed = reader.response()
            assert lane.answered == 1
        assert fast[0] == routed[0] == "HTTP/1.1 200 OK"
        assert _stable(fast[1]) == _stable(routed[1])
        assert [n for n, _ in fast[1]][:2] == ["date", "server"]
        assert fast[2] == routed[2]
        assert b'"name": "g"' in fast[2]

    def test_pipelined_requests_are_answered_in_order(
        self, served: tuple[str, _Lane, Replica]
    ) -> None:
        """Lane, app (404), lane and routed requests sent in one write come back in the
        order sent; a request behind one the app is still answering waits its turn."""
        address, lane, _ = served
        paths = [GROUP, f"{API}/config/group/missing", GROUP, GROUP + "?x=1", GROUP]
        with _connect(address) as sock:
            reader = _Reader(sock)
            sock.sendall(b"".join(_request(p) for p in paths))
            answers = [reader.response() for _ in paths]
        assert [a[0].split()[1] for a in answers] == ["200", "404", "200", "200", "200"]
        assert all(b'"name": "g"' in a[2] for i, a in enumerate(answers) if i != 1)
        # The first by the lane; those parsed while the app still answered the 404 (all of
        # them when the five arrive in one read) queued behind it rather than jump ahead.
        assert lane.answered >= 1


class TestConnections:
    @pytest.mark.parametrize(
        ("version", "headers"), [("1.0", ""), ("1.1", "Connection: close\r\n")]
    )
    def test_a_closing_request_gets_connection_close_and_the_socket_closes(
        self, served: tuple[str, _Lane, Replica], version: str, headers: str
    ) -> None:
        address, lane, _ = served
        with _connect(address) as sock:
            reader = _Reader(sock)
            sock.sendall(_request(GROUP, version=version, headers=headers))
            status, answer_headers, _ = reader.response()
            assert status.endswith("200 OK")
            assert ("connection", "close") in answer_headers
            assert reader.closed()
        assert lane.answered == 1

    def test_an_idle_kept_alive_connection_is_closed_by_the_keep_alive_timer(
        self, served: tuple[str, _Lane, Replica]
    ) -> None:
        """After a lane answer the server arms its idle timer (1 s here), as after any answer."""
        address, lane, _ = served
        with _connect(address) as sock:
            reader = _Reader(sock)
            sock.sendall(_request(GROUP))
            reader.response()
            started = time.monotonic()
            assert reader.closed()
            assert 0.5 < time.monotonic() - started < 4
        assert lane.answered == 1


class TestLeftToTheApp:
    def test_forbidden_forward_header_gets_the_guards_404(
        self, served: tuple[str, _Lane, Replica]
    ) -> None:
        address, lane, _ = served
        forbidden = "X-Forbidden-Forward-To-Microservice: true\r\n"
        assert _status(address, _request(GROUP, headers=forbidden)) == "404"
        assert lane.answered == 0

    def test_a_replica_not_ready_is_answered_503_by_the_app(
        self, served: tuple[str, _Lane, Replica]
    ) -> None:
        address, lane, replica = served
        replica.close()
        assert _status(address, _request(GROUP)) == "503"
        assert lane.answered == 0

    def test_lane_answers_are_counted_in_the_request_metrics(
        self, served: tuple[str, _Lane, Replica]
    ) -> None:
        address, lane, _ = served
        route = f'route="{API}/config/group/{{name}}"'

        def counted(reader: _Reader, sock: socket.socket) -> float:
            sock.sendall(_request("/metrics"))
            _, _, body = reader.response()
            for line in body.decode().splitlines():
                if (
                    line.startswith("rmwatch_sidecar_http_requests_total{")
                    and route in line
                    and 'code="200"' in line
                    and 'method="GET"' in line
                ):
                    return float(line.rsplit(" ", 1)[1])
            return 0.0

        with _connect(address) as sock:
            reader = _Reader(sock)
            before = counted(reader, sock)
            sock.sendall(_request(GROUP) * 3)
            for _ in range(3):
                reader.response()
            assert counted(reader, sock) == before + 3
        assert lane.answered == 3
