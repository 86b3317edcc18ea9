"""The sidecar: PD's resource-manager read routes served from a replica's cache, over HTTP.

An operator runs it beside a read-only RM node. Reads are answered from ONE immutable snapshot
each, so a response never mixes revisions, and every response says which revision it is
(``X-Revision``) and how long ago etcd last confirmed the cache (``X-Revision-Age``):

- ``GET config/group/{name}``, ``GET config/groups`` (``with_stats``, ``keyspace_name`` as PD,
  ``keyspace_id`` as an rmwatch extension), ``GET config/controller``,
  ``GET config/keyspace/service-limit[/{keyspace_name}]``; bodies from ``rmwatch.http.pdjson``,
  the same functions the writer answers with; the plain group GET takes a fast path
  (``rmwatch.http.fast_group_read``).
- ``?min_revision=N`` (read your writes: the writer returns the commit revision) waits until
  the cache has N, at most ``min_revision_timeout`` seconds, then answers 504 with the
  revision it did reach.
- Not ready (loading, catching up, or staler than the replica's bound): 503 with
  ``{"state", "reason"}``. Stale data is never served silently. Errors are answered through
  ``rmwatch.http.errors``, as the writer's are.

Writes on the same routes are forwarded to the writer leader (``rmwatch.http.sidecar_forward``).
A request carrying ``X-Forbidden-Forward-To-Microservice: true`` is answered 404, as PD's RM
fallback handler does, whatever its method. ``/health``, ``/ready``, ``/status`` and
``/metrics`` sit outside the prefix. Everything under PD's prefix is one router, registered once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from rmwatch import __version__
from rmwatch.errors import (
    InvalidInputError,
    NotReadyError,
    RevisionTimeoutError,
    RmwatchError,
    group_not_found,
)
from rmwatch.http import pdjson
from rmwatch.http import service_limit as limits
from rmwatch.http.app_options import APP_OPTIONS
from rmwatch.http.errors import Refusal, error_response
from rmwatch.http.fast_group_read import (
    BODY_CACHE_BYTES,
    GROUP_ROUTE,
    FastGroupRead,
    GroupBodies,
    GroupReads,
)
from rmwatch.http.fast_lane import FastLane
from rmwatch.http.forbidden_forward import FORBIDDEN_FORWARD_HEADER, ForbiddenForwardGuard
from rmwatch.http.forward import DEFAULT_FORWARD_TIMEOUT, ForwardClient
from rmwatch.http.gojson import PD_JSON_MEDIA_TYPE, IndentedJSONResponse
from rmwatch.http.keyspace import KeyspaceLookup, request_keyspace
from rmwatch.http.metrics import RequestTracker, RouteCounters, SidecarMetrics, render
from rmwatch.http.pd import PREFIX, query, text, with_stats
from rmwatch.http.rm_config import rm_config_json
from rmwatch.http.server_drain import ServerDrain
from rmwatch.http.sidecar_forward import DEFAULT_MAX_BODY, SidecarForwarder
from rmwatch.store import go_json
from rmwatch.store.keys import NULL_KEYSPACE_ID, parse_revision
from rmwatch.watcher.cache import Snapshot
from rmwatch.watcher.gc_control import HeapFreezer
from rmwatch.watcher.replica import Replica
from rmwatch.watcher.revision_wait import RevisionWaiter

DEFAULT_MIN_REVISION_TIMEOUT = 5.0
LIST_SLICE = 256
"""Groups a ``GET config/groups`` answers between two returns to the event loop: at most
~17 ms of encoding (~66 us a group not remembered yet), ~0.6 ms once remembered."""
DRAINING_REASON = "draining: the sidecar is shutting down"


class _Reads:
    """Per-app state behind the read routes: snapshot selection, keyspaces, revision headers."""

    def __init__(
        self,
        replica: Replica,
        *,
        resolve_keyspace: KeyspaceLookup | None,
        min_revision_timeout: float,
        metrics: SidecarMetrics,
        bodies: GroupBodies,
    ) -> None:
        self.replica = replica
        self.bodies = bodies
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
        """A PD metadata answer read from ``snap`` (indented as PD's, ``IndentedJSONResponse``)."""
        return IndentedJSONResponse(body, headers=self.headers(snap.revision))

    def answer_bytes(self, body: bytes, snap: Snapshot) -> Response:
        """``answer`` for a body already encoded (a remembered group body, a list of them):
        the same headers in the same order."""
        return Response(body, headers=self.headers(snap.revision), media_type=PD_JSON_MEDIA_TYPE)

    def refused(self, response: Response) -> Response:
        """An early answer; unless it already names the revision it is about, stamped with
        the revision applied now (and the age of the cache, always)."""
        if "x-revision" not in response.headers:
            response.headers["X-Revision"] = str(self.replica.revision)
        if "x-revision-age" not in response.headers:
            response.headers["X-Revision-Age"] = f"{self.replica.age():.3f}"
        return response

    def error(self, exc: Exception) -> Response:
        """The answer to ``exc`` (``rmwatch.http.errors``), stamped as every sidecar answer."""
        return self.refused(error_response(exc, revision=self.replica.revision))

    async def snapshot(self, request: Request) -> Snapshot:
        """The snapshot to answer from: current, or at least ``min_revision`` (bounded wait).

        A replica that is not ready is refused at once (503), before any wait: a client is
        better served by another replica than by a wait that may end stale anyway.
        """
        raw = query(request, "min_revision")
        wanted: int | None = None
        if raw is not None and raw != "":
            try:
                wanted = parse_revision(raw)
            except ValueError as exc:
                raise InvalidInputError("min_revision", str(exc)) from None
        reason = self.replica.not_ready_reason()
        if reason is not None:
            raise NotReadyError(str(self.replica.state), reason)
        if wanted is not None and self.replica.revision < wanted:
            await self._wait(wanted)
        return self.replica.snapshot()

    async def _wait(self, wanted: int) -> None:
        waited = self.metrics.min_revision_wait
        started = time.monotonic()
        try:
            await self.waiter.wait(wanted, self.min_revision_timeout)
        except RevisionTimeoutError:
            waited.labels("timeout").observe(time.monotonic() - started)
            raise
        waited.labels("reached").observe(time.monotonic() - started)

    async def keyspace(self, request: Request, name: str | None = None) -> int:
        """The keyspace a read is about (``rmwatch.http.keyspace``); the null keyspace when
        the request names none."""
        found = await request_keyspace(request, self.resolve_keyspace, name)
        return NULL_KEYSPACE_ID if found is None else found


def create_sidecar_app(
    replica: Replica,
    *,
    writer_url: str | None,
    discover_leader: Callable[[], str | None] | None,
    resolve_keyspace: KeyspaceLookup | None = None,
    forward: bool = True,
    min_revision_timeout: float = DEFAULT_MIN_REVISION_TIMEOUT,
    max_body: int = DEFAULT_MAX_BODY,
    forward_timeout: float = DEFAULT_FORWARD_TIMEOUT,
    drain: ServerDrain | None = None,
    body_cache_bytes: int = BODY_CACHE_BYTES,
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
        drain: the server's drain (the CLI begins it on SIGTERM); a fresh one if None.
        body_cache_bytes: budget of the group GET's remembered JSON bodies
            (``rmwatch.http.fast_group_read``).
    """
    metrics = SidecarMetrics()
    drain = drain if drain is not None else ServerDrain()
    bodies = GroupBodies(body_cache_bytes, on_added=HeapFreezer.refreeze)
    reads = _Reads(replica, resolve_keyspace=resolve_keyspace,
                   min_revision_timeout=min_revision_timeout, metrics=metrics,
                   bodies=bodies)  # fmt: skip
    client = ForwardClient(timeout=forward_timeout)
    forwarder = SidecarForwarder(writer_url=writer_url, discover_leader=discover_leader,
                               enabled=forward, client=client, max_body=max_body,
                               metrics=metrics)  # fmt: skip

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        reads.waiter.close()
        await client.aclose()

    app = FastAPI(title="rmwatch sidecar", version=__version__, lifespan=lifespan, **APP_OPTIONS)
    app.state.replica = replica
    app.state.drain = drain
    app.state.metrics = metrics
    app.state.forwarder = forwarder
    app.state.forward_client = client

    @app.exception_handler(Refusal)
    @app.exception_handler(RmwatchError)
    async def refusal(_request: Request, exc: Exception) -> Response:
        return reads.error(exc)

    router = _rm_router(reads, forwarder)
    app.include_router(router)
    _probe_routes(app, replica, drain, metrics, forwarder)
    # Innermost first: the fast group read sits inside the guard and the request tracker, so
    # a fast answer is refused, drained and counted exactly like a routed one.
    group_reads = GroupReads(replica=replica, route=_route_of(router, GROUP_ROUTE, "GET"),
                             bodies=bodies)  # fmt: skip
    counters = RouteCounters(metrics)
    app.add_middleware(FastGroupRead, reads=group_reads)
    app.add_middleware(ForbiddenForwardGuard, stamp=reads.refused)
    app.add_middleware(RequestTracker, counters=counters, drain=drain)  # outermost: sees all
    # The same answers, counted the same way, from inside uvicorn's protocol when the server
    # runs it (rmwatch.http.fast_lane; the CLI passes ``lane_protocol(app.state.fast_lane)``).
    app.state.fast_lane = FastLane(reads=group_reads, counters=counters, drain=drain)
    return app


def _route_of(router: APIRouter, path: str, method: str) -> Any:
    """The route object ``router`` registered for ``method path`` (what routing puts in
    ``scope["route"]``, and the request tracker labels metrics with)."""
    for route in router.routes:
        methods = getattr(route, "methods", None) or ()
        if getattr(route, "path", None) == PREFIX + path and method in methods:
            return route
    raise LookupError(f"no {method} {path} route")


def _rm_router(reads: _Reads, forwarder: SidecarForwarder) -> APIRouter:
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
            # PD: metadataapi/config_service.go:378 (HEAD a186e0c), the writer's text too.
            raise Refusal(_stamped(text(404, str(group_not_found(name))), reads, snap))
        stats = with_stats(query(request, "with_stats"))
        return reads.answer_bytes(reads.bodies.of(snap, group, keyspace, stats), snap)

    @router.get("/config/groups")
    async def list_groups(request: Request) -> Response:
        """Every group of a keyspace, sorted by name, all from one revision."""
        keyspace = await reads.keyspace(request)
        snap = await reads.snapshot(request)
        stats = with_stats(query(request, "with_stats"))
        # From the remembered group bodies: a list of 100k groups once read is a join (~0.7 s)
        # instead of an encode of every group (~7 s). Built a slice at a time, handing the
        # event loop back between slices, so other requests wait one slice, not the list.
        groups = snap.list_groups(keyspace)
        items: list[bytes] = []
        for start in range(0, len(groups), LIST_SLICE):
            if start:
                await asyncio.sleep(0)
            items += [go_json.array_item(reads.bodies.of(snap, g, keyspace, stats))
                      for g in groups[start : start + LIST_SLICE]]  # fmt: skip
        return reads.answer_bytes(go_json.join_array(items), snap)

    @router.get("/config/controller")
    async def get_controller(request: Request) -> Response:
        """The controller config; PD's defaults when none is stored."""
        snap = await reads.snapshot(request)
        body = pdjson.controller_json(snap.controller())
        return reads.answer(body, snap)

    @router.get("/config")
    async def get_config(request: Request) -> Response:
        """The RM config (``rmwatch.http.rm_config``: PD's shape, what rmwatch knows)."""
        snap = await reads.snapshot(request)
        controller = pdjson.controller_json(snap.controller())
        body = rm_config_json(controller, name="rmwatch-replica")
        return reads.answer(body, snap)

    async def service_limit(request: Request, name: str | None) -> Response:
        keyspace = await reads.keyspace(request, name)
        snap = await reads.snapshot(request)
        limit = snap.service_limit(keyspace)
        # A keyspace that exists (the name resolved; the null keyspace always does) answers
        # 200 with 0 when nothing is stored, as PD (config_service.go:480).
        value = None if limit is None else limit.service_limit
        return reads.answer(limits.limit_json(value), snap)

    @router.get("/config/keyspace/service-limit")
    async def get_service_limit(request: Request) -> Response:
        """The null keyspace's service limit (``keyspace_id`` query: another keyspace)."""
        return await service_limit(request, None)

    @router.get("/config/keyspace/service-limit/{keyspace_name}")
    async def get_keyspace_service_limit(request: Request) -> Response:
        """A named keyspace's service limit (404 if the keyspace does not exist, as PD)."""
        return await service_limit(request, request.path_params["keyspace_name"])

    # Writes: one handler, forwarded to the writer leader (or refused with the reason).
    writes: list[tuple[str, list[str]]] = [
        ("/config/group", ["POST", "PUT"]),
        ("/config/group/{name}", ["DELETE"]),
        ("/config/controller", ["POST"]),
        ("/config/controller/ru-version/{keyspace_name}", ["POST"]),
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
    drain: ServerDrain,
    metrics: SidecarMetrics,
    forwarder: SidecarForwarder,
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
        for flush in metrics.before_render:
            flush()
        text = render([replica.metrics.registry, metrics.registry])
        return Response(text, media_type=CONTENT_TYPE_LATEST)


__all__ = [
    "DEFAULT_MIN_REVISION_TIMEOUT",
    "FORBIDDEN_FORWARD_HEADER",
    "create_sidecar_app",
]
