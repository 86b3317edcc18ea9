"""Seeded randomized soak: writes and reads under a random fault every 0.15-0.35 s, then every
history rule.

Duration: ``RMWATCH_SOAK_SECONDS`` if set; otherwise 120 s when ``CI`` is set (CI runs
``scripts/test`` with CI=true) and 30 s on a developer machine. The fault rate is tuned so a
120 s run injects over 200 faults (about 2 a second once the slow ones, drains and
member restarts, have taken their time; cheap ones like proxy cut and compaction count).

Replay: the test prints ``soak seed=N``; ``RMWATCH_SOAK_SEED=N`` replays the same choice of
faults and writes (timing on a busy box still differs, so a replay is likely, not certain, to
hit the same interleaving).

Rig: a 3-member etcd cluster; writers (in-process, 2 at a time, fenced) and replicas (2 at a
time) reach it only through one TCP proxy per member; the truth log watches the members
directly. Faults: proxy cut / blackhole (half-open) / delay and their restore, compaction,
member SIGKILL + restart, member SIGSTOP + SIGCONT (at most one member down at a time, so
quorum holds), writer crash (keepalives stop, no resign) and drain (both replaced by a fresh
writer), replica replaced by a new one.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from contextlib import ExitStack
from typing import Any

import pytest
from harness import SUMMARY_KEY, EtcdCluster, TcpProxy
from history.workload import LibWriter, Sampler, Scenario, WriteLoad, running

ROOT = "/soak/"
FAULT_MIN, FAULT_MAX = 0.15, 0.35


def soak_seconds() -> float:
    raw = os.environ.get("RMWATCH_SOAK_SECONDS")
    if raw:
        return float(raw)
    return 120.0 if os.environ.get("CI") else 30.0


def soak_seed() -> int:
    raw = os.environ.get("RMWATCH_SOAK_SEED")
    return int(raw) if raw else random.SystemRandom().randrange(1 << 31)


class Chaos:
    """Injects faults and heals them later; counts both."""

    def __init__(self, rng: random.Random, cluster: EtcdCluster, proxies: list[TcpProxy],
                 sc: Scenario, writers: list[LibWriter], eps: list[str]) -> None:  # fmt: skip
        self.rng = rng
        self.cluster = cluster
        self.proxies = proxies
        self.sc = sc
        self.writers = writers
        self.eps = eps
        self.faults: Counter[str] = Counter()
        self.heals: Counter[str] = Counter()
        self.pending: list[tuple[float, str, Any]] = []  # (when, kind, target)
        self.member_down: Any = None
        self.proxy_bad: set[int] = set()
        self.n_writers = len(writers)
        self._slow: threading.Thread | None = None  # one slow fault at a time, off the loop
        self.n_replicas = len(sc.replicas)

    # ---- helpers ------------------------------------------------------------------------------

    def _later(self, kind: str, target: Any, lo: float = 0.3, hi: float = 1.5) -> None:
        self.pending.append((time.monotonic() + self.rng.uniform(lo, hi), kind, target))

    def heal_due(self, everything: bool = False) -> None:
        now = time.monotonic()
        keep = []
        for when, kind, target in self.pending:
            if everything or when <= now:
                self._heal(kind, target)
            else:
                keep.append((when, kind, target))
        self.pending = keep

    def _heal(self, kind: str, target: Any) -> None:
        self.heals[kind] += 1
        if kind == "proxy":
            self.proxies[target].restore()
            self.proxy_bad.discard(target)
        elif kind == "member_kill":
            target.spawn()  # no health wait: the fault loop must keep its pace
            self.member_down = None
        elif kind == "member_pause":
            target.resume()
            self.member_down = None

    def new_writer(self) -> None:
        self.n_writers += 1
        w = LibWriter(self.eps, ROOT, f"w{self.n_writers}").start()
        self.sc.on_close(w.close)
        self.writers.append(w)

    def leader(self) -> LibWriter | None:
        return next((w for w in self.writers if not w.dead and w.leadership.is_leader), None)

    def _off_loop(self, fn: Any) -> bool:
        """Run a slow fault (compaction, drain) in the background; False if one still runs."""
        if self._slow is not None and self._slow.is_alive():
            return False
        self._slow = threading.Thread(target=fn, daemon=True)
        self._slow.start()
        return True

    def _compact(self) -> None:
        try:
            self.sc.truth.compact(timeout=5)
        except Exception as exc:  # etcd busy with another fault: count, go on
            print(f"compaction skipped: {exc!r}"[:200])
            self.faults["compact_failed"] += 1

    def wait_slow(self) -> None:
        if self._slow is not None:
            self._slow.join(30)

    # ---- one fault ----------------------------------------------------------------------------

    def inject(self) -> None:
        kinds = [
            "proxy_cut",
            "proxy_blackhole",
            "proxy_delay",
            "compact",
            "compact",
            "member_kill",
            "member_pause",
            "writer_kill",
            "writer_drain",
            "replica_swap",
        ]
        weights = [5, 2, 2, 3, 0, 1, 1, 1, 1, 1]  # fmt: skip
        kind = self.rng.choices(kinds, weights)[0]
        if kind.startswith("proxy"):
            free = [i for i in range(len(self.proxies)) if i not in self.proxy_bad]
            if len(self.proxy_bad) >= 2 or not free:  # keep one path to etcd
                kind = "compact"
            else:
                i = self.rng.choice(free)
                p = self.proxies[i]
                if kind == "proxy_cut":
                    p.cut()
                elif kind == "proxy_blackhole":
                    p.blackhole()
                else:
                    p.delay(self.rng.choice([0.01, 0.05, 0.1]))
                self.proxy_bad.add(i)
                self._later("proxy", i, 0.2, 1.5 if kind != "proxy_blackhole" else 3.0)
        if kind.startswith("member"):
            if self.member_down is not None:
                kind = "compact"
            else:
                m = self.rng.choice([m for m in self.cluster.members if m.is_running()])
                self.member_down = m
                if kind == "member_kill":
                    m.kill()
                else:
                    m.pause()
                self._later(kind, m, 0.3, 2.0)
        if kind in ("writer_kill", "writer_drain"):
            leader = self.leader()
            if leader is None:
                kind = "compact"
            else:
                if kind == "writer_kill":
                    leader.abandon()
                elif not self._off_loop(leader.drain):
                    leader.abandon()  # a drain still runs: crash this one instead
                    kind = "writer_kill"
                self.writers.remove(leader)
                self.new_writer()
        if kind == "replica_swap":
            rid = self.rng.choice(sorted(self.sc.replicas))
            replica = self.sc.replicas.pop(rid)
            replica.close()
            self.n_replicas += 1
            self.sc.replica(f"r{self.n_replicas}", endpoints=self.eps)
        if kind == "compact" and not self._off_loop(self._compact):
            i = self.rng.randrange(len(self.proxies))  # compaction busy: a cheap cut instead
            if i in self.proxy_bad:
                kind = "none"
            else:
                self.proxies[i].cut()
                self.proxy_bad.add(i)
                self._later("proxy", i, 0.2, 1.0)
                kind = "proxy_cut"
        if kind != "none":
            self.faults[kind] += 1


@pytest.mark.cluster
def test_soak(pytestconfig: pytest.Config) -> None:
    """Random writes, reads and faults for RMWATCH_SOAK_SECONDS; every history rule holds."""
    seconds = soak_seconds()
    seed = soak_seed()
    report = pytestconfig.stash.setdefault(SUMMARY_KEY, [])

    def say(line: str) -> None:
        # Printed at the end of the run too: CI shows the seed and counts of a passing soak.
        print(line)
        report.append(line)

    say(f"soak seed={seed} seconds={seconds:g} (replay: RMWATCH_SOAK_SEED={seed})")
    rng = random.Random(seed)
    with ExitStack() as stack:
        cluster = stack.enter_context(EtcdCluster(3))
        proxies = [stack.enter_context(TcpProxy(m.endpoint)) for m in cluster.members]
        eps = [p.endpoint for p in proxies]
        sc = stack.enter_context(Scenario(cluster.endpoints, ROOT))
        writers: list[LibWriter] = []
        chaos = Chaos(rng, cluster, proxies, sc, writers, eps)
        chaos.new_writer()
        chaos.new_writer()
        deadline = time.monotonic() + 10
        while chaos.leader() is None:
            assert time.monotonic() < deadline, "no writer leads"
            time.sleep(0.02)
        sc.fenced_from_now()
        for _ in range(2):
            chaos.n_replicas += 1
            sc.replica(f"r{chaos.n_replicas}", endpoints=eps).wait_ready(10)
        load = WriteLoad(sc.recorder, sc.layout, lambda: [w for w in writers if not w.dead],
                         seed=rng.randrange(1 << 30))  # fmt: skip
        sampler = Sampler(sc.recorder, sc.replicas, load, interval=0.05)
        started = time.monotonic()
        with running(load.run, threads=3), running(sampler.run):
            end = started + seconds
            while time.monotonic() < end:
                chaos.heal_due()
                chaos.inject()
                time.sleep(rng.uniform(FAULT_MIN, FAULT_MAX))
            chaos.wait_slow()
            chaos.heal_due(everything=True)
            cluster.wait_healthy(15)
            deadline = time.monotonic() + 15
            while chaos.leader() is None:
                assert time.monotonic() < deadline, "no writer leads after healing"
                time.sleep(0.05)
            before = load.outcomes["ok"]
            deadline = time.monotonic() + 15
            while load.outcomes["ok"] - before < 20:
                assert time.monotonic() < deadline, f"writes did not resume: {load.outcomes}"
                time.sleep(0.05)
        elapsed = time.monotonic() - started
        # a compaction that failed (etcd busy with another fault) injected nothing
        total = sum(chaos.faults.values()) - 2 * chaos.faults["compact_failed"]
        say(f"soak seed={seed}: {elapsed:.1f}s, {total} fault injections "
              f"{dict(sorted(chaos.faults.items()))}, {sum(chaos.heals.values())} heals "
              f"{dict(sorted(chaos.heals.items()))}")  # fmt: skip
        say(
            f"soak operations: writes {dict(load.outcomes)}; replica reads served "
            f"{sampler.served} (read-your-writes {sampler.ryw}), refused {sampler.refused}"
        )
        stats = sc.finish(30)
        load.close()
        say(f"soak checked: {stats}")
        assert total >= seconds * 1.67, f"only {total} faults in {seconds:g}s"
        assert load.outcomes["ok"] > seconds * 5, "too few acknowledged writes"
