"""A gRPC server on its own thread and event loop, with standard health and reflection.

The servicers are coroutines (``grpc.aio``): one loop serves every unary call and every watch
stream, so 100 watchers cost 100 coroutines, not 100 threads. grpcio's thread-pool server was
tried: it answers a lone unary call sooner, but each event then wakes one thread per watcher,
and P10's delivery latency (bench/p10_fanout.py) was several times worse. ``GrpcServer`` hides
the loop behind a blocking API (``start()``, ``stop(grace)``) so the CLIs and tests use it like
the HTTP servers. Health (``grpc.health.v1.Health``) follows ``ready()``: SERVING when it is
true, for the whole server (``""``) and each service; reflection lists every service.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import reflection  # type: ignore[import-untyped]

from rmwatch._logging import get_logger

_log = get_logger("grpc")

# How often health follows readiness. A probe sees a change within 0.25 s; checking costs a
# few microseconds.
HEALTH_INTERVAL = 0.25
# Keepalive pings from clients every 10 s are allowed (PD's clients ping); watch streams idle
# for minutes are normal.
_OPTIONS = (
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5000),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
)


class GrpcServer:
    """One listening gRPC server.

    Args:
        listen: ``HOST:PORT`` (port 0 picks a free one; see ``port``).
        handlers: the services' generic handlers.
        service_names: full names of those services (for health and reflection).
        ready: whether to report SERVING.
        on_loop_start: called on the server's loop before it serves (servicers that need the
            loop, e.g. a revision waiter, attach there).
        on_stop: called after the server stopped (close servicers).
    """

    def __init__(
        self,
        listen: str,
        *,
        handlers: Sequence[grpc.GenericRpcHandler],
        service_names: Sequence[str],
        ready: Callable[[], bool],
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self.listen = listen
        self._handlers = list(handlers)
        self._names = list(service_names)
        self._ready = ready
        self._on_stop = on_stop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stopped = threading.Event()
        self._error: BaseException | None = None
        self._stop_requested: asyncio.Event | None = None
        self._grace = 0.0
        self._draining = False
        self.port = 0

    @property
    def address(self) -> str:
        """``host:port`` clients connect to."""
        host = self.listen.rpartition(":")[0] or "127.0.0.1"
        if host in ("0.0.0.0", "[::]", "::"):
            host = "127.0.0.1"
        return f"{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> GrpcServer:
        """Bind and serve; returns once the port is bound (raises if it cannot be)."""
        self._thread = threading.Thread(target=self._run, name="rmwatch-grpc", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError(f"gRPC server on {self.listen} did not start in {timeout:g}s")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._error = exc
            self._started.set()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._stopped.set()

    async def _serve(self) -> None:
        server = grpc.aio.server(options=_OPTIONS)
        server.add_generic_rpc_handlers(self._handlers)
        servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        reflection.enable_server_reflection(
            [*self._names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        self.port = server.add_insecure_port(self.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.listen} for gRPC")
        self._server, self._health = server, servicer
        await self._set_health(servicer)
        await server.start()
        _log.info("grpc_serving", listen=self.listen, port=self.port, services=self._names)
        stop = self._stop_requested = asyncio.Event()
        self._started.set()
        follower = asyncio.ensure_future(self._follow_readiness(servicer))
        try:
            await stop.wait()
        finally:
            follower.cancel()
            # Stopped from this task: grpc.aio's stop() awaited from another task (scheduled
            # with run_coroutine_threadsafe) never finished.
            await servicer.enter_graceful_shutdown()
            await server.stop(self._grace)

    async def _set_health(self, servicer: health.aio.HealthServicer) -> bool:
        ready = self._ready() and not self._draining
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self._names):
            await servicer.set(name, status)
        return ready

    async def _follow_readiness(self, servicer: health.aio.HealthServicer) -> None:
        last: bool | None = None
        while True:
            ready = self._ready() and not self._draining
            if ready != last:
                await self._set_health(servicer)
                last = ready
            await asyncio.sleep(HEALTH_INTERVAL)

    @property
    def draining(self) -> bool:
        """True once ``begin_drain()`` ran: health reports NOT_SERVING for good."""
        return self._draining

    def begin_drain(self) -> None:
        """Report NOT_SERVING from now on while still answering calls, so load balancers and
        clients move away before ``stop()`` refuses new calls (SIGTERM's first step).
        Thread-safe and idempotent; health changes at once, not at the next 0.25 s check."""
        self._draining = True
        loop, servicer = self._loop, self._health
        if loop is not None and servicer is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                asyncio.run_coroutine_threadsafe(self._set_health(servicer), loop)

    def stop(self, grace: float = 5.0) -> None:
        """Report NOT_SERVING, refuse new calls, give calls in flight ``grace`` seconds (watch
        streams end then), and stop. Idempotent."""
        loop, event = self._loop, self._stop_requested
        self._grace = grace
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(event.set)
        if self._thread is not None:
            self._thread.join(timeout=grace + 5.0)
        if self._on_stop is not None:
            on_stop, self._on_stop = self._on_stop, None
            on_stop()

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the server's loop (thread-safe)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback)


__all__ = ["HEALTH_INTERVAL", "GrpcServer"]
