"""PD's guard for ``X-Forbidden-Forward-To-Microservice: true``, for both apps.

PD's RM metadata fallback handler answers ``http.NotFound`` to any request under the RM prefix
whose header is exactly ``true`` (pkg/mcs/resourcemanager/redirector/redirector.go:89, HEAD
a186e0c): the header means "do not send this to the RM service", and the RM routes are that
service. Go's ``http.NotFound`` writes ``404 page not found`` and a newline, as text/plain.

A plain ASGI check rather than a router dependency, so that routes need no FastAPI per-request
dependency solving.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from rmwatch.http.pd import PREFIX

FORBIDDEN_FORWARD_HEADER = "X-Forbidden-Forward-To-Microservice"
NOT_FOUND_TEXT = "404 page not found\n"
"""Go's ``http.NotFound`` body (``http.Error`` ends it with a newline)."""


def not_found() -> Response:
    """Go's ``http.NotFound`` answer."""
    return PlainTextResponse(
        NOT_FOUND_TEXT, status_code=404, headers={"X-Content-Type-Options": "nosniff"}
    )


class ForbiddenForwardGuard:
    """ASGI middleware: 404 (see the module doc) for a request under PD's prefix carrying
    ``X-Forbidden-Forward-To-Microservice: true``, whatever its method.

    Args:
        app: the wrapped app.
        stamp: adds the app's own headers to the answer (the sidecar's revision), or None.
    """

    _HEADER = FORBIDDEN_FORWARD_HEADER.lower().encode()
    _PREFIX = PREFIX + "/"

    def __init__(
        self, app: ASGIApp, *, stamp: Callable[[Response], Response] | None = None
    ) -> None:
        self.app = app
        self.stamp = stamp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"].startswith(self._PREFIX)
            and (self._HEADER, b"true") in scope["headers"]
        ):
            response = not_found()
            if self.stamp is not None:
                response = self.stamp(response)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


__all__ = ["FORBIDDEN_FORWARD_HEADER", "NOT_FOUND_TEXT", "ForbiddenForwardGuard", "not_found"]
