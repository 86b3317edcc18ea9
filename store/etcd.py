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
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
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

from store.errors import EtcdUnavailableError

T = TypeVar("T")

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


def connect(config: EtcdConfig) -> Any:
    """A ``pyetcd`` client over every endpoint with failover, deadlines and the options above.

    Authentication (user/password) happens here; a wrong password raises EtcdUnavailableError
    naming the cause rather than hanging.
    """
    creds = channel_credentials(config)
    endpoints = []
    for text in config.endpoints:
        host, port = split_endpoint(text)
        endpoints.append(
            pyetcd.Endpoint(
                host,
                port,
                secure=config.secure,
                creds=creds,
                time_retry=ENDPOINT_RETRY_SECONDS,
                opts=GRPC_OPTIONS,
            )
        )
    random.shuffle(endpoints)  # spread clients over members
    try:
        return pyetcd.MultiEndpointEtcd3Client(
            endpoints=endpoints,
            timeout=config.timeout,
            user=config.user,
            password=config.password.get_secret_value() if config.password else None,
            failover=True,
        )
    except grpc.RpcError as exc:
        raise EtcdUnavailableError(f"cannot authenticate to etcd: {_describe(exc)}") from None


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
