"""Reading a request body with a size cap, shared by the writer's API and the sidecar."""

from __future__ import annotations

from starlette.requests import Request

from rmwatch.errors import BodyTooLargeError


async def read_body(request: Request, max_body: int) -> bytes:
    """The request body, refusing (BodyTooLargeError) more than ``max_body`` bytes without
    buffering them: the declared length is checked first, then the bytes as they stream in."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise BodyTooLargeError(max_body)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body:
            raise BodyTooLargeError(max_body)
        chunks.append(chunk)
    return b"".join(chunks)
