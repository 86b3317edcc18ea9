"""Writer faults under continuous writes, checked by the history checker: drain hand-over,
SIGTERM, SIGKILL of the leader process, SIGSTOP of the leader past its lease TTL, and an
in-process leader crash/drain sequence whose epochs are checked write by write."""

from __future__ import annotations

import threading
import time

import httpx
from history.workload import TTL, LibWriter, Sampler, Scenario, WriteLoad, WriterProc, running


def _leader(writers: list[WriterProc], timeout: float = 10.0,
            exclude: WriterProc | None = None) -> WriterProc:  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w in writers:
            if w is exclude or not w.alive() or w.paused:
                continue
            health = w.health()
            if health and health.get("leader"):
                return w
        time.sleep(0.05)
    raise AssertionError("no writer leads: " + "\n".join(w.log_tail(5) for w in writers))


def _start(scenario: Scenario, names: list[str]) -> list[WriterProc]:
    writers = [WriterProc(scenario.endpoints, scenario.root_prefix, n) for n in names]
    for w in writers:
        scenario.on_close(w.close)
        w.start(wait=False)
    for w in writers:
        w.wait_up()
    return writers


def _acked_since(load: WriteLoad, before: int) -> int:
    return load.outcomes["ok"] - before


def test_drain_and_sigterm_hand_over_with_no_failed_write(
    etcd_endpoints: list[str], root_prefix: str
) -> None:
    """POST /admin/drain on the leader, then SIGTERM the next one: the leader changes twice
    while clients write to every writer, and not one write fails or is lost."""
    with Scenario(etcd_endpoints, root_prefix) as sc:
        writers = _start(sc, ["w1", "w2", "w3"])
        first = _leader(writers)
        sc.fenced_from_now()
        sc.replica("r1").wait_ready(10)
        live = list(writers)
        # 10 s > the writers' 6 s forward wait: a slow answer shows as its 503, not a timeout
        load = WriteLoad(
            sc.recorder, sc.layout, lambda: [w.url for w in live], seed=1, http_timeout=10.0
        )
        sampler = Sampler(sc.recorder, sc.replicas, load)
        with running(load.run, threads=3), running(sampler.run):
            time.sleep(1.0)
            r = httpx.post(first.url + "/admin/drain", timeout=15)
            assert r.status_code == 200, r.text
            assert r.json()["leader"] is False
            second = _leader(writers, exclude=first)
            time.sleep(1.0)
            assert second.terminate() == 0, second.log_tail()
            live.remove(second)  # exited: its port refuses from now on
            third = _leader(writers, exclude=second)
            assert third is not first, "a drained writer must not lead again"
            before = load.outcomes["ok"]
            time.sleep(1.0)
            assert _acked_since(load, before) > 10
        print(f"outcomes: {dict(load.outcomes)}")
        # Known bug (test_write_forwarded_to_a_draining_leader_is_not_failed): a follower can
        # forward to the leader while it drains and get 503. Every other failure is a new bug.
        # Known bug 2 (test_follower_elected_while_forwarding_commits_the_write): a follower
        # elected while it waits to forward answers 503 "no leader to forward to" after 6 s.
        known = ("already forwarded: this writer is draining", "no leader to forward to")
        others = [f for f in load.failures if not any(k in f for k in known)]
        print(f"failed writes from the known drain bugs: {len(load.failures) - len(others)}")
        assert not others, others
        sc.finish()
        load.close()


def test_write_forwarded_to_a_draining_leader_is_not_failed(
    etcd_endpoints: list[str], root_prefix: str
) -> None:
    """A write forwarded to a draining leader still commits: between ``begin_drain()`` and
    ``resign()`` (the drain waits for the writes in flight) the leader key still names the
    draining writer, so a follower forwards a write there; it must reach the next leader
    instead of being answered 503 (a drain fails no write)."""
    from pydantic import SecretStr  # noqa: PLC0415
    from writer_support import WriterNode, nodes  # noqa: PLC0415

    from rmwatch.http.writer_app import PREFIX, create_writer_app  # noqa: PLC0415

    a = WriterNode(etcd_endpoints, root_prefix, name="a").start()
    b = WriterNode(etcd_endpoints, root_prefix, name="b").start(wait_leader=False)
    with nodes(a, b):
        a.serve(create_writer_app(a.writer, token=SecretStr("t")))
        b.serve(create_writer_app(b.writer, token=SecretStr("t")))
        assert a.leadership is not None
        a.writer.begin_drain()  # the drain's first step; a write in flight delays the resign
        resign = threading.Timer(0.5, a.leadership.resign)  # ... which comes 0.5 s later
        resign.start()
        try:
            r = httpx.post(f"{b.address}{PREFIX}/config/keyspace/service-limit",
                           params={"keyspace_id": 3}, json={"service_limit": 3},
                           headers={"Authorization": "Bearer t"}, timeout=15)  # fmt: skip
        finally:
            resign.join()
        assert r.status_code == 200, f"{r.status_code} {r.text}"


def test_follower_elected_while_forwarding_commits_the_write(
    etcd_endpoints: list[str], root_prefix: str
) -> None:
    """A follower that wins the election while it waits to forward a write commits the write
    itself: the write arrives while no writer leads (the old leader just resigned), the
    follower waits for a leader to forward to, and when the leader it then finds is itself it
    commits at once instead of waiting out ``forward_wait`` (6 s) and answering 503."""
    from pydantic import SecretStr  # noqa: PLC0415
    from writer_support import WriterNode, nodes  # noqa: PLC0415

    from rmwatch.http.writer_app import PREFIX, create_writer_app  # noqa: PLC0415

    a = WriterNode(etcd_endpoints, root_prefix, name="a").start()
    b = WriterNode(etcd_endpoints, root_prefix, name="b")  # not campaigning yet
    with nodes(a, b):
        b.serve(create_writer_app(b.writer, token=SecretStr("t")))
        assert a.leadership is not None
        a.leadership.resign()  # no leader now
        campaign = threading.Timer(0.5, b.start, kwargs={"wait_leader": False})
        campaign.start()  # b wins 0.5 s after the write arrived
        started = time.monotonic()
        try:
            r = httpx.post(f"{b.address}{PREFIX}/config/keyspace/service-limit",
                           params={"keyspace_id": 4}, json={"service_limit": 4},
                           headers={"Authorization": "Bearer t"}, timeout=15)  # fmt: skip
        finally:
            campaign.join()
        took = time.monotonic() - started
        assert r.status_code == 200, f"{r.status_code} after {took:.1f}s: {r.text}"
        assert took < 3


def test_sigkill_leader_process(etcd_endpoints: list[str], root_prefix: str) -> None:
    """SIGKILL the leader mid-writes: another takes over within about a lease TTL, the killed
    one rejoins as a follower, and every acknowledged write survives."""
    with Scenario(etcd_endpoints, root_prefix) as sc:
        writers = _start(sc, ["w1", "w2"])
        leader = _leader(writers)
        sc.fenced_from_now()
        sc.replica("r1").wait_ready(10)
        load = WriteLoad(sc.recorder, sc.layout,
                         lambda: [w.url for w in writers if w.alive()], seed=2)  # fmt: skip
        sampler = Sampler(sc.recorder, sc.replicas, load)
        with running(load.run, threads=3), running(sampler.run):
            time.sleep(1.0)
            leader.kill()
            killed_at = time.monotonic()
            other = _leader(writers, timeout=TTL + 5, exclude=leader)
            takeover = time.monotonic() - killed_at
            assert takeover < TTL + 2, f"takeover took {takeover:.1f}s"
            leader.start()
            before, restarted_at = load.outcomes["ok"], time.monotonic()
            # up to 10 s, not less: writes that were waiting in the new leader's forward loop
            # when it won stall 6 s (bug: test_follower_elected_while_forwarding_...)
            while _acked_since(load, before) <= 10:
                assert time.monotonic() - restarted_at < 10, dict(load.outcomes)
                time.sleep(0.05)
            print(f"10 acks {time.monotonic() - restarted_at:.2f}s after the restart")
            assert other.health() == {"status": "ok", "leader": True, "draining": False}
        print(f"takeover {takeover:.2f}s; outcomes: {dict(load.outcomes)}")
        sc.finish()
        load.close()


def test_sigstop_leader_past_lease_ttl(etcd_endpoints: list[str], root_prefix: str) -> None:
    """SIGSTOP the leader for 2.5 TTLs while requests are queued on it: a follower takes
    over; on SIGCONT the old leader's queued writes are fenced (none commits under a stale
    epoch) and it serves as a follower."""
    with Scenario(etcd_endpoints, root_prefix) as sc:
        writers = _start(sc, ["w1", "w2"])
        leader = _leader(writers)
        sc.fenced_from_now()
        sc.replica("r1").wait_ready(10)
        load = WriteLoad(sc.recorder, sc.layout, lambda: [w.url for w in writers], seed=3,
                         http_timeout=8.0)  # fmt: skip
        sampler = Sampler(sc.recorder, sc.replicas, load)
        with running(load.run, threads=4), running(sampler.run):
            time.sleep(1.0)
            leader.pause()
            other = _leader(writers, timeout=TTL + 5, exclude=leader)
            time.sleep(max(0.0, TTL * 2.5 - 1))
            leader.resume()
            time.sleep(1.5)
            health = leader.health()
            assert health is not None
            assert health["leader"] is False
            assert other.health() == {"status": "ok", "leader": True, "draining": False}
        print(f"outcomes: {dict(load.outcomes)}")
        sc.finish()
        load.close()


def test_in_process_crash_and_drain_with_epochs(
    etcd_endpoints: list[str], root_prefix: str
) -> None:
    """Three in-process writers: the leader crashes (keepalives stop, no resign), the next is
    drained, the last leads; every acked write carries its epoch and the checker verifies the
    leader key had exactly that epoch at the commit revision."""
    with Scenario(etcd_endpoints, root_prefix) as sc:
        writers = [LibWriter(etcd_endpoints, root_prefix, f"lib{i}").start() for i in range(3)]
        for w in writers:
            sc.on_close(w.close)

        def leader() -> LibWriter:
            deadline = time.monotonic() + TTL + 5
            while time.monotonic() < deadline:
                for w in writers:
                    if not w.dead and w.leadership.is_leader:
                        return w
                time.sleep(0.02)
            raise AssertionError("no in-process leader")

        first = leader()
        sc.fenced_from_now()
        sc.replica("r1").wait_ready(10)
        load = WriteLoad(sc.recorder, sc.layout, lambda: [w for w in writers if not w.dead],
                         seed=4)  # fmt: skip
        sampler = Sampler(sc.recorder, sc.replicas, load)
        with running(load.run, threads=3), running(sampler.run):
            time.sleep(0.7)
            first.abandon()
            second = leader()
            time.sleep(0.7)
            second.drain()
            third = leader()
            assert third not in (first, second)
            time.sleep(0.7)
        history = sc.recorder.history()
        epochs = {w.epoch for w in history.writes if w.outcome == "ok"}
        assert len(epochs - {None}) >= 2, f"writes under too few epochs: {epochs}"
        print(f"epochs {sorted(e for e in epochs if e)}; outcomes: {dict(load.outcomes)}")
        sc.finish()
        load.close()
