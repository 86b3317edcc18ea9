"""One real etcd process on loopback, with process control for destructive tests."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from .client import make_client
from .locate import find_etcd_binary
from .ports import LOOPBACK, free_ports

# Single member: 10 ms heartbeat / 50 ms election makes startup ~0.2 s instead of ~1 s
# (etcd's defaults are 100/1000).  Clusters use 50/500: with 2 cores and three members
# plus pytest, 10/50 causes spurious elections whenever the box is busy.
SINGLE_HEARTBEAT_MS = 10
SINGLE_ELECTION_MS = 50
CLUSTER_HEARTBEAT_MS = 50
CLUSTER_ELECTION_MS = 500

# Generous: a 3-member cluster on a loaded 2-core box usually settles in < 2 s.
DEFAULT_START_TIMEOUT = 15.0
# SIGTERM grace period before SIGKILL; etcd normally exits within ~100 ms.
STOP_GRACE_SECONDS = 5.0
# Each health probe's own RPC deadline; short so a dead probe does not eat the budget.
PROBE_RPC_TIMEOUT = 1.0


# Every member with a live process, so an interpreter exit never leaks etcd processes.
_live: set[EtcdMember] = set()
_live_lock = threading.Lock()


def _kill_leftovers() -> None:
    with _live_lock:
        members = list(_live)
    for member in members:
        member.kill()


atexit.register(_kill_leftovers)


class EtcdStartError(RuntimeError):
    """etcd did not become healthy; the message carries its log tail."""


class EtcdMember:
    """One etcd server process with its own temp data dir and loopback ports.

    Use as a context manager or call ``start()`` / ``close()``.  ``stop()`` keeps the
    data dir so ``restart()`` can resume; ``close()`` stops and deletes it.
    """

    def __init__(
        self,
        name: str = "m0",
        *,
        binary: str | None = None,
        client_port: int | None = None,
        peer_port: int | None = None,
        initial_cluster: str | None = None,
        cluster_token: str | None = None,
        heartbeat_ms: int = SINGLE_HEARTBEAT_MS,
        election_ms: int = SINGLE_ELECTION_MS,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        client_scheme: str = "http",
        extra_args: Sequence[str] = (),
        probe: Callable[[EtcdMember], None] | None = None,
    ) -> None:
        """``client_scheme="https"`` serves clients over TLS (give ``--cert-file`` etc. in
        ``extra_args``, which are appended to the command line); ``probe(member)`` replaces
        the default health probe (a plain-text linearizable get), e.g. with a TLS client."""
        if client_scheme not in ("http", "https"):
            raise ValueError(f"client_scheme must be http or https, not {client_scheme!r}")
        self.client_scheme = client_scheme
        self.extra_args = list(extra_args)
        self.probe = probe
        self.name = name
        self.binary = binary or find_etcd_binary()
        if client_port is None or peer_port is None:
            client_port, peer_port = free_ports(2)
        self.client_port = client_port
        self.peer_port = peer_port
        self.initial_cluster = initial_cluster or f"{name}={self.peer_url}"
        self.cluster_token = cluster_token or f"rmwatch-{uuid.uuid4().hex[:12]}"
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.start_timeout = start_timeout
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"rmwatch-etcd-{name}-"))
        self.data_dir = self.tmpdir / "data"
        self.log_path = self.tmpdir / "etcd.log"
        # Backstop for callers that never reach close(): delete the dir at GC/exit.
        self._rm_tmpdir = weakref.finalize(self, shutil.rmtree, str(self.tmpdir), True)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._started_once = False
        self._paused = False

    # -- addresses -------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """``127.0.0.1:PORT`` as pyetcd/make_client expects."""
        return f"{LOOPBACK}:{self.client_port}"

    @property
    def client_url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` with TLS) for etcdctl-style consumers."""
        return f"{self.client_scheme}://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        """Raft peer URL other members dial."""
        return f"http://{LOOPBACK}:{self.peer_port}"

    @property
    def pid(self) -> int | None:
        """PID of the running process, or None when not started / exited."""
        return self._proc.pid if self.is_running() and self._proc is not None else None

    # -- lifecycle -------------------------------------------------------------------
    def _command(self, state: str) -> list[str]:
        return [
            self.binary,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={self.initial_cluster}",
            f"--initial-cluster-state={state}",
            f"--initial-cluster-token={self.cluster_token}",
            f"--heartbeat-interval={self.heartbeat_ms}",
            f"--election-timeout={self.election_ms}",
            # Both 3.4 and 3.5 accept these; 3.4 would otherwise log via capnslog at INFO.
            "--logger=zap",
            "--log-level=error",
            *self.extra_args,
        ]

    def spawn(self) -> None:
        """Launch the process without waiting for health (clusters spawn all, then wait)."""
        if self.is_running():
            return
        # After the first start the data dir holds the membership; etcd then ignores the
        # --initial-* flags, but `existing` states the intent and is accepted by 3.4/3.5.
        state = "existing" if self._started_once else "new"
        if self._log_file is None:
            self._log_file = self.log_path.open("ab")
        self._log_file.write(f"--- spawn ({state}) at {time.time():.3f}\n".encode())
        self._log_file.flush()
        # No preexec_fn: it forces fork() (not vfork/posix_spawn) while gRPC's threads run,
        # and the child then aborted in gRPC's fork handler ("cv_word == nullptr", exit -6)
        # in the fault soak. Leftover members are killed at interpreter exit instead.
        self._proc = subprocess.Popen(
            self._command(state),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        self._started_once = True
        self._paused = False
        with _live_lock:
            _live.add(self)

    def wait_healthy(self, timeout: float | None = None) -> None:
        """Block until a linearizable get succeeds via this member, or raise EtcdStartError."""
        deadline = time.monotonic() + (self.start_timeout if timeout is None else timeout)
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            if not self.is_running():
                raise EtcdStartError(
                    f"etcd {self.name} exited with {self.returncode} before becoming healthy\n"
                    f"{self.log_tail()}"
                )
            if not self._port_open():
                time.sleep(0.02)
                continue
            # A fresh client per probe: a reused gRPC channel backs off >= 1 s after a
            # failed connect, which would triple cluster start time.
            try:
                if self.probe is not None:
                    self.probe(self)
                else:
                    with make_client([self.endpoint], timeout=PROBE_RPC_TIMEOUT, time_retry=0) as c:
                        c.get(b"/__rmwatch_harness_health__")
                return
            except Exception as exc:  # any failure just means "not healthy yet"
                last_error = exc
                time.sleep(0.05)
        raise EtcdStartError(
            f"etcd {self.name} at {self.endpoint} not healthy after "
            f"{self.start_timeout if timeout is None else timeout:.1f}s "
            f"(last error: {last_error!r})\n{self.log_tail()}"
        )

    def _port_open(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            return sock.connect_ex((LOOPBACK, self.client_port)) == 0

    def start(self, timeout: float | None = None) -> Self:
        """Spawn and wait until healthy."""
        self.spawn()
        self.wait_healthy(timeout)
        return self

    def restart(self, timeout: float | None = None) -> Self:
        """Start again on the same data dir and ports (stopping first if still running)."""
        self.stop()
        return self.start(timeout)

    def _reap(self) -> None:
        with _live_lock:
            _live.discard(self)
        self._paused = False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s.  Idempotent; keeps the data dir."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._reap()
            return
        proc.terminate()
        # A SIGSTOPped process only acts on SIGTERM once continued.
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        try:
            proc.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._reap()

    def kill(self) -> None:
        """SIGKILL (works on a paused process too) and wait for the exit."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self._reap()

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets but answers nothing (a hung member)."""
        if self._proc is None or not self.is_running():
            raise RuntimeError(f"etcd {self.name} is not running")
        self._proc.send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT a paused member."""
        if self._proc is not None and self.is_running():
            self._proc.send_signal(signal.SIGCONT)
        self._paused = False

    def close(self) -> None:
        """Kill the process and delete the temp dir (data + log).

        SIGKILL rather than stop(): the data is deleted right after, so a graceful
        shutdown buys nothing and can cost seconds in a cluster losing quorum.
        """
        self.kill()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self._rm_tmpdir()

    # -- state -----------------------------------------------------------------------
    def is_running(self) -> bool:
        """True while the process exists (a paused process counts as running)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def is_paused(self) -> bool:
        """True between ``pause()`` and ``resume()``."""
        return self._paused and self.is_running()

    @property
    def returncode(self) -> int | None:
        """Exit code of the last process, None while running or never started."""
        return None if self._proc is None else self._proc.poll()

    def log_tail(self, n: int = 40) -> str:
        """Last ``n`` lines of the etcd log, for failure messages."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "<no etcd log>"
        return "\n".join(lines[-n:])

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

    def __repr__(self) -> str:
        state = "paused" if self.is_paused else "running" if self.is_running() else "stopped"
        return f"EtcdMember({self.name!r}, {self.endpoint}, {state})"
