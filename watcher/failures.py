"""How the replica's jobs tell an etcd failure (retried) from a bug (the worker stops)."""

from __future__ import annotations

import grpc
from pyetcd import exceptions as etcd_exc

from rmwatch.errors import EtcdUnavailableError


class StreamLostError(Exception):
    """The watch stream (or a load) failed in a way a fresh try can fix: retry with backoff."""


def retryable(exc: BaseException) -> bool:
    """True for failures of etcd or of the connection to it; anything else is a bug."""
    return isinstance(
        exc, grpc.RpcError | etcd_exc.Etcd3Exception | EtcdUnavailableError | StreamLostError
    )


def describe(exc: BaseException | None) -> str:
    """A one-line cause for logs and transitions (gRPC errors by status code and details)."""
    if exc is None:
        return "unknown"
    if isinstance(exc, grpc.RpcError):
        return f"{exc.code().name}: {exc.details()}"
    if isinstance(exc, StreamLostError | EtcdUnavailableError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
