"""etcd failures nothing else names reach callers typed: an UNKNOWN "context deadline exceeded"
(etcd's own deadline, e.g. a proposal with no leader) is transient, and a write that meets any
other raw gRPC error raises EtcdUnavailableError saying the outcome is unknown."""

from __future__ import annotations

import threading
import time
from typing import Any, cast

import grpc
import pytest
from grpc_support import FakeRpcError

from rmwatch.errors import EtcdUnavailableError
from rmwatch.store import EtcdClient, EtcdConfig, KeyLayout, ResourceGroup, Writer, connect
from rmwatch.store.etcd import call_with_retry, is_transient


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


class TestCallWithRetry:
    """``call_with_retry``: one bare try, then backoff until the deadline, typed at the end."""

    def test_a_success_is_one_call(self) -> None:
        calls: list[int] = []

        def ok() -> int:
            calls.append(1)
            return 7

        assert call_with_retry(ok, deadline=1.0, what="x") == 7
        assert calls == [1]

    def test_a_transient_failure_is_retried_after_a_wait(self) -> None:
        """The second try comes after the first backoff (~50 ms), not at once."""
        stamps: list[float] = []

        def flaky() -> int:
            stamps.append(time.monotonic())
            if len(stamps) < 3:
                raise FakeRpcError(grpc.StatusCode.UNAVAILABLE, "down")
            return 5

        assert call_with_retry(flaky, deadline=5.0, what="x") == 5
        assert len(stamps) == 3
        assert stamps[1] - stamps[0] >= 0.045

    def test_other_errors_pass_through_untouched(self) -> None:
        calls: list[int] = []

        def broken() -> int:
            calls.append(1)
            raise FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "too large")

        with pytest.raises(FakeRpcError):
            call_with_retry(broken, deadline=5.0, what="x")
        assert calls == [1]

    @pytest.mark.parametrize("deadline", [0.0, 0.3])
    def test_past_the_deadline_it_is_typed(self, deadline: float) -> None:
        """A call that keeps failing ends in EtcdUnavailableError naming it and the cause,
        within its deadline plus one backoff; a zero deadline still makes one try."""
        calls: list[int] = []

        def down() -> int:
            calls.append(1)
            raise FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused")

        started = time.monotonic()
        with pytest.raises(EtcdUnavailableError, match=r"for load page 3 .*UNAVAILABLE"):
            call_with_retry(down, deadline=deadline, what="load page 3")
        assert time.monotonic() - started < deadline + 1.2
        assert len(calls) >= (1 if deadline == 0 else 2)

    def test_a_set_stop_ends_the_retries_without_another_call(self) -> None:
        """Set during a wait, ``stop`` cuts the wait short and no call follows it: a closing
        replica's load must not start a call on a connection being closed."""
        stop = threading.Event()
        calls: list[float] = []

        def down() -> int:
            calls.append(time.monotonic())
            if len(calls) == 3:
                threading.Timer(0.05, stop.set).start()  # the wait after this call is 0.2-0.25 s
            raise FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused")

        with pytest.raises(EtcdUnavailableError, match=r"for load page 1 .*UNAVAILABLE"):
            call_with_retry(down, deadline=30.0, what="load page 1", stop=stop)
        assert len(calls) == 3
        assert time.monotonic() - calls[-1] < 0.15  # the wait was cut short

    def test_a_stop_set_before_the_first_wait_ends_it(self) -> None:
        stop = threading.Event()
        stop.set()
        calls: list[int] = []

        def down() -> int:
            calls.append(1)
            raise FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused")

        with pytest.raises(EtcdUnavailableError, match="UNAVAILABLE"):
            call_with_retry(down, deadline=30.0, what="x", stop=stop)
        assert calls == [1]


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
