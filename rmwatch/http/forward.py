"""Writes sent to the sidecar go to the writer leader; its answer comes back unchanged.

The sidecar never writes metadata (RM nodes are read-only for it). A PD client that sends a
write to the RM address still works: the write is forwarded, with its method, path, query,
body and end-to-end headers (``Authorization`` included), to ``writer_url`` when one is
configured (any writer: a follower forwards to its leader itself), else to the leader found in
etcd. Status, body, ``Content-Type`` and ``X-Revision`` of the answer are passed through.

When nothing can be sent, the answer says why (plain text, like PD's errors):

- forwarding disabled: 403, naming the leader's address so the caller can go there;
- no leader known: 503;
- the leader could not be connected to: etcd is asked again once (leadership may just have
  moved; nothing was sent, so a retry cannot apply the write twice), then 503;
- no answer in time, or the connection broke after sending: 504 / 502, saying the write may
  or may not have been applied. It is never resent: that could apply it twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import structlog
from fastapi import Request, Response
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from rmwatch.errors import BodyTooLargeError
from rmwatch.http.body import read_body
from rmwatch.http.metrics import SidecarMetrics

log = structlog.get_logger("rmwatch.sidecar")

# A writer that is not the leader waits up to 6 s for one and gives the forwarded call 7 s
# (store/api.py FORWARD_WAIT, FORWARD_TIMEOUT): 15 s covers that one extra hop.
DEFAULT_FORWARD_TIMEOUT = 15.0
# Writers sit on the same network; a connect that takes 2 s is a dead address.
CONNECT_TIMEOUT = 2.0
DEFAULT_MAX_BODY = 1024 * 1024
# Set on every forwarded write; a sidecar that receives it refuses to forward again, so a
# writer URL pointing at a sidecar by mistake cannot loop.
SIDECAR_FORWARDED_HEADER = "X-Rmwatch-Sidecar-Forwarded"
# Hop-by-hop headers (RFC 9110 7.6.1) and those httpx recomputes for the new message.
_DROP_REQUEST = frozenset(
    {"host", "content-length", "connection", "keep-alive", "proxy-authorization",
     "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "expect"}
)  # fmt: skip
_DROP_RESPONSE = frozenset(
    {"content-length", "content-encoding", "connection", "keep-alive", "transfer-encoding",
     "trailer", "upgrade", "date", "server"}
)  # fmt: skip


# Failures that happen before a byte of the request left: safe to try another address.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _text(status: int, message: str) -> Response:
    return PlainTextResponse(message, status_code=status)


class WriteForwarder:
    """Forwards write requests to the writer leader (see module doc).

    Args:
        writer_url: a writer's base URL; when set, discovery is not used.
        discover_leader: returns the leader writer's base URL or None (blocking; it runs in
            a worker thread), e.g. ``rmwatch.store.leadership.read_leader`` on etcd.
        enabled: False answers every write 403, naming the leader.
        timeout: deadline of one forwarded request, in seconds.
        max_body: largest request body forwarded, in bytes (413 above).
        metrics: where outcomes are counted.
    """

    def __init__(
        self,
        *,
        writer_url: str | None,
        discover_leader: Callable[[], str | None] | None,
        enabled: bool,
        timeout: float,
        max_body: int,
        metrics: SidecarMetrics,
    ) -> None:
        self.writer_url = writer_url.rstrip("/") if writer_url else None
        self.discover_leader = discover_leader
        self.enabled = enabled
        self.timeout = timeout
        self.max_body = max_body
        self.metrics = metrics
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        # Created on first use, inside the serving loop; reused so connections are pooled.
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=CONNECT_TIMEOUT)
            )
        return self._client

    async def aclose(self) -> None:
        """Close pooled connections to the writer."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def leader(self) -> tuple[str | None, str]:
        """(base URL of the writer to send to, or None; a phrase describing where it came from
        or why there is none)."""
        if self.writer_url is not None:
            return self.writer_url, f"writer at {self.writer_url} (configured)"
        if self.discover_leader is None:
            return None, "no writer URL is configured and leader discovery is off"
        try:
            address = await run_in_threadpool(self.discover_leader)
        except Exception as exc:
            return None, f"the writer leader could not be looked up in etcd: {exc}"
        if not address:
            return None, "no writer leader is elected in etcd"
        return address.rstrip("/"), f"writer leader at {address}"

    async def handle(self, request: Request) -> Response:
        """Answer one write request (forwarded, or refused with the reason)."""
        if request.headers.get(SIDECAR_FORWARDED_HEADER):
            self.metrics.forwarded.labels("refused").inc()
            return _text(508, "write already forwarded by a sidecar: the writer URL points at "
                              "a sidecar, not a writer")  # fmt: skip
        address, where = await self.leader()
        if not self.enabled:
            self.metrics.forwarded.labels("refused").inc()
            target = f"send it to the {where}" if address else f"and {where}"
            return _text(403, "metadata write disabled: this read-only replica sidecar does not "
                              f"forward writes; {target}")  # fmt: skip
        if address is None:
            self.metrics.forwarded.labels("no_leader").inc()
            return _text(503, f"cannot forward the write: {where}")
        try:
            body = await read_body(request, self.max_body)
        except BodyTooLargeError:
            self.metrics.forwarded.labels("refused").inc()
            return _text(413, f"request body over {self.max_body} bytes")
        try:
            return await self._send(request, body, address)
        except _NOT_SENT as exc:
            failure: httpx.HTTPError = exc
        except httpx.HTTPError as exc:
            return self._unknown(address, exc)
        if self.writer_url is None:
            # Nothing was sent: the leader may just have moved. Ask etcd once more.
            again, where_again = await self.leader()
            if again is not None and again != address:
                address, where = again, where_again
                try:
                    return await self._send(request, body, address)
                except _NOT_SENT as exc:
                    failure = exc
                except httpx.HTTPError as exc:
                    return self._unknown(address, exc)
        self.metrics.forwarded.labels("unreachable").inc()
        return _text(503, f"cannot forward the write: the {where} is unreachable "
                          f"({failure!r}); nothing was sent")  # fmt: skip

    def _unknown(self, address: str, exc: httpx.HTTPError) -> Response:
        self.metrics.forwarded.labels("unknown").inc()
        log.warning("sidecar.forward_outcome_unknown", address=address, error=repr(exc))
        status = 504 if isinstance(exc, httpx.TimeoutException) else 502
        return _text(status, f"the write was sent to {address} but no answer came back "
                             f"({exc!r}): it may or may not have been applied")  # fmt: skip

    async def _send(self, request: Request, body: bytes, address: str) -> Response:
        headers: dict[str, Any] = {
            k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST
        }
        headers[SIDECAR_FORWARDED_HEADER] = "1"
        url = address + request.url.path
        answer = await self._http().request(
            request.method, url, params=request.query_params, content=body, headers=headers
        )
        self.metrics.forwarded.labels("answered").inc()
        passed = {k: v for k, v in answer.headers.items() if k.lower() not in _DROP_RESPONSE}
        return Response(answer.content, status_code=answer.status_code, headers=passed)


__all__ = [
    "DEFAULT_FORWARD_TIMEOUT",
    "DEFAULT_MAX_BODY",
    "SIDECAR_FORWARDED_HEADER",
    "BodyTooLargeError",
    "WriteForwarder",
    "read_body",
]
