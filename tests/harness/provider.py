"""Decide where the shared test etcd comes from, in the order the spec requires.

1. ``$RMWATCH_TEST_ETCD_ENDPOINTS`` (comma-separated ``host:port`` or ``http://`` URLs);
2. a testcontainers etcd container (``$RMWATCH_TEST_ETCD_IMAGE``, default
   ``quay.io/coreos/etcd``), when a Docker daemon (or podman's Docker API via ``DOCKER_HOST``)
   answers;
3. a local ``EtcdMember`` started from ``find_etcd_binary()``.

Setting ``$RMWATCH_TEST_ETCD_IMAGE`` makes the container mandatory: if it cannot start, the
session fails instead of falling back to a binary (scripts/image-test relies on that).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from .client import make_client, normalize_endpoint
from .locate import etcd_version, find_etcd_binary
from .server import EtcdMember

ENDPOINTS_ENV = "RMWATCH_TEST_ETCD_ENDPOINTS"
IMAGE_ENV = "RMWATCH_TEST_ETCD_IMAGE"
DEFAULT_ETCD_IMAGE = "quay.io/coreos/etcd:v3.5.17"
# The image of the session container: any image with `etcd` on PATH (e.g. scripts/image-test's
# local Debian image where no registry is reachable).
ETCD_IMAGE = os.environ.get(IMAGE_ENV, "").strip() or DEFAULT_ETCD_IMAGE
CONTAINER_CLIENT_PORT = 2379
# Image pull + start on a cold CI runner; the health wait itself is ~1 s.
DOCKER_START_TIMEOUT = 60.0


@dataclass
class EtcdSession:
    """Endpoints of the session etcd and a human-readable note of where it came from."""

    endpoints: list[str]
    source: str
    member: EtcdMember | None = field(default=None, repr=False)


def endpoints_from_env() -> list[str] | None:
    """Parse ``$RMWATCH_TEST_ETCD_ENDPOINTS`` into ``host:port`` strings (None if unset)."""
    raw = os.environ.get(ENDPOINTS_ENV, "").strip()
    if not raw:
        return None
    return [normalize_endpoint(part) for part in raw.split(",") if part.strip()]


def binary_source(binary: str) -> str:
    """E.g. ``binary:/usr/bin/etcd 3.4.23``."""
    return f"binary:{binary} {etcd_version(binary)}"


@contextmanager
def _docker_etcd() -> Iterator[EtcdSession | None]:
    """Yield a container-backed session, or None when Docker/testcontainers is unavailable.

    With ``$RMWATCH_TEST_ETCD_IMAGE`` set, unavailability raises instead of yielding None.
    """
    required = bool(os.environ.get(IMAGE_ENV, "").strip())
    try:
        import docker.errors  # noqa: PLC0415  (optional: only with testcontainers)
        from testcontainers.core.container import DockerContainer  # noqa: PLC0415
    except ImportError:
        if required:
            raise
        yield None
        return
    try:
        # The constructor already talks to the daemon and raises DockerException without one.
        container = (
            DockerContainer(ETCD_IMAGE)
            .with_exposed_ports(CONTAINER_CLIENT_PORT)
            .with_command(
                [
                    "etcd",
                    "--name=docker0",
                    "--data-dir=/tmp/etcd-data",
                    f"--listen-client-urls=http://0.0.0.0:{CONTAINER_CLIENT_PORT}",
                    f"--advertise-client-urls=http://0.0.0.0:{CONTAINER_CLIENT_PORT}",
                    "--heartbeat-interval=10",
                    "--election-timeout=50",
                    "--log-level=error",
                ]
            )
        )
        container.start()
    except docker.errors.DockerException as exc:
        if required:
            raise RuntimeError(
                f"{IMAGE_ENV}={ETCD_IMAGE} is set but its container did not start: {exc}"
            ) from exc
        yield None
        return
    try:
        host = container.get_container_host_ip()
        port = int(container.get_exposed_port(CONTAINER_CLIENT_PORT))
        endpoint = f"{host}:{port}"
        _wait_endpoint(endpoint, DOCKER_START_TIMEOUT)
        yield EtcdSession([endpoint], f"docker:{ETCD_IMAGE}")
    finally:
        container.stop()


def _wait_endpoint(endpoint: str, timeout: float) -> None:
    """Poll a linearizable get until it succeeds (container port mapping lags start)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with make_client([endpoint], timeout=1, time_retry=0) as client:
                client.get(b"/__rmwatch_harness_health__")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextmanager
def etcd_endpoints_for_session(*, try_docker: bool = True) -> Iterator[EtcdSession]:
    """Provide the shared etcd for a test session; tears down whatever it started."""
    from_env = endpoints_from_env()
    if from_env:
        yield EtcdSession(from_env, "env")
        return
    if try_docker:
        with _docker_etcd() as session:
            if session is not None:
                yield session
                return
    binary = find_etcd_binary()
    with EtcdMember("session", binary=binary) as member:
        yield EtcdSession([member.endpoint], binary_source(binary), member)


def planned_source() -> str:
    """Best guess of the source without starting anything (for the pytest report header)."""
    if endpoints_from_env():
        return f"env ({os.environ[ENDPOINTS_ENV]})"
    try:
        binary = binary_source(find_etcd_binary())
        return f"docker {ETCD_IMAGE} if a daemon answers, else {binary}"
    except RuntimeError as exc:
        return f"docker only; {exc}"
