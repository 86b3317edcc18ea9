"""Helpers shared by the gRPC tests: servers on a real replica or writer, clients generated from
rmwatch's .proto files (kvproto's service and message names), a raw etcd watch to compare with.

Not a conftest (that file belongs to the harness owner): test modules import these directly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pyetcd
import pytest
from prometheus_client import CollectorRegistry

from rmwatch.grpc import GrpcServer, serve_replica
from rmwatch.grpc.stubs import meta_storagepb_pb2_grpc, resource_manager_pb2_grpc
from rmwatch.store._pb import resource_manager_pb2 as pb
from rmwatch.watcher.replica import Replica

DEFAULT_PROGRESS = 0.3


class FakeRpcError(grpc.RpcError):  # type: ignore[misc]  # grpc ships no stubs
    """A gRPC error as etcd answers it (code and details), for injecting into a real client."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def pb_group(name: str, fill: int = 100) -> pb.ResourceGroup:
    """An RU group as kvproto's message: priority 8, fill rate and burst limit ``fill``."""
    return pb.ResourceGroup(
        name=name,
        mode=pb.RUMode,
        priority=8,
        r_u_settings=pb.GroupRequestUnitSettings(
            r_u=pb.TokenBucket(settings=pb.TokenLimitSettings(fill_rate=fill, burst_limit=fill))
        ),
    )


def rm_stub(channel: grpc.Channel) -> Any:
    """A ``resource_manager.ResourceManager`` client stub (generated, untyped)."""
    return resource_manager_pb2_grpc.ResourceManagerStub(channel)  # type: ignore[no-untyped-call]


def meta_stub(channel: grpc.Channel) -> Any:
    """A ``meta_storagepb.MetaStorage`` client stub (generated, untyped)."""
    return meta_storagepb_pb2_grpc.MetaStorageStub(channel)  # type: ignore[no-untyped-call]


def trailer(call: Any, key: str = "x-revision") -> str | None:
    """One trailing-metadata value of a finished call (or RpcError)."""
    for item in call.trailing_metadata() or ():
        if item.key == key:
            return str(item.value)
    return None


@contextmanager
def replica_server(
    replica: Replica, **kwargs: Any
) -> Iterator[tuple[GrpcServer, grpc.Channel, CollectorRegistry]]:
    """serve_replica on a free port; yields (server, channel, registry); stops both."""
    registry = CollectorRegistry()
    kwargs.setdefault("progress_interval", DEFAULT_PROGRESS)
    server = serve_replica(replica, "127.0.0.1:0", registry=registry, **kwargs)
    channel = grpc.insecure_channel(server.address)
    try:
        yield server, channel, registry
    finally:
        channel.close()
        server.stop(grace=0.5)


@pytest.fixture
def served(replica: Replica) -> Iterator[tuple[GrpcServer, grpc.Channel, CollectorRegistry]]:
    """A ready replica served over gRPC."""
    with replica_server(replica) as item:
        yield item


class RawWatch:
    """An independent etcd watch on a prefix (pyetcd, straight to etcd), recording every
    (revision, type, key, value) it sees, grouped by the response that carried it."""

    def __init__(self, client: pyetcd.MultiEndpointEtcd3Client, prefix: str, start: int) -> None:
        self.responses: list[list[tuple[int, str, bytes, bytes]]] = []
        self._lock = threading.Lock()
        events, self._cancel = client.watch_prefix_response(prefix, start_revision=start)
        self._thread = threading.Thread(target=self._run, args=(events,), daemon=True)
        self._thread.start()

    def _run(self, events: Any) -> None:
        for response in events:
            batch = [
                (
                    int(e.mod_revision),
                    "DELETE" if type(e).__name__ == "DeleteEvent" else "PUT",
                    bytes(e.key),
                    bytes(e.value),
                )
                for e in response.events
            ]
            with self._lock:
                self.responses.append(batch)

    def events(self) -> list[tuple[int, str, bytes, bytes]]:
        """Every event seen so far, in order."""
        with self._lock:
            return [event for batch in self.responses for event in batch]

    def close(self) -> None:
        """Stop watching."""
        self._cancel()


class WatchCollector:
    """A MetaStorage Watch read on a thread: every response kept, and how the stream ended."""

    def __init__(self, stub: Any, request: Any, *, pause: threading.Event | None = None) -> None:
        self.responses: list[Any] = []
        self.error: grpc.RpcError | None = None
        self._call = stub.Watch(request)
        self._pause = pause
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for response in self._call:
                if self._pause is not None:
                    self._pause.wait()
                with self._lock:
                    self.responses.append(response)
        except grpc.RpcError as exc:
            self.error = exc

    def event_responses(self) -> list[Any]:
        """Responses that carry events (not progress, not errors)."""
        with self._lock:
            return [r for r in self.responses if r.events]

    def events(self) -> list[tuple[int, str, bytes, bytes]]:
        """(mod_revision, type, key, value) of every event received, in order."""
        out = []
        for response in self.event_responses():
            for event in response.events:
                kind = "DELETE" if event.type == 1 else "PUT"
                out.append((int(event.kv.mod_revision), kind, bytes(event.kv.key),
                            bytes(event.kv.value)))  # fmt: skip
        return out

    def revisions(self) -> list[int]:
        """header.revision of every event response, in order."""
        return [int(r.header.revision) for r in self.event_responses()]

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        """Poll until ``predicate(self)`` or fail."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"watch did not get there: {self.responses[-3:]!r}")
            time.sleep(0.02)

    def done(self, timeout: float = 10.0) -> None:
        """Wait for the stream to end."""
        self._thread.join(timeout)

    def cancel(self) -> None:
        """Stop the stream from the client's side."""
        self._call.cancel()
        self._thread.join(5)
