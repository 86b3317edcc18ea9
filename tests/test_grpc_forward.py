"""A gRPC write sent to a writer that does not lead is forwarded to the leader's gRPC address,
read from the leader record: applied by the leader, answered ``Success!`` with the leader's
``x-revision``; a leader that goes away mid-forward is a clear UNAVAILABLE, never a success.
Two writers on the real session etcd; the leader record stays readable without the field."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pyetcd
import pytest
from grpc_support import pb_group, rm_stub, trailer
from prometheus_client import CollectorRegistry
from writer_support import WriterNode, nodes, raw_get

from rmwatch.grpc import GrpcServer, serve_writer
from rmwatch.store._pb import resource_manager_pb2 as pb
from rmwatch.store.codec import decode_settings
from rmwatch.store.leadership import leader_key, read_leader


def served_node(
    endpoints: list[str], root_prefix: str, name: str, registry: CollectorRegistry
) -> tuple[WriterNode, GrpcServer]:
    """A writer served over gRPC on a free port whose leader record names that port (set
    before it campaigns, as ``rmwatch writer --grpc-listen`` does)."""
    node = WriterNode(endpoints, root_prefix, name=name)
    server = serve_writer(node.writer, "127.0.0.1:0", registry=registry)
    assert node.leadership is not None
    node.leadership.grpc_address = server.address
    return node, server


@contextmanager
def leader_and_follower(
    endpoints: list[str], root_prefix: str
) -> Iterator[tuple[WriterNode, GrpcServer, GrpcServer, CollectorRegistry]]:
    """(leader, leader's server, follower's server, leader's metrics); all stopped after."""
    leader_metrics = CollectorRegistry()
    leader, leader_server = served_node(endpoints, root_prefix, "lead", leader_metrics)
    leader.start()
    follower, follower_server = served_node(endpoints, root_prefix, "follow", CollectorRegistry())
    follower.start(wait_leader=False)
    with nodes(leader, follower):
        try:
            yield leader, leader_server, follower_server, leader_metrics
        finally:
            follower_server.stop(0.5)
            leader_server.stop(0.5)


def _calls(registry: CollectorRegistry, method: str, code: str) -> float:
    labels = {"service": "resource_manager.ResourceManager", "method": method, "code": code}
    return registry.get_sample_value("rmwatch_grpc_requests_total", labels) or 0.0


class TestForward:
    """The follower sends the write on; the leader commits it."""

    def test_write_to_follower_is_applied_by_the_leader(
        self, etcd_endpoints: list[str], root_prefix: str
    ) -> None:
        """Add and modify sent to the follower answer ``Success!`` with the revision the
        leader committed at; the leader counted both calls; etcd holds the modify."""
        with leader_and_follower(etcd_endpoints, root_prefix) as (leader, _, to_follower, seen):
            info = read_leader(leader.client, leader.layout)
            assert info is not None
            assert info.grpc_address is not None
            assert info.name == "lead"
            with grpc.insecure_channel(to_follower.address) as channel:
                stub = rm_stub(channel)
                added, call = stub.AddResourceGroup.with_call(
                    pb.PutResourceGroupRequest(group=pb_group("fw", 100))
                )
                assert added.body == "Success!"
                key = leader.layout.settings("fw")
                assert int(trailer(call) or 0) == raw_get(leader.client, key)[1]
                modified, call = stub.ModifyResourceGroup.with_call(
                    pb.PutResourceGroupRequest(group=pb_group("fw", 700))
                )
                assert modified.body == "Success!"
            value, mod = raw_get(leader.client, key)
            assert value is not None
            assert int(trailer(call) or 0) == mod
            assert decode_settings(key, value).r_u_settings.r_u.settings.fill_rate == 700  # type: ignore[union-attr]
            assert _calls(seen, "AddResourceGroup", "OK") == 1
            assert _calls(seen, "ModifyResourceGroup", "OK") == 1

    def test_leader_gone_mid_forward_is_unavailable(
        self, etcd_endpoints: list[str], root_prefix: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The leader's server stops while the forwarded write is in flight there: the
        client gets UNAVAILABLE saying the write may or may not have applied, not Success."""
        entered, release = threading.Event(), threading.Event()

        def stuck(*_args: Any, **_kwargs: Any) -> int:
            entered.set()
            release.wait(10)
            raise AssertionError("the leader's server was stopped: this answer goes nowhere")

        with leader_and_follower(etcd_endpoints, root_prefix) as (leader, to_leader, follower, _):
            monkeypatch.setattr(leader.writer, "add_group", stuck)
            errors: list[grpc.RpcError] = []

            def send() -> None:
                with grpc.insecure_channel(follower.address) as channel:
                    try:
                        rm_stub(channel).AddResourceGroup(
                            pb.PutResourceGroupRequest(group=pb_group("gone")), timeout=15
                        )
                    except grpc.RpcError as exc:
                        errors.append(exc)

            sender = threading.Thread(target=send)
            sender.start()
            try:
                assert entered.wait(10), "the write never reached the leader"
                to_leader.stop(0)
                sender.join(15)
            finally:
                release.set()
            assert not sender.is_alive()
            (error,) = errors
            assert error.code() is grpc.StatusCode.UNAVAILABLE
            details = error.details() or ""
            assert "forwarded to leader 'lead'" in details
            assert "may or may not have been applied" in details
            assert raw_get(leader.client, leader.layout.settings("gone")) == (None, 0)


class TestLeaderRecord:
    """The gRPC address is an optional field of the record, readable both ways."""

    def test_record_without_grpc_address_still_reads(
        self,
        etcd_endpoints: list[str],
        root_prefix: str,
        etcd_client: pyetcd.MultiEndpointEtcd3Client,
    ) -> None:
        """An older writer's record (name, address, lease only) reads with grpc_address None;
        a record with it keeps every field an older reader needs."""
        node, server = served_node(etcd_endpoints, root_prefix, "new", CollectorRegistry())
        with nodes(node.start()):
            try:
                raw, _ = node.client.get(leader_key(node.layout))
                assert raw is not None
                record = json.loads(raw)
                assert set(record) == {"name", "address", "lease", "grpc_address"}
                assert record["grpc_address"] == server.address
            finally:
                server.stop(0.5)
        old = json.dumps({"name": "old", "address": "http://10.0.0.1:8080", "lease": 7})
        etcd_client.put(leader_key(node.layout), old)
        try:
            info = read_leader(etcd_client, node.layout)
        finally:
            etcd_client.delete(leader_key(node.layout))
        assert info is not None
        assert (info.name, info.address, info.lease) == ("old", "http://10.0.0.1:8080", 7)
        assert info.grpc_address is None
