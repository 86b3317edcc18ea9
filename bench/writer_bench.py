"""Writer throughput as a ratio to raw pyetcd transactions of the same shape, in one run.

Run: ``python -m bench.writer_bench`` (starts its own etcd through tests/harness).

Two write shapes, each measured three ways against one etcd, in the same process:
- ``set_service_limit`` (a blind put): raw = ``txn(fence compares -> put)``;
  library = ``Writer.set_service_limit``; http = ``POST .../service-limit`` over loopback.
- ``modify_group`` (read-modify-write): raw = ``get`` + ``txn(fence + mod_revision compare ->
  put)``; library = ``Writer.modify_group``; http = ``PUT config/group``.
Variants alternate A/B/C within each repetition (the order rotates every repetition so no
variant always runs on a warmer etcd), and the figure kept is the median of ``REPS``.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the harness (EtcdMember, make_client, free_port)

from harness import EtcdMember, etcd_version, free_port, make_client  # noqa: E402

from store import codec  # noqa: E402
from store.api import PREFIX, create_writer_app  # noqa: E402
from store.keys import KeyLayout  # noqa: E402
from store.leadership import Leadership  # noqa: E402
from store.models import (  # noqa: E402
    GroupRequestUnitSettings,
    ResourceGroup,
    TokenBucket,
    TokenLimitSettings,
)
from store.writer import Writer  # noqa: E402

OPS = 400  # writes per measurement: ~0.3-1 s each on a local fsync'd etcd
REPS = 5  # median of 5 (>= 3 required)
RESULTS = ROOT / "bench" / "results" / "writer.json"


def group(fill: int) -> ResourceGroup:
    """The RU group the modify shape rewrites."""
    return ResourceGroup(
        name="bench",
        r_u_settings=GroupRequestUnitSettings(
            r_u=TokenBucket(settings=TokenLimitSettings(fill_rate=fill, burst_limit=-1))
        ),
        priority=8,
    )


def rate(fn: Callable[[int], Any]) -> float:
    """Writes per second of ``OPS`` sequential calls ``fn(i)``."""
    start = time.perf_counter()
    for i in range(OPS):
        fn(i)
    return OPS / (time.perf_counter() - start)


def measure(shapes: dict[str, dict[str, Callable[[int], Any]]]) -> dict[str, Any]:
    """Median writes/s of every variant of every shape, A/B/C-alternated, with ratios."""
    results: dict[str, Any] = {}
    for shape, variants in shapes.items():
        for fn in variants.values():  # warm-up: connections, caches
            for i in range(30):
                fn(i)
        samples: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for rep in range(REPS):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for name in order:
                samples[name].append(rate(variants[name]))
        medians = {name: statistics.median(v) for name, v in samples.items()}
        results[shape] = {
            name: {
                "writes_per_s": round(medians[name], 1),
                "ratio_to_raw": round(medians[name] / medians["raw_txn"], 3),
                "samples": [round(s, 1) for s in samples[name]],
            }
            for name in names
        }
    return results


def report(results: dict[str, Any], meta: dict[str, Any]) -> None:
    """Print the table and write ``bench/results/writer.json``."""
    print(f"{'shape':<20}{'variant':<10}{'writes/s':>10}{'ratio':>8}")
    for shape, variants_out in results.items():
        for name, row in variants_out.items():
            print(f"{shape:<20}{name:<10}{row['writes_per_s']:>10.1f}{row['ratio_to_raw']:>8.3f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"written to {RESULTS.relative_to(ROOT)}")


def main() -> int:
    """Start etcd, a fenced leader and its HTTP API; measure; print and save the table."""
    with EtcdMember("bench") as member:
        client = make_client([member.endpoint])
        layout = KeyLayout("/bench/")
        port = free_port()
        leadership = Leadership(client=client, layout=layout, name="bench",
                                address=f"http://127.0.0.1:{port}").start()  # fmt: skip
        assert leadership.wait_until_leader(5), "no leadership"
        writer = Writer(client=client, layout=layout, leadership=leadership)
        server = uvicorn.Server(uvicorn.Config(
            create_writer_app(writer, token=None), host="127.0.0.1", port=port,
            log_level="error", lifespan="off", access_log=False))  # fmt: skip
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}{PREFIX}", timeout=10)
        for _ in range(100):
            try:
                http.get("/config/controller")
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        tx = client.transactions
        limit_key = layout.service_limit(1)
        group_key = layout.settings("bench")
        writer.add_group(group(1))

        def raw_limit(i: int) -> None:
            ok, _ = client.transaction(
                compare=leadership.fence_compares(),
                success=[tx.put(limit_key, codec.encode_service_limit(float(i)))],
                failure=[tx.get(leadership.key)],
            )
            assert ok

        def raw_modify(i: int) -> None:
            value, meta = client.get(group_key)
            wire = codec.encode_settings(group(i + 2), base=value)
            ok, _ = client.transaction(
                compare=[*leadership.fence_compares(), tx.mod(group_key) == meta.mod_revision],
                success=[tx.put(group_key, wire)],
                failure=[tx.get(leadership.key), tx.get(group_key)],
            )
            assert ok

        def http_limit(i: int) -> None:
            r = http.post("/config/keyspace/service-limit", params={"keyspace_id": 1},
                          json={"service_limit": i})  # fmt: skip
            assert r.status_code == 200, r.text

        def http_modify(i: int) -> None:
            body = group(i + 2).model_dump(mode="json", exclude_none=True)
            r = http.put("/config/group", json=body)
            assert r.status_code == 200, r.text

        shapes: dict[str, dict[str, Callable[[int], Any]]] = {
            "set_service_limit": {
                "raw_txn": raw_limit,
                "library": lambda i: writer.set_service_limit(1, float(i)),
                "http": http_limit,
            },
            "modify_group": {
                "raw_txn": raw_modify,
                "library": lambda i: writer.modify_group(group(i + 2)),
                "http": http_modify,
            },
        }
        # Quiet the per-write JSON log during measurement (it is to stdout by default).
        import structlog  # noqa: PLC0415

        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
        results = measure(shapes)
        server.should_exit = True
        thread.join(5)
        http.close()
        leadership.close()
        client.close()
        meta = {"etcd": etcd_version(member.binary), "python": platform.python_version(),
                "ops_per_sample": OPS, "reps": REPS, "machine": platform.machine(),
                "cpus": __import__("os").cpu_count()}  # fmt: skip
    report(results, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
