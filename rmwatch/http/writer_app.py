"""The writer's HTTP API: PD's resource-manager routes, bodies and status codes.

Routes live under PD's prefix (``rmwatch.http.pd.PREFIX``). Success of a write answers 200 with
PD's 8 bytes of text/plain ``Success!`` and ``X-Revision: <commit revision>``; errors are plain text
with PD's codes (``rmwatch.http.errors``): 400 bad body (naming the field), 401 missing/wrong
bearer token, 403 role refuses it, 404 group/keyspace/limit missing, 409 compare-and-set lost
(``X-Revision`` = the current revision), 413 body over ``max_body``, 500 other, 503 no leader
reachable or etcd unavailable; etcd's own refusals are named (``rmwatch.store.etcd_refusal``).
Bodies are decoded as PD decodes them (``rmwatch.http.gojson``, ``rmwatch.http.group_body``).

A writer that is not the leader, or is draining, forwards the write to the leader found in
etcd (``rmwatch.http.writer_forward``); the leader's answer is returned unchanged.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import SecretStr
from starlette.concurrency import run_in_threadpool

from rmwatch import __version__
from rmwatch.errors import (
    DrainingError,
    InvalidInputError,
    NotFoundError,
    NotLeaderError,
    RmwatchError,
)
from rmwatch.http import gojson, pdjson
from rmwatch.http import service_limit as limits
from rmwatch.http.app_options import APP_OPTIONS
from rmwatch.http.body import read_body
from rmwatch.http.direct_routes import DirectRoutes, direct_routes
from rmwatch.http.errors import Refusal, error_response
from rmwatch.http.forbidden_forward import ForbiddenForwardGuard
from rmwatch.http.forward import ForwardClient
from rmwatch.http.gojson import IndentedJSONResponse
from rmwatch.http.group_body import parse_group_body
from rmwatch.http.keyspace import request_keyspace
from rmwatch.http.pd import PREFIX, query, text, with_stats, write_success
from rmwatch.http.rm_config import rm_config_json
from rmwatch.http.ru_version import ru_version_body
from rmwatch.http.writer_forward import FORWARD_TIMEOUT, FORWARD_WAIT, WriterForwarder
from rmwatch.store.keys import NULL_KEYSPACE_ID, parse_revision
from rmwatch.store.models import ResourceGroup
from rmwatch.store.writer import Writer
from rmwatch.store.writer_drain import Drainer

MAX_BODY = 1024 * 1024
# Writes block on etcd, so they run in worker threads of a plain executor (a cheaper hop for
# the event loop than starlette's run_in_threadpool); 40 workers, as anyio's default limit.
WRITE_WORKERS = 40


def guarded(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` with its rmwatch errors answered through ``rmwatch.http.errors``."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except (RmwatchError, Refusal) as exc:
            return error_response(exc)

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
        forwarder: WriterForwarder,
        drainer: Drainer,
    ) -> None:
        self.writer = writer
        self.token = token
        self.max_body = max_body
        self.forwarder = forwarder
        self.drainer = drainer
        self.pool = ThreadPoolExecutor(
            max_workers=WRITE_WORKERS, thread_name_prefix="rmwatch-write"
        )

    # ---- request plumbing ----------------------------------------------------------------

    def check_auth(self, request: Request) -> None:
        """Refuse (401) a request without the configured bearer token."""
        if self.token is None:
            return
        given = request.headers.get("authorization", "")
        expected = f"Bearer {self.token.get_secret_value()}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise Refusal(text(401, "missing or invalid bearer token",
                               {"WWW-Authenticate": "Bearer"}))  # fmt: skip

    async def read_body(self, request: Request) -> bytes:
        """The request body (BodyTooLargeError over ``max_body``)."""
        return await read_body(request, self.max_body)

    def _lookup(self, name: str) -> int | None:
        try:
            return self.writer.resolve_keyspace(name)
        except NotFoundError:
            return None

    async def keyspace(self, request: Request, name: str | None = None) -> int | None:
        """The keyspace id of a request (``rmwatch.http.keyspace``), or None for the null
        keyspace."""
        return await request_keyspace(request, self._lookup, name)

    async def parse_group(self, request: Request, body: bytes) -> ResourceGroup:
        """The group in a POST/PUT body (``rmwatch.http.group_body``: as PD decodes it), in
        the request's keyspace when one is named."""
        keyspace = await self.keyspace(request)
        return parse_group_body(body, keyspace)

    # ---- writes --------------------------------------------------------------------------

    async def write(self, request: Request, body: bytes, op: Callable[[], int]) -> Response:
        """Run ``op`` here, or forward to the leader when this writer cannot commit."""
        try:
            revision = await asyncio.get_running_loop().run_in_executor(self.pool, op)
        except (NotLeaderError, DrainingError) as exc:
            return await self.forwarder.forward(request, body, exc, op)
        return write_success(revision)


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
    client = ForwardClient(timeout=forward_timeout)
    forwarder = WriterForwarder(writer, client=client, wait=forward_wait)
    api = _Api(writer, token=token, max_body=max_body, forwarder=forwarder,
               drainer=drainer or Drainer(writer))  # fmt: skip

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await client.aclose()

    app = FastAPI(title="rmwatch writer", version=__version__, lifespan=lifespan, **APP_OPTIONS)
    app.state.api = api
    app.state.drainer = api.drainer
    app.state.forward_client = client
    _group_routes(app, api)
    _config_routes(app, api)
    _ops_routes(app, api)
    # The fixed-path fast path, over the routes just registered (rmwatch.http.direct_routes).
    app.add_middleware(DirectRoutes, routes=direct_routes(app))
    # Outside the fast path, so a guarded request is refused before any route answers it.
    app.add_middleware(ForbiddenForwardGuard)
    return app


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
        raw = query(request, "expected_revision")
        try:
            expected = parse_revision(raw) if raw is not None else None
        except ValueError:
            raise InvalidInputError("expected_revision", "must be a non-negative integer") from None
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
        stats = with_stats(query(request, "with_stats"))
        body = pdjson.group_json(view.group, view.states, with_stats=stats)
        return IndentedJSONResponse(body, headers={"X-Revision": str(view.revision)})

    @app.get(f"{PREFIX}/config/groups")
    @guarded
    async def list_groups(request: Request) -> Response:
        """Every group of a keyspace, read at one revision."""
        keyspace = await api.keyspace(request)
        views, revision = await run_in_threadpool(writer.list_groups, keyspace)
        stats = with_stats(query(request, "with_stats"))
        body = [pdjson.group_json(v.group, v.states, with_stats=stats) for v in views]
        return IndentedJSONResponse(body, headers={"X-Revision": str(revision)})

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
        return IndentedJSONResponse(pdjson.controller_json(config),
                                    headers={"X-Revision": str(revision)})  # fmt: skip

    @app.post(f"{PREFIX}/config/controller")
    @guarded
    async def update_controller(request: Request) -> Response:
        """Apply a map of controller keys, all or nothing."""
        api.check_auth(request)
        body = await api.read_body(request)
        items = gojson.loads_first(body)  # gin's ShouldBindJSON
        if items is None:
            items = {}  # PD binds ``null`` to a nil map: nothing to apply, 200
        if not isinstance(items, dict):
            raise InvalidInputError("body", "must be a JSON object of controller keys")
        return await api.write(request, body, lambda: writer.update_controller(items))

    @app.get(f"{PREFIX}/config")
    @guarded
    async def get_config(request: Request) -> Response:
        """The RM config (``rmwatch.http.rm_config``: PD's shape, what rmwatch knows)."""
        config, revision = await run_in_threadpool(writer.get_controller_at)
        body = rm_config_json(pdjson.controller_json(config), name="rmwatch-writer")
        return IndentedJSONResponse(body, headers={"X-Revision": str(revision)})

    @app.post(f"{PREFIX}/config/controller/ru-version/{{keyspace_name}}")
    @guarded
    async def set_ru_version(request: Request) -> Response:
        """Set a keyspace's RU version (PD: apis/v1/api.go:305)."""
        api.check_auth(request)
        try:
            keyspace = await api.keyspace(request, request.path_params["keyspace_name"])
        except NotFoundError as exc:
            raise Refusal(text(400, str(exc))) from None  # PD answers a lookup failure 400
        body = await api.read_body(request)
        version = ru_version_body(body)
        ks = NULL_KEYSPACE_ID if keyspace is None else keyspace
        return await api.write(request, body, lambda: writer.set_ru_version(ks, version))

    async def set_limit(request: Request, name: str | None) -> Response:
        api.check_auth(request)
        keyspace = await api.keyspace(request, name)
        body = await api.read_body(request)
        value = limits.parse_limit_body(body)
        return await api.write(request, body, lambda: writer.set_service_limit(keyspace, value))

    async def get_limit(request: Request, name: str | None) -> Response:
        keyspace = await api.keyspace(request, name)
        try:
            limit = await run_in_threadpool(writer.get_service_limit, keyspace)
        except NotFoundError:
            # PD: a keyspace that exists answers 200 with 0 (config_service.go:480).
            return IndentedJSONResponse(limits.limit_json(None))
        return IndentedJSONResponse(limits.limit_json(limit.service_limit))

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


__all__ = ["MAX_BODY", "PREFIX", "create_writer_app"]
