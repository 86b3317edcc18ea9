"""The etcd adapter's protocol against a real connection: what ``connect`` returns has every
member ``EtcdClient`` names, each method takes the parameters the protocol declares, and the
calls rmwatch makes through it (reads, transactions, leases, failover) work on a real etcd."""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from typing_extensions import get_protocol_members

from rmwatch.errors import EtcdClientClosedError
from rmwatch.store.etcd import (
    EtcdClient,
    EtcdConfig,
    KeyMeta,
    TxnBuilders,
    connect,
    grant_lease,
    keepalive_once,
    mark_endpoint_failed,
    revoke_lease,
    txn,
)
from rmwatch.store.etcd.client import Compare, Endpoint, Lease, TxnOp
from rmwatch.store.etcd.guarded import GuardedClient


@pytest.fixture
def client(etcd_endpoints: list[str]) -> Iterator[EtcdClient]:
    """A client as the writer and the replica get one: ``connect`` over the session etcd."""
    with connect(EtcdConfig.parse(etcd_endpoints)) as opened:
        yield opened


def _declared(protocol: type) -> list[tuple[str, Any]]:
    """(name, member) of every member a protocol names: its methods as plain functions, None
    for an attribute it only annotates."""
    return [
        (name, inspect.getattr_static(protocol, name, None))
        for name in sorted(get_protocol_members(protocol))
    ]


def _assert_implements(obj: object, protocol: type) -> None:
    """``obj`` has every member of ``protocol``, and each method accepts the declared call."""
    missing = []
    for name, member in _declared(protocol):
        try:
            inspect.getattr_static(obj, name)
        except AttributeError:
            missing.append(name)
            continue
        if not inspect.isfunction(member):
            continue  # a property or attribute: being there is the contract
        declared = inspect.signature(member)
        args: list[object] = []
        kwargs: dict[str, object] = {}
        for param in list(declared.parameters.values())[1:]:  # skip self
            if param.kind is param.VAR_POSITIONAL:
                args += [None, None, None]
            elif param.kind is not param.VAR_KEYWORD:
                kwargs[param.name] = None
        try:
            # Every declared parameter, by name: the real method must take them all and
            # require nothing else.
            inspect.signature(getattr(obj, name)).bind(*args, **kwargs)
        except TypeError as exc:
            missing.append(f"{name}{declared}: {exc}")
    assert not missing, f"{type(obj).__name__} lacks {protocol.__name__} members: {missing}"


class TestProtocolMatchesConnect:
    """Every member the protocols name exists, with the declared parameters, on real objects."""

    def test_client(self, client: EtcdClient) -> None:
        """The object ``connect`` returns implements ``EtcdClient``."""
        assert {"get", "get_range_response", "kvstub", "close"} <= get_protocol_members(EtcdClient)
        _assert_implements(client, EtcdClient)

    def test_transactions_and_their_parts(self, client: EtcdClient, root_prefix: str) -> None:
        """``client.transactions`` implements ``TxnBuilders``; what it builds is a TxnOp or,
        after ``==``, a Compare."""
        tx = client.transactions
        _assert_implements(tx, TxnBuilders)
        _assert_implements(tx.put(f"{root_prefix}k", b"v"), TxnOp)
        _assert_implements(tx.get(f"{root_prefix}k"), TxnOp)
        _assert_implements(tx.delete(f"{root_prefix}k"), TxnOp)
        _assert_implements(tx.mod(f"{root_prefix}k") == 0, Compare)
        _assert_implements(tx.value(f"{root_prefix}k") == b"v", Compare)

    def test_key_meta_lease_endpoint(self, client: EtcdClient, root_prefix: str) -> None:
        """``get``'s metadata, ``lease``'s result and ``endpoint_in_use`` implement theirs."""
        key = f"{root_prefix}meta"
        client.put(key, b"v")
        value, meta = client.get(key)
        assert value == b"v"
        assert meta is not None
        _assert_implements(meta, KeyMeta)
        lease = client.lease(5)
        try:
            _assert_implements(lease, Lease)
        finally:
            revoke_lease(client, lease.id, timeout=2.0)
        assert client.endpoint_in_use is not None
        _assert_implements(client.endpoint_in_use, Endpoint)

    def test_a_missing_member_is_reported(self) -> None:
        """The check itself fails for an object that lacks a member (it is not vacuous)."""

        class NoClose:
            def lease(self, ttl: int) -> None:
                """A lease method with the declared parameters, and nothing else."""

        with pytest.raises(AssertionError, match="close"):
            _assert_implements(NoClose(), EtcdClient)


class TestCallsThroughTheProtocol:
    """The calls rmwatch makes, through ``EtcdClient`` and the adapter's functions."""

    def test_txn_returns_commit_revision(self, client: EtcdClient, root_prefix: str) -> None:
        """A guarded put commits at the revision ``txn`` returns; a stale guard fails and its
        failure branch reads the key."""
        key = f"{root_prefix}txn"
        tx = client.transactions
        put = txn(client, [tx.mod(key) == 0], [tx.put(key, b"1")])
        assert put.succeeded
        _, meta = client.get(key)
        assert meta is not None
        assert meta.mod_revision == put.revision
        assert meta.create_revision == put.revision
        lost = txn(client, [tx.mod(key) == 0], [tx.put(key, b"2")], [tx.get(key)])
        assert not lost.succeeded
        assert lost.revision == put.revision  # nothing written since
        assert lost.responses[0].response_range.kvs[0].value == b"1"

    def test_range_with_limit_revision_and_keys_only(
        self, client: EtcdClient, root_prefix: str
    ) -> None:
        """``get_range_response`` takes the keyword arguments the loader passes."""
        start, end = f"{root_prefix}r/".encode(), f"{root_prefix}r0".encode()
        first = client.put(f"{root_prefix}r/a", b"1").header.revision
        client.put(f"{root_prefix}r/b", b"2")
        page = client.get_range_response(start, end, limit=1, revision=first)
        assert [kv.key for kv in page.kvs] == [f"{root_prefix}r/a".encode()]
        newest = client.get_range_response(
            start, end, limit=1, sort_order="descend", sort_target="mod", keys_only=True
        )
        assert newest.count == 2
        assert newest.kvs[0].key == f"{root_prefix}r/b".encode()
        assert newest.kvs[0].value == b""

    def test_lease_keepalive_and_revoke(self, client: EtcdClient, root_prefix: str) -> None:
        """A granted lease answers a keepalive with its TTL; once revoked, with 0, and its
        key is gone."""
        lease_id = grant_lease(client, 5)
        key = f"{root_prefix}leased"
        tx = client.transactions
        assert txn(client, [], [tx.put(key, b"v", lease=lease_id)]).succeeded
        assert keepalive_once(client, lease_id, timeout=2.0) == 5
        revoke_lease(client, lease_id, timeout=2.0)
        assert keepalive_once(client, lease_id, timeout=2.0) == 0
        assert client.get(key) == (None, None)

    def test_mark_endpoint_failed_fails_over(
        self, etcd_endpoints: list[str], root_prefix: str
    ) -> None:
        """With the member in use marked failed, the next call goes to another endpoint (two
        endpoints naming the same etcd) and succeeds."""
        twice = [etcd_endpoints[0], etcd_endpoints[0].replace("127.0.0.1", "localhost")]
        with connect(EtcdConfig.parse(twice)) as client:
            client.put(f"{root_prefix}f", b"1")
            before = client.endpoint_in_use
            assert before is not None
            mark_endpoint_failed(client)
            value, _ = client.get(f"{root_prefix}f")
            assert value == b"1"
            after = client.endpoint_in_use
            assert after is not None
            assert after.netloc != before.netloc


_AFTER_CLOSE = """
import sys
from rmwatch.errors import EtcdClientClosedError
from rmwatch.store.etcd import EtcdConfig, WatchSession, connect, grant_lease, txn
used, fresh = sys.argv[1], sys.argv[2]
client = connect(EtcdConfig.parse([used, fresh]))
client.get(b"/closed/k")  # one member's channel used, the other never
client.close()
client.close()  # idempotent
calls = {
    "get": lambda: client.get(b"/closed/k"),
    "range": lambda: client.get_range_response(b"/closed/", b"/closed0", limit=1),
    "txn": lambda: txn(client, [], [client.transactions.put(b"/closed/k", b"v")]),
    "lease": lambda: grant_lease(client, 5),
    "watch": lambda: WatchSession(client, "/closed/", 1),
    "pyetcd's watcher": client.get_watcher,
}
for name, call in calls.items():
    for _ in range(2):  # the cached stubs of the used member, then a failover to the other
        try:
            call()
        except EtcdClientClosedError:
            continue
        except BaseException as exc:
            print(name, "raised", type(exc).__name__, exc)
            sys.exit(1)
        print(name, "did not raise")
        sys.exit(1)
print("all refused")
"""


def _two_names(endpoint: str) -> list[str]:
    """Two names of one member: a first call succeeds on either, the other's channel is then
    never used."""
    return [endpoint, endpoint.replace("127.0.0.1", "localhost")]


class TestClose:
    def test_every_call_after_close_raises_and_nothing_crashes(
        self, etcd_endpoints: list[str]
    ) -> None:
        """After ``close`` every call raises EtcdClientClosedError, on the member already used
        and on one never used. Without the guard, the first call that builds a stub on a
        closed channel never used kills the interpreter (SIGSEGV in grpc 1.85's
        ``_get_registered_call_handle``), so this runs in its own process."""
        done = subprocess.run(
            [sys.executable, "-c", _AFTER_CLOSE, *_two_names(etcd_endpoints[0])],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (done.returncode, done.stdout.strip()) == (0, "all refused"), done.stderr[-2000:]

    def test_a_closed_client_says_so(self, etcd_endpoints: list[str]) -> None:
        client = connect(EtcdConfig.parse(etcd_endpoints))
        assert isinstance(client, GuardedClient)
        assert not client.closed
        client.close()
        assert client.closed
        with pytest.raises(EtcdClientClosedError, match="closed"):
            client.get(b"/closed/k")
