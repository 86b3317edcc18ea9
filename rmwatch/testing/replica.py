"""A replica that is started and ready, for a test of code that reads through one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rmwatch.store.etcd import EtcdConfig
from rmwatch.testing.data import Endpoints
from rmwatch.watcher.replica import Replica


@contextmanager
def running_replica(
    endpoints: Endpoints, *, ready_timeout: float = 30.0, **options: Any
) -> Iterator[Replica]:
    """A ``Replica`` on ``endpoints``, started and ready (caught up), closed on exit.

    ``options`` are ``Replica``'s keyword options (``root_prefix``, ``max_staleness``, ...).
    Raises ``NotReadyError`` when it is not ready within ``ready_timeout`` seconds::

        with running_replica(etcd.endpoint, root_prefix="/app/") as replica:
            assert replica.get_group("rg1").value is not None
    """
    if isinstance(endpoints, EtcdConfig):
        replica = Replica(etcd=endpoints, **options)
    else:
        replica = Replica(endpoints=endpoints, **options)
    with replica:
        replica.wait_ready(ready_timeout)
        yield replica


__all__ = ["running_replica"]
