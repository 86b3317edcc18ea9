"""Writes sent to the sidecar go to the writer leader; its answer comes back unchanged.

The sidecar never writes metadata (RM nodes are read-only for it). A PD client that sends a
write to the RM address still works: the write is forwarded (``rmwatch.http.forward``) to
``writer_url`` when one is configured (any writer: a follower forwards to its leader itself),
else to the leader found in etcd.

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

import httpx
from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool

from rmwatch._logging import get_logger
from rmwatch.errors import BodyTooLargeError
from rmwatch.http.body import read_body
from rmwatch.http.errors import error_response
from rmwatch.http.forward import (
    SIDECAR_FORWARDED_HEADER,
    Delivery,
    ForwardClient,
    delivery,
    outcome_unknown,
)
from rmwatch.http.metrics import SidecarMetrics
from rmwatch.http.pd import text

log = get_logger("sidecar")

DEFAULT_MAX_BODY = 1024 * 1024


class SidecarForwarder:
    """Forwards write requests to the writer leader (see module doc).

    Args:
        writer_url: a writer's base URL; when set, discovery is not used.
        discover_leader: returns the leader writer's base URL or None (blocking; it runs in
            a worker thread), e.g. ``rmwatch.store.leadership.read_leader`` on etcd.
        enabled: False answers every write 403, naming the leader.
        client: the app's forwarding client.
        max_body: largest request body forwarded, in bytes (413 above).
        metrics: where outcomes are counted.
    """

    def __init__(
        self,
        *,
        writer_url: str | None,
        discover_leader: Callable[[], str | None] | None,
        enabled: bool,
        client: ForwardClient,
        max_body: int,
        metrics: SidecarMetrics,
    ) -> None:
        self.writer_url = writer_url.rstrip("/") if writer_url else None
        self.discover_leader = discover_leader
        self.enabled = enabled
        self.client = client
        self.max_body = max_body
        self.metrics = metrics

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
            return text(508, "write already forwarded by a sidecar: the writer URL points at "
                             "a sidecar, not a writer")  # fmt: skip
        # The body first: whatever the answer, the client must be able to finish sending
        # (an answer sent while it still sends ends in a broken pipe on its side).
        try:
            body = await read_body(request, self.max_body)
        except BodyTooLargeError as exc:
            self.metrics.forwarded.labels("refused").inc()
            return error_response(exc)
        address, where = await self.leader()
        if not self.enabled:
            self.metrics.forwarded.labels("refused").inc()
            target = f"send it to the {where}" if address else f"and {where}"
            return text(403, "metadata write is disabled: this read-only replica sidecar does not "
                             f"forward writes; {target}")  # fmt: skip
        if address is None:
            self.metrics.forwarded.labels("no_leader").inc()
            return text(503, f"cannot forward the write: {where}")
        try:
            return await self._send(request, body, address)
        except httpx.HTTPError as exc:
            if delivery(exc) is Delivery.MAY_HAVE_APPLIED:
                return self._unknown(address, exc)
            failure: httpx.HTTPError = exc
        if self.writer_url is None:
            # Nothing was sent: the leader may just have moved. Ask etcd once more.
            again, where_again = await self.leader()
            if again is not None and again != address:
                address, where = again, where_again
                try:
                    return await self._send(request, body, address)
                except httpx.HTTPError as exc:
                    if delivery(exc) is Delivery.MAY_HAVE_APPLIED:
                        return self._unknown(address, exc)
                    failure = exc
        self.metrics.forwarded.labels("unreachable").inc()
        return text(503, f"cannot forward the write: the {where} is unreachable "
                         f"({failure!r}); nothing was sent")  # fmt: skip

    def _unknown(self, address: str, exc: httpx.HTTPError) -> Response:
        self.metrics.forwarded.labels("unknown").inc()
        log.warning("forward_outcome_unknown", address=address, error=repr(exc))
        return outcome_unknown(address, exc)

    async def _send(self, request: Request, body: bytes, address: str) -> Response:
        answer = await self.client.send(
            method=request.method,
            url=address + request.url.path,
            params=request.query_params.multi_items(),
            body=body,
            headers=request.headers,
            mark=SIDECAR_FORWARDED_HEADER,
        )
        self.metrics.forwarded.labels("answered").inc()
        return answer


__all__ = ["DEFAULT_MAX_BODY", "SidecarForwarder"]
