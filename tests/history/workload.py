"""Moving parts of the fault tests: writers (subprocesses or in-process), the write workload
that records every outcome, replica samplers, and the end-of-run check.

Outcome rules of a write sent over HTTP (decided here once, for every test):
- 200: acknowledged, ``X-Revision`` is the commit revision;
- 4xx: refused with a definite answer (validation, conflict, exists...): nothing was written;
- connection refused (``httpx.ConnectError``): the request never left: nothing was written;
- anything else (5xx, a timeout, a reset mid-request): outcome unknown ("maybe").
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from rmwatch.errors import DrainingError, EtcdUnavailableError, NotLeaderError, WriteError
from rmwatch.store import codec
from rmwatch.store.keys import KeyLayout
from rmwatch.store.leadership import Leadership, leader_key
from rmwatch.store.models import ResourceGroup
from rmwatch.store.writer import Writer

from .checker import CheckStats, check_history
from .recorder import UNKNOWN, Recorder, TruthWatcher

REPO = Path(__file__).resolve().parents[2]
API = "/resource-manager/api/v1"
TTL = 2.0  # writer lease TTL in these tests (s)
KEYSPACES = 8
GROUPS = 6


# No preexec_fn (PDEATHSIG) on purpose: a Python-level fork while gRPC threads run can abort
# the child in gRPC's fork handler (seen as etcd members exiting with -6); without preexec_fn
# subprocess uses vfork. Children are killed at interpreter exit instead.
_live: set[WriterProc] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_live):
        proc.close()


def free_port() -> int:
    from harness import free_port as _free  # noqa: PLC0415

    return int(_free())


# ---- writers -----------------------------------------------------------------------------------


class WriterProc:
    """``python -m rmwatch writer`` as a child process (SIGKILL/SIGSTOP-able)."""

    def __init__(self, endpoints: Sequence[str], root_prefix: str, name: str,
                 *, ttl: float = TTL) -> None:  # fmt: skip
        self.endpoints = list(endpoints)
        self.root_prefix = root_prefix
        self.name = name
        self.ttl = ttl
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.mkdtemp(prefix=f"rmwatch-writer-{name}-")) / "writer.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    def start(self, wait: bool = True) -> WriterProc:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "rmwatch", "writer", "--etcd", ",".join(self.endpoints),
               "--listen", f"127.0.0.1:{self.port}", "--name", self.name,
               "--root-prefix", self.root_prefix, "--lease-ttl", str(self.ttl),
               "--etcd-timeout", "2"]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _live.add(self)
        self.paused = False
        if wait:
            self.wait_up()
        return self

    def wait_up(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"writer {self.name} exited:\n{self.log_tail()}")
            if self.health() is not None:
                return
            time.sleep(0.05)
        raise TimeoutError(f"writer {self.name} not up in {timeout}s:\n{self.log_tail()}")

    def health(self) -> dict[str, Any] | None:
        try:
            r = httpx.get(self.url + "/health", timeout=0.5)
            return dict(r.json()) if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: no drain, no resign (the lease expires after the TTL)."""
        if self.proc is not None and self.alive():
            self.proc.kill()
            self.proc.wait(5)
        self.paused = False

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.signal(signal.SIGCONT)
        self.paused = False

    def terminate(self, timeout: float = 15.0) -> int | None:
        """SIGTERM: drain then exit; returns the exit code."""
        if self.proc is None or not self.alive():
            return None
        self.resume()
        self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return None

    def close(self) -> None:
        _live.discard(self)
        if self.proc is not None and self.alive():
            self.resume()
            self.proc.kill()
            self.proc.wait(5)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "<no log>"


class LibWriter:
    """An in-process writer with its own client and leadership; ``abandon()`` is the in-process
    equivalent of SIGKILL (keepalives stop, nothing is resigned, the lease expires)."""

    def __init__(self, endpoints: Sequence[str], root_prefix: str, name: str, *,
                 ttl: float = TTL, timeout: float = 3.0) -> None:  # fmt: skip
        from harness import make_client  # noqa: PLC0415

        self.name = name
        self.client = make_client(list(endpoints), timeout=2)
        self.layout = KeyLayout(root_prefix)
        self.leadership = Leadership(client=self.client, layout=self.layout, name=name,
                                     address=f"http://{name}.invalid", ttl=ttl,
                                     poll_interval=0.05)  # fmt: skip
        self.writer = Writer(client=self.client, layout=self.layout, leadership=self.leadership,
                             timeout=timeout)  # fmt: skip
        self.dead = False

    def start(self) -> LibWriter:
        self.leadership.start()
        return self

    def abandon(self) -> None:
        """Stop campaigning and keepalives without resigning (a crash); refuse further writes."""
        self.dead = True
        self.leadership._stop.set()
        self.writer.begin_drain()

    def drain(self) -> None:
        from rmwatch.store.writer_drain import Drainer  # noqa: PLC0415

        Drainer(self.writer, timeout=5).drain()
        self.dead = True

    def close(self) -> None:
        self.leadership._stop.set()
        if not self.dead:
            with contextlib.suppress(Exception):
                self.leadership.resign()
        with contextlib.suppress(Exception):
            self.client.close()


# ---- the write workload ------------------------------------------------------------------------


class WriteLoad:
    """Writes service limits and groups through writers, recording every outcome.

    ``targets`` is a callable returning the current writers: HTTP base URLs (str) or LibWriter.
    """

    def __init__(self, recorder: Recorder, layout: KeyLayout,
                 targets: Callable[[], Sequence[Any]], *, seed: int = 0,
                 http_timeout: float = 4.0) -> None:  # fmt: skip
        self.recorder = recorder
        self.layout = layout
        self.targets = targets
        self.rng = random.Random(seed)
        self._lock = threading.Lock()
        self._n = 0
        self.outcomes: Counter[str] = Counter()
        self.http = httpx.Client(timeout=http_timeout)
        self.last_acked = 0
        self.failures: list[str] = []  # unexpected failures (for tests that allow none)

    def _next(self) -> int:
        with self._lock:
            self._n += 1
            return self._n

    def _count(self, outcome: str, detail: str = "") -> None:
        with self._lock:
            self.outcomes[outcome] += 1
            if outcome in ("maybe", "not_sent") and detail and len(self.failures) < 50:
                self.failures.append(detail)

    def _ack(self, op: str, key: str, value: Any, revision: int, writer: str,
             epoch: int | None = None) -> None:  # fmt: skip
        self.recorder.write(op, key, value, revision, writer, epoch)
        with self._lock:
            self.last_acked = max(self.last_acked, revision)
        self._count("ok")

    def one(self) -> None:
        """One random write to one random writer."""
        targets = list(self.targets())
        if not targets:
            time.sleep(0.01)
            return
        target = self.rng.choice(targets)
        n = self._next()
        roll = self.rng.random()
        if roll < 0.7:
            ks = self.rng.randint(1, KEYSPACES)
            self._limit(target, ks, n)
        elif roll < 0.85:
            self._add(target, f"g{self.rng.randrange(GROUPS)}", n % 16)
        else:
            self._delete(target, f"g{self.rng.randrange(GROUPS)}")

    def run(self, stop: threading.Event, pause: float = 0.0) -> None:
        while not stop.is_set():
            self.one()
            if pause:
                time.sleep(pause)

    # ---- ops ---------------------------------------------------------------------------------

    def _limit(self, target: Any, ks: int, n: int) -> None:
        key = self.layout.service_limit(ks)
        value = codec.encode_service_limit(float(n))
        if isinstance(target, LibWriter):
            self._lib(target, "set_service_limit", key, value,
                      lambda: target.writer.set_service_limit(ks, n))  # fmt: skip
        else:
            self._post(target, "set_service_limit", key, value, "POST",
                       f"{API}/config/keyspace/service-limit", params={"keyspace_id": ks},
                       json={"service_limit": n})  # fmt: skip

    def _add(self, target: Any, name: str, priority: int) -> None:
        body = {"name": name, "mode": 1, "priority": priority,
                "r_u_settings": {"r_u": {"settings": {"fill_rate": 100 + priority}}}}  # fmt: skip
        group = ResourceGroup.model_validate(body)
        key = self.layout.settings(name)
        value = codec.encode_settings(group, base=b"")
        if isinstance(target, LibWriter):
            self._lib(target, "add_group", key, value, lambda: target.writer.add_group(group))
        else:
            self._post(target, "add_group", key, value, "POST", f"{API}/config/group",
                       json=body)  # fmt: skip

    def _delete(self, target: Any, name: str) -> None:
        key = self.layout.settings(name)
        if isinstance(target, LibWriter):
            self._lib(target, "delete_group", key, None,
                      lambda: target.writer.delete_group(name))  # fmt: skip
        else:
            self._post(target, "delete_group", key, None, "DELETE",
                       f"{API}/config/group/{name}")  # fmt: skip

    def _lib(self, target: LibWriter, op: str, key: str, value: Any,
             call: Callable[[], int]) -> None:  # fmt: skip
        if target.dead:
            return
        before = target.leadership.epoch
        try:
            revision = call()
        except (NotLeaderError, DrainingError):
            self._count("not_leader")
            time.sleep(0.01)
            return
        except EtcdUnavailableError as exc:
            self.recorder.maybe(op, key, value, target.name)
            self._count("maybe", f"{target.name} {op} {key}: {exc}")
            return
        except WriteError:
            self._count("refused")
            return
        except Exception as exc:  # any other error: outcome unknown
            self.recorder.maybe(op, key, value, target.name)
            self._count("maybe", f"{target.name} {op} {key}: {exc!r}")
            return
        after = target.leadership.epoch
        epoch = before if before is not None and before == after else None
        self._ack(op, key, value, revision, target.name, epoch)

    def _post(self, url: str, op: str, key: str, value: Any, method: str, path: str,
              **kwargs: Any) -> None:  # fmt: skip
        try:
            r = self.http.request(method, url + path, **kwargs)
        except httpx.ConnectError:
            self._count("not_sent")
            time.sleep(0.02)
            return
        except httpx.HTTPError as exc:
            self.recorder.maybe(op, key, value, url)
            self._count("maybe", f"{url} {op} {key}: {exc!r}")
            return
        if r.status_code == 200:
            self._ack(op, key, value, int(r.headers["x-revision"]), url)
        elif 400 <= r.status_code < 500:
            self._count("refused")
        else:
            self.recorder.maybe(op, key, value, url)
            self._count("maybe", f"{url} {op} {key}: {r.status_code} {r.text[:200]}")

    def close(self) -> None:
        self.http.close()


@contextmanager
def running(fn: Callable[[threading.Event], None], threads: int = 1) -> Iterator[threading.Event]:
    """Run ``fn(stop)`` in ``threads`` threads until the block ends."""
    stop = threading.Event()
    workers = [threading.Thread(target=fn, args=(stop,), daemon=True) for _ in range(threads)]
    for t in workers:
        t.start()
    try:
        yield stop
    finally:
        stop.set()
        for t in workers:
            t.join(30)


# ---- replicas ----------------------------------------------------------------------------------


def new_replica(endpoints: Sequence[str], root_prefix: str, **kwargs: Any) -> Any:
    from rmwatch.watcher.replica import Replica  # noqa: PLC0415

    options: dict[str, Any] = {"progress_interval": 0.3, "stall_timeout": 2.0}
    options.update(kwargs)
    return Replica(endpoints=list(endpoints), root_prefix=root_prefix, **options).start()


class Sampler:
    """Samples every live replica every ``interval`` s: plain reads and, every other round,
    read-your-writes reads (``min_revision`` = the last acknowledged revision)."""

    def __init__(self, recorder: Recorder, replicas: dict[str, Any], load: WriteLoad | None,
                 *, interval: float = 0.05, extra: int | None = None) -> None:  # fmt: skip
        self.recorder = recorder
        self.replicas = replicas  # id -> Replica; tests add and remove entries while running
        self.load = load
        self.interval = interval
        self.served = 0
        self.refused = 0
        self.ryw = 0
        self.extra = extra

    def run(self, stop: threading.Event) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            for rid, replica in list(self.replicas.items()):
                want = self.load.last_acked if (self.load and i % 2 == 0) else None
                rev = self.recorder.sample(rid, replica, min_revision=want or None, timeout=2.0,
                                           extra=self.extra)  # fmt: skip
                if rev is None:
                    self.refused += 1
                else:
                    self.served += 1
                    self.ryw += 1 if want else 0
            stop.wait(self.interval)


# ---- the whole scenario --------------------------------------------------------------------------


class Scenario:
    """Truth watcher + recorder for one root prefix; ``finish()`` runs every rule."""

    def __init__(self, endpoints: Sequence[str], root_prefix: str) -> None:
        self.endpoints = list(endpoints)
        self.root_prefix = root_prefix
        self.layout = KeyLayout(root_prefix)
        self.truth = TruthWatcher(self.endpoints, root_prefix).start()
        self.recorder = Recorder(self.truth, self.layout.prefix, leader_key(self.layout))
        self.replicas: dict[str, Any] = {}
        self._closers: list[Callable[[], None]] = []

    def fenced_from_now(self) -> None:
        """Every metadata change from now on must be committed under a leader."""
        assert self.truth.log is not None
        self.recorder.fenced_from = self.truth.sync()

    def replica(self, rid: str, endpoints: Sequence[str] | None = None, **kwargs: Any) -> Any:
        replica = new_replica(endpoints or self.endpoints, self.root_prefix, **kwargs)
        self.recorder.attach(rid, replica)
        self.replicas[rid] = replica
        self._closers.append(replica.close)
        return replica

    def on_close(self, fn: Callable[[], None]) -> None:
        self._closers.append(fn)

    def last_data_revision(self, upto: int) -> int:
        log = self.truth.log
        assert log is not None
        revs = [e.revision for e in log.events
                if e.key.startswith(self.layout.prefix) and e.revision <= upto]  # fmt: skip
        return max(revs, default=log.start_revision)

    def finish(self, timeout: float = 20.0, *, replicas: dict[str, Any] | None = None
               ) -> CheckStats:  # fmt: skip
        """Sync, let every replica catch up, record finals, run every rule."""
        synced = self.truth.sync(timeout)
        target = self.last_data_revision(synced)
        for rid, replica in (replicas if replicas is not None else self.replicas).items():
            try:
                replica.wait_for_revision(target, timeout)
                replica.wait_ready(timeout)
            except Exception as exc:
                raise AssertionError(
                    f"replica {rid} did not reach revision {target} (at {replica.revision}, "
                    f"{replica.state}): {exc}\ntransitions: "
                    f"{[t.cause for t in replica.transitions()][-8:]}"
                ) from exc
            self.recorder.sample(rid, replica)
            self.recorder.final_replica(rid, replica)
        self.recorder.final_etcd()
        stats = check_history(self.recorder.history())
        print(f"history checked: {stats}")
        return stats

    def close(self) -> None:
        for fn in reversed(self._closers):
            with contextlib.suppress(Exception):
                fn()
        self.truth.close()

    def __enter__(self) -> Scenario:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def causes(replica: Any) -> list[str]:
    return [f"{t.target}: {t.cause}" for t in replica.transitions()]


__all__ = [
    "API",
    "TTL",
    "UNKNOWN",
    "LibWriter",
    "Sampler",
    "Scenario",
    "WriteLoad",
    "WriterProc",
    "causes",
    "new_replica",
    "running",
]
