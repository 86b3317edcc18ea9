"""etcd's own refusals of a write are answered with a body that names them, not a bare
``Internal Server Error``.

Raised against a real etcd: NOSPACE (a private member with a tiny ``--quota-backend-bytes``,
filled) and request too large (``--max-request-bytes``). Not raised for real, and covered by
etcd's own gRPC errors built here instead: too many requests (etcd answers it only while its
apply lags commit by more than 5,000 entries, which a test cannot cause on purpose), an
expired auth token (needs an auth-enabled member and a token TTL run out mid-write) and no
leader (needs a majority of a cluster stopped; the writer retries it to its deadline).
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from fastapi.testclient import TestClient
from grpc_support import FakeRpcError
from harness import EtcdMember, make_client
from writer_support import WriterNode, nodes

from rmwatch.errors import EtcdRefusedError, EtcdUnavailableError
from rmwatch.http.errors import error_response
from rmwatch.http.pd import PREFIX
from rmwatch.http.writer_app import create_writer_app
from rmwatch.store.etcd_refusal import etcd_refusal

GROUP = {"name": "g1", "mode": 1, "priority": 8,
         "r_u_settings": {"r_u": {"settings": {"fill_rate": 10}}}}  # fmt: skip


@pytest.fixture
def small_etcd() -> Iterator[EtcdMember]:
    """A private member: 1 MiB backend quota, 64 KiB largest request."""
    args = ["--quota-backend-bytes=1048576", "--max-request-bytes=65536"]
    with EtcdMember("tiny", extra_args=args) as member:
        yield member


@pytest.fixture
def writer_on(small_etcd: EtcdMember) -> Iterator[TestClient]:
    """The writer's app on the small member."""
    node = WriterNode([small_etcd.endpoint], "/t/fail/", name="w").start()
    with nodes(node), TestClient(create_writer_app(node.writer, token=None)) as client:
        yield client


def _fill(member: EtcdMember) -> None:
    """Put 32 KiB values until etcd raises its NOSPACE alarm."""
    with make_client([member.endpoint]) as raw:
        for i in range(200):
            try:
                raw.put(f"/fill/{i}", b"x" * 32 * 1024)
            except Exception:
                return
    raise AssertionError("the 1 MiB quota never filled")


class TestRealEtcd:
    """Refusals raised by a real etcd."""

    def test_no_space(self, small_etcd: EtcdMember, writer_on: TestClient) -> None:
        """NOSPACE: 507 naming it (``database space exceeded``), nothing written."""
        _fill(small_etcd)
        r = writer_on.post(PREFIX + "/config/group", json=GROUP)
        assert r.status_code == 507, r.text
        assert "out of space (NOSPACE alarm)" in r.text
        assert "database space exceeded" in r.text

    def test_request_too_large(self, writer_on: TestClient) -> None:
        """A write over ``--max-request-bytes``: 413 naming etcd's limit."""
        group = {**GROUP, "background_settings": {"job_types": ["j" * 30] * 3000}}
        r = writer_on.post(PREFIX + "/config/group", json=group)
        assert r.status_code == 413, r.text
        assert "--max-request-bytes" in r.text
        assert "request is too large" in r.text


def _as_pyetcd_raises(rpc: grpc.RpcError) -> Exception:
    """What pyetcd raises: its own exception, the gRPC error as the context."""
    try:
        try:
            raise rpc
        except grpc.RpcError:
            raise RuntimeError from None  # stands for pyetcd's text-less exception
    except RuntimeError as exc:
        exc.__context__ = rpc
        return exc


class TestNamedWithoutRaising:
    """Refusals a test cannot raise on a real etcd, from etcd's own error texts."""

    @pytest.mark.parametrize(
        ("code", "details", "status", "named"),
        [
            (grpc.StatusCode.RESOURCE_EXHAUSTED, "etcdserver: too many requests", 429,
             "too many requests"),
            (grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token", 503,
             "auth token (invalid or expired)"),
            (grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader", 503, "etcd has no leader"),
            (grpc.StatusCode.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded",
             507, "NOSPACE"),
        ],
    )  # fmt: skip
    def test_named(self, code: grpc.StatusCode, details: str, status: int, named: str) -> None:
        """The refusal is found behind pyetcd's exception and answered with its name."""
        refusal = etcd_refusal(_as_pyetcd_raises(FakeRpcError(code, details)), op="add_group")
        assert isinstance(refusal, EtcdRefusedError)
        r = error_response(refusal)
        assert r.status_code == status
        assert named in bytes(r.body).decode()

    def test_no_leader_after_retries(self) -> None:
        """No leader is retried until the deadline; the EtcdUnavailableError that ends it
        still names etcd's words."""
        rpc = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
        unavailable = EtcdUnavailableError("add_group: outcome unknown after 5.0s")
        unavailable.__cause__ = _as_pyetcd_raises(rpc)
        refusal = etcd_refusal(unavailable, op="add_group")
        assert refusal is not None
        assert "no leader" in str(refusal)

    def test_other_errors_are_not_refusals(self) -> None:
        """An error that is not etcd's refusal is left alone (mapped elsewhere)."""
        assert etcd_refusal(ValueError("x"), op="add_group") is None
