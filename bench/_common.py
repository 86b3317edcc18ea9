"""What every figure shares: the etcd member, realistic group values and how they are written,
clients, the product's processes, and the machine's description.

Only bench code: nothing here is imported by the product.
"""

from __future__ import annotations

import platform
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))  # the test harness: EtcdMember, make_client

from harness import EtcdMember, etcd_version, free_port, make_client  # noqa: E402

from rmwatch.store.codec import encode_settings  # noqa: E402
from rmwatch.store.etcd import EtcdConfig, connect, txn  # noqa: E402
from rmwatch.store.keys import KeyLayout  # noqa: E402
from rmwatch.store.models import ResourceGroup  # noqa: E402

__all__ = [
    "OURS_ROOT",
    "RAW_ROOT",
    "ROOT",
    "EtcdMember",
    "Population",
    "bulk_put",
    "compact_client",
    "connect_to",
    "cpu_model",
    "current_revision",
    "etcd_version",
    "free_port",
    "group_model",
    "group_name",
    "group_value",
    "log",
    "make_client",
    "spawn",
    "stop",
]

# The replica's root prefix, and the raw consumers' one: the same keys and values under two
# prefixes, so a raw rep never feeds the replica's watch and vice versa.
OURS_ROOT = "/bench/"
RAW_ROOT = "/rawside/"
TXN_OPS = 100  # puts per bulk-load transaction (etcd's --max-txn-ops default is 128)
_JOB_TYPES = ["br", "lightning", "ddl", "stats", "analyze", "import_into"]


def log(message: str) -> None:
    """One progress line on stdout, flushed (a run takes minutes)."""
    print(message, flush=True)


# ---- data ------------------------------------------------------------------------------------


def group_name(i: int) -> str:
    """A PD-like group name (28 bytes; PD allows up to 32)."""
    return f"tenant-{i:07d}-oltp-prod-ap1"


def group_model(i: int, variant: int = 0) -> ResourceGroup:
    """A realistic RU-mode group: token bucket, priority, RU stats, and for some groups
    runaway settings, background settings and raw-resource buckets (~300 B encoded)."""
    v = i * 7 + variant * 1_000_003
    data: dict[str, Any] = {
        "name": group_name(i),
        "mode": 1,
        "priority": (v % 17),
        "r_u_settings": {
            "r_u": {
                "settings": {
                    "fill_rate": 1000 + v % 900_000,
                    "burst_limit": -1 if v % 3 == 0 else 2000 + v % 1_000_000,
                    "max_tokens": 1e6 + v * 0.5,
                },
                "tokens": 123456.5 + v,
            }
        },
        "RUStats": {
            "r_r_u": 1234.5 + v,
            "w_r_u": 567.25 + v,
            "read_bytes": 1.5e9 + v,
            "write_bytes": 2.5e8 + v,
            "total_cpu_time_ms": 98765.125 + v,
            "sql_layer_cpu_time_ms": 4321.0625 + v,
            "kv_read_rpc_count": 1e6 + v,
            "kv_write_rpc_count": 5e5 + v,
        },
    }
    if i % 4 != 3:
        data["runaway_settings"] = {
            "rule": {"exec_elapsed_time_ms": 60000 + v % 1000, "processed_keys": 100000,
                     "request_unit": 5000 + v % 100},
            "action": 4 if i % 4 == 0 else 2,
            "watch": {"lasting_duration_ms": 600000, "type": 1 + i % 3},
            "switch_group_name": f"tenant-{i:07d}-fallback" if i % 2 == 0 else "",
        }  # fmt: skip
    if i % 2 == 0:
        data["background_settings"] = {"job_types": _JOB_TYPES, "utilization_limit": 30 + i % 50}
    if i % 5 != 4:
        bucket = {"settings": {"fill_rate": 5000 + v % 1000, "burst_limit": 10000,
                               "max_tokens": 2e6}, "tokens": 1.25e5 + v}  # fmt: skip
        data["raw_resource_settings"] = {"cpu": bucket, "io_read": bucket, "io_write": bucket}
    return ResourceGroup.model_validate(data)


def group_value(i: int, variant: int = 0) -> bytes:
    """``group_model(i, variant)`` encoded as PD stores it."""
    return encode_settings(group_model(i, variant))


class Population:
    """Groups ``0..n-1`` under the replica's root, grown on demand (the sweep adds groups size
    after size); the values are kept for the figures that write them again."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.values: list[bytes] = []
        self.layout = KeyLayout(OURS_ROOT)

    def grow(self, n: int) -> None:
        """Write groups ``len(values)..n-1`` (nothing when there are already ``n``)."""
        start = len(self.values)
        if n <= start:
            return
        t0 = time.perf_counter()
        fresh = [group_value(i) for i in range(start, n)]
        bulk_put(self.client, [(self.layout.settings(group_name(start + j)), v)
                               for j, v in enumerate(fresh)])  # fmt: skip
        self.values += fresh
        log(f"  groups {start} -> {n} in {time.perf_counter() - t0:.1f}s")

    def key_value_bytes(self, n: int) -> int:
        """The sum of key and value lengths of the first ``n`` groups (P7's yardstick)."""
        return sum(len(self.layout.settings(group_name(i)).encode()) + len(self.values[i])
                   for i in range(n))  # fmt: skip


# ---- etcd ------------------------------------------------------------------------------------


def connect_to(endpoint: str) -> Any:
    """A pyetcd client with the product's channel options (256 MiB receive limit etc.)."""
    return connect(EtcdConfig.parse([endpoint]))


_compactors: dict[str, Any] = {}


def compact_client(endpoint: str) -> Any:
    """A client with a 120 s deadline: a physical compaction of a long history takes > 5 s."""
    if endpoint not in _compactors:
        _compactors[endpoint] = connect(EtcdConfig.parse([endpoint], timeout=120.0))
    return _compactors[endpoint]


def bulk_put(client: Any, items: Sequence[tuple[str, bytes]], ops: int = TXN_OPS) -> int:
    """Write ``items`` in ``ops``-put transactions; return the last commit revision."""
    revision = 0
    for start in range(0, len(items), ops):
        chunk = items[start : start + ops]
        result = txn(client, [], [client.transactions.put(k, v) for k, v in chunk])
        revision = result.revision
    return revision


def current_revision(client: Any) -> int:
    """The store's current revision (a tiny count-only range)."""
    return int(client.get_response(b"\0", count_only=True).header.revision)


# ---- the product's processes -----------------------------------------------------------------


def spawn(args: Sequence[str], log_path: Path) -> subprocess.Popen[bytes]:
    """``python -m rmwatch <args>`` as a process of its own, as an operator runs it (a server
    in a thread of the bench would share its GIL with the client that measures it); its
    output goes to ``log_path``."""
    with log_path.open("wb") as log_file:
        return subprocess.Popen([sys.executable, "-m", "rmwatch", *args], cwd=ROOT,
                                stdout=log_file, stderr=subprocess.STDOUT)  # fmt: skip


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the graceful shutdown), SIGKILL if it has not exited after 20 s."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---- the machine -----------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name (lscpu), printed and saved next to the figures."""
    try:
        out = subprocess.run(
            ["lscpu"], check=False, capture_output=True, text=True, timeout=5
        ).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"
