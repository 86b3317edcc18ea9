"""``rmwatch writer`` and ``rmwatch replica`` processes on an etcd shaped as a PD cluster leaves
it: the cluster id at ``/pd/cluster_id``, a keyspace in PD's index, RM keys at the etcd root
written as PD writes them. Started with the flags the README gives for a PD cluster (none for
the layout), both resolve ``keyspace_name`` through PD's index, also for a keyspace created
after they started. Layout citations: tests/conformance/test_layout.py.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from harness import EtcdMember, free_ports, make_client, wait_until
from process_support import stop_process
from pydantic import SecretStr

from rmwatch.cli.etcd_auth import replica_grants, writer_grants
from rmwatch.cli.main import build_parser
from rmwatch.cli.replica import settings_from_args as replica_settings
from rmwatch.cli.writer import settings_from_args as writer_settings
from rmwatch.store._pb import resource_manager_pb2 as pb
from rmwatch.store.etcd import EtcdConfig, connect
from rmwatch.store.keys import KeyLayout
from rmwatch.store.keyspaces import KeyspaceResolver, read_cluster_id

REPO = Path(__file__).resolve().parent.parent
API = "/resource-manager/api/v1"
CLUSTER_ID = 7_312_406_123_456_789_012
RU_GROUP = {
    "mode": 1,
    "r_u_settings": {"r_u": {"settings": {"fill_rate": 100, "burst_limit": 200}}},
    "priority": 8,
}


def pd_group_bytes(name: str, keyspace_id: int) -> bytes:
    """A group's settings as PD saves them (pkg/storage/endpoint/resource_group.go:48-49:
    ``proto.Marshal`` of kvproto's ResourceGroup, ``keyspace_id`` in its oneof ``value``)."""
    group = pb.ResourceGroup(name=name, mode=pb.RUMode, priority=8)
    group.r_u_settings.r_u.settings.fill_rate = 100
    group.keyspace_id.value = keyspace_id
    return group.SerializeToString()


def shape_as_pd(client: Any) -> None:
    """What a PD cluster has put in etcd before rmwatch arrives."""
    client.put("/pd/cluster_id", struct.pack(">Q", CLUSTER_ID))
    client.put(f"/pd/{CLUSTER_ID}/keyspaces/id/ks1", b"1")
    client.put("resource_group/keyspace/settings/1/pd_made", pd_group_bytes("pd_made", 1))


@contextmanager
def service(kind: str, endpoint: str, port: int, log_path: Path, *flags: str) -> Iterator[str]:
    """``rmwatch <kind>`` on ``endpoint`` listening on ``port``; its base URL; stopped after."""
    command = [sys.executable, "-m", "rmwatch", kind, "--etcd", endpoint,
               "--listen", f"127.0.0.1:{port}", *flags]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("RMWATCH_")}
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(command, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT,
                                env=env)  # fmt: skip
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_process(proc, 20)


def answers(url: str) -> bool:
    """True once ``url`` answers 200."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def writer_and_replica(endpoint: str, tmp_path: Path) -> Iterator[tuple[httpx.Client, ...]]:
    """A leading writer and a ready replica on ``endpoint``, with no layout flags at all."""
    writer_port, replica_port = free_ports(2)
    with ExitStack() as stack:
        writer = stack.enter_context(service(
            "writer", endpoint, writer_port, tmp_path / "writer.log", "--name", "w1"
        ))  # fmt: skip
        replica = stack.enter_context(service(
            "replica", endpoint, replica_port, tmp_path / "replica.log", "--drain-seconds", "0"
        ))  # fmt: skip
        wait_until(lambda: answers(f"{replica}/ready"), 30, "the replica to be ready")
        wait_until(lambda: answers(f"{writer}/health"), 30, "the writer to answer")
        w = stack.enter_context(httpx.Client(base_url=writer + API, timeout=10))
        r = stack.enter_context(httpx.Client(base_url=replica + API, timeout=10))
        yield w, r


def post_group(writer: httpx.Client, name: str, keyspace_name: str) -> int:
    """Create ``name`` in ``keyspace_name`` through the writer (retried until it leads)."""
    result: dict[str, int] = {}

    def created() -> bool:
        response = writer.post(
            "/config/group",
            params={"keyspace_name": keyspace_name},
            json={"name": name, **RU_GROUP},
        )
        if response.status_code == 503:  # not leading yet
            return False
        assert response.status_code == 200, response.text
        result["revision"] = int(response.headers["X-Revision"])
        return True

    wait_until(created, 15, f"the writer to create {name}")
    return result["revision"]


class TestOnPdShapedEtcd:
    """Writer and replica with PD's layout: RM keys at the root, PD's keyspace index."""

    def test_keyspace_names_resolve_on_writer_and_replica(
        self, etcd_member: EtcdMember, tmp_path: Path
    ) -> None:
        """A PD-written group and a group created with ``keyspace_name`` both resolve by name
        on both services; a keyspace created after they started too; the writer writes at the
        etcd root, in PD's keyspace key form; an unknown name is 404 on both."""
        with make_client([etcd_member.endpoint]) as etcd:
            shape_as_pd(etcd)
            with writer_and_replica(etcd_member.endpoint, tmp_path) as (writer, replica):
                for service_ in (writer, replica):
                    got = service_.get("/config/group/pd_made", params={"keyspace_name": "ks1"})
                    assert got.status_code == 200, got.text
                    assert got.json()["name"] == "pd_made"

                revision = post_group(writer, "made_here", "ks1")
                value, _meta = etcd.get("resource_group/keyspace/settings/1/made_here")
                assert value is not None
                assert pb.ResourceGroup.FromString(bytes(value)).keyspace_id.value == 1
                params: dict[str, str | int] = {"keyspace_name": "ks1", "min_revision": revision}
                got = replica.get("/config/group/made_here", params=params)
                assert got.status_code == 200, got.text
                assert writer.get("/config/group/made_here",
                                  params={"keyspace_name": "ks1"}).status_code == 200  # fmt: skip

                etcd.put(f"/pd/{CLUSTER_ID}/keyspaces/id/ks_later", b"2")  # PD creates one
                revision = post_group(writer, "later", "ks_later")
                assert etcd.get("resource_group/keyspace/settings/2/later")[0] is not None
                params = {"keyspace_name": "ks_later", "min_revision": revision}
                listed = replica.get("/config/groups", params=params)
                assert listed.status_code == 200, listed.text
                assert "later" in [g["name"] for g in listed.json()]

                for service_ in (writer, replica):
                    unknown = service_.get("/config/groups", params={"keyspace_name": "ghost"})
                    assert unknown.status_code == 404, unknown.text

            keys = [bytes(meta.key).decode() for _value, meta in etcd.get_all()]
            outside = [k for k in keys if not k.startswith(("resource_group/", "rmwatch/writer/",
                                                            "/pd/"))]  # fmt: skip
            assert outside == [], "every key sits where PD (or the leader election) keeps it"
            assert {k for k in keys if k.startswith("/pd/")} == {
                "/pd/cluster_id",
                f"/pd/{CLUSTER_ID}/keyspaces/id/ks1",
                f"/pd/{CLUSTER_ID}/keyspaces/id/ks_later",
            }, "rmwatch writes none of PD's own keys"

    def test_without_any_pd_keys_the_null_keyspace_works(
        self, etcd_member: EtcdMember, tmp_path: Path
    ) -> None:
        """An etcd PD never ran on (no ``/pd/cluster_id``): both services start and serve the
        null keyspace; a name does not resolve (404) until PD writes its cluster id and the
        keyspace, then it does, without a restart."""
        with (
            make_client([etcd_member.endpoint]) as etcd,
            writer_and_replica(etcd_member.endpoint, tmp_path) as (writer, replica),
        ):
            wait_until(
                lambda: writer.post("/config/group", json={"name": "plain", **RU_GROUP})
                .status_code in (200, 400),  # 400: created by an earlier try (PD: upsert)
                15, "the writer to lead and create the group",
            )  # fmt: skip
            assert etcd.get("resource_group/settings/plain")[0] is not None
            wait_until(lambda: replica.get("/config/group/plain").status_code == 200,
                       10, "the replica to serve the group")  # fmt: skip
            for service_ in (writer, replica):
                response = service_.get("/config/groups", params={"keyspace_name": "ks1"})
                assert response.status_code == 404, response.text

            shape_as_pd(etcd)
            for service_ in (writer, replica):

                def resolves(client: httpx.Client = service_) -> bool:
                    params = {"keyspace_name": "ks1"}
                    return client.get("/config/group/pd_made", params=params).status_code == 200

                wait_until(resolves, 10, "the keyspace to resolve")


class TestLayoutFlags:
    """``--rm-root-prefix`` (old name ``--root-prefix``) and ``--cluster-id``, flags and env."""

    @pytest.mark.parametrize(
        ("kind", "settings_from_args"), [("writer", writer_settings), ("replica", replica_settings)]
    )
    def test_flags_and_environment(
        self, monkeypatch: pytest.MonkeyPatch, kind: str, settings_from_args: Any
    ) -> None:
        """Empty prefix and no cluster id by default; the new names win over the old; flags
        over the environment; a cluster id PD cannot have is refused."""
        parse = build_parser().parse_args
        for name in ("RMWATCH_RM_ROOT_PREFIX", "RMWATCH_ROOT_PREFIX", "RMWATCH_CLUSTER_ID"):
            monkeypatch.delenv(name, raising=False)
        plain = settings_from_args(parse([kind]))
        assert (plain.rm_prefix(), plain.cluster_id) == ("", None)
        assert plain.layout().prefix == "resource_group/"
        monkeypatch.setenv("RMWATCH_ROOT_PREFIX", "/old/")
        monkeypatch.setenv("RMWATCH_CLUSTER_ID", "42")
        from_env = settings_from_args(parse([kind]))
        assert (from_env.rm_prefix(), from_env.cluster_id) == ("/old/", 42)
        monkeypatch.setenv("RMWATCH_RM_ROOT_PREFIX", "/new/")
        assert settings_from_args(parse([kind])).rm_prefix() == "/new/"
        flags = settings_from_args(parse([kind, "--root-prefix", "/flag/", "--cluster-id", "7"]))
        assert (flags.rm_prefix(), flags.cluster_id) == ("/flag/", 7)
        assert flags.layout(7).keyspace_index("ks") == "/pd/7/keyspaces/id/ks"
        named = settings_from_args(parse([kind, "--rm-root-prefix", "/x/"]))
        assert named.rm_prefix() == "/x/"
        with pytest.raises(ValueError, match="cluster_id"):
            settings_from_args(parse([kind, "--cluster-id", "0"]))


class TestAuthGrants:
    """``etcd-setup-auth`` grants exactly what PD's layout needs, and no more."""

    def test_grants_name_pds_keys(self) -> None:
        """Both users read ``/pd/cluster_id`` (that one key) and the cluster's keyspace index;
        the RM keys are at the root; without a cluster id there is no index grant."""
        layout = KeyLayout(cluster_id=CLUSTER_ID)
        index = f"/pd/{CLUSTER_ID}/keyspaces/id/".encode()
        for grants in (writer_grants(layout), replica_grants(layout)):
            ranges = {(g.permission().key, g.permission().range_end) for g in grants}
            assert (b"/pd/cluster_id", b"") in ranges
            assert (index, index[:-1] + b"0") in ranges  # the prefix: "/" + 1 == "0"
            assert (b"resource_group/", b"resource_group0") in ranges
        unknown = writer_grants(KeyLayout())
        assert not any(b"keyspaces" in g.permission().key for g in unknown)

    def test_least_privileged_users_resolve_names(
        self, etcd_member: EtcdMember, tmp_path: Path
    ) -> None:
        """Set up on a PD-shaped etcd (the cluster id read from ``/pd/cluster_id``), then auth
        on: the replica and writer users read the cluster id and resolve a keyspace name, and
        may read nothing else of PD's."""
        with make_client([etcd_member.endpoint]) as etcd:
            shape_as_pd(etcd)
            etcd.put("/pd/other", b"x")
        secrets = {}
        for who in ("root", "writer", "replica"):
            path = tmp_path / who
            path.write_text(f"{who}-Pa55\n")
            secrets[who] = path
        env = {k: v for k, v in os.environ.items() if not k.startswith("RMWATCH_")}
        result = subprocess.run(
            [sys.executable, "-m", "rmwatch", "etcd-setup-auth", "--etcd", etcd_member.endpoint,
             "--writer-password-file", str(secrets["writer"]),
             "--replica-password-file", str(secrets["replica"]),
             "--root-password-file", str(secrets["root"]), "--enable-auth"],
            cwd=REPO, capture_output=True, text=True, timeout=60, env=env, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        for user in ("rmwatch-writer", "rmwatch-replica"):
            password = SecretStr(secrets[user.removeprefix("rmwatch-")].read_text().strip())
            config = EtcdConfig.parse(etcd_member.endpoint, timeout=3.0, user=user,
                                      password=password)  # fmt: skip
            with connect(config) as client:
                assert read_cluster_id(client) == CLUSTER_ID
                assert KeyspaceResolver(client, KeyLayout()).resolve("ks1") == 1
                with pytest.raises(grpc.RpcError) as denied:
                    client.get("/pd/other")
                assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
