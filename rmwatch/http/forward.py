"""The one HTTP client that forwards a write to another writer, and what its failures mean.

Both apps forward writes: the sidecar sends every write to the writer leader, a writer that is
not the leader (or is draining) sends it on to the leader. Both go through ``ForwardClient``:
one long-lived ``httpx.AsyncClient`` per app (connections pooled, closed on shutdown), the
request passed on with its method, path, query, body and end-to-end headers, the answer passed
back with its status, body and end-to-end headers.

A failure is classified once (``delivery``), by whether the request can have reached the
other side:

- ``NOT_SENT``: no connection was made (refused, or the connect timed out) or none was free
  in the pool. Not a byte of the request left, so sending it elsewhere cannot apply it twice.
- ``MAY_HAVE_APPLIED``: the request was (or may have been) sent, then the answer did not come
  (read timeout, connection broken). The write may or may not be committed; resending could
  apply it twice, so the caller is told so and nothing is retried.

Headers of the handshake between the two sides:

- ``X-Rmwatch-Not-Applied: 1`` on a writer's 503 means it refused before applying anything
  (draining, or deposed): the forwarder may look for the next leader.
- ``X-Rmwatch-Forwarded`` marks a writer-to-writer hop; a writer never forwards it again.
- ``X-Rmwatch-Sidecar-Forwarded`` marks a sidecar's forward; a sidecar never forwards it again.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence

import httpx
from fastapi import Response

from rmwatch.http.pd import text

NOT_APPLIED_HEADER = "X-Rmwatch-Not-Applied"
FORWARDED_HEADER = "X-Rmwatch-Forwarded"
SIDECAR_FORWARDED_HEADER = "X-Rmwatch-Sidecar-Forwarded"
# A writer that is not the leader waits up to 6 s for one and gives the forwarded call 7 s
# (writer_forward.FORWARD_WAIT, FORWARD_TIMEOUT): 15 s covers that one extra hop.
DEFAULT_FORWARD_TIMEOUT = 15.0
# Writers sit on the same network; a connect that takes 2 s is a dead address.
CONNECT_TIMEOUT = 2.0
# Hop-by-hop headers (RFC 9110 7.6.1) and those httpx recomputes for the new message.
_DROP_REQUEST = frozenset(
    {"host", "content-length", "connection", "keep-alive", "proxy-authorization",
     "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "expect"}
)  # fmt: skip
_DROP_RESPONSE = frozenset(
    {"content-length", "content-encoding", "connection", "keep-alive", "transfer-encoding",
     "trailer", "upgrade", "date", "server"}
)  # fmt: skip
# Raised before a byte of the request left: the connect failed or timed out, or no pooled
# connection became free.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class Delivery(enum.Enum):
    """Whether a failed forward can have reached the other side."""

    NOT_SENT = "not_sent"
    MAY_HAVE_APPLIED = "may_have_applied"


def delivery(exc: httpx.HTTPError) -> Delivery:
    """``NOT_SENT`` for a connect-phase failure (safe to send elsewhere), else
    ``MAY_HAVE_APPLIED`` (never resend)."""
    return Delivery.NOT_SENT if isinstance(exc, _NOT_SENT) else Delivery.MAY_HAVE_APPLIED


def outcome_unknown(address: str, exc: httpx.HTTPError) -> Response:
    """The answer to a write that was sent but got no answer: 504 on a timeout, else 502,
    saying it may or may not have been applied."""
    status = 504 if isinstance(exc, httpx.TimeoutException) else 502
    message = (f"the write was sent to {address} but no answer came back ({exc!r}): "
               "it may or may not have been applied")  # fmt: skip
    return text(status, message)


class ForwardClient:
    """Sends a request on to another server and returns its answer (one per app).

    Args:
        timeout: deadline of one forwarded request, in seconds (connects: ``CONNECT_TIMEOUT``).
    """

    def __init__(self, *, timeout: float) -> None:
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        # Created on first use, inside the serving event loop, then reused for every forward.
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=min(CONNECT_TIMEOUT, self.timeout))
            )
        return self._client

    @property
    def pooled(self) -> httpx.AsyncClient | None:
        """The pooled ``httpx.AsyncClient``: None before the first send and after ``aclose``."""
        return self._client

    async def aclose(self) -> None:
        """Close the pooled connections (on the app's shutdown)."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def send(
        self,
        *,
        method: str,
        url: str,
        params: Sequence[tuple[str, str]],
        body: bytes,
        headers: Mapping[str, str],
        mark: str,
    ) -> Response:
        """Send ``method url?params`` with ``body`` and the end-to-end ``headers`` plus
        ``mark: 1``; the answer with its status, body and end-to-end headers.

        Raises:
            httpx.HTTPError: no answer; ``delivery(exc)`` says whether anything was sent.
        """
        out = {k: v for k, v in headers.items() if k.lower() not in _DROP_REQUEST}
        out[mark] = "1"
        query: list[tuple[str, str | int | float | bool | None]] = list(params)
        answer = await self._http().request(method, url, params=query, content=body, headers=out)
        passed = {k: v for k, v in answer.headers.items() if k.lower() not in _DROP_RESPONSE}
        return Response(answer.content, status_code=answer.status_code, headers=passed)


__all__ = [
    "CONNECT_TIMEOUT",
    "DEFAULT_FORWARD_TIMEOUT",
    "FORWARDED_HEADER",
    "NOT_APPLIED_HEADER",
    "SIDECAR_FORWARDED_HEADER",
    "Delivery",
    "ForwardClient",
    "delivery",
    "outcome_unknown",
]
