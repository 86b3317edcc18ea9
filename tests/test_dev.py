"""`rmwatch dev` used as a new user would: a subprocess, then HTTP only."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import httpx
from harness import free_ports

API = "/resource-manager/api/v1"


class TestDev:
    def test_dev_starts_everything_serves_read_your_writes_and_stops_on_ctrl_c(self) -> None:
        """The printed URLs work: a group POSTed to the writer is read back from the replica
        with min_revision, /status shows SERVING, and SIGINT stops every process cleanly."""
        etcd_port, writer_port, replica_port = free_ports(3)
        proc = subprocess.Popen(
            [sys.executable, "-m", "rmwatch", "dev", "--etcd-port", str(etcd_port),
             "--writer-port", str(writer_port), "--replica-port", str(replica_port)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        banner: list[str] = []
        try:
            deadline = time.monotonic() + 60
            while not any("Ctrl-C stops everything" in line for line in banner):
                assert time.monotonic() < deadline, "".join(banner)
                line = proc.stdout.readline()
                assert line, f"rmwatch dev exited early: {''.join(banner)}"
                banner.append(line)
            text = "".join(banner)
            writer = re.search(r"writer\s+(http://\S+)", text)
            replica = re.search(r"replica\s+(http://\S+)", text)
            assert writer is not None
            assert replica is not None
            assert "curl" in text
            body = {"name": "from-test", "mode": 1, "priority": 3}
            created = httpx.post(f"{writer.group(1)}{API}/config/group", json=body, timeout=10)
            assert created.status_code == 200
            revision = int(created.headers["X-Revision"])
            read = httpx.get(
                f"{replica.group(1)}{API}/config/group/from-test",
                params={"min_revision": revision},
                timeout=10,
            )
            assert read.status_code == 200
            assert read.json()["priority"] == 3
            assert int(read.headers["X-Revision"]) >= revision
            default = httpx.get(f"{replica.group(1)}{API}/config/group/default", timeout=10)
            assert default.json()["r_u_settings"]["r_u"]["settings"]["fill_rate"] == 2147483647
            assert httpx.get(f"{replica.group(1)}/status", timeout=10).json()["state"] == "SERVING"
        finally:
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert "rmwatch dev: stopped" in out
