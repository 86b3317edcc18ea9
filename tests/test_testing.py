"""``rmwatch.testing``, the helpers users test their own code with, against a real etcd:
the embedded etcd, PD-shaped writes, a ready replica, and the pytest plugin's fixture."""

from __future__ import annotations

import os
import uuid

import httpx
import pytest

import rmwatch.testing
from rmwatch.store.codec import decode_settings
from rmwatch.store.etcd import EtcdConfig, connect
from rmwatch.store.keys import KeyLayout
from rmwatch.store.models import ResourceGroup
from rmwatch.testing import EmbeddedEtcd, delete_group, free_port, put_group, running_replica


@pytest.fixture
def prefix() -> str:
    """A root prefix of this test's own, so tests sharing one etcd do not see each other."""
    return f"/testing/{uuid.uuid4().hex[:8]}/"


class TestPublicSurface:
    def test_exported_names(self) -> None:
        """The package exports exactly its documented helpers, each importable."""
        assert sorted(rmwatch.testing.__all__) == [
            "EmbeddedEtcd", "delete_group", "find_etcd_binary", "free_port", "put_group",
            "running_replica",
        ]  # fmt: skip
        for name in rmwatch.testing.__all__:
            assert getattr(rmwatch.testing, name) is not None


class TestEmbeddedEtcd:
    def test_runs_on_the_given_ports_and_cleans_up(self) -> None:
        """It serves on its client port while open; stopped, the port is closed and the
        temporary data directory removed."""
        with EmbeddedEtcd(client_port=free_port(), peer_port=free_port()) as etcd:
            url = f"http://{etcd.endpoint}/health"
            assert httpx.get(url, timeout=5).status_code == 200
            data_dir = etcd.data_dir
        assert data_dir is not None
        with pytest.raises(httpx.ConnectError):
            httpx.get(url, timeout=2)
        assert not os.path.exists(data_dir)


class TestPutGroup:
    def test_group_is_stored_under_pds_key_as_protobuf(
        self, rmwatch_etcd: EmbeddedEtcd, prefix: str
    ) -> None:
        """put_group writes PD's settings key with the protobuf PD writes, at the returned
        revision; delete_group removes it."""
        revision = put_group(
            rmwatch_etcd.endpoint, {"name": "rg1", "mode": 1, "priority": 8}, root_prefix=prefix
        )
        key = KeyLayout(prefix).settings("rg1")
        client = connect(EtcdConfig.parse(rmwatch_etcd.endpoint))
        try:
            value, meta = client.get(key)
            assert value is not None
            assert meta is not None
            assert meta.mod_revision == revision
            assert decode_settings(key, value).priority == 8
            deleted = delete_group(rmwatch_etcd.endpoint, "rg1", root_prefix=prefix)
            assert deleted > revision
            assert client.get(key)[0] is None
        finally:
            client.close()

    def test_keyspace_group_goes_under_its_keyspace(
        self, rmwatch_etcd: EmbeddedEtcd, prefix: str
    ) -> None:
        """A group with a keyspace id lands under that keyspace's key, as PD stores it."""
        group = ResourceGroup.model_validate({"name": "ks", "keyspace_id": 7})
        put_group([rmwatch_etcd.endpoint], group, root_prefix=prefix)
        client = connect(EtcdConfig.parse(rmwatch_etcd.endpoint))
        try:
            value, _meta = client.get(KeyLayout(prefix).settings("ks", 7))
        finally:
            client.close()
        assert value is not None


class TestRunningReplica:
    def test_replica_is_ready_and_sees_writes(
        self, rmwatch_etcd: EmbeddedEtcd, prefix: str
    ) -> None:
        """The replica is ready on entry (it loaded what was there), follows later writes,
        and is closed on exit."""
        put_group(rmwatch_etcd.endpoint, {"name": "before"}, root_prefix=prefix)
        with running_replica(rmwatch_etcd.endpoint, root_prefix=prefix) as replica:
            assert replica.ready
            before = replica.get_group("before").value
            assert before is not None
            assert before.name == "before"
            revision = put_group(
                rmwatch_etcd.endpoint, {"name": "after", "priority": 5}, root_prefix=prefix
            )
            read = replica.get_group("after", min_revision=revision, timeout=5)
            assert read.value is not None
            assert read.value.priority == 5
            assert read.revision >= revision
        assert not replica.ready
        assert replica.state.name == "STOPPED"

    def test_accepts_an_etcd_config(self, rmwatch_etcd: EmbeddedEtcd, prefix: str) -> None:
        """An EtcdConfig (TLS, auth, timeouts) can stand in for the endpoints."""
        with running_replica(
            EtcdConfig.parse(rmwatch_etcd.endpoint, timeout=3.0), root_prefix=prefix
        ) as replica:
            assert replica.etcd.timeout == 3.0
            assert replica.ready


class TestPlugin:
    def test_fixture_comes_from_the_installed_entry_point(
        self, request: pytest.FixtureRequest, rmwatch_etcd: EmbeddedEtcd
    ) -> None:
        """rmwatch_etcd is provided by the plugin rmwatch registers (pytest11), with no
        conftest: a session-wide etcd that answers."""
        plugin = request.config.pluginmanager.get_plugin("rmwatch")
        assert plugin is not None
        assert plugin.__name__ == "rmwatch.testing.pytest_plugin"
        assert httpx.get(f"http://{rmwatch_etcd.endpoint}/health", timeout=5).status_code == 200
