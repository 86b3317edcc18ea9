"""One mapping from ``rmwatch.errors`` to HTTP answers, used by the writer's app and the sidecar's.

Errors are plain text, as PD's handlers answer them (gin's ``c.String``); the replica's own
refusals carry JSON so a client can read the state and revision without parsing prose:

=========================  ====  ==========================================================
error                      code  body
=========================  ====  ==========================================================
BodyTooLargeError          413   ``request body over <limit> bytes``
InvalidInputError          400   ``invalid <field>: <reason>``
ConflictError              409   the message and ``current revision <n>``; ``X-Revision: n``
WriteError subclasses      own   the message: WriteRefusedError 403, NotFoundError 404,
                                 AlreadyExistsError 400, NotLeader/Draining 503,
                                 EtcdRefusedError its own (507/429/413/503)
NotReadyError              503   JSON ``{"state", "reason", "revision"}``
RevisionTimeoutError       504   JSON ``{"error", "min_revision", "revision"}``;
                                 ``X-Revision`` = the revision reached
EtcdUnavailableError       503   the message (etcd did not answer; try again later)
other RmwatchError         500   the message (DecodeError names the key)
anything else              500   ``internal error: <type>`` (nothing internal leaks)
=========================  ====  ==========================================================

``Refusal`` ends a request early with a ready answer (401, 508, ...) for the few refusals that
are not errors of the library.
"""

from __future__ import annotations

from fastapi import Response
from fastapi.responses import JSONResponse

from rmwatch.errors import (
    BodyTooLargeError,
    ConflictError,
    EtcdUnavailableError,
    InvalidInputError,
    NotReadyError,
    RevisionTimeoutError,
    RmwatchError,
    WriteError,
)
from rmwatch.http.pd import text


class Refusal(Exception):  # noqa: N818 -- a request outcome, not a fault
    """Ends a request early with ``response`` (answered as is by ``error_response``)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def error_response(exc: Exception, *, revision: int | None = None) -> Response:
    """The HTTP answer to ``exc`` (see the module's table).

    Args:
        exc: what the handler raised.
        revision: the revision the server is at, reported by a NotReadyError answer.
    """
    if isinstance(exc, Refusal):
        return exc.response
    if isinstance(exc, BodyTooLargeError):
        return text(413, f"request body over {exc.limit} bytes")
    if isinstance(exc, InvalidInputError):
        return text(400, str(exc))
    if isinstance(exc, ConflictError):
        current = str(exc.current_revision)
        return text(409, f"{exc}; current revision {current}", {"X-Revision": current})
    if isinstance(exc, WriteError):
        return text(exc.status, str(exc))
    if isinstance(exc, NotReadyError):
        body = {"state": exc.state, "reason": exc.reason, "revision": revision}
        return JSONResponse(body, status_code=503)
    if isinstance(exc, RevisionTimeoutError):
        body = {"error": str(exc), "min_revision": exc.wanted, "revision": exc.current}
        return JSONResponse(body, status_code=504, headers={"X-Revision": str(exc.current)})
    if isinstance(exc, EtcdUnavailableError):
        return text(503, str(exc))
    if isinstance(exc, RmwatchError):
        return text(500, str(exc))
    return text(500, f"internal error: {type(exc).__name__}")


__all__ = ["Refusal", "error_response"]
