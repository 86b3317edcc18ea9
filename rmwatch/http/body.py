"""Reading a request body with a size cap, shared by the writer's API and the sidecar."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request

from rmwatch.errors import BodyTooLargeError

DRAIN_LIMIT = 16 * 1024 * 1024
"""Bytes of an oversize body read and dropped before the 413 goes out. A server that answers
before the client has sent its body, then closes, makes the client fail with a broken pipe
instead of reading the 413 (a 2 MiB body did); reading the rest first lets the answer arrive.
Past 16 MiB the connection is cut rather than read on for a client that sends without end."""


async def _drain(stream: AsyncIterator[bytes], already: int) -> None:
    # Reads on from where ``stream`` is: a second ``request.stream()`` would raise starlette's
    # "Stream consumed" once the last chunk has arrived (a 500 instead of the 413).
    seen = already
    async for chunk in stream:
        seen += len(chunk)
        if seen > DRAIN_LIMIT:
            return


async def read_body(request: Request, max_body: int) -> bytes:
    """The request body, refusing (BodyTooLargeError) more than ``max_body`` bytes without
    buffering them: the declared length is checked first, then the bytes as they stream in
    (chunked bodies have no declared length). An oversize body is read to its end (up to
    ``DRAIN_LIMIT``) and dropped, so the client reads the 413 instead of a broken pipe."""
    stream = request.stream()
    declared = request.headers.get("content-length")
    if (
        declared is not None
        and declared.isascii()
        and declared.isdigit()
        and len(declared) <= 20  # int() refuses 4,300+ digits; longer goes by the stream count
        and int(declared) > max_body
    ):
        if int(declared) <= DRAIN_LIMIT:
            await _drain(stream, 0)
        raise BodyTooLargeError(max_body)
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > max_body:
            await _drain(stream, size)
            raise BodyTooLargeError(max_body)
        chunks.append(chunk)
    return b"".join(chunks)


__all__ = ["DRAIN_LIMIT", "read_body"]
