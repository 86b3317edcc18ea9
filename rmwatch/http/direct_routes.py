"""The writer's fast path: PD routes with a fixed path go straight to their endpoint.

Why it exists: PD clients hit a handful of fixed-path write routes (``POST config/group``,
``POST config/keyspace/service-limit``, ...) at the writer's full write rate, and for those
the router's path matching and FastAPI's per-request dependency solving cost more than the
endpoint itself. Every such endpoint takes the bare ``Request`` and returns a ``Response``
(its errors answered inside it), so skipping them changes nothing in the answer; anything
else -- routes with path parameters, ``/health``, unknown paths -- is routed as usual.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from rmwatch.http.pd import PREFIX

Endpoint = Callable[[Request], Awaitable[Response]]


def direct_routes(app: FastAPI) -> dict[tuple[str, str], Endpoint]:
    """``(method, path) -> endpoint`` of ``app``'s PD routes without path parameters."""
    out: dict[tuple[str, str], Endpoint] = {}
    for route in app.routes:
        path = getattr(route, "path", "")
        if isinstance(route, APIRoute) and path.startswith(PREFIX + "/") and "{" not in path:
            for method in route.methods or ():
                out[(method, path)] = route.endpoint
    return out


class DirectRoutes:
    """ASGI middleware: a request for one of ``routes`` is answered by its endpoint directly
    (see the module doc); everything else goes to the wrapped app."""

    def __init__(self, app: ASGIApp, *, routes: dict[tuple[str, str], Endpoint]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = self.routes.get((scope["method"], scope["path"]))
            if endpoint is not None:
                response = await endpoint(Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


__all__ = ["DirectRoutes", "direct_routes"]
