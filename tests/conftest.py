"""Shared real-etcd fixtures.  Nothing here skips: a missing etcd is a hard error."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pyetcd
import pytest
from harness import (
    SUMMARY_KEY,
    EtcdCluster,
    EtcdMember,
    EtcdSession,
    etcd_endpoints_for_session,
    make_client,
    planned_source,
)

_SESSION_KEY = pytest.StashKey[EtcdSession]()


def pytest_report_header(config: pytest.Config) -> str:
    """Show where the session etcd will come from, so CI logs say what was tested."""
    return f"etcd: {planned_source()}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Show the etcd source actually used (only if a test asked for the session etcd)."""
    for line in terminalreporter.config.stash.get(SUMMARY_KEY, []):
        terminalreporter.write_line(line)
    session = terminalreporter.config.stash.get(_SESSION_KEY, None)
    if session is not None:
        terminalreporter.write_line(f"etcd source used: {session.source} {session.endpoints}")


@pytest.fixture(scope="session")
def etcd_session(pytestconfig: pytest.Config) -> Iterator[EtcdSession]:
    """The shared etcd for the whole run (env endpoints, docker, or a local binary)."""
    with etcd_endpoints_for_session() as session:
        pytestconfig.stash[_SESSION_KEY] = session
        yield session


@pytest.fixture(scope="session")
def etcd_endpoints(etcd_session: EtcdSession) -> list[str]:
    """``["127.0.0.1:PORT", ...]`` of the shared session etcd; isolate keys with root_prefix."""
    return list(etcd_session.endpoints)


@pytest.fixture
def etcd_client(etcd_endpoints: list[str]) -> Iterator[pyetcd.MultiEndpointEtcd3Client]:
    """A pyetcd client on the session etcd (5 s RPC deadline), closed after the test."""
    client = make_client(etcd_endpoints)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def root_prefix(etcd_endpoints: list[str]) -> Iterator[str]:
    """A unique ``/t/<12 hex>/`` key prefix; everything under it is deleted afterwards."""
    prefix = f"/t/{uuid.uuid4().hex[:12]}/"
    yield prefix
    with make_client(etcd_endpoints) as client:
        client.delete_prefix(prefix)


@pytest.fixture
def etcd_member() -> Iterator[EtcdMember]:
    """A private single-member etcd from a local binary, for kill/pause/restart tests."""
    with EtcdMember() as member:
        yield member


@pytest.fixture
def etcd_cluster() -> Iterator[EtcdCluster]:
    """A private 3-member etcd cluster on loopback, closed (all processes gone) after."""
    with EtcdCluster(3) as cluster:
        yield cluster
