"""The writer's HTTP API: PD's resource-manager routes, bodies and status codes.

Routes live under ``/resource-manager/api/v1/`` as in PD. Success of a write answers 200 with
the JSON string ``"Success!"`` and ``X-Revision: <commit revision>``; errors are plain text
with PD's codes: 400 bad body (naming the field), 401 missing/wrong bearer token, 403 role
refuses it, 404 group/keyspace/limit missing, 409 compare-and-set lost (``X-Revision`` = the
current revision), 413 body over ``max_body``, 500 other, 503 no leader reachable.

A writer that is not the leader, or is draining, forwards the write to the leader found in
etcd (same method, path, query, body and Authorization header; the leader's answer is returned
unchanged). A forwarded request carries ``X-Rmwatch-Forwarded`` and is never forwarded again,
so two writers that disagree about who leads cannot bounce a request back and forth.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import structlog
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import SecretStr, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from rmwatch.errors import (
    BodyTooLargeError,
    ConflictError,
    DecodeError,
    DrainingError,
    EtcdUnavailableError,
    InvalidInputError,
    NotLeaderError,
    RmwatchError,
    WriteError,
)
from rmwatch.http import pdjson
from rmwatch.http.body import read_body
from rmwatch.store.keys import parse_keyspace_id
from rmwatch.store.leadership import read_leader
from rmwatch.store.models import ResourceGroup
from rmwatch.store.writer import Writer, parse_json_object
from rmwatch.store.writer_drain import Drainer

log = structlog.get_logger("rmwatch.api")

PREFIX = "/resource-manager/api/v1"
MAX_BODY = 1024 * 1024
# Set on a 503 that refused a write before anything was applied (safe to send elsewhere).
NOT_APPLIED_HEADER = "X-Rmwatch-Not-Applied"
FORWARDED_HEADER = "X-Rmwatch-Forwarded"
# Leader election after a resign takes one follower poll (~150 ms); after a crash, one lease
# TTL (5 s). Waiting 6 s for a leader covers both before answering 503.
FORWARD_WAIT = 6.0
# One forwarded write: the leader's own deadline is 5 s per operation, plus a margin.
FORWARD_TIMEOUT = 7.0


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _text(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return PlainTextResponse(message, status_code=status, headers=headers)


def _success(revision: int) -> Response:
    return JSONResponse("Success!", headers={"X-Revision": str(revision)})


def _error_response(exc: BaseException) -> Response:
    if isinstance(exc, _HTTPError):
        return _text(exc.status, exc.message, exc.headers)
    if isinstance(exc, ConflictError):
        return _text(409, f"{exc}; current revision {exc.current_revision}",
                     {"X-Revision": str(exc.current_revision)})  # fmt: skip
    if isinstance(exc, WriteError):
        return _text(exc.status, str(exc))
    if isinstance(exc, InvalidInputError):
        return _text(400, str(exc))
    if isinstance(exc, EtcdUnavailableError | DecodeError):
        return _text(500, str(exc))
    return _text(500, f"internal error: {type(exc).__name__}")


def _validation_message(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    return f"invalid {where}: {err['msg']}"


def _bool_query(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes")


def guarded(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except (RmwatchError, _HTTPError) as exc:
            return _error_response(exc)

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


class _Api:
    """State and helpers behind the routes (one per app)."""

    def __init__(
        self,
        writer: Writer,
        *,
        token: SecretStr | None,
        max_body: int,
        forward_wait: float,
        forward_timeout: float,
        drainer: Drainer,
    ) -> None:
        self.writer = writer
        self.token = token
        self.max_body = max_body
        self.forward_wait = forward_wait
        self.forward_timeout = forward_timeout
        self.drainer = drainer
        # Writes block on etcd, so they run in worker threads: a plain executor hop costs the
        # event loop ~0.1 ms less per write than starlette's run_in_threadpool (anyio's
        # capacity limiter and checkpoints). 40 workers, as anyio's default limit.
        self.pool = ThreadPoolExecutor(max_workers=40, thread_name_prefix="rmwatch-write")

    # ---- request plumbing ----------------------------------------------------------------

    def check_auth(self, request: Request) -> None:
        if self.token is None:
            return
        given = request.headers.get("authorization", "")
        expected = f"Bearer {self.token.get_secret_value()}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise _HTTPError(401, "missing or invalid bearer token",
                             {"WWW-Authenticate": "Bearer"})  # fmt: skip

    async def read_body(self, request: Request) -> bytes:
        try:
            return await read_body(request, self.max_body)
        except BodyTooLargeError:
            raise _HTTPError(413, f"request body over {self.max_body} bytes") from None

    async def keyspace(self, request: Request, name: str | None = None) -> int | None:
        """The keyspace id of a request: ``keyspace_name`` (PD), ``keyspace_id`` (ours), or
        None for the null keyspace."""
        name = name if name is not None else request.query_params.get("keyspace_name")
        if name:
            return await run_in_threadpool(self.writer.resolve_keyspace, name)
        raw = request.query_params.get("keyspace_id")
        if raw is None or raw == "":
            return None
        try:
            return parse_keyspace_id(raw)
        except ValueError as exc:
            raise InvalidInputError("keyspace_id", str(exc)) from None

    async def parse_group(self, request: Request, body: bytes) -> ResourceGroup:
        data = parse_json_object(body)
        if not isinstance(data, dict):
            raise InvalidInputError("body", "must be a JSON object (a resource group)")
        keyspace = await self.keyspace(request)
        if keyspace is not None:
            data = {**data, "keyspace_id": keyspace}
        try:
            return ResourceGroup.model_validate(data)
        except ValidationError as exc:
            raise _HTTPError(400, _validation_message(exc)) from None

    # ---- writes --------------------------------------------------------------------------

    async def write(self, request: Request, body: bytes, op: Callable[[], int]) -> Response:
        """Run ``op`` here, or forward to the leader when this writer cannot commit."""
        try:
            revision = await asyncio.get_running_loop().run_in_executor(self.pool, op)
        except (NotLeaderError, DrainingError) as exc:
            return await self.forward(request, body, exc, op)
        return _success(revision)

    async def forward(
        self, request: Request, body: bytes, cause: WriteError, op: Callable[[], int]
    ) -> Response:
        """Send a write this writer cannot commit to the leader, waiting up to forward_wait
        for one. NotLeaderError and DrainingError are raised before anything commits, so the
        write can safely go elsewhere, or run here if this writer becomes leader meanwhile."""
        if request.headers.get(FORWARDED_HEADER):
            # One hop only (no ping-pong between writers); the mark tells the forwarder that
            # nothing was applied, so it keeps looking for the next leader.
            self.writer.metrics.forwarded.labels(outcome="loop").inc()
            answer = _text(503, f"not the leader and the request was already forwarded: {cause}")
            answer.headers[NOT_APPLIED_HEADER] = "1"
            return answer
        leadership = self.writer.leadership
        own = leadership.address if leadership is not None else None
        deadline = time.monotonic() + self.forward_wait
        while True:
            info = await run_in_threadpool(read_leader, self.writer.client, self.writer.layout)
            if info is not None and info.address == own and not self.writer.draining:
                # Elected while forwarding: run the write here.
                try:
                    return _success(await run_in_threadpool(op))
                except (NotLeaderError, DrainingError):
                    pass  # lost it again before committing: look again
            elif info is not None and info.address != own:
                try:
                    answer = await self._send(request, body, info.address)
                    if answer.headers.get(NOT_APPLIED_HEADER) != "1":
                        return answer
                    # That writer is draining or was just deposed: nothing applied, look again.
                except httpx.ConnectError:
                    pass  # nothing was sent: the leader is gone, look again
                except httpx.HTTPError as exc:
                    # The request may have reached the leader: resending could apply it twice.
                    self.writer.metrics.forwarded.labels(outcome="error").inc()
                    return _text(503, f"leader {info.address} did not answer: {exc!r}")
            if time.monotonic() >= deadline:
                self.writer.metrics.forwarded.labels(outcome="no_leader").inc()
                return _text(503, f"no leader to forward to within {self.forward_wait:.0f}s "
                                  f"({cause})")  # fmt: skip
            await asyncio.sleep(0.05)

    async def _send(self, request: Request, body: bytes, address: str) -> Response:
        headers = {FORWARDED_HEADER: "1"}
        for name in ("authorization", "content-type"):
            if name in request.headers:
                headers[name] = request.headers[name]
        url = address.rstrip("/") + request.url.path
        async with httpx.AsyncClient(timeout=self.forward_timeout) as client:
            answer = await client.request(request.method, url, params=request.query_params,
                                          content=body, headers=headers)  # fmt: skip
        self.writer.metrics.forwarded.labels(outcome="ok").inc()
        passed = ("content-type", "x-revision", NOT_APPLIED_HEADER.lower())
        out = {k: v for k, v in answer.headers.items() if k.lower() in passed}
        return Response(answer.content, status_code=answer.status_code, headers=out)


def create_writer_app(
    writer: Writer,
    *,
    token: SecretStr | None,
    max_body: int = MAX_BODY,
    forward_wait: float = FORWARD_WAIT,
    forward_timeout: float = FORWARD_TIMEOUT,
    drainer: Drainer | None = None,
) -> FastAPI:
    """The writer's FastAPI app (PD's RM routes, /health, /metrics, /admin/drain).

    Args:
        writer: the Writer that executes writes and reads.
        token: bearer token every write must carry; None disables the check.
        max_body: largest accepted request body in bytes (413 above).
        forward_wait: how long a non-leader waits for a leader before answering 503.
        forward_timeout: deadline of one forwarded request.
        drainer: the drain controller (one is made if not given; SIGTERM shares it).
    """
    api = _Api(writer, token=token, max_body=max_body, forward_wait=forward_wait,
               forward_timeout=forward_timeout, drainer=drainer or Drainer(writer))  # fmt: skip
    app = FastAPI(title="rmwatch writer", version="0.1.0")
    app.state.api = api
    app.state.drainer = api.drainer
    _group_routes(app, api)
    _config_routes(app, api)
    _ops_routes(app, api)
    app.add_middleware(_DirectRoutes, routes=_direct_routes(app))
    return app


Endpoint = Callable[[Request], Awaitable[Response]]


def _direct_routes(app: FastAPI) -> dict[tuple[str, str], Endpoint]:
    """``(method, path) -> endpoint`` of the PD routes without path parameters."""
    out: dict[tuple[str, str], Endpoint] = {}
    for route in app.routes:
        path = getattr(route, "path", "")
        if isinstance(route, APIRoute) and path.startswith(PREFIX + "/") and "{" not in path:
            for method in route.methods or ():
                out[(method, path)] = route.endpoint
    return out


class _DirectRoutes:
    """ASGI middleware: the PD routes with a fixed path (the write routes PD clients hit) go
    straight to their endpoint, skipping the router and FastAPI's per-request dependency
    solving. Every such endpoint takes the bare ``Request`` and returns a ``Response`` (its
    errors are answered by ``guarded``), so the answer is the same; anything else is routed.
    """

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


def _group_routes(app: FastAPI, api: _Api) -> None:
    writer = api.writer

    @app.post(f"{PREFIX}/config/group")
    @guarded
    async def add_group(request: Request) -> Response:
        """Add a resource group (PD: POST config/group)."""
        api.check_auth(request)
        body = await api.read_body(request)
        group = await api.parse_group(request, body)
        return await api.write(request, body, lambda: writer.add_group(group))

    @app.put(f"{PREFIX}/config/group")
    @guarded
    async def modify_group(request: Request) -> Response:
        """Modify a group's settings; tokens untouched. ``expected_revision`` query: strict CAS."""
        api.check_auth(request)
        body = await api.read_body(request)
        group = await api.parse_group(request, body)
        raw = request.query_params.get("expected_revision")
        if raw is not None and not raw.isdigit():
            raise InvalidInputError("expected_revision", "must be a non-negative integer")
        expected = int(raw) if raw is not None else None
        return await api.write(
            request, body, lambda: writer.modify_group(group, expected_revision=expected)
        )

    @app.get(f"{PREFIX}/config/group/{{name}}")
    @guarded
    async def get_group(request: Request) -> Response:
        """One group as PD shows it; ``with_stats`` adds RUStats."""
        name = request.path_params["name"]
        keyspace = await api.keyspace(request)
        view = await run_in_threadpool(writer.get_group, name, keyspace)
        body = pdjson.group_json(
            view.group, view.states, with_stats=_bool_query(request.query_params.get("with_stats"))
        )
        return JSONResponse(body, headers={"X-Revision": str(view.revision)})

    @app.get(f"{PREFIX}/config/groups")
    @guarded
    async def list_groups(request: Request) -> Response:
        """Every group of a keyspace, read at one revision."""
        keyspace = await api.keyspace(request)
        views, revision = await run_in_threadpool(writer.list_groups, keyspace)
        stats = _bool_query(request.query_params.get("with_stats"))
        body = [pdjson.group_json(v.group, v.states, with_stats=stats) for v in views]
        return JSONResponse(body, headers={"X-Revision": str(revision)})

    @app.delete(f"{PREFIX}/config/group/{{name}}")
    @guarded
    async def delete_group(request: Request) -> Response:
        """Delete a group (settings and states); ``default`` is refused."""
        api.check_auth(request)
        name = request.path_params["name"]
        keyspace = await api.keyspace(request)
        return await api.write(request, b"", lambda: writer.delete_group(name, keyspace))


def _config_routes(app: FastAPI, api: _Api) -> None:
    writer = api.writer

    @app.get(f"{PREFIX}/config/controller")
    @guarded
    async def get_controller(request: Request) -> Response:
        """The controller config (PD's defaults when never written)."""
        config, revision = await run_in_threadpool(writer.get_controller_at)
        return JSONResponse(pdjson.controller_json(config),
                            headers={"X-Revision": str(revision)})  # fmt: skip

    @app.post(f"{PREFIX}/config/controller")
    @guarded
    async def update_controller(request: Request) -> Response:
        """Apply a map of controller keys, all or nothing."""
        api.check_auth(request)
        body = await api.read_body(request)
        items = parse_json_object(body)
        if not isinstance(items, dict):
            raise InvalidInputError("body", "must be a JSON object of controller keys")
        return await api.write(request, body, lambda: writer.update_controller(items))

    async def set_limit(request: Request, name: str | None) -> Response:
        api.check_auth(request)
        body = await api.read_body(request)
        data = parse_json_object(body)
        if not isinstance(data, dict) or "service_limit" not in data:
            raise InvalidInputError("service_limit", 'required (body {"service_limit": f})')
        value = data["service_limit"]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInputError("service_limit", "must be a number")
        keyspace = await api.keyspace(request, name)
        return await api.write(request, body, lambda: writer.set_service_limit(keyspace, value))

    async def get_limit(request: Request, name: str | None) -> Response:
        keyspace = await api.keyspace(request, name)
        limit = await run_in_threadpool(writer.get_service_limit, keyspace)
        return JSONResponse(pdjson.service_limit_json(limit))

    @app.post(f"{PREFIX}/config/keyspace/service-limit")
    @guarded
    async def set_service_limit(request: Request) -> Response:
        """Set the service limit of the null keyspace (or ``keyspace_name``)."""
        return await set_limit(request, None)

    @app.post(f"{PREFIX}/config/keyspace/service-limit/{{keyspace_name}}")
    @guarded
    async def set_keyspace_service_limit(request: Request) -> Response:
        """Set the service limit of a named keyspace."""
        return await set_limit(request, request.path_params["keyspace_name"])

    @app.get(f"{PREFIX}/config/keyspace/service-limit")
    @guarded
    async def get_service_limit(request: Request) -> Response:
        """The service limit of the null keyspace (or ``keyspace_name``)."""
        return await get_limit(request, None)

    @app.get(f"{PREFIX}/config/keyspace/service-limit/{{keyspace_name}}")
    @guarded
    async def get_keyspace_service_limit(request: Request) -> Response:
        """The service limit of a named keyspace."""
        return await get_limit(request, request.path_params["keyspace_name"])


def _ops_routes(app: FastAPI, api: _Api) -> None:
    writer = api.writer

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness, and whether this writer leads."""
        status = api.drainer.status()
        return {"status": "ok", "leader": status["leader"], "draining": status["draining"]}

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus metrics of this writer."""
        return Response(generate_latest(writer.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/drain")
    @guarded
    async def drain(request: Request) -> Response:
        """Drain: stop local writes, finish in-flight ones, resign leadership."""
        api.check_auth(request)
        status = await run_in_threadpool(api.drainer.drain)
        return JSONResponse(status)

    @app.get("/admin/drain")
    async def drain_status() -> dict[str, Any]:
        """``{"draining", "in_flight", "leader"}``."""
        return api.drainer.status()


__all__ = ["FORWARDED_HEADER", "MAX_BODY", "PREFIX", "create_writer_app"]
