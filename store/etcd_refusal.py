"""etcd's own refusals of a write, named: what etcd said, and the HTTP answer that fits.

A write can meet five refusals from etcd itself (etcd's rpctypes / v3rpc error texts):

=================================  ==================  ====  ===============================
etcd says                          gRPC code           HTTP  why that status
=================================  ==================  ====  ===============================
``mvcc: database space exceeded``  RESOURCE_EXHAUSTED  507   NOSPACE alarm: the store is full
``too many requests``              RESOURCE_EXHAUSTED  429   apply lags commit by > 5,000
``request is too large``           INVALID_ARGUMENT    413   over ``--max-request-bytes``
``invalid auth token``, expired    UNAUTHENTICATED     503   our token, not the caller's
``no leader``, ``leader changed``  UNAVAILABLE         503   the cluster has no leader now
=================================  ==================  ====  ===============================

Before, these surfaced as an unmapped exception and a bare ``Internal Server Error``. pyetcd
re-raises some gRPC errors as its own classes without the text; the original gRPC error is
the raised exception's ``__context__``, where etcd's words are read from.
"""

from __future__ import annotations

import grpc

from rmwatch.errors import EtcdRefusedError

_REFUSALS: tuple[tuple[str, int, str], ...] = (
    ("database space exceeded", 507, "etcd is out of space (NOSPACE alarm)"),
    ("too many requests", 429, "etcd is overloaded (too many requests)"),
    ("request is too large", 413, "the write is larger than etcd's --max-request-bytes"),
    ("auth token", 503, "etcd refused this writer's auth token (invalid or expired)"),
    ("no leader", 503, "etcd has no leader"),
    ("leader changed", 503, "etcd's leader changed during the write"),
)


def _rpc_error(exc: BaseException) -> grpc.RpcError | None:
    seen: BaseException | None = exc
    for _ in range(4):  # the error itself, or what pyetcd raised it from
        if seen is None:
            return None
        if isinstance(seen, grpc.RpcError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def etcd_refusal(exc: BaseException, *, op: str) -> EtcdRefusedError | None:
    """The named refusal ``exc`` carries (see the module's table), or None if it is not one.

    Args:
        exc: what the etcd call raised.
        op: the write it refused (``add_group`` ...), for the message.
    """
    rpc = _rpc_error(exc)
    if rpc is None:
        return None
    details_fn = getattr(rpc, "details", None)
    details = str(details_fn() if callable(details_fn) else rpc)
    code_fn = getattr(rpc, "code", None)
    code = code_fn() if callable(code_fn) else None
    for needle, status, summary in _REFUSALS:
        if needle in details:
            return EtcdRefusedError(
                f"{op} not written: {summary}: etcdserver said {details!r}",
                status=status,
                reason=details,
            )
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return EtcdRefusedError(
            f"{op} not written: etcd refused this writer's credentials: {details!r}",
            status=503,
            reason=details,
        )
    return None


__all__ = ["etcd_refusal"]
