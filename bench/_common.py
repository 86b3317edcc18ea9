"""Shared pieces of the replica benchmark: the etcd harness import, realistic group values,
bulk loading, timing and statistics helpers.

Only bench code: nothing here is imported by the product.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))  # the harness (EtcdMember, make_client)

from harness import EtcdMember, etcd_version  # noqa: E402,F401

from rmwatch.store.codec import encode_settings  # noqa: E402
from rmwatch.store.etcd import EtcdConfig, connect  # noqa: E402
from rmwatch.store.models import ResourceGroup  # noqa: E402

TXN_OPS = 100  # puts per bulk-load transaction (etcd's --max-txn-ops default is 128)
_JOB_TYPES = ["br", "lightning", "ddl", "stats", "analyze", "import_into"]


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


def connect_to(endpoint: str) -> Any:
    """A pyetcd client with the product's channel options (256 MiB receive limit etc.)."""
    return connect(EtcdConfig.parse([endpoint]))


def bulk_put(client: Any, items: Sequence[tuple[str, bytes]], ops: int = TXN_OPS) -> int:
    """Write ``items`` in ``ops``-put transactions; return the last commit revision."""
    from rmwatch.store.etcd import txn  # noqa: PLC0415

    revision = 0
    for start in range(0, len(items), ops):
        chunk = items[start : start + ops]
        result = txn(client, [], [client.transactions.put(k, v) for k, v in chunk])
        revision = result.revision
    return revision


def current_revision(client: Any) -> int:
    """The store's current revision (a tiny count-only range)."""
    return int(client.get_response(b"\0", count_only=True).header.revision)


def pct(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of ``values`` by nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summary(samples: Sequence[float], digits: int = 4) -> dict[str, Any]:
    """Median, min, max and the samples themselves."""
    return {
        "median": round(statistics.median(samples), digits),
        "min": round(min(samples), digits),
        "max": round(max(samples), digits),
        "samples": [round(s, digits) for s in samples],
    }


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of ``fn()``, after a full collection so earlier garbage is not billed."""
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def proc_status() -> dict[str, int]:
    """VmRSS / VmHWM of this process in bytes, from /proc/self/status."""
    out: dict[str, int] = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value, _unit = line.split()
                out[name.rstrip(":")] = int(value) * 1024
    return out


def reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False
