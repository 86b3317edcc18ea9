"""A multi-member etcd cluster on loopback, for leader-loss and partition tests."""

from __future__ import annotations

import time
import uuid
from types import TracebackType
from typing import Self

import pyetcd

from .client import make_client
from .locate import find_etcd_binary
from .ports import free_ports
from .server import (
    CLUSTER_ELECTION_MS,
    CLUSTER_HEARTBEAT_MS,
    DEFAULT_START_TIMEOUT,
    EtcdMember,
)

# A probe RPC to a (possibly paused) member must not eat the whole leader-wait budget.
STATUS_RPC_TIMEOUT = 0.5


def member_status(member: EtcdMember, timeout: float = STATUS_RPC_TIMEOUT) -> tuple[int, int]:
    """Return (own member id, leader id as this member sees it) from a raw Status RPC.

    The raw maintenance Status response carries both ``header.member_id`` (who answered)
    and ``leader`` (who it believes leads), which is exactly the "am I the leader" test.
    pyetcd's ``client.status()`` only exposes the leader, not who answered.
    """
    with make_client([member.endpoint], timeout=timeout, time_retry=0) as client:
        response = client.maintenancestub.Status(pyetcd.etcdrpc.StatusRequest(), timeout)
        return int(response.header.member_id), int(response.leader)


class EtcdCluster:
    """``size`` etcd members sharing one ``--initial-cluster``; context manager."""

    def __init__(
        self,
        size: int = 3,
        *,
        binary: str | None = None,
        heartbeat_ms: int = CLUSTER_HEARTBEAT_MS,
        election_ms: int = CLUSTER_ELECTION_MS,
        start_timeout: float = DEFAULT_START_TIMEOUT,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one member")
        binary = binary or find_etcd_binary()
        ports = free_ports(2 * size)
        names = [f"m{i}" for i in range(size)]
        initial_cluster = ",".join(
            f"{name}=http://127.0.0.1:{ports[2 * i + 1]}" for i, name in enumerate(names)
        )
        token = f"rmwatch-{uuid.uuid4().hex[:12]}"
        self.start_timeout = start_timeout
        self.members: list[EtcdMember] = [
            EtcdMember(
                name,
                binary=binary,
                client_port=ports[2 * i],
                peer_port=ports[2 * i + 1],
                initial_cluster=initial_cluster,
                cluster_token=token,
                heartbeat_ms=heartbeat_ms,
                election_ms=election_ms,
                start_timeout=start_timeout,
            )
            for i, name in enumerate(names)
        ]

    @property
    def endpoints(self) -> list[str]:
        """``127.0.0.1:PORT`` of every member (including stopped ones)."""
        return [m.endpoint for m in self.members]

    def start(self) -> Self:
        """Spawn every member first (none can elect a leader alone), then wait for all."""
        for member in self.members:
            member.spawn()
        self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float | None = None) -> None:
        """Block until every running member serves a linearizable read."""
        deadline = time.monotonic() + (self.start_timeout if timeout is None else timeout)
        for member in self.members:
            if member.is_running():
                member.wait_healthy(max(0.1, deadline - time.monotonic()))

    def leader(self) -> EtcdMember | None:
        """The member that reports itself as leader right now, or None (election/paused)."""
        for member in self.members:
            if not member.is_running() or member.is_paused:
                continue
            try:
                own_id, leader_id = member_status(member)
            except Exception:  # unreachable member: ask the next one
                continue
            if leader_id != 0 and own_id == leader_id:
                return member
        return None

    def wait_leader(self, timeout: float = 10.0, exclude: EtcdMember | None = None) -> EtcdMember:
        """Return the leader once one exists (and is not ``exclude``), else raise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.leader()
            if found is not None and found is not exclude:
                return found
            time.sleep(0.05)
        tails = "\n".join(f"== {m.name}\n{m.log_tail(15)}" for m in self.members)
        raise TimeoutError(f"no leader (other than {exclude!r}) within {timeout}s\n{tails}")

    def followers(self) -> list[EtcdMember]:
        """Running members other than the current leader."""
        lead = self.wait_leader()
        return [m for m in self.members if m is not lead and m.is_running()]

    def stop(self) -> None:
        """Gracefully stop every member, one at a time (keeps data dirs).

        Sequential on purpose: SIGTERM to all members at once leaves the leader trying to
        transfer leadership to peers that are gone, and it hangs until our 5 s SIGKILL;
        one by one each exits in ~10-60 ms.
        """
        for member in self.members:
            member.stop()

    def close(self) -> None:
        """SIGKILL every member and delete their temp dirs (the data is discarded anyway)."""
        for member in self.members:
            member.close()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
