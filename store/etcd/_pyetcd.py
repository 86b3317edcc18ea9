"""The only places rmwatch reaches into pyetcd's private methods, each saying why it must.

rmwatch calls etcd's gRPC stubs directly where pyetcd's public calls lose something it needs
(the commit revision of a transaction, a keepalive deadline shorter than the client's). Those
direct calls still need two things pyetcd keeps private: building transaction operations, and
its endpoint failover. Nothing outside this module names a private pyetcd method.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

if TYPE_CHECKING:
    from rmwatch.store.etcd.client import EtcdClient, TxnOp


def _internals(client: EtcdClient) -> Any:
    # The pyetcd object behind the protocol: its private methods are not part of EtcdClient.
    return client


def request_ops(client: EtcdClient, ops: Sequence[TxnOp]) -> list[Any]:
    """etcd's ``RequestOp`` messages for pyetcd's ``Put``/``Get``/``Delete`` operations.

    pyetcd builds them only inside its public ``transaction()``, which drops the TxnResponse
    header (and with it the commit revision), and its builder ``_ops_to_requests`` is private.
    """
    requests: list[Any] = _internals(client)._ops_to_requests(list(ops))
    return requests


def fail_over(client: EtcdClient, exc: grpc.RpcError) -> NoReturn:
    """Handle a failed direct stub call as pyetcd handles its own calls, then raise.

    For codes that mean the member is gone (UNAVAILABLE, DEADLINE_EXCEEDED, ...) the endpoint
    is marked failed, so the next call goes to another member; the error is raised as pyetcd's
    typed exception where it has one (``ConnectionFailedError``, ...), else as ``exc``. pyetcd
    does this only inside its own calls, through the private ``_manage_grpc_errors``. Call it
    from the ``except`` block that caught ``exc``: pyetcd re-raises the exception being handled.
    """
    _internals(client)._manage_grpc_errors(exc)
    raise exc  # not reached: pyetcd always raises; this keeps the signature honest


def drop_cached_stubs(client: EtcdClient) -> None:
    """Forget the gRPC stubs pyetcd caches for the endpoint in use.

    They stay bound to that endpoint's channel after it is marked failed, so without this the
    next call would still go to the failed member. pyetcd clears them only when it switches
    endpoints itself, through the private ``_clear_old_stubs``.
    """
    _internals(client)._clear_old_stubs()


__all__ = ["drop_cached_stubs", "fail_over", "request_ops"]
