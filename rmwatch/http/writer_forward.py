"""A writer that cannot commit a write (not the leader, or draining) hands it to the leader.

The write goes through the app's ``ForwardClient`` to the leader found in etcd; the leader's
answer is returned unchanged. A forwarded request carries ``X-Rmwatch-Forwarded`` and is never
forwarded again, so two writers that disagree about who leads cannot bounce a request back and
forth; the refusing writer marks its 503 ``X-Rmwatch-Not-Applied`` so the first one keeps
looking for the next leader.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool

from rmwatch._logging import get_logger
from rmwatch.errors import DrainingError, NotLeaderError, WriteError
from rmwatch.http.forward import (
    FORWARDED_HEADER,
    NOT_APPLIED_HEADER,
    Delivery,
    ForwardClient,
    delivery,
    outcome_unknown,
)
from rmwatch.http.pd import text, write_success
from rmwatch.store.leadership import read_leader
from rmwatch.store.writer import Writer

log = get_logger("writer")

# Leader election after a resign takes one follower poll (~150 ms); after a crash, one lease
# TTL (5 s). Waiting 6 s for a leader covers both before answering 503.
FORWARD_WAIT = 6.0
# One forwarded write: the leader's own deadline is 5 s per operation, plus a margin.
FORWARD_TIMEOUT = 7.0
# How often the leader key is read again while waiting for a leader.
_POLL = 0.05


class WriterForwarder:
    """Runs a write the local writer refused (NotLeaderError, DrainingError) at the leader.

    Args:
        writer: the local writer (its leadership names this writer's own address).
        client: the app's forwarding client.
        wait: how long to wait for a leader before answering 503, in seconds.
    """

    def __init__(self, writer: Writer, *, client: ForwardClient, wait: float) -> None:
        self.writer = writer
        self.client = client
        self.wait = wait

    async def forward(
        self, request: Request, body: bytes, cause: WriteError, op: Callable[[], int]
    ) -> Response:
        """Send a write this writer cannot commit to the leader, waiting up to ``wait`` for
        one. NotLeaderError and DrainingError are raised before anything commits, so the
        write can safely go elsewhere, or run here if this writer becomes leader meanwhile."""
        metrics = self.writer.metrics.forwarded
        if request.headers.get(FORWARDED_HEADER):
            # One hop only (no ping-pong between writers); the mark tells the forwarder that
            # nothing was applied, so it keeps looking for the next leader.
            metrics.labels(outcome="loop").inc()
            return text(503, f"not the leader and the request was already forwarded: {cause}",
                        {NOT_APPLIED_HEADER: "1"})  # fmt: skip
        leadership = self.writer.leadership
        own = leadership.address if leadership is not None else None
        deadline = time.monotonic() + self.wait
        while True:
            info = await run_in_threadpool(read_leader, self.writer.client, self.writer.layout)
            if info is not None and info.address == own and not self.writer.draining:
                # Elected while forwarding: run the write here.
                try:
                    return write_success(await run_in_threadpool(op))
                except (NotLeaderError, DrainingError):
                    pass  # lost it again before committing: look again
            elif info is not None and info.address != own:
                try:
                    answer = await self._send(request, body, info.address)
                except httpx.HTTPError as exc:
                    if delivery(exc) is Delivery.MAY_HAVE_APPLIED:
                        # Resending could apply it twice: say so and stop.
                        metrics.labels(outcome="error").inc()
                        log.warning("forward_outcome_unknown", address=info.address,
                                    error=repr(exc))  # fmt: skip
                        return outcome_unknown(info.address, exc)
                    # Nothing was sent: that leader is gone, look again.
                else:
                    if answer.headers.get(NOT_APPLIED_HEADER) != "1":
                        return answer
                    # That writer is draining or was just deposed: nothing applied, look again.
            if time.monotonic() >= deadline:
                metrics.labels(outcome="no_leader").inc()
                return text(503, f"no leader to forward to within {self.wait:.0f}s ({cause})")
            await asyncio.sleep(_POLL)

    async def _send(self, request: Request, body: bytes, address: str) -> Response:
        answer = await self.client.send(
            method=request.method,
            url=address.rstrip("/") + request.url.path,
            params=request.query_params.multi_items(),
            body=body,
            headers=request.headers,
            mark=FORWARDED_HEADER,
        )
        self.writer.metrics.forwarded.labels(outcome="ok").inc()
        return answer


__all__ = ["FORWARD_TIMEOUT", "FORWARD_WAIT", "WriterForwarder"]
