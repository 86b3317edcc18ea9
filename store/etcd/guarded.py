"""pyetcd's failover client, made safe to close while other threads still call it.

grpc 1.85 crashes the interpreter (SIGSEGV in cygrpc's ``_get_registered_call_handle``) when a
stub is built on a closed channel; a call on a stub built before the close only raises
``ValueError``. pyetcd builds stubs lazily and again after every failover (it drops them with
the failed endpoint), so a thread retrying a call while another closes the client (a replica
closing under a load that is retrying, a writer shutting down under a request) would build one.
Here building a stub and closing hold one lock, and once closed every call raises
``EtcdClientClosedError`` instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
import pyetcd
from pyetcd import etcdrpc

from rmwatch.errors import EtcdClientClosedError

S = TypeVar("S")


def _stub(name: str, factory: Callable[[grpc.Channel], Any], doc: str) -> Any:
    """A property giving the cached stub ``name`` (built by ``factory`` under the guard)."""

    def get(self: GuardedClient) -> Any:
        return self._cached(name, factory)

    return property(get, doc=doc)


class GuardedClient(pyetcd.MultiEndpointEtcd3Client):  # type: ignore[misc]
    """``MultiEndpointEtcd3Client`` whose stubs are never built on a closed channel."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._guard = threading.Lock()
        self._closed = False
        super().__init__(*args, **kwargs)

    def _cached(self, name: str, factory: Callable[[grpc.Channel], S]) -> S:
        self._refuse_if_closed()  # a stub cached before the close would raise ValueError
        stubs: dict[str, Any] = self._stubs
        stub = stubs.get(name)
        if stub is None:
            with self._guard:
                self._refuse_if_closed()
                stub = stubs[name] = factory(self.channel)
        return stub

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise EtcdClientClosedError("the etcd client is closed")

    kvstub = _stub("kvstub", etcdrpc.KVStub, "etcd's KV service on the member in use.")
    leasestub = _stub("leasestub", etcdrpc.LeaseStub, "etcd's Lease service on the member in use.")
    authstub = _stub("authstub", etcdrpc.AuthStub, "etcd's Auth service on the member in use.")
    clusterstub = _stub("clusterstub", etcdrpc.ClusterStub, "etcd's Cluster service.")
    maintenancestub = _stub("maintenancestub", etcdrpc.MaintenanceStub, "etcd's Maintenance.")

    def watch_stub(self) -> tuple[Any, str]:
        """A new Watch stub on a live member (one stream each) and that member's name."""
        with self._guard:
            self._refuse_if_closed()
            channel = self.channel  # fails over first, so the name below is this channel's
            return etcdrpc.WatchStub(channel), str(self.endpoint_in_use)

    def get_watcher(self) -> Any:
        """pyetcd's own watcher, built under the guard like every other stub."""
        with self._guard:
            self._refuse_if_closed()
            return super().get_watcher()

    @property
    def closed(self) -> bool:
        """True once ``close()`` ran."""
        return self._closed

    def close(self) -> None:
        """Close every member's channel; idempotent. Calls after it raise."""
        with self._guard:
            if self._closed:
                return
            self._closed = True
            super().close()


__all__ = ["GuardedClient"]
