"""rmwatch's pytest plugin (registered through the ``pytest11`` entry point): fixtures for
testing an application against a real etcd and a replica.

``rmwatch_etcd`` is one embedded etcd for the whole session (``EmbeddedEtcd``; an etcd binary
is found as ``find_etcd_binary`` says). Give each test its own ``root_prefix`` to keep keys
apart::

    from rmwatch.testing import put_group, running_replica

    def test_reads_group(rmwatch_etcd):
        revision = put_group(rmwatch_etcd.endpoint, {"name": "rg1"}, root_prefix="/t1/")
        with running_replica(rmwatch_etcd.endpoint, root_prefix="/t1/") as replica:
            replica.wait_for_revision(revision, timeout=5)
            assert replica.get_group("rg1").value.name == "rg1"
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rmwatch.testing.etcd import EmbeddedEtcd, free_port


@pytest.fixture(scope="session")
def rmwatch_etcd() -> Iterator[EmbeddedEtcd]:
    """A single-member etcd on free loopback ports, for the whole session; removed after."""
    with EmbeddedEtcd(client_port=free_port(), peer_port=free_port()) as etcd:
        yield etcd
