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

    @property
    def kvstub(self) -> Any:
        """etcd's KV service on the member in use."""
        return self._cached("kvstub", etcdrpc.KVStub)

    @property
    def leasestub(self) -> Any:
        """etcd's Lease service on the member in use."""
        return self._cached("leasestub", etcdrpc.LeaseStub)

    @property
    def authstub(self) -> Any:
        """etcd's Auth service on the member in use."""
        return self._cached("authstub", etcdrpc.AuthStub)

    @property
    def clusterstub(self) -> Any:
        """etcd's Cluster service on the member in use."""
        return self._cached("clusterstub", etcdrpc.ClusterStub)

    @property
    def maintenancestub(self) -> Any:
        """etcd's Maintenance service on the member in use."""
        return self._cached("maintenancestub", etcdrpc.MaintenanceStub)

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
