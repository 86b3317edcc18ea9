"""Forwarding, drain and SIGTERM over real HTTP: no write failed, no write lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from harness import free_port
from pydantic import SecretStr
from writer_support import WriterNode, nodes, raw_get

from rmwatch.http.writer_app import PREFIX, create_writer_app
from rmwatch.store.keys import KeyLayout
from rmwatch.store.leadership import read_leader

REPO = Path(__file__).resolve().parent.parent


def check_acked(node: WriterNode, acked: dict[int, int]) -> None:
    """Every acknowledged (keyspace -> revision) write is in etcd, at exactly that revision."""
    for ks, rev in acked.items():
        value, meta = node.client.get(node.layout.service_limit(ks), revision=rev)
        assert value == str(ks).encode(), f"keyspace {ks} missing at revision {rev}"
        assert int(meta.mod_revision) == rev
        assert raw_get(node.client, node.layout.service_limit(ks)) == (str(ks).encode(), rev)


class TestForwarding:
    """A follower forwards writes to the leader and returns its answer unchanged."""

    def test_follower_forwards(self, etcd_endpoints: list[str], root_prefix: str) -> None:
        """A write sent to the follower is committed by the leader; X-Revision matches etcd."""
        a = WriterNode(etcd_endpoints, root_prefix, name="a").start()
        b = WriterNode(etcd_endpoints, root_prefix, name="b").start(wait_leader=False)
        with nodes(a, b):
            a.serve(create_writer_app(a.writer, token=SecretStr("t")))
            b.serve(create_writer_app(b.writer, token=SecretStr("t")))
            r = httpx.post(f"{b.address}{PREFIX}/config/keyspace/service-limit",
                           params={"keyspace_id": 5}, json={"service_limit": 5},
                           headers={"Authorization": "Bearer t"})  # fmt: skip
            assert r.status_code == 200, r.text
            assert r.text == "Success!"
            check_acked(a, {5: int(r.headers["X-Revision"])})
            metrics = httpx.get(f"{b.address}/metrics").text
            assert 'rmwatch_writer_forwarded_total{outcome="ok"} 1.0' in metrics
            r = httpx.post(
                f"{b.address}{PREFIX}/config/keyspace/service-limit",
                json={"service_limit": 5},
                headers={"Authorization": "Bearer x"},
            )
            assert r.status_code == 401

    def test_no_leader_is_503(self, etcd_endpoints: list[str], root_prefix: str) -> None:
        """With no leader anywhere, a write is answered 503 after the bounded wait."""
        a = WriterNode(etcd_endpoints, root_prefix, name="a").start()
        with nodes(a):
            a.serve(create_writer_app(a.writer, token=None, forward_wait=0.5))
            assert a.leadership is not None
            a.leadership.resign()
            started = time.monotonic()
            r = httpx.post(f"{a.address}{PREFIX}/config/keyspace/service-limit",
                           json={"service_limit": 1}, timeout=10)  # fmt: skip
            assert r.status_code == 503
            assert "no leader" in r.text
            assert time.monotonic() - started < 3


class TestDrain:
    """Drain under continuous writes: 0 failed, 0 lost, leadership handed over."""

    def test_drain_under_load(self, etcd_endpoints: list[str], root_prefix: str) -> None:
        """Writes sent only to the draining writer all succeed and are all in etcd."""
        a = WriterNode(etcd_endpoints, root_prefix, name="a").start()
        b = WriterNode(etcd_endpoints, root_prefix, name="b").start(wait_leader=False)
        with nodes(a, b):
            a.serve(create_writer_app(a.writer, token=None))
            b.serve(create_writer_app(b.writer, token=None))
            acked: dict[int, int] = {}
            failed: list[str] = []
            stop = threading.Event()
            lock = threading.Lock()
            counter = iter(range(1, 1_000_000))

            def client_loop() -> None:
                with httpx.Client(base_url=a.address + PREFIX, timeout=15) as http:
                    while not stop.is_set():
                        with lock:
                            ks = next(counter)
                        r = http.post(
                            "/config/keyspace/service-limit",
                            params={"keyspace_id": ks},
                            json={"service_limit": ks},
                        )
                        if r.status_code == 200:
                            with lock:
                                acked[ks] = int(r.headers["X-Revision"])
                        else:
                            failed.append(f"{ks}: {r.status_code} {r.text}")

            threads = [threading.Thread(target=client_loop) for _ in range(4)]
            for t in threads:
                t.start()
            # Writes acknowledged before the drain: on a loaded 2-core machine the first ones
            # can take more than the 0.5 s this waits at least, so wait (up to 10 s) for some.
            time.sleep(0.5)
            waited_until = time.monotonic() + 10
            while not acked and time.monotonic() < waited_until:
                time.sleep(0.05)
            before = len(acked)
            r = httpx.post(f"{a.address}/admin/drain", timeout=15)
            assert r.status_code == 200
            assert r.json()["draining"] is True
            time.sleep(0.7)
            stop.set()
            for t in threads:
                t.join()
            status = httpx.get(f"{a.address}/admin/drain").json()
            assert status == {"draining": True, "in_flight": 0, "leader": False}
            assert b.leadership is not None
            assert b.leadership.is_leader
            assert failed == []
            assert before > 0
            assert len(acked) > before  # writes after the drain went through (forwarded)
            check_acked(a, acked)


class TestSigterm:
    """``rmwatch writer`` drains on SIGTERM and exits 0; the follower takes over at once."""

    def test_cli_sigterm(self, etcd_endpoints: list[str], root_prefix: str, tmp_path: Path
                         ) -> None:  # fmt: skip
        """SIGTERM: exit status 0, leader key handed to the in-process follower within 2 s."""
        port = free_port()
        token_file = tmp_path / "token"
        token_file.write_text("tok\n")
        env = {**os.environ, "PYTHONPATH": str(REPO), "RMWATCH_ROOT_PREFIX": root_prefix,
               "RMWATCH_LEASE_TTL": "2"}  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-m", "rmwatch", "writer", "--etcd", ",".join(etcd_endpoints),
             "--listen", f"127.0.0.1:{port}", "--name", "cli", "--token-file", str(token_file)],
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{url}/health").json()["leader"]:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            else:
                raise AssertionError("CLI writer did not lead within 15 s")
            r = httpx.post(
                f"{url}{PREFIX}/config/keyspace/service-limit",
                json={"service_limit": 3},
                headers={"Authorization": "Bearer tok"},
            )
            assert r.status_code == 200
            b = WriterNode(etcd_endpoints, root_prefix, name="b").start(wait_leader=False)
            with nodes(b):
                assert b.leadership is not None
                proc.send_signal(signal.SIGTERM)
                assert b.leadership.wait_until_leader(2.0)
                assert proc.wait(10) == 0
                info = read_leader(b.client, KeyLayout(root_prefix))
                assert info is not None
                assert info.name == "b"
            stderr = proc.stderr.read().decode() if proc.stderr else ""
            # The drain logs through the library's stdlib logger; how the line is rendered
            # (JSON or console) is the CLI's logging setup, tested with the CLI.
            assert "drain_finished" in stderr
            assert "tok" not in stderr.replace("token", "")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
