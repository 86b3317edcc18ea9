"""One watch stream over the prefix, driven directly on etcd's gRPC Watch API.

pyetcd's watcher shares one stream per client, never reconnects, has no way to ask for
progress, and blocks forever on a frozen member. This class owns its stream: the request side
is a queue (create, then progress requests), the response side is iterated by one thread, and
``cancel`` ends it at once from any thread (used when a member stops answering).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

from pyetcd import etcdrpc
from pyetcd import utils as etcd_utils

from rmwatch.store.etcd.client import EtcdClient

_STOP = object()


class WatchSession:
    """A watch of ``prefix`` from ``start_revision`` with progress notifications (and the
    previous key-values when ``prev_kv``)."""

    def __init__(
        self, client: EtcdClient, prefix: str, start_revision: int, *, prev_kv: bool = False
    ) -> None:
        self.start_revision = start_revision
        self._requests: queue.Queue[object] = queue.Queue()
        key = prefix.encode()
        self._requests.put(
            etcdrpc.WatchRequest(
                create_request=etcdrpc.WatchCreateRequest(
                    key=key,
                    range_end=etcd_utils.prefix_range_end(key),
                    start_revision=start_revision,
                    progress_notify=True,
                    prev_kv=prev_kv,
                )
            )
        )
        stub, self.endpoint = client.watch_stub()
        self._call = stub.Watch(
            self._request_iter(), credentials=client.call_credentials, metadata=client.metadata
        )
        self.last_response_at = time.monotonic()
        self.responses = 0
        self._cancelled = threading.Event()

    def _request_iter(self) -> Iterator[Any]:
        while True:
            item = self._requests.get()
            if item is _STOP:
                return
            yield item

    def request_progress(self) -> None:
        """Ask etcd for a progress response (header = revision all events were sent up to)."""
        if not self._cancelled.is_set():
            self._requests.put(
                etcdrpc.WatchRequest(progress_request=etcdrpc.WatchProgressRequest())
            )

    def __iter__(self) -> Iterator[Any]:
        for response in self._call:
            self.last_response_at = time.monotonic()
            self.responses += 1
            yield response

    def silent_for(self) -> float:
        """Seconds since the last response (or since the stream was opened)."""
        return time.monotonic() - self.last_response_at

    @property
    def cancelled(self) -> bool:
        """Whether ``cancel`` was called."""
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """End the stream now; the iterating thread sees a CANCELLED RpcError."""
        self._cancelled.set()
        self._requests.put(_STOP)
        self._call.cancel()


__all__ = ["WatchSession"]
