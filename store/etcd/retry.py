"""Which etcd failures are worth another try, and retrying a call that cannot apply twice.

A retry goes to another endpoint when the failed one was marked failed (pyetcd's failover), so
a member that stopped answering costs one short backoff, not the whole deadline.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import grpc
from pyetcd import exceptions as etcd_exc
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from rmwatch.errors import EtcdUnavailableError

T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """True for failures worth retrying on another endpoint (unavailable, deadline)."""
    if isinstance(
        exc,
        etcd_exc.ConnectionFailedError
        | etcd_exc.ConnectionTimeoutError
        | etcd_exc.NoServerAvailableError
        | etcd_exc.InternalServerError,
    ):
        return True
    if isinstance(exc, grpc.RpcError):
        code = exc.code()
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return True
        # etcd answers an error it has no gRPC code for as UNKNOWN with its text
        # (server/etcdserver/api/v3rpc/util.go, togRPCError): a request whose context ran out
        # inside etcd, e.g. a proposal waiting for a leader that never came, arrives as
        # UNKNOWN "context deadline exceeded" (seen with 2 of 3 members down).
        return code == grpc.StatusCode.UNKNOWN and any(
            text in str(exc.details()) for text in _CONTEXT_ERRORS
        )
    return False


_CONTEXT_ERRORS = ("context deadline exceeded", "context canceled")


def call_with_retry(
    fn: Callable[[], T], *, deadline: float, what: str, stop: threading.Event | None = None
) -> T:
    """Run an idempotent call, retrying transient failures with backoff until ``deadline`` s.

    Only for calls a retry cannot apply twice: reads, and writes guarded by a compare.
    Raises EtcdUnavailableError (naming ``what`` and the last cause) when time runs out, or
    as soon as ``stop`` is set: a stopping thread starts no new call and cuts its wait short.
    """
    started = time.monotonic()
    # The first try runs bare: tenacity's machinery costs ~0.1 ms of CPU a call (a fifth of a
    # 1-key read's), and almost every call succeeds at once.
    try:
        return fn()
    except Exception as exc:
        if not is_transient(exc):
            raise
        first: BaseException = exc
    # The first retry waits like a later one would: the failed endpoint was marked failed, and
    # an immediate second try mostly meets the same fault.
    first_wait = _FIRST_RETRY_WAIT + random.uniform(0, _FIRST_RETRY_WAIT)  # jittered, as below
    sleep = _sleeper(stop)
    sleep(max(0.0, min(first_wait, deadline - (time.monotonic() - started))))
    last = [first]  # the latest failure, the cause named when retrying ends

    def unavailable() -> EtcdUnavailableError:
        return EtcdUnavailableError(
            f"etcd unavailable for {what} after {time.monotonic() - started:.1f}s: "
            f"{describe(last[0])}"
        )

    left = deadline - (time.monotonic() - started)
    if left <= 0:
        raise unavailable() from first

    def attempt() -> T:
        # Checked before every attempt, so a stop set during a wait (which it cuts short)
        # starts no call.
        if stop is not None and stop.is_set():
            raise _StoppedError
        try:
            return fn()
        except Exception as exc:
            last[0] = exc
            raise

    retrying = Retrying(
        retry=retry_if_exception(is_transient),
        stop=stop_after_delay(left),
        sleep=sleep,
        # 50 ms (the wait above) doubling to 1 s: an endpoint is retried after 0.5 s, a member
        # restart takes ~1 s.
        wait=wait_exponential(multiplier=0.1, max=1.0) + wait_random(0, 0.05),
        reraise=False,
    )
    try:
        return retrying(attempt)
    except (RetryError, _StoppedError):
        raise unavailable() from last[0]


_FIRST_RETRY_WAIT = 0.05


class _StoppedError(Exception):
    """Raised before an attempt once the caller's stop is set (not transient: ends retrying)."""


def _sleeper(stop: threading.Event | None) -> Callable[[float], None]:
    """A wait that ``stop`` cuts short (plain sleep without one)."""
    if stop is None:
        return time.sleep

    def wait(seconds: float) -> None:
        stop.wait(seconds)

    return wait


def describe(exc: BaseException | None) -> str:
    """A failure in one line for an error message: gRPC's code and details, else the type."""
    if isinstance(exc, grpc.RpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}" if exc else "unknown"


__all__ = ["call_with_retry", "describe", "is_transient"]
