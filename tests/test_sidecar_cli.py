"""``rmwatch replica``: settings from env and flags, and a SIGTERM drain of the real process
that fails no accepted request."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import free_port, put_group, wait_until
from pydantic import ValidationError
from sidecar_support import API

from rmwatch.cli.main import build_parser
from rmwatch.cli.replica import settings_from_args
from rmwatch.cli.writer import settings_from_args as writer_settings
from rmwatch.grpc.metastorage import DEFAULT_PROGRESS_INTERVAL
from rmwatch.store.keys import KeyLayout
from rmwatch.watcher.history import DEFAULT_MAX_BYTES, DEFAULT_MAX_EVENTS
from rmwatch.watcher.watch_stream import DEFAULT_MAX_BUFFER

REPO = Path(__file__).resolve().parent.parent


class TestSettings:
    """pydantic-settings: RMWATCH_* environment first, flags on top."""

    def test_flags_override_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A flag wins over its env var; an env var wins over the default."""
        monkeypatch.setenv("RMWATCH_MAX_STALENESS", "7")
        monkeypatch.setenv("RMWATCH_FORWARD", "false")
        monkeypatch.setenv("RMWATCH_WRITER_URL", "http://w:1")
        monkeypatch.setenv("RMWATCH_LISTEN", "0.0.0.0:9000")
        args = build_parser().parse_args(["replica", "--max-staleness", "3", "--etcd", "e:2379"])
        settings = settings_from_args(args)
        assert settings.max_staleness == 3.0
        assert settings.forward is False
        assert settings.writer_url == "http://w:1"
        assert settings.etcd == "e:2379"
        assert settings.host_port() == ("0.0.0.0", 9000)
        assert settings.min_revision_timeout == 5.0
        again = settings_from_args(build_parser().parse_args(["replica", "--forward"]))
        assert again.forward is True

    def test_body_cache_budget(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """96 MiB by default, ``--body-cache-mib`` or RMWATCH_BODY_CACHE_MIB otherwise; a
        negative budget is refused."""
        default = settings_from_args(build_parser().parse_args(["replica"]))
        assert default.body_cache_mib == 96.0
        monkeypatch.setenv("RMWATCH_BODY_CACHE_MIB", "8")
        assert settings_from_args(build_parser().parse_args(["replica"])).body_cache_mib == 8.0
        flag = build_parser().parse_args(["replica", "--body-cache-mib", "0.5"])
        assert settings_from_args(flag).body_cache_mib == 0.5
        with pytest.raises(ValueError, match="body_cache_mib"):
            settings_from_args(build_parser().parse_args(["replica", "--body-cache-mib", "-1"]))

    def test_grpc_options(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """gRPC is off by default; RMWATCH_GRPC_LISTEN turns it on, --grpc-listen wins, and
        the watch options have their defaults until given."""
        assert settings_from_args(build_parser().parse_args(["replica"])).grpc_listen is None
        monkeypatch.setenv("RMWATCH_GRPC_LISTEN", ":50051")
        from_env = settings_from_args(build_parser().parse_args(["replica"]))
        assert from_env.grpc_listen_address() == "0.0.0.0:50051"
        assert from_env.grpc_history_events == DEFAULT_MAX_EVENTS
        assert from_env.grpc_history_bytes == DEFAULT_MAX_BYTES
        assert from_env.grpc_watch_buffer == DEFAULT_MAX_BUFFER
        assert from_env.grpc_progress_interval == DEFAULT_PROGRESS_INTERVAL
        args = build_parser().parse_args(
            ["replica", "--grpc-listen", "127.0.0.1:7000", "--grpc-history-events", "50",
             "--grpc-history-bytes", "4096", "--grpc-watch-buffer", "8",
             "--grpc-progress-interval", "0.5"]
        )  # fmt: skip
        flags = settings_from_args(args)
        assert flags.grpc_listen_address() == "127.0.0.1:7000"
        assert (flags.grpc_history_events, flags.grpc_history_bytes) == (50, 4096)
        assert (flags.grpc_watch_buffer, flags.grpc_progress_interval) == (8, 0.5)

    def test_bad_grpc_options_are_refused(self) -> None:
        """A --grpc-listen without a port, or a zero watch buffer, is a clear error."""
        args = build_parser().parse_args(["replica", "--grpc-listen", "localhost"])
        with pytest.raises(ValueError, match="--grpc-listen 'localhost' must be HOST:PORT"):
            settings_from_args(args).grpc_listen_address()
        with pytest.raises(ValidationError, match="grpc_watch_buffer"):
            settings_from_args(build_parser().parse_args(["replica", "--grpc-watch-buffer", "0"]))

    def test_writer_grpc_options(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The writer shares RMWATCH_GRPC_LISTEN; it advertises its bound gRPC address to the
        other writers unless --grpc-advertise names another."""
        monkeypatch.setenv("RMWATCH_GRPC_LISTEN", "0.0.0.0:50052")
        settings = writer_settings(build_parser().parse_args(["writer"]))
        assert settings.grpc_listen_address() == "0.0.0.0:50052"
        assert settings.grpc_address("127.0.0.1:50052") == "127.0.0.1:50052"
        advertised = writer_settings(
            build_parser().parse_args(["writer", "--grpc-advertise", "w1.example:50052"])
        )
        assert advertised.grpc_address("127.0.0.1:50052") == "w1.example:50052"


class _Traffic:
    """Client threads issuing GETs until stopped, classifying every outcome."""

    def __init__(self, base: str, path: str, threads: int = 4) -> None:
        self.base = base
        self.path = path
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.signalled = threading.Event()
        self.ok = 0
        self.ok_after_signal = 0
        self.refused = 0  # connection refused: never accepted
        self.dropped: list[str] = []  # connection closed before any response
        self.failures: list[str] = []  # a response that is not the data
        self.responses = 0
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(10)

    def count_response(self) -> None:
        with self.lock:
            self.responses += 1

    def _loop(self) -> None:
        with httpx.Client(base_url=self.base, timeout=10) as client:
            while not self.stop.is_set():
                try:
                    response = client.get(self.path)
                except httpx.ConnectError:
                    with self.lock:
                        self.refused += 1
                    time.sleep(0.01)
                    continue
                except httpx.TransportError as exc:
                    with self.lock:
                        self.dropped.append(repr(exc))
                    continue
                with self.lock:
                    self.responses += 1
                    if response.status_code == 200 and response.json().get("name") == "g":
                        self.ok += 1
                        if self.signalled.is_set():
                            self.ok_after_signal += 1
                    else:
                        self.failures.append(f"{response.status_code} {response.text[:200]}")


class TestSigtermDrain:
    """SIGTERM: /ready turns 503, requests keep being served, in-flight ones finish, exit 0."""

    def test_sigterm_drains_without_failing_an_accepted_request(
        self, etcd_endpoints: list[str], root_prefix: str, etcd_client: Any, tmp_path: Path
    ) -> None:
        """Under steady GET traffic, SIGTERM fails no request the server accepted; exit 0."""
        put_group(etcd_client, KeyLayout(root_prefix), "g")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log_path = tmp_path / "sidecar.log"
        command = [sys.executable, "-m", "rmwatch", "replica",
                   "--etcd", ",".join(etcd_endpoints), "--listen", f"127.0.0.1:{port}",
                   "--root-prefix", root_prefix,
                   "--drain-seconds", "1", "--no-forward"]  # fmt: skip
        traffic = _Traffic(base, f"{API}/config/group/g")
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(command, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)
            try:
                with httpx.Client(base_url=base, timeout=5) as probe:

                    def ready() -> bool:
                        try:
                            status = probe.get("/ready").status_code
                        except httpx.TransportError:
                            return False
                        traffic.count_response()
                        return status == 200

                    wait_until(ready, 20, "the sidecar to be ready")
                    traffic.start()
                    time.sleep(0.5)
                    traffic.signalled.set()
                    proc.send_signal(signal.SIGTERM)
                    seen_503 = False
                    deadline = time.monotonic() + 0.8  # inside the 1 s drain window
                    while time.monotonic() < deadline and not seen_503:
                        response = probe.get("/ready", headers={"connection": "close"})
                        traffic.count_response()
                        seen_503 = response.status_code == 503
                exit_code = proc.wait(20)
            finally:
                traffic.finish()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        events = [json.loads(line) for line in log_path.read_text().splitlines()
                  if line.startswith("{")]  # fmt: skip
        stopped = [e for e in events if e.get("event") == "sidecar_stopped"]
        assert exit_code == 0, log_path.read_text()[-2000:]
        assert seen_503, "/ready did not turn 503 during the drain"
        assert traffic.failures == []
        assert traffic.ok > 0
        assert traffic.ok_after_signal > 0, "requests must still be served while draining"
        (stopped_event,) = stopped
        # Every request the app accepted was answered, and every answer reached a client:
        # so whatever was refused or dropped at the socket was never accepted.
        assert stopped_event["requests_started"] == stopped_event["requests_completed"]
        assert stopped_event["requests_completed"] == traffic.responses, (
            f"server answered {stopped_event['requests_completed']}, clients received "
            f"{traffic.responses}; refused {traffic.refused}, dropped {traffic.dropped[:5]}"
        )
