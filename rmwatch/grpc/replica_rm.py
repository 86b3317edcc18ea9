"""PD's ``resource_manager.ResourceManager`` on a replica: Get/List from the cache, writes refused.

This is what PD's RM node does with ``rejectMetadataWritesViaGRPC`` (tikv/pd
pkg/mcs/resourcemanager/server/grpc_service.go:145-186): Add/Modify/Delete answer
``FAILED_PRECONDITION`` "resource group metadata writes must be handled by PD". A missing group
is PD's ``ErrResourceGroupNotExists`` (grpc_service.go:116), which reaches a Go client as
``UNKNOWN`` with ``[PD:resourcemanager:ErrGroupNotExists]the NAME resource group does not
exist``. Token buckets belong to RM nodes: ``AcquireTokenBuckets`` is ``UNIMPLEMENTED``.
Every answer carries the revision it was read at in trailing metadata (``x-revision``).
"""

from __future__ import annotations

from typing import Any

import grpc

from rmwatch.grpc.calls import CallContext, RpcAbortError, revision_trailer
from rmwatch.grpc.groups import group_to_pb, not_exists_message, request_keyspace
from rmwatch.grpc.metrics import GrpcMetrics
from rmwatch.grpc.reads import SnapshotReads
from rmwatch.store._pb import resource_manager_pb2 as pb
from rmwatch.watcher.cache import Snapshot

SERVICE = "resource_manager.ResourceManager"
WRITES_REFUSED = "resource group metadata writes must be handled by PD"
_MAX_ANSWERS = 100_000  # per snapshot; ~300 B each
TOKENS_UNIMPLEMENTED = (
    "AcquireTokenBuckets is not served here: token buckets belong to resource-manager nodes; "
    "rmwatch serves resource-group metadata only"
)


class ReplicaResourceManager:
    """The servicer; ``handler()`` is what the server registers."""

    def __init__(self, reads: SnapshotReads, metrics: GrpcMetrics) -> None:
        self.reads = reads
        self.calls = CallContext(SERVICE, metrics)
        # Encoded answers of the current snapshot, by (name, keyspace, with_stats): a group is
        # built and encoded once per snapshot, not per call (~0.15 ms saved per Get).
        self._answers: tuple[Snapshot | None, dict[tuple[str, int, bool], bytes]] = (None, {})

    async def get_group(self, request: pb.GetResourceGroupRequest, context: Any) -> bytes:
        """One group from one snapshot (the encoded GetResourceGroupResponse)."""
        snap = await self.reads.snapshot(context)
        keyspace = request_keyspace(request)
        name = request.resource_group_name
        trailer = revision_trailer(snap.revision)
        cached, answers = self._answers
        if cached is not snap:
            answers = {}
            self._answers = (snap, answers)
        answer_key = (name, keyspace, request.with_ru_stats)
        answer = answers.get(answer_key)
        if answer is None:
            group = snap.get_group(name, keyspace)
            if group is None:
                raise RpcAbortError(grpc.StatusCode.UNKNOWN, not_exists_message(name), trailer)
            states = snap.get_states(name, keyspace)
            message = group_to_pb(group, states, keyspace, with_stats=request.with_ru_stats)
            answer = pb.GetResourceGroupResponse(group=message).SerializeToString()
            if len(answers) < _MAX_ANSWERS:
                answers[answer_key] = answer
        context.set_trailing_metadata(trailer)
        return answer

    async def list_groups(
        self, request: pb.ListResourceGroupsRequest, context: Any
    ) -> pb.ListResourceGroupsResponse:
        """Every group of a keyspace from one snapshot, sorted by name."""
        snap = await self.reads.snapshot(context)
        keyspace = request_keyspace(request)
        stats = request.with_ru_stats
        groups = [
            group_to_pb(g, snap.get_states(g.name, keyspace), keyspace, with_stats=stats)
            for g in snap.list_groups(keyspace)
        ]
        context.set_trailing_metadata(revision_trailer(snap.revision))
        return pb.ListResourceGroupsResponse(groups=groups)

    async def refuse_write(self, _request: Any, _context: Any) -> Any:
        """Add/Modify/Delete: metadata is written by PD (the writer), never by a replica."""
        raise RpcAbortError(
            grpc.StatusCode.FAILED_PRECONDITION,
            WRITES_REFUSED,
            revision_trailer(self.reads.replica.revision),
        )

    async def acquire_tokens(self, _requests: Any, _context: Any) -> Any:
        """Token buckets are an RM node's job."""
        raise RpcAbortError(grpc.StatusCode.UNIMPLEMENTED, TOKENS_UNIMPLEMENTED)

    def handler(self) -> grpc.GenericRpcHandler:
        """Every method under ``resource_manager.ResourceManager``."""
        c = self.calls
        return c.generic(
            {
                "GetResourceGroup": c.unary(
                    "GetResourceGroup", self.get_group, pb.GetResourceGroupRequest
                ),
                "ListResourceGroups": c.unary(
                    "ListResourceGroups", self.list_groups, pb.ListResourceGroupsRequest
                ),
                "AddResourceGroup": c.unary(
                    "AddResourceGroup", self.refuse_write, pb.PutResourceGroupRequest
                ),
                "ModifyResourceGroup": c.unary(
                    "ModifyResourceGroup", self.refuse_write, pb.PutResourceGroupRequest
                ),
                "DeleteResourceGroup": c.unary(
                    "DeleteResourceGroup", self.refuse_write, pb.DeleteResourceGroupRequest
                ),
                "AcquireTokenBuckets": c.bidi_stream(
                    "AcquireTokenBuckets", self.acquire_tokens, pb.TokenBucketsRequest
                ),
            }
        )


__all__ = ["SERVICE", "TOKENS_UNIMPLEMENTED", "WRITES_REFUSED", "ReplicaResourceManager"]
