"""The sidecar: PD's resource-manager read routes served from a replica's cache, over HTTP.

An operator runs it beside a read-only RM node. Reads are answered from ONE immutable snapshot
each, so a response never mixes revisions, and every response says which revision it is
(``X-Revision``) and how long ago etcd last confirmed the cache (``X-Revision-Age``):

- ``GET config/group/{name}``, ``GET config/groups`` (``with_stats``, ``keyspace_name`` as PD,
  ``keyspace_id`` as an rmwatch extension), ``GET config/controller``,
  ``GET config/keyspace/service-limit[/{keyspace_name}]``; bodies from ``rmwatch.http.pdjson``, the
  same functions the writer answers with.
- ``?min_revision=N`` (read your writes: the writer returns the commit revision) waits until
  the cache has N, at most ``min_revision_timeout`` seconds, then answers 504 with the
  revision it did reach.
- Not ready (loading, catching up, or staler than the replica's bound): 503 with
  ``{"state", "reason"}``. Stale data is never served silently.

Writes on the same routes are forwarded to the writer leader (``rmwatch.http.forward``). A request
carrying ``X-Forbidden-Forward-To-Microservice: true`` is answered 404, as PD's RM fallback
handler does, whatever its method. ``/health``, ``/ready``, ``/status`` and ``/metrics`` sit
outside the prefix. Everything under ``/resource-manager/api/v1`` is one router, registered once.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from rmwatch.errors import NotReadyError, RevisionTimeoutError, RmwatchError
from rmwatch.http import pdjson
from rmwatch.http.forward import (
    DEFAULT_FORWARD_TIMEOUT,
    DEFAULT_MAX_BODY,
    WriteForwarder,
)
from rmwatch.http.metrics import RequestTracker, SidecarMetrics, render
from rmwatch.http.server_drain import DrainState
from rmwatch.http.writer_app import PREFIX
from rmwatch.store.keys import NULL_KEYSPACE_ID, parse_keyspace_id
from rmwatch.store.models import GroupStates, ResourceGroup
from rmwatch.watcher.cache import Snapshot
from rmwatch.watcher.replica import Replica
from rmwatch.watcher.revision_wait import RevisionWaiter

FORBIDDEN_FORWARD_HEADER = "X-Forbidden-Forward-To-Microservice"
DEFAULT_MIN_REVISION_TIMEOUT = 5.0
DRAINING_REASON = "draining: the sidecar is shutting down"

KeyspaceResolver = Callable[[str], int | None]
"""``name -> keyspace id`` (None: no such keyspace); blocking, run in a worker thread."""


class _RefusedError(Exception):
    """Ends a request early with ``response`` (X-Revision is added by the handler)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _text(status: int, message: str) -> Response:
    return PlainTextResponse(message, status_code=status)


def _true(value: str | None) -> bool:
    # PD: strings.EqualFold(c.Query("with_stats"), "true").
    return value is not None and value.lower() == "true"


class _Reads:
    """Per-app state behind the read routes: snapshot selection, keyspaces, revision headers."""

    def __init__(
        self,
        replica: Replica,
        *,
        resolve_keyspace: KeyspaceResolver | None,
        min_revision_timeout: float,
        metrics: SidecarMetrics,
    ) -> None:
        self.replica = replica
        self.resolve_keyspace = resolve_keyspace
        self.min_revision_timeout = min_revision_timeout
        self.metrics = metrics
        self.waiter = RevisionWaiter(replica)

    def headers(self, revision: int) -> dict[str, str]:
        """X-Revision (the revision the answer came from) and X-Revision-Age (seconds since
        etcd last confirmed the cache)."""
        return {
            "X-Revision": str(revision),
            "X-Revision-Age": f"{self.replica.age():.3f}",
        }

    def answer(self, body: Any, snap: Snapshot) -> Response:
        """A JSON answer read from ``snap``."""
        return JSONResponse(body, headers=self.headers(snap.revision))

    def refused(self, response: Response) -> Response:
        """An early answer; unless it already names the revision it is about, stamped with
        the revision applied now."""
        if "x-revision" not in response.headers:
            response.headers.update(self.headers(self.replica.revision))
        return response

    def not_ready(self, state: str, reason: str) -> Response:
        return JSONResponse(
            {"state": state, "reason": reason, "revision": self.replica.revision},
            status_code=503,
        )

    async def snapshot(self, request: Request) -> Snapshot:
        """The snapshot to answer from: current, or at least ``min_revision`` (bounded wait).

        A replica that is not ready is refused at once (503), before any wait: a client is
        better served by another replica than by a wait that may end stale anyway.
        """
        raw = request.query_params.get("min_revision")
        wanted: int | None = None
        if raw is not None and raw != "":
            if not raw.isascii() or not raw.isdigit():
                message = f"min_revision {raw!r} is not a non-negative integer"
                raise _RefusedError(_text(400, message))
            wanted = int(raw)
        reason = self.replica.not_ready_reason()
        if reason is not None:
            raise _RefusedError(self.not_ready(str(self.replica.state), reason))
        if wanted is not None and self.replica.revision < wanted:
            await self._wait(wanted)
        try:
            return self.replica.snapshot()
        except NotReadyError as exc:
            raise _RefusedError(self.not_ready(exc.state, exc.reason)) from None

    async def _wait(self, wanted: int) -> None:
        waited = self.metrics.min_revision_wait
        timeout = self.min_revision_timeout
        started = time.monotonic()
        try:
            await self.waiter.wait(wanted, timeout)
        except RevisionTimeoutError as exc:
            waited.labels("timeout").observe(time.monotonic() - started)
            body = {
                "error": f"revision {wanted} not reached within {timeout:g}s",
                "min_revision": wanted,
                "revision": exc.current,
            }
            # The revision reached, in the header as in the body.
            raise _RefusedError(
                JSONResponse(body, status_code=504, headers=self.headers(exc.current))
            ) from None
        waited.labels("reached").observe(time.monotonic() - started)

    async def keyspace(self, request: Request, name: str | None = None, *,
                       unknown_status: int = 404) -> int:  # fmt: skip
        """The keyspace a read is about: ``keyspace_name`` (PD; resolved through PD's index),
        else ``keyspace_id`` (rmwatch extension), else the null keyspace.

        ``unknown_status``: PD answers an unknown name 404 on group routes, 400 on
        service-limit routes.
        """
        name = name if name is not None else request.query_params.get("keyspace_name")
        if name:
            if self.resolve_keyspace is None:
                raise _RefusedError(_text(400, "keyspace_name is not supported here: this sidecar "
                                          "has no keyspace resolver; use keyspace_id"))  # fmt: skip
            try:
                found = await run_in_threadpool(self.resolve_keyspace, name)
            except RmwatchError as exc:
                raise _RefusedError(JSONResponse(
                    {"error": f"cannot resolve keyspace {name!r}: {exc}"}, status_code=503
                )) from None  # fmt: skip
            if found is None:
                raise _RefusedError(_text(unknown_status, f"keyspace {name!r} not found"))
            return found
        raw = request.query_params.get("keyspace_id")
        if raw is None or raw == "":
            return NULL_KEYSPACE_ID
        try:
            return parse_keyspace_id(raw)
        except ValueError as exc:
            raise _RefusedError(_text(400, f"invalid keyspace_id: {exc}")) from None


def create_sidecar_app(
    replica: Replica,
    *,
    writer_url: str | None,
    discover_leader: Callable[[], str | None] | None,
    resolve_keyspace: KeyspaceResolver | None = None,
    forward: bool = True,
    min_revision_timeout: float = DEFAULT_MIN_REVISION_TIMEOUT,
    max_body: int = DEFAULT_MAX_BODY,
    forward_timeout: float = DEFAULT_FORWARD_TIMEOUT,
    drain: DrainState | None = None,
) -> FastAPI:
    """The sidecar's FastAPI app over a started ``replica`` (the caller owns its lifecycle).

    Args:
        replica: the replica whose snapshots answer reads.
        writer_url: a writer's base URL to forward writes to; None: use ``discover_leader``.
        discover_leader: returns the writer leader's base URL or None (blocking).
        resolve_keyspace: keyspace name → id (e.g. ``rmwatch.store.keyspaces.KeyspaceResolver``);
            without one, ``keyspace_name`` is refused with 400 and ``keyspace_id`` still works.
        forward: False answers writes 403, naming the leader.
        min_revision_timeout: longest ``?min_revision=`` wait, in seconds (then 504).
        max_body: largest forwarded write body, in bytes (413 above).
        forward_timeout: deadline of one forwarded write, in seconds.
        drain: the server's drain state (the CLI flips it on SIGTERM); a fresh one if None.
    """
    metrics = SidecarMetrics()
    drain = drain if drain is not None else DrainState()
    reads = _Reads(replica, resolve_keyspace=resolve_keyspace,
                   min_revision_timeout=min_revision_timeout, metrics=metrics)  # fmt: skip
    forwarder = WriteForwarder(writer_url=writer_url, discover_leader=discover_leader,
                               enabled=forward, timeout=forward_timeout, max_body=max_body,
                               metrics=metrics)  # fmt: skip

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        reads.waiter.close()
        await forwarder.aclose()

    app = FastAPI(title="rmwatch sidecar", version="0.1.0", lifespan=lifespan)
    app.state.replica = replica
    app.state.drain = drain
    app.state.metrics = metrics
    app.state.forwarder = forwarder

    @app.exception_handler(_RefusedError)
    async def refusal(_request: Request, exc: _RefusedError) -> Response:
        return reads.refused(exc.response)

    router = _rm_router(reads, forwarder)
    app.include_router(router)
    _probe_routes(app, replica, drain, metrics, forwarder)
    # Innermost first: the fast group read sits inside the guard and the request tracker, so
    # a fast answer is refused, drained and counted exactly like a routed one.
    app.add_middleware(_FastGroupRead, reads=reads, route=_route_of(router, GROUP_ROUTE, "GET"))
    app.add_middleware(_ForbiddenForwardGuard, reads=reads)
    app.add_middleware(RequestTracker, metrics=metrics, drain=drain)  # outermost: sees all
    return app


class _ForbiddenForwardGuard:
    """ASGI middleware: PD's RM fallback handler answers ``http.NotFound`` to any request under
    the prefix whose ``X-Forbidden-Forward-To-Microservice`` header is exactly ``"true"``.

    A plain ASGI check rather than a router dependency: dropping FastAPI's per-request
    dependency solving (and typed path parameters, hence ``request.path_params`` below) took
    the group GET from ~2.1k to ~2.6-2.9k req/s on 2 CPUs, the same as a bare ``/health``.
    """

    _HEADER = FORBIDDEN_FORWARD_HEADER.lower().encode()
    _PREFIX = PREFIX + "/"

    def __init__(self, app: ASGIApp, *, reads: _Reads) -> None:
        self.app = app
        self.reads = reads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"].startswith(self._PREFIX)
            and (self._HEADER, b"true") in scope["headers"]
        ):
            response = self.reads.refused(_text(404, "404 page not found"))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


GROUP_ROUTE = "/config/group/{name}"


def _route_of(router: APIRouter, path: str, method: str) -> Any:
    """The route object ``router`` registered for ``method path`` (what routing puts in
    ``scope["route"]``, and the request tracker labels metrics with)."""
    for route in router.routes:
        methods = getattr(route, "methods", None) or ()
        if getattr(route, "path", None) == PREFIX + path and method in methods:
            return route
    raise LookupError(f"no {method} {path} route")


def _json_bytes(body: Any) -> bytes:
    """``body`` as ``JSONResponse`` renders it (same bytes, so both paths answer alike)."""
    return json.dumps(body, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode("utf-8")  # fmt: skip


class _GroupBodies:
    """JSON bodies of group reads, kept while the group's objects are unchanged.

    Snapshots are immutable and share unchanged group objects across revisions, so a body is
    valid as long as the snapshot still returns the very same group (and states) objects: the
    entry holds them, and an identity check decides. Bounded: cleared when full.
    """

    def __init__(self, limit: int = 50_000) -> None:
        self._limit = limit
        self._entries: dict[
            tuple[str, int, bool], tuple[ResourceGroup, GroupStates | None, bytes]
        ] = {}

    def body(self, name: str, keyspace: int, with_stats: bool, group: ResourceGroup,
             states: GroupStates | None) -> bytes:  # fmt: skip
        key = (name, keyspace, with_stats)
        entry = self._entries.get(key)
        if entry is not None and entry[0] is group and entry[1] is states:
            return entry[2]
        body = _json_bytes(pdjson.group_json(group, states, with_stats=with_stats))
        if len(self._entries) >= self._limit:
            self._entries.clear()
        self._entries[key] = (group, states, body)
        return body


class _FastGroupRead:
    """ASGI middleware: ``GET config/group/{name}`` of a present group, answered without the
    framework's routing, request objects and per-request JSON encoding.

    Only the plain case is taken (ready replica, no ``min_revision``/``keyspace_name``, a valid
    or absent ``keyspace_id``, the group exists); everything else -- 503, 404, 400, waits,
    keyspace resolution -- falls through to the routed handler, which answers it as before.
    The answer is the same: status, body bytes and headers (X-Revision, X-Revision-Age).
    """

    _PREFIX = PREFIX + "/config/group/"
    _FAST_KEYS = frozenset({"with_stats", "keyspace_id"})

    def __init__(self, app: ASGIApp, *, reads: _Reads, route: Any) -> None:
        self.app = app
        self.reads = reads
        self.route = route
        self.bodies = _GroupBodies()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            if path.startswith(self._PREFIX):
                answer = self._answer(path[len(self._PREFIX) :], scope["query_string"])
                if answer is not None:
                    scope["route"] = self.route  # the request tracker's metrics label
                    body, headers = answer
                    await send({"type": "http.response.start", "status": 200,
                                "headers": headers})  # fmt: skip
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)

    def _answer(self, name: str, query: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
        if not name or "/" in name:
            return None
        keyspace = NULL_KEYSPACE_ID
        with_stats = False
        if query:
            params = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True))
            if not self._FAST_KEYS.issuperset(params):
                return None
            raw = params.get("keyspace_id")
            if raw:
                try:
                    keyspace = parse_keyspace_id(raw)
                except ValueError:
                    return None
            with_stats = _true(params.get("with_stats"))
        replica = self.reads.replica
        try:
            snap = replica.snapshot()
        except NotReadyError:
            return None
        group = snap.get_group(name, keyspace)
        if group is None:
            return None
        body = self.bodies.body(name, keyspace, with_stats, group, snap.get_states(name, keyspace))
        return body, [  # JSONResponse's headers, in its order
            (b"x-revision", str(snap.revision).encode()),
            (b"x-revision-age", f"{replica.age():.3f}".encode()),
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
        ]


def _rm_router(reads: _Reads, forwarder: WriteForwarder) -> APIRouter:
    """Every route under PD's RM prefix: reads from the cache, writes forwarded."""
    router = APIRouter(prefix=PREFIX)

    @router.get(GROUP_ROUTE)
    async def get_group(request: Request) -> Response:
        """One group as PD shows it (404 if absent); ``with_stats`` adds RUStats."""
        name = request.path_params["name"]
        keyspace = await reads.keyspace(request)
        snap = await reads.snapshot(request)
        group = snap.get_group(name, keyspace)
        if group is None:
            # PD: c.String(http.StatusNotFound, "resource group not found").
            raise _RefusedError(_stamped(_text(404, "resource group not found"), reads, snap))
        states = snap.get_states(name, keyspace)
        with_stats = _true(request.query_params.get("with_stats"))
        return reads.answer(pdjson.group_json(group, states, with_stats=with_stats), snap)

    @router.get("/config/groups")
    async def list_groups(request: Request) -> Response:
        """Every group of a keyspace, sorted by name, all from one revision."""
        keyspace = await reads.keyspace(request)
        snap = await reads.snapshot(request)
        with_stats = _true(request.query_params.get("with_stats"))
        body = [
            pdjson.group_json(g, snap.get_states(g.name, keyspace), with_stats=with_stats)
            for g in snap.list_groups(keyspace)
        ]
        return reads.answer(body, snap)

    @router.get("/config/controller")
    async def get_controller(request: Request) -> Response:
        """The controller config; PD's defaults when none is stored."""
        snap = await reads.snapshot(request)
        return reads.answer(pdjson.controller_json(snap.controller()), snap)

    async def service_limit(request: Request, name: str | None) -> Response:
        keyspace = await reads.keyspace(request, name, unknown_status=400)
        snap = await reads.snapshot(request)
        limit = snap.service_limit(keyspace)
        if limit is None:
            # PD's words for a keyspace without a limiter.
            message = (f"keyspace manager not found with keyspace name: {name or ''}, "
                       f"id: {keyspace}")  # fmt: skip
            raise _RefusedError(_stamped(_text(404, message), reads, snap))
        return reads.answer(pdjson.service_limit_json(limit), snap)

    @router.get("/config/keyspace/service-limit")
    async def get_service_limit(request: Request) -> Response:
        """The null keyspace's service limit (``keyspace_id`` query: another keyspace)."""
        return await service_limit(request, None)

    @router.get("/config/keyspace/service-limit/{keyspace_name}")
    async def get_keyspace_service_limit(request: Request) -> Response:
        """A named keyspace's service limit (400 if the keyspace does not exist, as PD)."""
        return await service_limit(request, request.path_params["keyspace_name"])

    # Writes: one handler, forwarded to the writer leader (or refused with the reason).
    writes: list[tuple[str, list[str]]] = [
        ("/config/group", ["POST", "PUT"]),
        ("/config/group/{name}", ["DELETE"]),
        ("/config/controller", ["POST"]),
        ("/config/keyspace/service-limit", ["POST"]),
        ("/config/keyspace/service-limit/{keyspace_name}", ["POST"]),
    ]
    for path, methods in writes:
        router.add_api_route(path, forwarder.handle, methods=methods,
                             name=f"forward {' '.join(methods)} {path}")  # fmt: skip
    return router


def _stamped(response: Response, reads: _Reads, snap: Snapshot) -> Response:
    """``response`` with the headers of ``snap`` (a 404 is an answer from that snapshot too)."""
    response.headers.update(reads.headers(snap.revision))
    return response


def _probe_routes(
    app: FastAPI,
    replica: Replica,
    drain: DrainState,
    metrics: SidecarMetrics,
    forwarder: WriteForwarder,
) -> None:
    @app.get("/health")
    async def health() -> Response:
        """200 while the process serves HTTP (liveness); says nothing about the data."""
        return JSONResponse({"status": "ok"}, headers={"X-Revision": str(replica.revision)})

    @app.get("/ready")
    async def ready() -> Response:
        """200 only when reads may be served; 503 with the reason (also while draining)."""
        headers = {"X-Revision": str(replica.revision)}
        reason = DRAINING_REASON if drain.draining else replica.not_ready_reason()
        state = "DRAINING" if drain.draining else str(replica.state)
        if reason is not None:
            return JSONResponse({"ready": False, "state": state, "reason": reason},
                                status_code=503, headers=headers)  # fmt: skip
        return JSONResponse({"ready": True, "state": state, "revision": replica.revision},
                            headers=headers)  # fmt: skip

    @app.get("/status")
    async def status() -> Response:
        """The replica's status (revisions, lag, age, transitions, bad keys) and the sidecar's."""
        body = replica.status()
        body["sidecar"] = {
            **drain.as_dict(),
            "forward": forwarder.enabled,
            "writer_url": forwarder.writer_url,
        }
        return JSONResponse(body, headers={"X-Revision": str(body["applied_revision"])})

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus text: the replica's metrics, then the sidecar's HTTP metrics."""
        text = render([replica.metrics.registry, metrics.registry])
        return Response(text, media_type=CONTENT_TYPE_LATEST)


__all__ = [
    "DEFAULT_MIN_REVISION_TIMEOUT",
    "FORBIDDEN_FORWARD_HEADER",
    "KeyspaceResolver",
    "create_sidecar_app",
]
