"""Connecting to etcd the way these machines showed it must be done, and calling it safely.

Pitfalls this module defends against (reproduced with etcd-sdk-python, see etcd-notes):
- After one UNAVAILABLE the client refuses an endpoint for ``time_retry`` seconds (default 300):
  we use 0.5 s, which recovered in about 0.6 s once the server was back.
- A frozen server (SIGSTOP, no FIN/RST) blocks a stream forever: HTTP/2 keepalive pings every
  5 s with a 2 s ping timeout fail it after about 7 s. etcd refuses pings more often than its
  ``--grpc-keepalive-min-time`` (5 s) and pings without a call, hence no ping-without-calls.
- gRPC's 4 MiB receive limit breaks catch-up (one watch message reached 13.4 MB) and large
  pages: raised to 256 MiB.
- pyetcd's ``transaction()`` drops the TxnResponse header, which carries the commit revision:
  ``txn`` here calls the stub directly.
- pyetcd's user/password support sends the token as gRPC *call credentials*, which gRPC refuses
  on a plain-text channel (every call fails UNAUTHENTICATED "Established channel does not have
  a sufficient security level"), and it authenticates once, forever: etcd's simple tokens live
  in each member's memory and are gone after a member restart or an idle TTL. ``connect`` hence
  authenticates itself, per endpoint, through a gRPC interceptor that adds the ``token``
  metadata to every call and re-authenticates as etcd's Go client does (on ``invalid auth
  token``, ``revision of auth store is old``, ``user name is empty``, and after the member
  became unreachable). A unary call refused for a stale token is retried once with the new
  token: etcd refuses it before applying anything, so a retry cannot apply a write twice.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

import grpc
import pyetcd
from pydantic import SecretStr
from pyetcd import etcdrpc
from pyetcd import exceptions as etcd_exc
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from rmwatch.errors import EtcdAuthError, EtcdUnavailableError

T = TypeVar("T")

# The client every layer above holds. Still pyetcd's client object; to become a small typed
# Protocol of the calls rmwatch makes.
EtcdClient = Any

MAX_RECEIVE_BYTES = 256 * 1024 * 1024
ENDPOINT_RETRY_SECONDS = 0.5

GRPC_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 5000),
    ("grpc.keepalive_timeout_ms", 2000),
    ("grpc.http2.ping_timeout_ms", 2000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    # gRPC's reconnect backoff grows to 120 s by default: a member back after a long outage
    # could then stay unused for minutes. 0.5 s doubling to 2 s matches our call retries.
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


@dataclass(frozen=True)
class EtcdConfig:
    """Where etcd is and how to talk to it; every call has a deadline of ``timeout`` seconds."""

    endpoints: tuple[str, ...]
    timeout: float = 5.0
    ca_cert: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password: SecretStr | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, spec: str | Sequence[str], **kwargs: Any) -> EtcdConfig:
        """Build from ``"h1:2379,http://h2:2379"`` or a list of such strings."""
        items = spec.split(",") if isinstance(spec, str) else list(spec)
        endpoints = tuple(e.strip() for e in items if e.strip())
        if not endpoints:
            raise ValueError("no etcd endpoints given")
        for endpoint in endpoints:
            split_endpoint(endpoint)
        return cls(endpoints=endpoints, **kwargs)

    @property
    def secure(self) -> bool:
        """True when TLS is configured (a CA certificate is given)."""
        return self.ca_cert is not None


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``"http://127.0.0.1:2379"`` or ``"127.0.0.1:2379"`` → ``("127.0.0.1", 2379)``."""
    text = endpoint if "://" in endpoint else f"http://{endpoint}"
    parts = urlsplit(text)
    if not parts.hostname or parts.port is None:
        raise ValueError(f"etcd endpoint {endpoint!r} must be host:port or scheme://host:port")
    return parts.hostname, parts.port


def channel_credentials(config: EtcdConfig) -> grpc.ChannelCredentials | None:
    """TLS credentials for the configured CA / client certificate, or None."""
    if not config.secure:
        return None

    def read(path: str | None) -> bytes | None:
        if path is None:
            return None
        with open(path, "rb") as fh:
            return fh.read()

    return grpc.ssl_channel_credentials(read(config.ca_cert), read(config.key), read(config.cert))


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


def connect(config: EtcdConfig) -> Any:
    """A ``pyetcd`` client over every endpoint with failover, deadlines and the options above.

    With ``user``/``password`` every endpoint's channel authenticates through ``TokenAuth``,
    and one endpoint is authenticated here, at once: a wrong user or password raises
    EtcdAuthError, no reachable endpoint (down, or a TLS handshake refused: wrong CA,
    untrusted client certificate) raises EtcdUnavailableError naming gRPC's reason; neither
    waits longer than ``timeout`` per endpoint.
    """
    if (config.user is None) != (config.password is None):
        raise ValueError("etcd user and password must be given together")
    creds = channel_credentials(config)
    endpoints = []
    auths: list[TokenAuth] = []
    for text in config.endpoints:
        host, port = split_endpoint(text)
        endpoint = pyetcd.Endpoint(
            host,
            port,
            secure=config.secure,
            creds=creds,
            time_retry=ENDPOINT_RETRY_SECONDS,
            opts=GRPC_OPTIONS,
        )
        if config.user is not None and config.password is not None:
            auth = TokenAuth(endpoint.channel, config.user, config.password, config.timeout)
            endpoint.channel = grpc.intercept_channel(endpoint.channel, auth)
            auths.append(auth)
        endpoints.append(endpoint)
    order = list(range(len(endpoints)))
    random.shuffle(order)  # spread clients over members
    endpoints = [endpoints[i] for i in order]
    auths = [auths[i] for i in order] if auths else []
    client = pyetcd.MultiEndpointEtcd3Client(
        endpoints=endpoints, timeout=config.timeout, failover=True
    )
    if auths:
        try:
            _authenticate_one(auths, endpoints, config.user or "")
        except BaseException:
            client.close()
            raise
    return client


def _authenticate_one(auths: Sequence[TokenAuth], endpoints: Sequence[Any], user: str) -> None:
    """Authenticate on the first endpoint that answers; typed errors for the rest."""
    last: grpc.RpcError | None = None
    for auth, endpoint in zip(auths, endpoints, strict=True):
        try:
            auth.token()
        except grpc.RpcError as exc:
            if exc.code() in _RECONNECT_CODES:
                last = exc
                continue
            raise EtcdAuthError(
                f"etcd refused user {user!r} at {endpoint.netloc}: {_describe(exc)}"
            ) from None
        return
    raise EtcdUnavailableError(
        f"cannot reach etcd to authenticate user {user!r}: {_describe(last)}"
    ) from None


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
        return exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    return False


def call_with_retry(fn: Callable[[], T], *, deadline: float, what: str) -> T:
    """Run an idempotent call, retrying transient failures with backoff until ``deadline`` s.

    Only for calls a retry cannot apply twice: reads, and writes guarded by a compare.
    Raises EtcdUnavailableError (naming ``what`` and the last cause) when time runs out.
    """
    retrying = Retrying(
        retry=retry_if_exception(is_transient),
        stop=stop_after_delay(deadline),
        # 50 ms doubling to 1 s: an endpoint is retried after 0.5 s, a member restart takes ~1 s.
        wait=wait_exponential(multiplier=0.05, max=1.0) + wait_random(0, 0.05),
        reraise=False,
    )
    try:
        return retrying(fn)
    except RetryError as exc:
        cause = exc.last_attempt.exception()
        raise EtcdUnavailableError(
            f"etcd unavailable for {what} after {deadline:.1f}s: {_describe(cause)}"
        ) from cause


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, grpc.RpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}" if exc else "unknown"


@dataclass(frozen=True)
class TxnResult:
    """Outcome of one transaction: whether the compares held, and the revision it read/wrote."""

    succeeded: bool
    revision: int
    responses: Sequence[Any]


def txn(client: Any, compare: Sequence[Any], success: Sequence[Any], failure: Sequence[Any] = ()
        ) -> TxnResult:  # fmt: skip
    """One etcd transaction, returning the header revision (the commit revision on success).

    ``compare`` items are pyetcd compare objects (``client.transactions.mod(key) == rev``);
    ``success``/``failure`` items are pyetcd ops (``client.transactions.put(key, value)``).
    Transient errors propagate as pyetcd exceptions (the endpoint is marked failed first).
    """
    request = etcdrpc.TxnRequest(
        compare=[c.build_message() for c in compare],
        success=client._ops_to_requests(list(success)),
        failure=client._ops_to_requests(list(failure)),
    )
    try:
        response = client.kvstub.Txn(
            request,
            client.timeout,
            credentials=client.call_credentials,
            metadata=client.metadata,
        )
    except grpc.RpcError as exc:
        client._manage_grpc_errors(exc)  # marks the endpoint failed, raises pyetcd's error
        raise
    return TxnResult(response.succeeded, response.header.revision, response.responses)


def mark_endpoint_failed(client: Any) -> None:
    """Stop using the current endpoint for ``ENDPOINT_RETRY_SECONDS``, so the next call fails
    over to another member (used when a stream from it broke or froze)."""
    endpoint = client.endpoint_in_use
    if endpoint is not None:
        endpoint.fail()
    client._clear_old_stubs()
