"""PNG plots of a suite run (``bench/results/latest.json``), with matplotlib (extra ``bench``).

``python -m bench.plots [latest.json]`` redraws them from a saved run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# matplotlib is the optional extra `bench`: without it these names are untyped, not missing.
import matplotlib  # type: ignore[import-not-found, unused-ignore]

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
from matplotlib import ticker  # type: ignore[import-not-found, unused-ignore]


def _subtitle(doc: dict[str, Any]) -> str:
    meta = doc["meta"]
    machine = meta["machine"]
    return (f"{meta['date']} - {machine['nproc']} CPUs {machine['cpu']} - etcd "
            f"{meta['etcd_version']} - median of {meta['reps']} reps, bars min-max")  # fmt: skip


def latency_cdf(doc: dict[str, Any], path: Path) -> bool:
    keys = [k for k in ("P2", "P2b") if k in doc["results"]]
    if not keys:
        return False
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4.2), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        p2 = doc["results"][key]
        for name, label, style in (("ours", "replica listener", "-"),
                                   ("raw", "raw etcd watch loop", "--")):  # fmt: skip
            xs = p2["latency_cdf_ms"][name]
            ys = [i / (len(xs) - 1) for i in range(len(xs))] if len(xs) > 1 else [1.0]
            ax.plot(xs, ys, style, label=label)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("write -> visible latency (ms, log)")
        ax.set_ylabel("fraction of writes")
        ratio = p2["p99_ratio"]
        ax.set_title(f"{key}: {p2['events_per_revision']} event(s)/revision - p99 ours/raw "
                     f"{ratio['median']:.2f}x [{ratio['min']:.2f}-{ratio['max']:.2f}]",
                     fontsize=9)  # fmt: skip
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right")
    fig.suptitle("write -> visible latency CDF (all reps pooled)\n" + _subtitle(doc), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _band(points: list[dict[str, Any]], key: str) -> tuple[list[float], list[list[float]]]:
    med = [p[key]["median"] for p in points]
    err = [[p[key]["median"] - p[key]["min"] for p in points],
           [p[key]["max"] - p[key]["median"] for p in points]]  # fmt: skip
    return med, err


def ready_vs_groups(doc: dict[str, Any], path: Path) -> bool:
    points = doc.get("ready_sweep") or []
    if not points:
        return False
    groups = [p["groups"] for p in points]
    fig, (ax, axr) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label in (("ours_s", "replica start -> ready"),
                       ("raw_range_s", "raw paginated range")):  # fmt: skip
        med, err = _band(points, key)
        ax.errorbar(groups, med, yerr=err, marker="o", capsize=3, label=label)
    ax.set_xlabel("groups")
    ax.set_ylabel("seconds")
    ax.set_title("time to ready", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend()
    med, err = _band(points, "ratio_vs_raw_range")
    axr.errorbar(groups, med, yerr=err, marker="o", capsize=3, color="C2")
    axr.axhline(2.0, color="C3", linestyle=":", label="P1 goal <= 2.0x")
    axr.set_xlabel("groups")
    axr.set_ylabel("ours / raw")
    axr.set_title("ratio (per-rep, A/B alternated)", fontsize=10)
    axr.set_ylim(bottom=0)
    axr.grid(True, alpha=0.3)
    axr.legend()
    fig.suptitle("time to ready vs number of groups\n" + _subtitle(doc), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def memory_vs_groups(doc: dict[str, Any], path: Path) -> bool:
    points = doc.get("memory_sweep") or []
    if not points:
        return False
    groups = [p["groups"] for p in points]
    fig, ax = plt.subplots(figsize=(7, 4.4))
    for key, label in (("replica_traced_mib", "replica (tracemalloc)"),
                       ("raw_pages_dict_traced_mib", "raw pages as dict of bytes")):  # fmt: skip
        med, err = _band(points, key)
        ax.errorbar(groups, med, yerr=err, marker="o", capsize=3, label=label)
    ax.plot(groups, [p["raw_key_plus_value_mib"] for p in points], "k--",
            label="sum of key + value bytes")  # fmt: skip
    ax.plot(groups, [3 * p["raw_key_plus_value_mib"] for p in points], ":", color="C3",
            label="P7 goal: 3x key + value")  # fmt: skip
    peaks = [(p["groups"], p["replica_rebuild_peak_mib"]) for p in points
             if "replica_rebuild_peak_mib" in p]  # fmt: skip
    for n, peak in peaks:
        ax.errorbar([n], [peak["median"]], yerr=[[peak["median"] - peak["min"]],
                    [peak["max"] - peak["median"]]], marker="^", capsize=3, color="C4",
                    linestyle="none", label="replica peak during a rebuild")  # fmt: skip
    ax.set_xlabel("groups")
    ax.set_ylabel("MiB")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle("memory vs number of groups\n" + _subtitle(doc), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def rebuild_timeline(doc: dict[str, Any], path: Path) -> bool:
    p6 = doc["results"].get("P6")
    if not p6 or not p6.get("timeline"):
        return False
    tl = p6["timeline"]
    bins = tl["reads_per_100ms"]
    xs = [i * 0.1 for i in range(len(bins))]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar(xs, bins, width=0.09, align="edge", color="C0", label="get_group calls served")
    ax.axvline(tl["release_s"], color="C3", linestyle="--",
               label="stream reopened: compacted -> rebuild starts")  # fmt: skip
    ax.axvline(tl["done_s"], color="C2", linestyle="--", label="rebuilt snapshot swapped in")
    failed = sum(p6["failed_reads"])
    ax.set_xlabel("seconds since the reader started")
    ax.set_ylabel("reads per 100 ms")
    ax.set_title(f"reads during a compaction rebuild (median rep; failed reads over all reps: "
                 f"{failed})", fontsize=10)  # fmt: skip
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3)
    fig.suptitle(_subtitle(doc), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


PLOTS = {
    "latency_cdf.png": latency_cdf,
    "ready_vs_groups.png": ready_vs_groups,
    "memory_vs_groups.png": memory_vs_groups,
    "rebuild_timeline.png": rebuild_timeline,
}


def write_all(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """Every plot the document has data for; returns the files written."""
    written = []
    for name, draw in PLOTS.items():
        path = out_dir / name
        if draw(doc, path):
            written.append(path)
    return written


if __name__ == "__main__":
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results" / \
        "latest.json"  # fmt: skip
    for p in write_all(json.loads(source.read_text()), source.parent):
        print(p)
