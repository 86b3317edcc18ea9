"""How a servicer method becomes a gRPC handler: errors as status codes, metrics per call.

Servicer methods are coroutines on the server's event loop. They raise ``RpcAbortError`` to answer
with a status (and trailing metadata, e.g. ``x-revision``); anything else is a bug, answered
``INTERNAL`` and logged. Every call is counted with its code and timed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from rmwatch._logging import get_logger
from rmwatch.grpc.metrics import GrpcMetrics

_log = get_logger("grpc")

Metadata = Sequence[tuple[str, str]]
REVISION_KEY = "x-revision"
MIN_REVISION_KEY = "min-revision"


class RpcAbortError(Exception):
    """Ends a call with ``code`` and ``details`` (plus ``trailers``)."""

    def __init__(self, code: grpc.StatusCode, details: str, trailers: Metadata = ()) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.trailers = tuple(trailers)


def revision_trailer(revision: int) -> tuple[tuple[str, str], ...]:
    """The ``x-revision`` trailing metadata: the revision an answer was read or written at."""
    return ((REVISION_KEY, str(revision)),)


def metadata_value(context: Any, key: str) -> str | None:
    """One request metadata value (keys are lower-case on the wire)."""
    for item in context.invocation_metadata() or ():
        if item.key == key:
            return str(item.value)
    return None


def serialize(message: Any) -> bytes:
    """Response serializer that also passes pre-encoded bytes through (shared watch batches
    are encoded once for every watcher)."""
    if isinstance(message, bytes):
        return message
    return bytes(message.SerializeToString())


Handler = Callable[[Any, Any], Awaitable[Any]]


class CallContext:
    """Names a service for the metrics and error handling of its methods."""

    def __init__(self, service: str, metrics: GrpcMetrics) -> None:
        self.service = service
        self.metrics = metrics

    def guard(self, method: str, handler: Handler) -> Handler:
        """``handler`` with status mapping and metrics."""

        async def run(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            recorded = False

            def record(code: grpc.StatusCode) -> None:
                # Before abort(): grpc.aio sends the status from inside abort(), so a client
                # (or a test reading the metrics) can see the answer before a `finally` runs.
                nonlocal recorded
                if not recorded:
                    recorded = True
                    elapsed = time.perf_counter() - started
                    self.metrics.observe(self.service, method, code.name, elapsed)

            try:
                result = await handler(request, context)
            except RpcAbortError as exc:
                record(exc.code)
                await context.abort(exc.code, exc.details, trailing_metadata=exc.trailers)
            except asyncio.CancelledError:
                record(grpc.StatusCode.CANCELLED)
                raise
            except grpc.aio.AbortError:
                record(grpc.StatusCode.UNKNOWN)  # the handler aborted by itself
                raise
            except Exception as exc:
                record(grpc.StatusCode.INTERNAL)
                _log.exception("rpc_failed", service=self.service, method=method)
                message = f"internal error: {type(exc).__name__}: {exc}"
                await context.abort(grpc.StatusCode.INTERNAL, message)
            record(grpc.StatusCode.OK)
            return result

        run.__name__ = method
        return run

    def unary(self, method: str, handler: Handler, request_type: Any) -> grpc.RpcMethodHandler:
        """A unary-unary method handler."""
        return grpc.unary_unary_rpc_method_handler(
            self.guard(method, handler),
            request_deserializer=request_type.FromString,
            response_serializer=serialize,
        )

    def server_stream(
        self, method: str, handler: Handler, request_type: Any
    ) -> grpc.RpcMethodHandler:
        """A unary-stream method handler (the handler writes with ``context.write``)."""
        return grpc.unary_stream_rpc_method_handler(
            self.guard(method, handler),
            request_deserializer=request_type.FromString,
            response_serializer=serialize,
        )

    def bidi_stream(
        self, method: str, handler: Handler, request_type: Any
    ) -> grpc.RpcMethodHandler:
        """A stream-stream method handler."""
        return grpc.stream_stream_rpc_method_handler(
            self.guard(method, handler),
            request_deserializer=request_type.FromString,
            response_serializer=serialize,
        )

    def generic(self, handlers: dict[str, grpc.RpcMethodHandler]) -> grpc.GenericRpcHandler:
        """The service's handlers under its full name (``resource_manager.ResourceManager``)."""
        return grpc.method_handlers_generic_handler(self.service, handlers)


__all__ = [
    "MIN_REVISION_KEY",
    "REVISION_KEY",
    "CallContext",
    "RpcAbortError",
    "metadata_value",
    "revision_trailer",
    "serialize",
]
