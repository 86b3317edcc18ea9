"""Helpers for testing applications against rmwatch with a real etcd.

``EmbeddedEtcd`` runs a private single-member etcd on loopback (the same one ``rmwatch dev``
uses). Example::

    from rmwatch.testing import EmbeddedEtcd, free_port

    with EmbeddedEtcd(client_port=free_port(), peer_port=free_port()) as etcd:
        ...  # point a Replica or a Writer at etcd.endpoint
"""

from rmwatch.testing.etcd import EmbeddedEtcd, find_etcd_binary, free_port

__all__ = ["EmbeddedEtcd", "find_etcd_binary", "free_port"]
