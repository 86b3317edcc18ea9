"""P3, catch-up replay: how fast a replica that was cut off applies the backlog it missed,
against a bare etcd watch that only receives the same backlog.

A backlog of 100-put transactions is written while the consumer is not watching, then replayed:

- ours: the real replica, parked at its ``Gate`` (the ``session_factory`` seam) while the
  backlog is written; timed from releasing the gate (it resumes at applied + 1, the real
  resume path) until ``wait_for_revision(last)``;
- raw: an ``etcdrpc.WatchStub`` from R+1 on the second prefix until the last revision has
  arrived, once as the replica asks (no ``prev_kv``) and once with ``prev_kv`` (informative:
  etcd 3.4 serves previous values much more slowly).

Goal: ours >= 0.8x the raw watch's events/s.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from bench._common import OURS_ROOT, RAW_ROOT, current_revision, log
from bench._replica import RawWatch, Rig, backlog
from bench._stats import Row, alternated, goal_row, ratio_summary, summary
from rmwatch.store.keys import KeyLayout

GOAL = 0.8
REVISIONS = (5, 100)  # backlog transactions per rep (smoke, full), 100 events each


def ours_seconds(rig: Rig, revisions: int, offset: int) -> float:
    """Seconds for the parked replica to apply ``revisions`` backlog transactions."""
    replica = rig.live
    rig.gate.cut()
    start = replica.revision
    last = backlog(rig.writer, OURS_ROOT, rig.values, revisions, offset)
    gc.collect()
    t0 = time.perf_counter()
    rig.gate.release()
    replica.wait_for_revision(last, 300)
    dt = time.perf_counter() - t0
    assert replica.revision == last, (replica.revision, last, start)
    return dt


def raw_seconds(rig: Rig, revisions: int, offset: int, prev_kv: bool = False) -> float:
    """Seconds for a bare watch from R+1 to receive ``revisions`` backlog transactions."""
    start = current_revision(rig.writer)
    last = backlog(rig.writer, RAW_ROOT, rig.values, revisions, offset)
    expected = revisions * 100
    count = 0
    gc.collect()
    t0 = time.perf_counter()
    raw = RawWatch(rig.watcher_client, KeyLayout(RAW_ROOT).prefix, start + 1, prev_kv=prev_kv)
    top = 0
    for resp in raw.call:
        for ev in resp.events:
            count += 1
            top = ev.kv.mod_revision
        if top >= last:
            break
    dt = time.perf_counter() - t0
    raw.cancel()
    assert count == expected, (count, expected)
    return dt


def run(rig: Rig) -> dict[str, Any]:
    """Ours vs the raw watch (without and with ``prev_kv``), rotated over the reps."""
    revisions = REVISIONS[0 if rig.smoke else 1]
    ours_seconds(rig, max(5, revisions // 10), 0)  # warm-up
    raw_seconds(rig, max(5, revisions // 10), 0)
    ev = revisions * 100

    def offset(rep: int) -> int:
        return rep * revisions * 100  # a fresh slice of groups every rep

    def progress(rep: int, s: dict[str, list[float]]) -> None:
        log(f"  P3 rep {rep + 1}: ours {ev / s['ours'][-1]:.0f} ev/s ({s['ours'][-1]:.3f}s) | "
            f"raw {ev / s['raw'][-1]:.0f} ev/s ({s['raw'][-1]:.3f}s) | raw with prev_kv "
            f"{ev / s['raw_prev'][-1]:.0f} ev/s")  # fmt: skip

    samples = alternated(rig.reps, {
        "ours": lambda rep: ours_seconds(rig, revisions, offset(rep)),
        "raw": lambda rep: raw_seconds(rig, revisions, offset(rep)),
        "raw_prev": lambda rep: raw_seconds(rig, revisions, offset(rep), prev_kv=True),
    }, after_rep=progress)  # fmt: skip
    ours_rate = [ev / t for t in samples["ours"]]
    raw_rate = [ev / t for t in samples["raw"]]
    prev_rate = [ev / t for t in samples["raw_prev"]]
    return {
        "revisions": revisions,
        "events": ev,
        "ours_events_per_s": summary(ours_rate, 1),
        "raw_events_per_s": summary(raw_rate, 1),
        "raw_prev_kv_events_per_s": summary(prev_rate, 1),
        "rate_ratio": ratio_summary(ours_rate, raw_rate),
        "rate_ratio_vs_prev_kv": ratio_summary(ours_rate, prev_rate),
    }


def rows(pid: str, result: dict[str, Any]) -> list[Row]:
    """The table's P3 line."""
    return [goal_row(pid, "catch-up replay events/s / raw watch from R+1", result["rate_ratio"],
                     ">=", GOAL)]  # fmt: skip


def absolute(pid: str, result: dict[str, Any]) -> str:
    """Events/s of the three consumers."""
    return (f"{pid:<3} ours {result['ours_events_per_s']['median']:.0f} ev/s | raw "
            f"{result['raw_events_per_s']['median']:.0f} ev/s | raw with prev_kv "
            f"{result['raw_prev_kv_events_per_s']['median']:.0f} ev/s ({result['events']} "
            f"events, {result['revisions']} revisions)")  # fmt: skip
