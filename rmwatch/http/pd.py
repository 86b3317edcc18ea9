"""PD's resource-manager HTTP conventions, defined once for the writer's app and the sidecar's.

PD's resource manager serves its metadata routes under ``/resource-manager/api/v1``, reads
``with_stats`` as ``strings.EqualFold(v, "true")`` (only ``true``, in any case, turns it on),
and answers errors as plain text (gin's ``c.String``). tests/test_http_shared.py pins each
against the line of PD's code it comes from.
"""

from __future__ import annotations

from fastapi import Request, Response
from fastapi.responses import PlainTextResponse

PREFIX = "/resource-manager/api/v1"
"""The path every PD resource-manager route sits under."""


def query(request: Request, name: str) -> str | None:
    """The FIRST value of query parameter ``name``, or None: gin's ``c.Query`` takes the first
    of repeated values (url.Values.Get), where starlette's ``query_params.get`` takes the last."""
    values = request.query_params.getlist(name)
    return values[0] if values else None


def with_stats(value: str | None) -> bool:
    """Whether a ``with_stats`` query value asks for RUStats: ``true`` in any case, as PD;
    anything else (``1``, ``yes``, empty, absent) does not."""
    return value is not None and value.lower() == "true"


def text(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """A plain-text answer, as PD's handlers write every error and some successes."""
    return PlainTextResponse(message, status_code=status, headers=headers)


def write_success(revision: int) -> Response:
    """A committed write: PD's ``c.String(200, "Success!")`` -- 8 bytes of text/plain, no JSON
    quotes -- and ``X-Revision`` = the commit's revision (an rmwatch addition: read your
    writes with ``?min_revision=``)."""
    return PlainTextResponse("Success!", headers={"X-Revision": str(revision)})


__all__ = ["PREFIX", "query", "text", "with_stats", "write_success"]
