"""etcd failures nothing else names reach callers typed: an UNKNOWN "context deadline exceeded"
(etcd's own deadline, e.g. a proposal with no leader) is transient, and a write that meets any
other raw gRPC error raises EtcdUnavailableError saying the outcome is unknown."""

from __future__ import annotations

from typing import Any, cast

import grpc
import pytest
from grpc_support import FakeRpcError

from rmwatch.errors import EtcdUnavailableError
from rmwatch.store import EtcdClient, EtcdConfig, KeyLayout, ResourceGroup, Writer, connect
from rmwatch.store.etcd import is_transient


class TestTransient:
    @pytest.mark.parametrize(
        ("code", "details", "transient"),
        [
            (grpc.StatusCode.UNKNOWN, "context deadline exceeded", True),
            (grpc.StatusCode.UNKNOWN, "context canceled", True),
            (grpc.StatusCode.UNAVAILABLE, "etcdserver: request timed out", True),
            (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", True),
            (grpc.StatusCode.UNKNOWN, "something else went wrong", False),
            (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: request is too large", False),
        ],
    )
    def test_which_errors_are_retried(
        self, code: grpc.StatusCode, details: str, transient: bool
    ) -> None:
        """etcd's context errors arrive as UNKNOWN with their text; those are transient."""
        assert is_transient(FakeRpcError(code, details)) is transient


class _FailingTxn:
    """A real client whose Txn RPC fails with ``error`` (reads still work)."""

    def __init__(self, inner: Any, error: grpc.RpcError) -> None:
        self._inner, self._error = inner, error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @property
    def kvstub(self) -> Any:
        error, real = self._error, self._inner.kvstub

        class Stub:
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def Txn(self, request: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N802
                if request.success and request.success[0].HasField("request_put"):
                    raise error
                return real.Txn(request, *args, **kwargs)

        return Stub()


class TestWriterNeverLeaksRawErrors:
    def test_an_unnamed_grpc_error_is_typed(self, etcd_endpoints: list[str]) -> None:
        """A write failing with a gRPC error no rule names raises EtcdUnavailableError (which
        says the outcome is unknown), with the raw error as its cause."""
        real = connect(EtcdConfig(endpoints=tuple(etcd_endpoints)))
        boom = FakeRpcError(grpc.StatusCode.UNKNOWN, "an error etcd has no code for")
        client = cast(EtcdClient, _FailingTxn(real, boom))
        writer = Writer(client=client, layout=KeyLayout("/typed-errors/"), timeout=2.0)
        with pytest.raises(EtcdUnavailableError, match="may or may not have applied") as info:
            writer.add_group(ResourceGroup(name="g1"))
        assert info.value.__cause__ is boom
        real.close()
