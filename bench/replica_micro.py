"""Micro-benchmarks behind the replica profile: where one settings value's decode goes, and what
the proposed fast paths would save. No etcd needed.

Run from the repo root: ``python -m bench.replica_micro [--n 5000] [--reps 5]``.
Every figure is microseconds per value (median of ``reps``, A/B-alternated in one loop), written
to ``bench/results/replica_micro.json``. The "proposed" variants are prototypes living only in
this file (the product code is not touched); each is checked to produce a model equal to
``decode_settings`` (``==`` compares fields) before it is timed.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.unknown_fields import UnknownFieldSet

from bench._common import ROOT, group_name, group_value, summary
from rmwatch.store._pb import resource_manager_pb2 as pb
from rmwatch.store.codec import _known_in_unknown, _message_to_dict, decode_settings, decode_value
from rmwatch.store.keys import KeyLayout
from rmwatch.store.models import (
    MAX_NAME_BYTES,
    MAX_PRIORITY,
    BackgroundSettings,
    Consumption,
    GroupRawResourceSettings,
    GroupRequestUnitSettings,
    ResourceGroup,
    RunawayRule,
    RunawaySettings,
    RunawayWatch,
    TokenBucket,
    TokenLimitSettings,
)
from rmwatch.watcher.cache import Entry, RawChange, apply_changes, build_snapshot, decode_entry
from rmwatch.watcher.overlay import Overlay

RESULTS = ROOT / "bench" / "results" / "replica_micro.json"
_MESSAGE = FieldDescriptor.TYPE_MESSAGE


# ---- prototypes of the proposed fast paths ----------------------------------------------------


def _plan(descriptor: Any) -> tuple[tuple[str, int, Any], ...]:
    """Per-descriptor plan computed once: (name, kind, sub-plan); kind 0 scalar, 1 repeated,
    2 message."""
    out = []
    for field in descriptor.fields:
        if field.type == _MESSAGE:
            out.append((field.name, 2, _plan(field.message_type)))
        elif getattr(field, "is_repeated", False):
            out.append((field.name, 1, None))
        else:
            out.append((field.name, 0, None))
    return tuple(out)


_RG_PLAN = _plan(pb.ResourceGroup.DESCRIPTOR)


def _to_dict_planned(msg: Any, plan: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, kind, sub in plan:
        if kind == 2:
            if msg.HasField(name):
                out[name] = _to_dict_planned(getattr(msg, name), sub)
        elif kind == 1:
            out[name] = list(getattr(msg, name))
        else:
            out[name] = getattr(msg, name)
    return out


def _has_unknown(msg: Any) -> bool:
    """Any unknown field anywhere (cheap: UnknownFieldSet length per present sub-message)."""
    if len(UnknownFieldSet(msg)):
        return True
    for field, value in msg.ListFields():
        if field.type == _MESSAGE and _has_unknown(value):
            return True
    return False


def _set_wire(group: ResourceGroup, wire: bytes) -> ResourceGroup:
    # The model was just built here and is not shared: record wire bytes without model_copy.
    object.__setattr__(group, "__pydantic_private__", {"_wire": wire})
    return group


def decode_planned(key: str, data: bytes) -> ResourceGroup:
    """Fix A: precomputed field plan + no model_copy; validation unchanged (model_validate)."""
    msg = pb.ResourceGroup()
    msg.ParseFromString(data)
    wrong = _known_in_unknown(msg)
    if wrong:
        raise ValueError(wrong)
    fields = _to_dict_planned(msg, _RG_PLAN)
    if "keyspace_id" in fields:
        fields["keyspace_id"] = fields["keyspace_id"]["value"]
    return _set_wire(ResourceGroup.model_validate(fields), data)


def _finite(*values: float) -> None:
    for v in values:
        if not math.isfinite(v):
            raise ValueError("NaN/inf refused")


def _bucket(m: Any) -> TokenBucket:
    settings = None
    if m.HasField("settings"):
        s = m.settings
        _finite(s.max_tokens)
        settings = TokenLimitSettings.model_construct(
            fill_rate=s.fill_rate, burst_limit=s.burst_limit, max_tokens=s.max_tokens
        )
    _finite(m.tokens)
    return TokenBucket.model_construct(settings=settings, tokens=m.tokens)


def decode_constructed(key: str, data: bytes) -> ResourceGroup:
    """Fix B: build the models with ``model_construct`` straight from the parsed message and
    check only what protobuf's types do not already guarantee: name length, priority <= 16,
    finite doubles, unknown fields. (uint32/uint64/int64 ranges and enum-typed ints are
    guaranteed by the wire types; enums are converted explicitly.)"""
    msg = pb.ResourceGroup()
    msg.ParseFromString(data)
    wrong = _known_in_unknown(msg)
    if wrong:
        raise ValueError(wrong)
    name = msg.name
    size = len(name.encode())
    if size == 0 or size > MAX_NAME_BYTES:
        raise ValueError("name")
    if msg.priority > MAX_PRIORITY:
        raise ValueError("priority")
    from rmwatch.store.models import GroupMode, RunawayAction, RunawayWatchType  # noqa: PLC0415

    ru = None
    if msg.HasField("r_u_settings"):
        r = msg.r_u_settings
        ru = GroupRequestUnitSettings.model_construct(
            r_u=_bucket(r.r_u) if r.HasField("r_u") else None
        )
    raw = None
    if msg.HasField("raw_resource_settings"):
        r = msg.raw_resource_settings
        raw = GroupRawResourceSettings.model_construct(
            cpu=_bucket(r.cpu) if r.HasField("cpu") else None,
            io_read=_bucket(r.io_read) if r.HasField("io_read") else None,
            io_write=_bucket(r.io_write) if r.HasField("io_write") else None,
        )
    runaway = None
    if msg.HasField("runaway_settings"):
        r = msg.runaway_settings
        rule = None
        if r.HasField("rule"):
            rule = RunawayRule.model_construct(
                exec_elapsed_time_ms=r.rule.exec_elapsed_time_ms,
                processed_keys=r.rule.processed_keys,
                request_unit=r.rule.request_unit,
            )
        watch = None
        if r.HasField("watch"):
            watch = RunawayWatch.model_construct(
                lasting_duration_ms=r.watch.lasting_duration_ms,
                type=RunawayWatchType(r.watch.type),
            )
        runaway = RunawaySettings.model_construct(
            rule=rule, action=RunawayAction(r.action), watch=watch,
            switch_group_name=r.switch_group_name,
        )  # fmt: skip
    background = None
    if msg.HasField("background_settings"):
        b = msg.background_settings
        background = BackgroundSettings.model_construct(
            job_types=tuple(b.job_types), utilization_limit=b.utilization_limit
        )
    stats = None
    if msg.HasField("RUStats"):
        s = msg.RUStats
        vals = {f: getattr(s, f) for f in (
            "r_r_u", "w_r_u", "read_bytes", "write_bytes", "total_cpu_time_ms",
            "sql_layer_cpu_time_ms", "kv_read_rpc_count", "kv_write_rpc_count")}  # fmt: skip
        _finite(*vals.values())
        stats = Consumption.model_construct(**vals)
    group = ResourceGroup.model_construct(
        name=name, mode=GroupMode(msg.mode), r_u_settings=ru, raw_resource_settings=raw,
        priority=msg.priority, runaway_settings=runaway, background_settings=background,
        ru_stats=stats,
        keyspace_id=msg.keyspace_id.value if msg.HasField("keyspace_id") else None,
    )  # fmt: skip
    object.__setattr__(group, "__pydantic_private__", {"_wire": data})
    return group


def _no_unknown_fast(msg: Any, data: bytes) -> bool:
    """True when ``data`` re-encodes to the same length once unknown fields are dropped: no
    unknown field anywhere (a canonical encoding). False -> take the exact slow path."""
    msg.DiscardUnknownFields()
    return msg.ByteSize() == len(data)


def decode_fastcheck(key: str, data: bytes) -> ResourceGroup:
    """Fix D: skip the _known_in_unknown walk when nothing is unknown (exact fallback),
    planned dict, model_validate unchanged, wire recorded without model_copy."""
    msg = pb.ResourceGroup()
    msg.ParseFromString(data)
    if not _no_unknown_fast(msg, data):
        return decode_settings(key, data)
    fields = _to_dict_planned(msg, _RG_PLAN)
    if "keyspace_id" in fields:
        fields["keyspace_id"] = fields["keyspace_id"]["value"]
    return _set_wire(ResourceGroup.model_validate(fields), data)


def _all_finite(msg: Any) -> bool:
    for field, value in msg.ListFields():
        if field.type == _MESSAGE:
            if not _all_finite(value):
                return False
        elif field.cpp_type == FieldDescriptor.CPPTYPE_DOUBLE and not math.isfinite(value):
            return False
    return True


def validate_only(key: str, data: bytes) -> bool:
    """Fix E (eager part): the checks that make a value bad, on the upb message only; the
    pydantic model is built on first read (memoized)."""
    msg = pb.ResourceGroup()
    msg.ParseFromString(data)
    if not _no_unknown_fast(msg, data):
        decode_settings(key, data)  # exact slow path decides
        return True
    size = len(msg.name.encode())
    return 0 < size <= MAX_NAME_BYTES and msg.priority <= MAX_PRIORITY and _all_finite(msg)


class LazyEntry:
    """Fix C (sketch): keep bytes, decode on first read (memoized)."""

    __slots__ = ("_value", "key", "mod_revision", "raw")

    def __init__(self, key: str, raw: bytes, mod_revision: int) -> None:
        self.key, self.raw, self.mod_revision, self._value = key, raw, mod_revision, None


# ---- harness ----------------------------------------------------------------------------------


def per_item_us(fn: Callable[[Any], Any], items: list[Any]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - t0) / len(items) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    n = args.n
    layout = KeyLayout("/bench/")
    values = [group_value(i) for i in range(n)]
    keys = [layout.settings(group_name(i)) for i in range(n)]
    pairs = list(zip(keys, values, strict=True))
    parsed = [layout.parse(k) for k in keys]
    msgs = []
    for v in values:
        m = pb.ResourceGroup()
        m.ParseFromString(v)
        msgs.append(m)
    dicts = []
    for m in msgs:
        d = _message_to_dict(m)
        dicts.append(d)
    models = [ResourceGroup.model_validate(d) for d in dicts]

    # correctness of the prototypes
    for k, v in pairs[:500]:
        ref = decode_settings(k, v)
        assert decode_planned(k, v) == ref
        fast = decode_constructed(k, v)
        assert fast == ref, (fast, ref)
        assert fast.wire == ref.wire
        assert decode_fastcheck(k, v) == ref and decode_fastcheck(k, v).wire == ref.wire
        assert validate_only(k, v)

    def pb_parse(v: bytes) -> Any:
        m = pb.ResourceGroup()
        m.ParseFromString(v)
        return m

    variants: dict[str, tuple[Callable[[Any], Any], list[Any]]] = {
        "decode_entry (current, per value)": (
            lambda kv: decode_entry(layout, kv[0], kv[1], 1),
            pairs,
        ),  # fmt: skip
        "decode_settings (current)": (lambda kv: decode_settings(kv[0], kv[1]), pairs),
        "  layout.parse(key)": (layout.parse, keys),
        "  decode_value name/keyspace checks": (
            lambda i: decode_value(keys[i], parsed[i], values[i]),
            list(range(n)),
        ),
        "  ParseFromString": (pb_parse, values),
        "  _known_in_unknown": (_known_in_unknown, msgs),
        "  _message_to_dict": (_message_to_dict, msgs),
        "  ResourceGroup.model_validate(dict)": (ResourceGroup.model_validate, dicts),
        "  with_wire (model_copy)": (lambda m: m.with_wire(b"x"), models),
        "  Entry(...) construction": (lambda kv: Entry(kv[0], kv[1], 1, None, None), pairs),
        "proposed A: planned dict + no model_copy": (lambda kv: decode_planned(*kv), pairs),
        "proposed B: model_construct + targeted checks": (
            lambda kv: decode_constructed(*kv),
            pairs,
        ),  # fmt: skip
        "proposed D: no-unknown fast check + plan + no copy": (
            lambda kv: decode_fastcheck(*kv),
            pairs,
        ),
        "proposed E: eager upb checks only (model lazy)": (lambda kv: validate_only(*kv), pairs),
        "  _no_unknown_fast (Discard+ByteSize)": (
            lambda v: _no_unknown_fast(pb_parse(v), v),
            values,
        ),
        "proposed C: lazy entry (bytes only)": (lambda kv: LazyEntry(kv[0], kv[1], 1), pairs),
        "  _to_dict_planned": (lambda m: _to_dict_planned(m, _RG_PLAN), msgs),
        "  _has_unknown (UnknownFieldSet walk)": (_has_unknown, msgs),
    }
    samples: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for rep in range(args.reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            fn, items = variants[name]
            samples[name].append(per_item_us(fn, items))

    # whole-load pieces: build_snapshot with GC on vs GC frozen/disabled around it
    kvs = [(k, v, 1) for k, v in pairs]
    gc_on: list[float] = []
    gc_off: list[float] = []
    for _rep in range(args.reps):
        for mode in ("on", "off") if _rep % 2 == 0 else ("off", "on"):
            gc.collect()
            if mode == "off":
                gc.disable()
            t0 = time.perf_counter()
            snap = build_snapshot(layout, 1, kvs)
            dt = (time.perf_counter() - t0) / n * 1e6
            gc.enable()
            (gc_on if mode == "on" else gc_off).append(dt)
            del snap

    # apply path: one revision of 1 event and one of 100 events on a snapshot of n keys
    base = build_snapshot(layout, 1, kvs)
    apply_1: list[float] = []
    apply_100: list[float] = []
    for _rep in range(args.reps):
        snap = base
        rev = 2
        gc.collect()
        t0 = time.perf_counter()
        for j in range(2000):
            i = j % n
            snap, _ = apply_changes(snap, rev, [RawChange(keys[i], rev, values[i])])
            rev += 1
        apply_1.append((time.perf_counter() - t0) / 2000 * 1e6)
        snap = base
        gc.collect()
        t0 = time.perf_counter()
        for j in range(20):
            changes = [RawChange(keys[(j * 100 + b) % n], rev, values[(j * 100 + b) % n])
                       for b in range(100)]  # fmt: skip
            snap, _ = apply_changes(snap, rev, changes)
            rev += 1
        apply_100.append((time.perf_counter() - t0) / 2000 * 1e6)

    # Overlay.updated alone (1 key per revision), to isolate the fold
    ov_us: list[float] = []
    entry = decode_entry(layout, keys[0], values[0], 1)
    for _rep in range(args.reps):
        ov = base.entries
        gc.collect()
        t0 = time.perf_counter()
        for j in range(2000):
            ov = ov.updated({keys[j % n]: entry})
        ov_us.append((time.perf_counter() - t0) / 2000 * 1e6)
    assert isinstance(ov, Overlay)

    out = {k: summary(v, 2) for k, v in samples.items()}
    out["build_snapshot per key, gc on"] = summary(gc_on, 2)
    out["build_snapshot per key, gc disabled"] = summary(gc_off, 2)
    out["apply_changes per event, 1 event/revision"] = summary(apply_1, 2)
    out["apply_changes per event, 100 events/revision"] = summary(apply_100, 2)
    out["  Overlay.updated per 1-key revision"] = summary(ov_us, 2)
    width = max(map(len, out))
    print(f"{'us per value (median [min-max])':<{width}}  n={n} reps={args.reps}")
    for k, v in out.items():
        print(f"{k:<{width}}  {v['median']:8.2f} [{v['min']:.2f}-{v['max']:.2f}]")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "n": n,
                "reps": args.reps,
                "value_bytes_mean": statistics.mean(map(len, values)),
                "us": out,
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
