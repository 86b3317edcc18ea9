"""Per-endpoint token authentication for etcd's user/password auth, as a gRPC interceptor.

pyetcd's own user/password support sends the token as gRPC *call credentials*, which gRPC
refuses on a plain-text channel (every call fails UNAUTHENTICATED "Established channel does not
have a sufficient security level"), and it authenticates once, forever: etcd's simple tokens
live in each member's memory and are gone after a member restart or an idle TTL. ``TokenAuth``
hence authenticates per endpoint, adds the ``token`` metadata to every call and
re-authenticates as etcd's Go client does (on ``invalid auth token``, ``revision of auth store
is old``, ``user name is empty``, and after the member became unreachable). A unary call
refused for a stale token is retried once with the new token: etcd refuses it before applying
anything, so a retry cannot apply a write twice.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

import grpc
from pydantic import SecretStr
from pyetcd import etcdrpc

from rmwatch.errors import EtcdAuthError, EtcdUnavailableError
from rmwatch.store.etcd.retry import describe

# etcd's answers that mean "authenticate again and retry" (clientv3's shouldRefreshToken).
_REFRESH_MARKERS = ("invalid auth token", "revision of auth store is old", "user name is empty")
_AUTH_NOT_ENABLED = "authentication is not enabled"
# Codes that say the member may have restarted (its in-memory simple tokens are gone); etcd
# 3.5 ends streams of a stopping member with INTERNAL (RST_STREAM), 3.4 with UNAVAILABLE.
_RECONNECT_CODES = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
)
_WATCH_METHOD = "/etcdserverpb.Watch/Watch"
# etcd refuses a watch whose token it does not know by canceling it with this reason.
_WATCH_AUTH_MARKERS = ("permission denied", *_REFRESH_MARKERS)


def _needs_refresh(exc: BaseException) -> bool:
    if not isinstance(exc, grpc.RpcError):
        return False
    details = (exc.details() or "").lower()
    return any(marker in details for marker in _REFRESH_MARKERS)


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class _ClientCallDetails(_CallDetails, grpc.ClientCallDetails):  # type: ignore[misc]
    """grpc wants an instance of its ClientCallDetails with these six fields."""


class TokenAuth(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """Authenticates one endpoint's channel as ``user`` and adds the token to every call.

    The token is fetched lazily (first call), and again whenever etcd says it is stale or the
    member stopped answering. When etcd answers that auth is not enabled, calls go without a
    token (as etcd's Go client does), so credentials can be configured before auth is enabled.
    """

    def __init__(self, channel: Any, user: str, password: SecretStr, timeout: float) -> None:
        self.user = user
        self._password = password
        self._timeout = timeout
        self._stub = etcdrpc.AuthStub(channel)  # the raw channel: Authenticate carries no token
        self._lock = threading.Lock()
        self._token: str | None = None
        self._stale = True

    def token(self) -> str | None:
        """The current token, authenticating first when there is none or it is stale.

        Raises grpc.RpcError as etcd answered Authenticate (INVALID_ARGUMENT for a wrong
        user or password, UNAVAILABLE when the member cannot be reached).
        """
        with self._lock:
            if self._stale:
                request = etcdrpc.AuthenticateRequest(
                    name=self.user, password=self._password.get_secret_value()
                )
                try:
                    self._token = str(self._stub.Authenticate(request, self._timeout).token)
                except grpc.RpcError as exc:
                    if _AUTH_NOT_ENABLED not in (exc.details() or "").lower():
                        raise
                    self._token = None  # auth off: plain calls work, and are all there is
                self._stale = False
            return self._token

    def invalidate(self) -> None:
        """Forget the token: the next call authenticates again."""
        with self._lock:
            self._stale = True

    def _details(self, details: Any) -> _ClientCallDetails:
        token = self.token()
        metadata = list(details.metadata or [])
        if token is not None:
            metadata = [(k, v) for k, v in metadata if k != "token"] + [("token", token)]
        return _ClientCallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def _observe(self, call: Any) -> None:
        """Done-callback of a streaming call: forget the token when it, or the member, failed."""
        try:
            code = call.code()
        except Exception:  # a call that failed before it began has no code
            return
        if code in _RECONNECT_CODES or (
            code != grpc.StatusCode.OK and any(m in (call.details() or "").lower()
                                               for m in _REFRESH_MARKERS)
        ):  # fmt: skip
            self.invalidate()

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        outcome = continuation(self._details(details), request)
        if isinstance(outcome, grpc.RpcError):
            if _needs_refresh(outcome):
                self.invalidate()
                return continuation(self._details(details), request)
            if outcome.code() in _RECONNECT_CODES:
                self.invalidate()
        return outcome

    def _stream(self, call: Any) -> Any:
        add = getattr(call, "add_done_callback", None)
        if add is not None:
            add(self._observe)
        return call

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return self._stream(continuation(self._details(details), request))

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return self._stream(continuation(self._details(details), requests))

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        call = self._stream(continuation(self._details(details), requests))
        if details.method == _WATCH_METHOD:
            return _WatchResponses(call, self)
        return call


class _WatchResponses:
    """A watch call whose responses are checked for "canceled: permission denied", which is
    how etcd answers a watch carrying a token it no longer knows (it never fails the stream
    itself). The token is then forgotten, so the caller's retry authenticates again."""

    def __init__(self, call: Any, auth: TokenAuth) -> None:
        self._call = call
        self._auth = auth

    def __iter__(self) -> _WatchResponses:
        return self

    def __next__(self) -> Any:
        response = next(self._call)
        if response.canceled:
            reason = str(response.cancel_reason).lower()
            if any(marker in reason for marker in _WATCH_AUTH_MARKERS):
                self._auth.invalidate()
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)  # cancel(), code(), details(), ...


def authenticate_first(auths: Sequence[TokenAuth], endpoints: Sequence[Any], user: str) -> None:
    """Authenticate on the first endpoint that answers, so bad credentials fail at once.

    Raises EtcdAuthError when etcd refuses the user or password, EtcdUnavailableError when no
    endpoint answers (down, or a TLS handshake refused).
    """
    last: grpc.RpcError | None = None
    for auth, endpoint in zip(auths, endpoints, strict=True):
        try:
            auth.token()
        except grpc.RpcError as exc:
            if exc.code() in _RECONNECT_CODES:
                last = exc
                continue
            raise EtcdAuthError(
                f"etcd refused user {user!r} at {endpoint.netloc}: {describe(exc)}"
            ) from None
        return
    raise EtcdUnavailableError(
        f"cannot reach etcd to authenticate user {user!r}: {describe(last)}"
    ) from None


__all__ = ["TokenAuth", "authenticate_first"]
