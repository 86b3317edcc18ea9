"""PD's ``resource_manager.ResourceManager`` on the writer: the same write path as HTTP.

Add/Modify/Delete go through the ``Writer`` (roles gate, settings-only apply, fenced by the
leader key, drain) and answer PD's body ``Success!`` with the commit revision in trailing
metadata (``x-revision``). With a bearer token configured, writes need ``authorization: Bearer
<token>`` metadata (``UNAUTHENTICATED`` otherwise). Get/List read etcd at one revision.
``AcquireTokenBuckets`` is ``UNIMPLEMENTED``: tokens belong to RM nodes.

A writer that is not the leader (or is draining) forwards the write to the leader's gRPC
address, read from the leader record's ``grpc_address`` field, once (``x-rmwatch-forwarded``
marks a forwarded call, which is never forwarded again). When the record has no gRPC address
the call is answered ``UNAVAILABLE`` naming the leader, so the client can go there itself; when
the leader goes away with the forwarded call in flight, ``UNAVAILABLE`` says the write may or
may not have been applied (never a success the leader did not send).

Errors map as the HTTP answers do: a refused role ``PERMISSION_DENIED``, a missing group PD's
``ErrResourceGroupNotExists`` text (``UNKNOWN``, as PD's Go server returns it), bad input
``INVALID_ARGUMENT``, a lost compare-and-set ``ABORTED`` with the current revision, etcd
unreachable ``UNAVAILABLE``.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from pydantic import SecretStr

from rmwatch.errors import (
    AlreadyExistsError,
    ConflictError,
    DecodeError,
    DrainingError,
    EtcdUnavailableError,
    InvalidInputError,
    NotFoundError,
    NotLeaderError,
    RmwatchError,
    WriteError,
    WriteRefusedError,
)
from rmwatch.grpc.calls import (
    REVISION_KEY,
    CallContext,
    RpcAbortError,
    metadata_value,
    revision_trailer,
)
from rmwatch.grpc.groups import (
    group_from_pb,
    group_to_pb,
    not_exists_message,
    request_keyspace,
)
from rmwatch.grpc.metrics import GrpcMetrics
from rmwatch.grpc.replica_rm import SERVICE, TOKENS_UNIMPLEMENTED
from rmwatch.store._pb import resource_manager_pb2 as pb
from rmwatch.store.keys import NULL_KEYSPACE_ID, parse_revision
from rmwatch.store.leadership import LeaderInfo, read_leader
from rmwatch.store.writer import Writer

FORWARDED_KEY = "x-rmwatch-forwarded"
EXPECTED_REVISION_KEY = "expected-revision"
SUCCESS = "Success!"
# As over HTTP: a resign hands over within one follower poll (~150 ms), a crash within one
# lease TTL (5 s); wait 6 s for a leader before answering UNAVAILABLE.
FORWARD_WAIT = 6.0
FORWARD_TIMEOUT = 7.0
# Codes of a forwarded call that mean the leader went away (connection lost, server stopped
# mid-call), not an answer of the leader's: the caller gets UNAVAILABLE saying so.
_LEADER_GONE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})


class WriterResourceManager:
    """The servicer; ``handler()`` is what the server registers.

    Args:
        writer: the Writer every write and read goes through.
        token: bearer token writes must carry; None disables the check.
        metrics: where calls are counted.
        forward_wait: how long to look for a leader before answering UNAVAILABLE.
    """

    def __init__(
        self,
        writer: Writer,
        *,
        token: SecretStr | None,
        metrics: GrpcMetrics,
        forward_wait: float = FORWARD_WAIT,
    ) -> None:
        self.writer = writer
        self.token = token
        self.forward_wait = forward_wait
        self.calls = CallContext(SERVICE, metrics)
        # Writes block on etcd: they run in threads, as the HTTP app's (40 workers).
        self.pool = ThreadPoolExecutor(max_workers=40, thread_name_prefix="rmwatch-grpc-write")
        self._channels: dict[str, grpc.aio.Channel] = {}

    # ---- plumbing --------------------------------------------------------------------------

    def check_auth(self, context: Any) -> None:
        """Writes need the bearer token when one is configured."""
        if self.token is None:
            return
        given = metadata_value(context, "authorization") or ""
        expected = f"Bearer {self.token.get_secret_value()}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise RpcAbortError(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")

    async def run(self, op: Callable[[], Any]) -> Any:
        """A blocking Writer call in the pool, its errors as gRPC statuses."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, op)
        except (NotLeaderError, DrainingError):
            raise
        except RmwatchError as exc:
            raise _status(exc) from None

    async def write(
        self, method: str, request: Any, context: Any, op: Callable[[], int]
    ) -> tuple[str, int]:
        """Run ``op`` here, or forward to the leader; returns (body, commit revision)."""
        self.check_auth(context)
        try:
            revision = await self.run(op)
        except (NotLeaderError, DrainingError) as exc:
            return await self.forward(method, request, context, exc, op)
        return SUCCESS, int(revision)

    async def forward(
        self, method: str, request: Any, context: Any, cause: WriteError, op: Callable[[], int]
    ) -> tuple[str, int]:
        """Send a write this writer cannot commit to the leader's gRPC address."""
        if metadata_value(context, FORWARDED_KEY):
            raise RpcAbortError(
                grpc.StatusCode.UNAVAILABLE,
                f"not the leader and the call was already forwarded: {cause}",
            )
        leadership = self.writer.leadership
        own = leadership.name if leadership is not None else None
        deadline = time.monotonic() + self.forward_wait
        loop = asyncio.get_running_loop()
        client, layout = self.writer.client, self.writer.layout
        while True:
            leader = await loop.run_in_executor(self.pool, read_leader, client, layout)
            if leader is not None:
                if leader.name == own and not self.writer.draining:
                    try:  # elected while forwarding: commit here
                        return SUCCESS, int(await self.run(op))
                    except (NotLeaderError, DrainingError):
                        pass
                elif leader.name != own:
                    if not leader.grpc_address:
                        raise RpcAbortError(
                            grpc.StatusCode.UNAVAILABLE,
                            f"not the leader: writer {leader.name!r} leads (HTTP "
                            f"{leader.address}), and its leader record has no gRPC "
                            "address to forward to; send the call there",
                        )
                    return await self._send(leader, method, request, context)
            if time.monotonic() >= deadline:
                raise RpcAbortError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"no leader to forward to within {self.forward_wait:.0f}s ({cause})",
                )
            await asyncio.sleep(0.05)

    async def _send(
        self, leader: LeaderInfo, method: str, request: Any, context: Any
    ) -> tuple[str, int]:
        address = str(leader.grpc_address)
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(address)
        call = channel.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=pb.PutResourceGroupResponse.FromString,
        )
        metadata = [(FORWARDED_KEY, "1")]
        auth = metadata_value(context, "authorization")
        if auth:
            metadata.append(("authorization", auth))
        pending = call(request, metadata=metadata, timeout=FORWARD_TIMEOUT)
        try:
            response = await pending
        except grpc.RpcError as exc:
            code = exc.code()
            if code in _LEADER_GONE:
                # The connection to the leader broke, or the leader stopped with the call in
                # flight: the write may or may not have been committed there, and this writer
                # cannot tell. Say so, never answer success.
                raise RpcAbortError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"forwarded to leader {leader.name!r} at {address}, which did not answer "
                    f"({code.name}: {exc.details()}); the write may or may not have been "
                    "applied: read the group before retrying",
                ) from None
            trailers = [(str(k), str(v)) for k, v in (exc.trailing_metadata() or ())]
            raise RpcAbortError(code, exc.details() or "", trailers) from None
        # grpc.aio's metadata iterates as (key, value) pairs.
        trailers = await pending.trailing_metadata()
        revision = 0
        for key, value in trailers or ():
            if key == REVISION_KEY:
                revision = int(value)
        return str(response.body), revision

    # ---- methods ---------------------------------------------------------------------------

    def _group(self, request: pb.PutResourceGroupRequest) -> Any:
        if not request.HasField("group"):
            raise RpcAbortError(grpc.StatusCode.INVALID_ARGUMENT, "invalid group: missing")
        keyspace = (
            int(request.group.keyspace_id.value) if request.group.HasField("keyspace_id") else None
        )
        try:
            return group_from_pb(request.group, keyspace)
        except DecodeError as exc:
            raise RpcAbortError(
                grpc.StatusCode.INVALID_ARGUMENT, f"invalid group: {exc.reason}"
            ) from None

    async def add_group(
        self, request: pb.PutResourceGroupRequest, context: Any
    ) -> pb.PutResourceGroupResponse:
        """Add a group (PD: AddResourceGroup)."""
        self.check_auth(context)
        group = self._group(request)
        body, revision = await self.write(
            "AddResourceGroup", request, context, lambda: self.writer.add_group(group)
        )
        context.set_trailing_metadata(revision_trailer(revision))
        return pb.PutResourceGroupResponse(body=body)

    async def modify_group(
        self, request: pb.PutResourceGroupRequest, context: Any
    ) -> pb.PutResourceGroupResponse:
        """Modify a group's settings; tokens untouched. ``expected-revision``: strict CAS."""
        self.check_auth(context)
        group = self._group(request)
        raw = metadata_value(context, EXPECTED_REVISION_KEY)
        try:
            expected = parse_revision(raw) if raw is not None else None
        except ValueError:
            raise RpcAbortError(
                grpc.StatusCode.INVALID_ARGUMENT, "expected-revision must be a non-negative integer"
            ) from None
        body, revision = await self.write(
            "ModifyResourceGroup",
            request,
            context,
            lambda: self.writer.modify_group(group, expected_revision=expected),
        )
        context.set_trailing_metadata(revision_trailer(revision))
        return pb.PutResourceGroupResponse(body=body)

    async def delete_group(
        self, request: pb.DeleteResourceGroupRequest, context: Any
    ) -> pb.DeleteResourceGroupResponse:
        """Delete a group (settings and states); ``default`` is refused."""
        self.check_auth(context)
        keyspace = _writer_keyspace(request)
        name = request.resource_group_name
        body, revision = await self.write(
            "DeleteResourceGroup",
            request,
            context,
            lambda: self.writer.delete_group(name, keyspace),
        )
        context.set_trailing_metadata(revision_trailer(revision))
        return pb.DeleteResourceGroupResponse(body=body)

    async def get_group(
        self, request: pb.GetResourceGroupRequest, context: Any
    ) -> pb.GetResourceGroupResponse:
        """One group, read from etcd at one revision."""
        keyspace = _writer_keyspace(request)
        name = request.resource_group_name
        try:
            view = await self.run(lambda: self.writer.get_group(name, keyspace))
        except RpcAbortError as exc:
            if exc.code is grpc.StatusCode.NOT_FOUND:
                raise RpcAbortError(grpc.StatusCode.UNKNOWN, not_exists_message(name)) from None
            raise
        context.set_trailing_metadata(revision_trailer(view.revision))
        message = group_to_pb(
            view.group, view.states, request_keyspace(request), with_stats=request.with_ru_stats
        )
        return pb.GetResourceGroupResponse(group=message)

    async def list_groups(
        self, request: pb.ListResourceGroupsRequest, context: Any
    ) -> pb.ListResourceGroupsResponse:
        """Every group of a keyspace at one revision."""
        keyspace = _writer_keyspace(request)
        views, revision = await self.run(lambda: self.writer.list_groups(keyspace))
        ks = request_keyspace(request)
        groups = [
            group_to_pb(v.group, v.states, ks, with_stats=request.with_ru_stats) for v in views
        ]
        context.set_trailing_metadata(revision_trailer(revision))
        return pb.ListResourceGroupsResponse(groups=groups)

    async def acquire_tokens(self, _requests: Any, _context: Any) -> Any:
        """Token buckets are an RM node's job."""
        raise RpcAbortError(grpc.StatusCode.UNIMPLEMENTED, TOKENS_UNIMPLEMENTED)

    def handler(self) -> grpc.GenericRpcHandler:
        """Every method under ``resource_manager.ResourceManager``."""
        c = self.calls
        put = pb.PutResourceGroupRequest
        return c.generic(
            {
                "GetResourceGroup": c.unary(
                    "GetResourceGroup", self.get_group, pb.GetResourceGroupRequest
                ),
                "ListResourceGroups": c.unary(
                    "ListResourceGroups", self.list_groups, pb.ListResourceGroupsRequest
                ),
                "AddResourceGroup": c.unary("AddResourceGroup", self.add_group, put),
                "ModifyResourceGroup": c.unary("ModifyResourceGroup", self.modify_group, put),
                "DeleteResourceGroup": c.unary(
                    "DeleteResourceGroup", self.delete_group, pb.DeleteResourceGroupRequest
                ),
                "AcquireTokenBuckets": c.bidi_stream(
                    "AcquireTokenBuckets", self.acquire_tokens, pb.TokenBucketsRequest
                ),
            }
        )

    def close(self) -> None:
        """Release the write threads."""
        self.pool.shutdown(wait=False, cancel_futures=True)


def _writer_keyspace(request: Any) -> int | None:
    # The Writer takes None for the null keyspace.
    keyspace = request_keyspace(request)
    return None if keyspace == NULL_KEYSPACE_ID else keyspace


def _status(exc: RmwatchError) -> RpcAbortError:
    """A Writer error as the gRPC status a client meets (the HTTP codes' counterparts)."""
    if isinstance(exc, ConflictError):
        return RpcAbortError(
            grpc.StatusCode.ABORTED,
            f"{exc}; current revision {exc.current_revision}",
            revision_trailer(exc.current_revision),
        )
    if isinstance(exc, WriteRefusedError):
        return RpcAbortError(grpc.StatusCode.PERMISSION_DENIED, str(exc))
    if isinstance(exc, NotFoundError):
        # PD returns its plain error, which grpc-go sends as UNKNOWN (grpc_service.go:167-170
        # for a delete, 182-185 for a modify)
        return RpcAbortError(grpc.StatusCode.UNKNOWN, str(exc))
    if isinstance(exc, AlreadyExistsError):
        return RpcAbortError(grpc.StatusCode.ALREADY_EXISTS, str(exc))
    if isinstance(exc, InvalidInputError):
        return RpcAbortError(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, EtcdUnavailableError | DrainingError | NotLeaderError):
        return RpcAbortError(grpc.StatusCode.UNAVAILABLE, str(exc))
    return RpcAbortError(grpc.StatusCode.INTERNAL, str(exc))


__all__ = ["FORWARDED_KEY", "SUCCESS", "WriterResourceManager"]
