"""Where etcd is and how to reach it: endpoints, TLS credentials and the gRPC channel options.

The channel options defend against what a default gRPC channel does to an etcd client:
- A frozen server (SIGSTOP, no FIN/RST) blocks a stream forever: HTTP/2 keepalive pings every
  5 s with a 2 s ping timeout fail it after about 7 s. etcd refuses pings more often than its
  ``--grpc-keepalive-min-time`` (5 s) and pings without a call, hence no ping-without-calls.
- gRPC's 4 MiB receive limit breaks catch-up (one watch message of a replay of large
  transactions exceeds 13 MB) and large pages: raised to 256 MiB.
- After one UNAVAILABLE, pyetcd refuses an endpoint for ``time_retry`` seconds (default 300):
  ``ENDPOINT_RETRY_SECONDS`` (0.5 s) lets a member that came back be used again at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import grpc
from pydantic import SecretStr

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


__all__ = [
    "ENDPOINT_RETRY_SECONDS",
    "GRPC_OPTIONS",
    "MAX_RECEIVE_BYTES",
    "EtcdConfig",
    "channel_credentials",
    "split_endpoint",
]
