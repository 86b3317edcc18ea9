"""Leadership and fencing against a real etcd: a deposed writer never commits."""

from __future__ import annotations

import threading
import time

import pytest
from writer_support import TEST_TTL, WriterNode, nodes, raw_get

from rmwatch.errors import NotLeaderError
from rmwatch.store.leadership import leader_key, read_leader


class _FrozenClock:
    """A clock that stops when told to: the writer's view of time while SIGSTOPped."""

    def __init__(self) -> None:
        self.frozen_at: float | None = None

    def __call__(self) -> float:
        return self.frozen_at if self.frozen_at is not None else time.monotonic()


class TestElection:
    """One leader at a time, epochs only go up, resign hands over at once."""

    def test_single_leader_and_read_leader(self, etcd_endpoints: list[str], root_prefix: str
                                           ) -> None:  # fmt: skip
        """Of two writers exactly one leads, and read_leader names its address and epoch."""
        with nodes(WriterNode(etcd_endpoints, root_prefix, name="a").start(),
                   WriterNode(etcd_endpoints, root_prefix, name="b").start(wait_leader=False)
                   ) as (a, b):  # fmt: skip
            time.sleep(0.3)
            assert a.leadership
            assert b.leadership
            assert a.leadership.is_leader
            assert not b.leadership.is_leader
            info = read_leader(a.client, a.layout)
            assert info is not None
            assert info.address == a.address
            assert info.epoch == a.leadership.epoch
            assert not leader_key(a.layout).startswith(a.layout.prefix)

    def test_resign_hands_over_quickly(self, etcd_endpoints: list[str], root_prefix: str) -> None:
        """After resign the follower leads within 1 s with a higher epoch, and can commit."""
        with nodes(WriterNode(etcd_endpoints, root_prefix, name="a").start(),
                   WriterNode(etcd_endpoints, root_prefix, name="b").start(wait_leader=False)
                   ) as (a, b):  # fmt: skip
            assert a.leadership
            assert b.leadership
            epoch_a = a.leadership.epoch
            started = time.monotonic()
            a.leadership.resign()
            assert b.leadership.wait_until_leader(1.0)
            assert time.monotonic() - started < 1.0
            assert (b.leadership.epoch or 0) > (epoch_a or 0)
            with pytest.raises(NotLeaderError):
                a.writer.set_service_limit(1, 1)
            assert b.writer.set_service_limit(1, 2) > 0


class TestFencing:
    """Writes of a deposed leader fail inside etcd; the new leader's succeed; nothing is lost."""

    def test_revoked_lease_cannot_commit(self, etcd_endpoints: list[str], root_prefix: str
                                         ) -> None:  # fmt: skip
        """With its lease revoked behind its back, the old leader's write is refused by etcd."""
        with nodes(WriterNode(etcd_endpoints, root_prefix, name="a").start()) as (a,):
            assert a.leadership is not None
            acked = {1: a.writer.set_service_limit(1, 1)}
            info = read_leader(a.client, a.layout)
            assert info is not None
            # Freeze the keepalive so the writer keeps believing it leads, then revoke.
            a.leadership._keepalive_once = lambda: time.sleep(30) or 1  # type: ignore[method-assign,func-returns-value]
            time.sleep(0.05)
            a.client.revoke_lease(info.lease)
            with nodes(WriterNode(etcd_endpoints, root_prefix, name="b").start()) as (b,):
                assert a.leadership.is_leader  # still believes it
                with pytest.raises(NotLeaderError) as err:
                    a.writer.set_service_limit(2, 2)
                assert err.value.leader == b.address
                assert raw_get(a.client, a.layout.service_limit(2))[0] is None
                acked[3] = b.writer.set_service_limit(3, 3)
                for ks, rev in acked.items():
                    assert raw_get(a.client, a.layout.service_limit(ks)) == (str(ks).encode(), rev)

    def test_paused_writer_cannot_commit(self, etcd_endpoints: list[str], root_prefix: str
                                         ) -> None:  # fmt: skip
        """A leader frozen past its TTL (keepalive stuck, clock stopped) cannot commit after."""
        clock = _FrozenClock()
        with nodes(WriterNode(etcd_endpoints, root_prefix, name="a", clock=clock).start(),
                   WriterNode(etcd_endpoints, root_prefix, name="b").start(wait_leader=False)
                   ) as (a, b):  # fmt: skip
            assert a.leadership
            assert b.leadership
            acked: dict[int, int] = {}
            stop = threading.Event()

            def keep_writing() -> None:
                i = 100
                while not stop.is_set():
                    i += 1
                    try:
                        acked[i] = b.writer.set_service_limit(i, i)
                    except NotLeaderError:
                        time.sleep(0.02)

            acked[1] = a.writer.set_service_limit(1, 1)
            # "SIGSTOP": the keepalive never returns and the writer's clock stands still.
            a.leadership._keepalive_once = lambda: time.sleep(30) or 1  # type: ignore[method-assign,func-returns-value]
            clock.frozen_at = time.monotonic()
            writer_b = threading.Thread(target=keep_writing)
            writer_b.start()
            try:
                assert b.leadership.wait_until_leader(TEST_TTL + 3)
                assert a.leadership.is_leader  # its frozen view of time
                refused = 0
                for i in range(2, 12):
                    with pytest.raises(NotLeaderError):
                        a.writer.set_service_limit(i, i)
                    refused += 1
                assert refused == 10
                time.sleep(0.2)
            finally:
                stop.set()
                writer_b.join()
            for i in range(2, 12):
                assert raw_get(a.client, a.layout.service_limit(i))[0] is None
            assert len(acked) > 2
            for ks, rev in acked.items():
                assert raw_get(a.client, a.layout.service_limit(ks)) == (str(ks).encode(), rev)

    def test_expired_leader_steps_down(self, etcd_endpoints: list[str], root_prefix: str) -> None:
        """A leader whose keepalives fail steps down by itself once its TTL has passed."""
        with nodes(WriterNode(etcd_endpoints, root_prefix, name="a").start()) as (a,):
            assert a.leadership is not None

            def failing() -> int:
                raise ConnectionError("simulated partition")

            # A partition: keepalives fail and so would a new campaign.
            a.leadership._keepalive_once = failing  # type: ignore[method-assign]
            a.leadership._campaign = failing  # type: ignore[method-assign,assignment]
            deadline = time.monotonic() + TEST_TTL + 2
            while a.leadership.is_leader and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not a.leadership.is_leader
            with pytest.raises(NotLeaderError):
                a.writer.set_service_limit(1, 1)
