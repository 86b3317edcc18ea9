"""The sidecar's HTTP fast lane: the plain group GET answered inside uvicorn's protocol.

Why: a group GET served from memory is cheap (a snapshot lookup and remembered JSON bytes),
and most of a request's cost was uvicorn's per-request machinery around it: the ASGI scope, a
request/response cycle, an asyncio task, two ``send`` messages and the middleware chain
(measured with wrk on one connection set: a bare httptools protocol answers ~45k req/s, uvicorn
with a trivial ASGI app ~11k). The lane answers at ``on_headers_complete`` from the parser's
callback, with exactly the bytes the ASGI path would send, and leaves every other request to
uvicorn untouched.

What it takes is what ``FastGroupRead`` takes (``GroupReads.answer``), and only when nothing
else could apply: a GET (no upgrade, no ``Expect``), with no earlier request on the
connection still being answered (pipelined answers stay in order), a path without
percent-escapes, and no ``X-Forbidden-Forward-To-Microservice: true`` (the guard's 404). It
counts the request in the same metrics (in batches, flushed before each /metrics render),
keeps the drain's counts, and while draining answers with ``connection: close`` and closes,
as ``RequestTracker`` has uvicorn do.

The protocol subclasses uvicorn's ``HttpToolsProtocol`` and relies on five of its members
(``on_message_begin``, ``on_headers_complete``, ``on_body``, ``on_message_complete``,
``on_response_complete``) and its per-connection state (``parser``, ``url``, ``headers``,
``cycle``, ``pipeline``, ``transport``, ``server_state``); ``lane_protocol`` checks the members
exist and returns None otherwise, and the sidecar then runs plain httptools.
"""

from __future__ import annotations

import time
from typing import Any

from rmwatch.http.fast_group_read import GroupReads
from rmwatch.http.forbidden_forward import FORBIDDEN_FORWARD_HEADER
from rmwatch.http.gojson import PD_JSON_MEDIA_TYPE
from rmwatch.http.metrics import RouteCounters
from rmwatch.http.server_drain import ServerDrain

_STATUS_200 = b"HTTP/1.1 200 OK\r\n"
# GroupReads.answer's headers in their order (the routed IndentedJSONResponse's), then the body.
_TAIL = (
    b"x-revision: %d\r\nx-revision-age: %.3f\r\ncontent-length: %d\r\ncontent-type: "
    + PD_JSON_MEDIA_TYPE.encode()
    + b"\r\n%s\r\n%s"
)
_FORBIDDEN = FORBIDDEN_FORWARD_HEADER.lower().encode()
RECORD_BATCH = 256
"""Lane answers recorded in the metrics at once (and at every /metrics render)."""
_PROTOCOL_MEMBERS = (
    "on_message_begin",
    "on_headers_complete",
    "on_body",
    "on_message_complete",
    "on_response_complete",
)


class FastLane:
    """The group GET as whole response bytes, or None for uvicorn to answer."""

    def __init__(self, *, reads: GroupReads, counters: RouteCounters, drain: ServerDrain) -> None:
        self.reads = reads
        self.counters = counters
        self.drain = drain
        self._prefix = reads.PREFIX.encode()
        # The status line and uvicorn's default headers (date, server) as bytes, for the list
        # they were made from: uvicorn swaps in a new list when the date changes (each second).
        self._defaults: list[tuple[bytes, bytes]] | None = None
        self._head = b""
        # Latencies of answered requests not yet in the metrics: recorded in batches (a
        # counter and a histogram observation, each under prometheus' lock, cost ~10 us of a
        # ~60 us request in the server), and before every /metrics render, so a scrape sees
        # every request answered before it. All of it runs on the event loop's thread.
        self._latencies: list[float] = []
        counters.metrics.before_render.append(self.flush)

    def respond(
        self,
        url: bytes,
        headers: list[tuple[bytes, bytes]],
        default_headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
    ) -> tuple[bytes, bool] | None:
        """(response bytes, keep the connection) for a GET of ``url``, or None."""
        path, _, query = url.partition(b"?")
        prefix = self._prefix
        if not path.startswith(prefix) or b"%" in path or b"#" in url:
            return None
        for name, value in headers:
            if name == _FORBIDDEN and value == b"true":
                return None  # ForbiddenForwardGuard answers it
        try:
            name_text = path[len(prefix) :].decode("ascii")
        except UnicodeDecodeError:
            return None
        started = time.perf_counter()
        found = self.reads.lookup(name_text, query)
        if found is None:
            return None
        drain = self.drain
        drain.enter()
        try:
            body, revision, age = found
            if default_headers is not self._defaults:
                self._defaults = default_headers
                self._head = _STATUS_200 + b"".join(
                    b"%s: %s\r\n" % (header, value) for header, value in default_headers
                )
            keep = keep_alive and not drain.draining
            tail = _TAIL % (revision, age, len(body), b"" if keep else b"connection: close\r\n",
                            body)  # fmt: skip
            return self._head + tail, keep
        finally:
            drain.leave()
            latencies = self._latencies
            latencies.append(time.perf_counter() - started)
            if len(latencies) >= RECORD_BATCH:
                self.flush()

    def flush(self) -> None:
        """Put the batched requests into the metrics."""
        if self._latencies:
            latencies, self._latencies = self._latencies, []
            self.counters.record_many("GET", self.reads.route_path, 200, latencies)


def lane_protocol(lane: FastLane) -> type[Any] | None:
    """uvicorn's httptools protocol with ``lane`` in front, or None where it cannot be (no
    httptools, or a uvicorn whose protocol lacks what the lane relies on)."""
    try:
        from uvicorn.protocols.http.httptools_impl import (  # noqa: PLC0415 (optional parts)
            HttpToolsProtocol,
        )
    except ImportError:
        return None
    if not all(callable(getattr(HttpToolsProtocol, m, None)) for m in _PROTOCOL_MEMBERS):
        return None

    class FastLaneProtocol(HttpToolsProtocol):
        """``HttpToolsProtocol`` that lets ``lane`` answer first (see the module doc)."""

        _answered = False

        def on_message_begin(self) -> None:
            self._answered = False
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            cycle = self.cycle
            if (
                (cycle is None or cycle.response_complete)
                and not self.pipeline
                and not self.expect_100_continue
                and not self.root_path
                and self.parser.get_method() == b"GET"
                and not self.parser.should_upgrade()
            ):
                keep_alive = (
                    self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
                )
                response = lane.respond(
                    self.url, self.headers, self.server_state.default_headers, keep_alive
                )
                if response is not None:
                    self._answered = True
                    data, keep = response
                    self.transport.write(data)
                    if not keep:
                        self.transport.close()
                    # Counts the request, then resumes a queued request or arms the idle
                    # keep-alive timer, as after an ASGI answer.
                    self.on_response_complete()
                    return
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self._answered:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if not self._answered:
                super().on_message_complete()

    return FastLaneProtocol


__all__ = ["FastLane", "lane_protocol"]
