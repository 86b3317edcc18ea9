"""The five rules a recorded history must satisfy (see the package docstring).

``check_history`` raises ``HistoryViolation`` (an AssertionError, so pytest shows it as a test
failure) naming the rule, how many violations the rule found, and for the first one the few
events around the violating key and revision: that key's history in etcd, the acknowledged
writes to it, and who held the leader key then.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .recorder import UNKNOWN, History, OutsideHistoryError, WriteRecord

RULES = ("durability", "read", "monotonic", "final", "fencing")
_CONTEXT_ROWS = 3


class HistoryViolation(AssertionError):  # noqa: N818  (a violation, not an error)
    """A rule does not hold; ``rule`` names it, ``count`` says how many times it failed."""

    def __init__(self, rule: str, message: str, count: int = 1) -> None:
        more = f" (and {count - 1} more violations of this rule)" if count > 1 else ""
        super().__init__(f"[{rule}] {message}{more}")
        self.rule = rule
        self.count = count
        self.detail = message


class HistoryIncompleteError(AssertionError):
    """The truth log has a hole: the run compacted past it. A test bug, not a product bug."""


@dataclass(frozen=True)
class CheckStats:
    """What was checked."""

    acked_writes: int
    maybe_writes: int
    reads: int
    applied: int
    truth_events: int
    replicas: int
    leader_epochs: int

    def __str__(self) -> str:
        return (f"{self.acked_writes} acked writes, {self.maybe_writes} unknown-outcome writes, "
                f"{self.reads} reads, {self.applied} applied-revision observations, "
                f"{self.truth_events} etcd events, {self.replicas} replica caches, "
                f"{self.leader_epochs} leader epochs")  # fmt: skip


# ---- formatting ------------------------------------------------------------------------------


def _short(value: object, limit: int = 48) -> str:
    if value is None:
        return "<absent>"
    if value is UNKNOWN:
        return "<unknown bytes>"
    if isinstance(value, bytes):
        text = repr(value)
        return text if len(text) <= limit else text[: limit - 3] + "...'"
    return repr(value)


def _leader_at(h: History, revision: int) -> str:
    try:
        found = h.truth.state(h.leader_key, revision)
    except OutsideHistoryError:
        return "unknown (before the history's start)"
    if found is None:
        return "nobody (leader key absent)"
    value, _mod, create = found
    return f"epoch {create} value {_short(value, 90)}"


def context(h: History, key: str, revision: int, *, note: str = "") -> str:
    """The minimal history around ``key`` at ``revision``, formatted for a failure message."""
    acked: dict[int, list[WriteRecord]] = defaultdict(list)
    maybe: list[WriteRecord] = []
    for w in h.writes:
        if w.key != key:
            continue
        if w.outcome == "ok" and w.revision is not None:
            acked[w.revision].append(w)
        else:
            maybe.append(w)
    rows = h.truth.history_of(key)
    lines = [f"history of {key} in etcd (log starts at {h.truth.start_revision}):"]
    pos = 0
    for i, (rev, _v, _m, _c) in enumerate(rows):
        if rev <= revision:
            pos = i
    lo, hi = max(0, pos - _CONTEXT_ROWS), min(len(rows), pos + _CONTEXT_ROWS + 1)
    if lo > 0:
        lines.append(f"  ... {lo} earlier changes")
    marked = False
    for rev, value, _mod, create in rows[lo:hi]:
        if not marked and rev > revision:
            lines.append(f"  >>> revision {revision}: {note}")
            marked = True
        kind = "DELETE" if value is None else "PUT   "
        start = " (state at log start)" if rev == h.truth.start_revision else ""
        who = "".join(f"  <- acked {w.op} by {w.writer} epoch {w.epoch}"
                      for w in acked.get(rev, []))  # fmt: skip
        lines.append(f"  rev {rev:>6} {kind} {_short(value)} create={create}{start}{who}")
    if not marked:
        lines.append(f"  >>> revision {revision}: {note}")
    if hi < len(rows):
        lines.append(f"  ... {len(rows) - hi} later changes")
    near = sorted(
        (w for ws in acked.values() for w in ws if w.revision is not None
         and abs(w.revision - revision) <= 50 and not any(r[0] == w.revision for r in rows)),
        key=lambda w: w.revision or 0,
    )  # fmt: skip
    for w in near[:5]:
        lines.append(f"  acked {w.op} by {w.writer} at rev {w.revision}: {_short(w.value)} "
                     "(no such change in etcd)")  # fmt: skip
    if maybe:
        lines.append(f"  ({len(maybe)} writes to this key had an unknown outcome)")
    lines.append(f"leader at {revision}: {_leader_at(h, revision)}")
    return "\n".join(lines)


# ---- the rules -------------------------------------------------------------------------------


def _durability(h: History) -> list[str]:
    out = []
    log = h.truth
    for w in h.writes:
        if w.outcome != "ok" or w.revision is None:
            continue
        if w.revision < log.start_revision:
            out.append(f"acked {w.op} of {w.key} at {w.revision}: before the history's start\n")
            continue
        if w.revision > log.covered:
            out.append(
                f"acked {w.op} of {w.key} by {w.writer} at revision {w.revision}, but etcd's "
                f"history only reaches {log.covered}\n"
                + context(h, w.key, w.revision, note="the acknowledged revision")
            )
            continue
        rows = {rev: value for rev, value, _m, _c in log.history_of(w.key)}
        if w.value is None:  # a delete: the key must be gone at the acked revision
            if log.state(w.key, w.revision) is not None:
                out.append(
                    f"acked delete of {w.key} by {w.writer} at revision {w.revision}, but the "
                    "key exists in etcd at that revision\n"
                    + context(h, w.key, w.revision, note="acked delete")
                )
                continue
        elif w.revision not in rows or rows[w.revision] is None:
            out.append(
                f"acked {w.op} of {w.key} by {w.writer} (epoch {w.epoch}) at revision "
                f"{w.revision}: etcd has no such put of this key at that revision\n"
                + context(h, w.key, w.revision, note=f"acked {_short(w.value)}")
            )
            continue
        elif w.value is not UNKNOWN and rows[w.revision] != w.value:
            out.append(
                f"acked {w.op} of {w.key} at revision {w.revision} wrote {_short(w.value)}, but "
                f"etcd holds {_short(rows[w.revision])} there\n"
                + context(h, w.key, w.revision, note="acked value differs")
            )
            continue
        # Still the latest change of the key at a replica's (or etcd's) final revision?
        finals = [(f"replica {rid}", rev, items) for rid, (rev, items) in h.replica_finals.items()]
        if h.etcd_final is not None:
            finals.append(("etcd's final range", *h.etcd_final))
        for who, rev, items in finals:
            if rev < w.revision:
                continue
            latest = log.state(w.key, rev)
            if w.value is None:
                if latest is None and w.key in items:
                    out.append(
                        f"acked delete of {w.key} at {w.revision} is missing from {who} at "
                        f"{rev}: it still holds {_short(items[w.key][0])}\n"
                        + context(h, w.key, rev, note=f"{who} final")
                    )
                continue
            if (
                latest is not None
                and latest[1] == w.revision
                and items.get(w.key) != (latest[0], latest[1])
            ):
                got = items.get(w.key)
                out.append(
                    f"acked {w.op} of {w.key} at {w.revision} is missing from {who} at {rev}: "
                    f"it holds {_short(None if got is None else got[0])} "
                    f"(mod {None if got is None else got[1]})\n"
                    + context(h, w.key, rev, note=f"{who} final")
                )
    return out


def _reads(h: History) -> list[str]:
    out = []
    log = h.truth
    for r in h.reads:
        if r.revision < log.start_revision or r.revision > log.covered:
            out.append(
                f"replica {r.replica} served {r.key} at revision {r.revision}, outside etcd's "
                f"history [{log.start_revision}, {log.covered}]\n"
            )
            continue
        expected = log.value(r.key, r.revision)
        if expected != r.value:
            out.append(
                f"replica {r.replica} served {r.key} = {_short(r.value)} at revision "
                f"{r.revision}; etcd had {_short(expected)} at that revision\n"
                + context(h, r.key, r.revision, note=f"read by {r.replica}: {_short(r.value)}")
            )
    return out


def _monotonic(h: History) -> list[str]:
    out = []
    last_sample: dict[str, tuple[int, float]] = {}
    high: dict[str, int] = {}
    last_watch: dict[str, int] = {}
    for a in h.applied:
        if a.source == "sample":
            prev = last_sample.get(a.replica)
            if prev is not None and a.revision < prev[0]:
                out.append(
                    f"replica {a.replica} served revision {a.revision} after having served "
                    f"{prev[0]} ({a.wall - prev[1]:.3f}s earlier): its revision went backwards"
                )
            last_sample[a.replica] = (max(a.revision, prev[0]) if prev else a.revision, a.wall)
            continue
        # listener events: a watch event never precedes one already delivered; a rebuild's
        # diff carries revisions past the last watch event applied before it
        if a.source == "event:watch":
            if a.revision < high.get(a.replica, 0):
                out.append(
                    f"replica {a.replica} delivered a watch event of {a.key} at {a.revision} "
                    f"after an event at {high[a.replica]}: events went backwards\n"
                    + (context(h, a.key, a.revision, note="late event") if a.key else "")
                )
            last_watch[a.replica] = a.revision
        elif a.revision <= last_watch.get(a.replica, 0):
            out.append(
                f"replica {a.replica} delivered a rebuild event of {a.key} at {a.revision}, not "
                f"past the last watch event at {last_watch[a.replica]}\n"
                + (context(h, a.key, a.revision, note="rebuild event") if a.key else "")
            )
        high[a.replica] = max(high.get(a.replica, 0), a.revision)
    return out


def _diff(expected: dict[str, tuple[bytes, int]], got: dict[str, tuple[bytes, int]]
          ) -> list[str]:  # fmt: skip
    return sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))


def _final(h: History) -> list[str]:
    out = []
    log = h.truth
    for rid, (rev, items) in sorted(h.replica_finals.items()):
        if rev > log.covered or rev < log.start_revision:
            out.append(f"replica {rid} ended at revision {rev}, outside etcd's history "
                       f"[{log.start_revision}, {log.covered}]")  # fmt: skip
            continue
        expected = log.fold(h.data_prefix, rev)
        bad = _diff(expected, items)
        if bad:
            key = bad[0]
            want, got = expected.get(key), items.get(key)
            out.append(
                f"replica {rid}'s final cache at revision {rev} differs from etcd at {rev} on "
                f"{len(bad)} keys {bad[:5]}; first: {key} cache={_short(got and got[0])} "
                f"(mod {got and got[1]}) etcd={_short(want and want[0])} (mod {want and want[1]})\n"
                + context(h, key, rev, note=f"replica {rid} final")
            )
    if h.etcd_final is not None:
        rev, items = h.etcd_final
        expected = log.fold("", rev)
        bad = _diff(expected, items)
        if bad:
            key = bad[0]
            out.append(
                f"etcd's final range at {rev} differs from the truth log's fold on {len(bad)} "
                f"keys {bad[:5]} (the log missed events)\n" + context(h, key, rev, note="final")
            )
    return out


def _commit_revision(h: History, w: WriteRecord) -> int | None:
    """The revision ``w`` was really committed at (a recovered delete reports a later one)."""
    assert w.revision is not None
    if w.value is not None:
        return w.revision
    deletes = [rev for rev, value, _m, _c in h.truth.history_of(w.key)
               if value is None and rev <= w.revision]  # fmt: skip
    return deletes[-1] if deletes else None


def _fencing(h: History) -> list[str]:
    out = []
    log = h.truth
    if h.fenced_from is not None:
        for e in log.events:
            if e.revision < h.fenced_from or not e.key.startswith(h.data_prefix):
                continue
            if log.state(h.leader_key, e.revision) is None:
                out.append(
                    f"{'delete' if e.value is None else 'put'} of {e.key} committed at "
                    f"{e.revision} while no writer held the leader key\n"
                    + context(h, e.key, e.revision, note="unfenced commit")
                )
    for w in h.writes:
        if w.outcome != "ok" or w.revision is None or w.epoch is None:
            continue
        if w.revision > log.covered or w.revision < log.start_revision:
            continue  # reported by durability
        rev = _commit_revision(h, w)
        if rev is None:
            continue
        leader = log.state(h.leader_key, rev)
        epoch = None if leader is None else leader[2]
        if epoch != w.epoch:
            out.append(
                f"{w.op} of {w.key} acked by {w.writer} as epoch {w.epoch} was committed at "
                f"{rev} while the leader key had epoch {epoch}: a writer committed without "
                "leading\n" + context(h, w.key, rev, note=f"commit by {w.writer}")
            )
    return out


_CHECKS = {
    "durability": _durability,
    "read": _reads,
    "monotonic": _monotonic,
    "final": _final,
    "fencing": _fencing,
}


def violations(h: History, rules: Iterable[str] = RULES) -> dict[str, list[str]]:
    """Every violation, by rule (empty lists for rules that hold)."""
    return {rule: _CHECKS[rule](h) for rule in rules}


def check_history(h: History, rules: Sequence[str] = RULES) -> CheckStats:
    """Check ``rules`` over ``h``; raise HistoryViolation for the first rule that fails."""
    if not h.truth.complete:
        raise HistoryIncompleteError(f"truth log incomplete: {h.truth.hole}")
    unknown = set(rules) - set(RULES)
    if unknown:
        raise ValueError(f"unknown rules {sorted(unknown)}")
    for rule in rules:
        found = _CHECKS[rule](h)
        if found:
            raise HistoryViolation(rule, found[0], len(found))
    epochs = {c for _r, v, _m, c in h.truth.history_of(h.leader_key) if v is not None}
    return CheckStats(
        acked_writes=sum(1 for w in h.writes if w.outcome == "ok"),
        maybe_writes=sum(1 for w in h.writes if w.outcome != "ok"),
        reads=len(h.reads),
        applied=len(h.applied),
        truth_events=len(h.truth.events),
        replicas=len(h.replica_finals),
        leader_epochs=len(epochs),
    )
