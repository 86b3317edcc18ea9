"""Helpers for testing applications against rmwatch with a real etcd, as kazoo and structlog
ship theirs.

- ``EmbeddedEtcd``: a private single-member etcd on loopback (the one ``rmwatch dev`` runs);
- ``put_group`` / ``delete_group``: write a resource group as PD stores it (key and protobuf);
- ``running_replica``: a ``Replica`` started and ready, closed on exit;
- the pytest plugin ``rmwatch.testing.pytest_plugin`` (loaded automatically once rmwatch is
  installed) with the session fixture ``rmwatch_etcd``.

Example::

    from rmwatch.testing import EmbeddedEtcd, free_port, put_group, running_replica

    with EmbeddedEtcd(client_port=free_port(), peer_port=free_port()) as etcd:
        revision = put_group(etcd.endpoint, {"name": "rg1", "mode": 1, "priority": 8})
        with running_replica(etcd.endpoint) as replica:
            replica.wait_for_revision(revision, timeout=5)
            assert replica.get_group("rg1").value.priority == 8
"""

from rmwatch.testing.data import delete_group, put_group
from rmwatch.testing.etcd import EmbeddedEtcd, find_etcd_binary, free_port
from rmwatch.testing.replica import running_replica

__all__ = [
    "EmbeddedEtcd",
    "delete_group",
    "find_etcd_binary",
    "free_port",
    "put_group",
    "running_replica",
]
