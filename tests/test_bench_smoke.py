"""The benchmark suite's plumbing: ``python -m bench --smoke`` runs every pair end to end (tiny
sizes, one rep) and writes a ``latest.json`` naming every P-figure with numbers.

Speed is never asserted here: on a shared CI machine the smoke's figures mean nothing (the
real run is ``./scripts/bench``). Plots are skipped (matplotlib is the ``bench`` extra only).
The committed ``bench/results/latest.json`` is checked against the figure modules that read it.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
P_KEYS = ("P1", "P1b", "P2", "P2b", "P2c", "P3", "P4", "P5", "P6", "P7", "P8", "P9", "P10")


def test_smoke_run_writes_every_p_figure(tmp_path: Path) -> None:
    """A smoke run exits 0, and its latest.json and printed table name every P-figure with
    finite numbers and a goal."""
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--no-plots", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    doc = json.loads((tmp_path / "latest.json").read_text())
    assert doc["meta"]["smoke"] is True
    assert doc["meta"]["etcd_version"]
    for key in P_KEYS:
        assert key in doc["results"], key
    rows = doc["figures"]
    ids = {row["id"] for row in rows}
    assert ids == set(P_KEYS), ids
    for row in rows:
        for field in ("median", "min", "max"):
            value = row[field]
            assert isinstance(value, int | float), row
            assert math.isfinite(value), row
        assert row["min"] <= row["median"], row
        assert row["median"] <= row["max"], row
        assert row["goal"]
        assert row["met"] in (True, False, None), row
    # the plot inputs are there even though plots are skipped
    assert doc["ready_sweep"]
    assert doc["memory_sweep"]
    assert doc["results"]["P6"]["timeline"]["reads_per_100ms"]
    assert doc["results"]["P2"]["latency_cdf_ms"]["ours"]
    # the gRPC figures: every watcher got every event, both sides answered calls
    for rep in doc["results"]["P10"]["reps"]:
        for side in ("ours", "etcd"):
            assert rep[side]["delivered"] == rep[side]["expected"] > 0, rep
    for rep in doc["results"]["P9"]["reps"]:
        assert rep["ours"]["calls_per_s"] > 0, rep
        assert rep["etcd"]["calls_per_s"] > 0, rep
    # the table is printed: every P-id with a verdict
    for key in P_KEYS:
        assert f"\n{key} " in run.stdout, key
    assert not list(tmp_path.glob("*.png"))


def test_saved_run_reads_back_through_the_figure_modules() -> None:
    """The committed latest.json has the shape the figure modules read: their goal rows,
    rebuilt from its results, are exactly the table it holds."""
    script = (
        "import json; from bench.__main__ import figures; "
        "doc = json.load(open('bench/results/latest.json')); "
        "print(json.dumps(figures(doc['results']) == doc['figures']))"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout) is True
