"""The etcd connection every layer above holds (``EtcdClient``), opening it, and transactions.

``EtcdClient`` is a small typed protocol of exactly the calls rmwatch makes; ``connect`` returns
pyetcd's ``MultiEndpointEtcd3Client`` made safe to close under other threads (``GuardedClient``),
which satisfies it (a test checks every member against a
real connection). The layers above take an ``EtcdClient``, so a test double or another client
library fits in at this one seam.

``txn`` calls etcd's Txn stub itself because pyetcd's ``transaction()`` drops the TxnResponse
header, which carries the commit revision every acknowledged write must return.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self

import grpc
import pyetcd
from pyetcd import etcdrpc

from rmwatch.store.etcd._pyetcd import drop_cached_stubs, fail_over, request_ops
from rmwatch.store.etcd.auth import TokenAuth, authenticate_first
from rmwatch.store.etcd.config import (
    ENDPOINT_RETRY_SECONDS,
    GRPC_OPTIONS,
    EtcdConfig,
    channel_credentials,
    split_endpoint,
)
from rmwatch.store.etcd.guarded import GuardedClient


class Compare(Protocol):
    """One compare of a transaction, as ``tx.mod(key) == revision`` builds it."""

    def build_message(self) -> Any:
        """etcd's ``Compare`` message."""
        ...


class CompareTarget(Protocol):  # noqa: PLW1641 (unhashable, as pyetcd's compares are)
    """What a compare looks at (``tx.mod(key)``); pyetcd's ``==`` turns it into a Compare."""

    def __eq__(self, other: object) -> Compare:  # type: ignore[override]
        """The compare "target == other" (pyetcd overloads the operator to build it)."""
        ...


class TxnOp(Protocol):
    """One operation of a transaction branch: pyetcd's ``Put``, ``Get`` or ``Delete``."""

    key: str | bytes


class TxnBuilders(Protocol):
    """The compares and operations a transaction is made of (``client.transactions``)."""

    def value(self, key: str | bytes) -> CompareTarget:
        """The key's value."""
        ...

    def create(self, key: str | bytes) -> CompareTarget:
        """The key's create_revision (0 when the key does not exist)."""
        ...

    def mod(self, key: str | bytes) -> CompareTarget:
        """The key's mod_revision (0 when the key does not exist)."""
        ...

    def put(
        self, key: str | bytes, value: str | bytes, lease: int | None = None, prev_kv: bool = False
    ) -> TxnOp:
        """Put ``value`` at ``key`` (attached to ``lease`` when given)."""
        ...

    def get(self, key: str | bytes, range_end: str | bytes | None = None) -> TxnOp:
        """Read ``key``, or every key in ``[key, range_end)``."""
        ...

    def delete(
        self, key: str | bytes, range_end: str | bytes | None = None, prev_kv: bool = False
    ) -> TxnOp:
        """Delete ``key``, or every key in ``[key, range_end)``."""
        ...


class KeyMeta(Protocol):
    """The revisions of a key read by ``EtcdClient.get``."""

    @property
    def create_revision(self) -> int:
        """Revision of the put that created the key."""
        ...

    @property
    def mod_revision(self) -> int:
        """Revision of the last put to the key."""
        ...


class Lease(Protocol):
    """A lease granted by ``EtcdClient.lease``."""

    @property
    def id(self) -> int:
        """The lease id, attached to keys and sent with keepalives."""
        ...


class Endpoint(Protocol):
    """One etcd member the client can use (pyetcd's ``Endpoint``)."""

    @property
    def netloc(self) -> str:
        """``host:port`` of the member."""
        ...

    def fail(self) -> None:
        """Stop using the member for ``ENDPOINT_RETRY_SECONDS``."""
        ...


class EtcdClient(Protocol):
    """The calls rmwatch makes on an etcd connection; ``connect`` returns one.

    Reads and writes go through ``get``, ``get_range_response``, ``put``, ``delete`` and
    ``txn(client, ...)`` built from ``transactions``. The stubs, ``channel`` and the call
    options are for this package's direct gRPC calls (the watch stream, transactions that
    keep the commit revision, lease keepalives with their own deadline) and for the auth
    setup; ``endpoint_in_use`` is the member in use, for failover.
    """

    @property
    def timeout(self) -> float | None:
        """Deadline of every call, in seconds."""
        ...

    @property
    def transactions(self) -> TxnBuilders:
        """Builders of transaction compares and operations."""
        ...

    @property
    def call_credentials(self) -> grpc.CallCredentials | None:
        """Per-call credentials for direct stub calls (None: ``connect`` authenticates in the
        channel instead)."""
        ...

    @property
    def metadata(self) -> Any:
        """Per-call metadata for direct stub calls (None with ``connect``'s clients)."""
        ...

    @property
    def channel(self) -> grpc.Channel:
        """The channel of a live member (fails over first when the one in use failed)."""
        ...

    @property
    def endpoint_in_use(self) -> Endpoint | None:
        """The member calls go to now."""
        ...

    @property
    def kvstub(self) -> Any:
        """etcd's KV service on the member in use."""
        ...

    @property
    def leasestub(self) -> Any:
        """etcd's Lease service on the member in use."""
        ...

    @property
    def authstub(self) -> Any:
        """etcd's Auth service on the member in use."""
        ...

    def watch_stub(self) -> tuple[Any, str]:
        """A new Watch stub on a live member (one stream each) and that member's name."""
        ...

    def get(self, key: str | bytes) -> tuple[bytes | None, KeyMeta | None]:
        """One key's value and revisions (linearizable); ``(None, None)`` when absent."""
        ...

    def get_range_response(
        self,
        range_start: str | bytes,
        range_end: str | bytes,
        sort_order: str | None = None,
        sort_target: str = "key",
        *,
        limit: int | None = None,
        revision: int | None = None,
        keys_only: bool = False,
    ) -> Any:
        """etcd's RangeResponse for ``[range_start, range_end)``: ``kvs``, ``more``, ``count``
        and the ``header`` revision (the one it was read at)."""
        ...

    def put(
        self, key: str | bytes, value: str | bytes, lease: int | None = None, prev_kv: bool = False
    ) -> Any:
        """Put one key outside a transaction; etcd's PutResponse."""
        ...

    def delete(self, key: str | bytes, prev_kv: bool = False, return_response: bool = False) -> Any:
        """Delete one key outside a transaction."""
        ...

    def lease(self, ttl: int) -> Lease:
        """Grant a lease of ``ttl`` seconds."""
        ...

    def close(self) -> None:
        """Close every member's channel; later calls raise EtcdClientClosedError."""
        ...

    def __enter__(self) -> Self:
        """The client itself; ``with connect(config) as client:`` closes it at the end."""
        ...

    def __exit__(self, *exc_info: object) -> None:
        """Close the client."""
        ...


def connect(config: EtcdConfig) -> EtcdClient:
    """A client over every endpoint with failover, deadlines and the channel options.

    With ``user``/``password`` every endpoint's channel authenticates through ``TokenAuth``,
    and one endpoint is authenticated here, at once: a wrong user or password raises
    EtcdAuthError, no reachable endpoint (down, or a TLS handshake refused: wrong CA,
    untrusted client certificate) raises EtcdUnavailableError naming gRPC's reason; neither
    waits longer than ``timeout`` per endpoint.
    """
    if (config.user is None) != (config.password is None):
        raise ValueError("etcd user and password must be given together")
    creds = channel_credentials(config)
    endpoints = []
    auths: list[TokenAuth] = []
    for text in config.endpoints:
        host, port = split_endpoint(text)
        endpoint = pyetcd.Endpoint(
            host,
            port,
            secure=config.secure,
            creds=creds,
            time_retry=ENDPOINT_RETRY_SECONDS,
            opts=GRPC_OPTIONS,
        )
        if config.user is not None and config.password is not None:
            auth = TokenAuth(endpoint.channel, config.user, config.password, config.timeout)
            endpoint.channel = grpc.intercept_channel(endpoint.channel, auth)
            auths.append(auth)
        endpoints.append(endpoint)
    order = list(range(len(endpoints)))
    random.shuffle(order)  # spread clients over members
    endpoints = [endpoints[i] for i in order]
    auths = [auths[i] for i in order] if auths else []
    client: EtcdClient = GuardedClient(endpoints=endpoints, timeout=config.timeout, failover=True)
    if auths:
        try:
            authenticate_first(auths, endpoints, config.user or "")
        except BaseException:
            client.close()
            raise
    return client


@dataclass(frozen=True)
class TxnResult:
    """Outcome of one transaction: whether the compares held, and the revision it read/wrote."""

    succeeded: bool
    revision: int
    responses: Sequence[Any]


def txn(
    client: EtcdClient,
    compare: Sequence[Compare],
    success: Sequence[TxnOp],
    failure: Sequence[TxnOp] = (),
) -> TxnResult:
    """One etcd transaction, returning the header revision (the commit revision on success).

    ``compare`` items are built as ``client.transactions.mod(key) == rev``; ``success`` and
    ``failure`` items as ``client.transactions.put(key, value)``. Transient errors propagate as
    pyetcd exceptions (the endpoint is marked failed first).
    """
    request = etcdrpc.TxnRequest(
        compare=[c.build_message() for c in compare],
        success=request_ops(client, success),
        failure=request_ops(client, failure),
    )
    try:
        response = client.kvstub.Txn(
            request,
            client.timeout,
            credentials=client.call_credentials,
            metadata=client.metadata,
        )
    except grpc.RpcError as exc:
        fail_over(client, exc)
    return TxnResult(response.succeeded, response.header.revision, response.responses)


def mark_endpoint_failed(client: EtcdClient) -> None:
    """Stop using the current endpoint for ``ENDPOINT_RETRY_SECONDS``, so the next call fails
    over to another member (used when a stream from it broke or froze)."""
    endpoint = client.endpoint_in_use
    if endpoint is not None:
        endpoint.fail()
    drop_cached_stubs(client)


__all__ = [
    "Compare",
    "CompareTarget",
    "Endpoint",
    "EtcdClient",
    "KeyMeta",
    "Lease",
    "TxnBuilders",
    "TxnOp",
    "TxnResult",
    "connect",
    "mark_endpoint_failed",
    "txn",
]
