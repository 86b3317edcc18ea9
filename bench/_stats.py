"""How every figure turns timings into a verdict: the A/B alternation, per-rep ratios, summaries
and the goal rows of the table.

A figure is never an absolute number: ours and its baseline run in the same loop, alternated so
that drift on a shared machine (other jobs, etcd's own compaction, a warmer page cache) hits
both sides alike, and each rep gives one ratio. The table shows the median ratio with the
min-max over the reps.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

Row = dict[str, Any]
"""One line of the table (and of ``latest.json``'s ``figures``): id, figure, median, min, max,
goal, met (True, False, or None for an informative line), digits."""


def rotation(names: Sequence[str], rep: int) -> list[str]:
    """The order of rep ``rep``: ``names`` rotated by ``rep`` (A/B then B/A with two variants;
    A/B/C, B/C/A, C/A/B with three), so no variant always runs first."""
    shift = rep % len(names)
    return [*names[shift:], *names[:shift]]


def alternated(
    reps: int,
    variants: Mapping[str, Callable[[int], T]],
    *,
    after_rep: Callable[[int, dict[str, list[T]]], None] | None = None,
) -> dict[str, list[T]]:
    """Call every variant once per rep (with the rep number), in ``rotation`` order; return the
    samples per variant. ``after_rep(rep, samples)`` runs after each rep (progress lines)."""
    names = list(variants)
    samples: dict[str, list[T]] = {name: [] for name in names}
    for rep in range(reps):
        for name in rotation(names, rep):
            samples[name].append(variants[name](rep))
        if after_rep is not None:
            after_rep(rep, samples)
    return samples


def pct(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of ``values`` by nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def quantiles(values: Sequence[float], points: int = 200) -> list[float]:
    """``points`` evenly spaced quantiles (0..1) of ``values``: a CDF small enough for JSON."""
    ordered = sorted(values)
    if not ordered:
        return []
    last = len(ordered) - 1
    return [round(ordered[round(i * last / (points - 1))], 4) for i in range(points)]


def summary(samples: Sequence[float], digits: int = 4) -> dict[str, Any]:
    """Median, min, max and the samples themselves."""
    return {
        "median": round(statistics.median(samples), digits),
        "min": round(min(samples), digits),
        "max": round(max(samples), digits),
        "samples": [round(s, digits) for s in samples],
    }


def ratio_summary(
    ours: Sequence[float], base: Sequence[float], *, invert: bool = False, digits: int = 3
) -> dict[str, Any]:
    """Per-rep ratios ours/base (base/ours with ``invert``): median, min, max, samples."""
    ratios = [(b / o if invert else o / b) for o, b in zip(ours, base, strict=True)]
    return summary(ratios, digits)


def fmt_range(s: Mapping[str, Any], unit: str = "", digits: int = 3) -> str:
    """``median [min-max]`` of a summary, e.g. ``1.134s [1.115-1.194]``."""
    return f"{s['median']:.{digits}f}{unit} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"


def goal_row(
    pid: str, what: str, fig: Mapping[str, Any], op: str, goal: float, digits: int = 3
) -> Row:
    """A table row whose median must be ``op`` (``"<="`` or ``">="``) ``goal`` to PASS."""
    met = fig["median"] <= goal if op == "<=" else fig["median"] >= goal
    return {"id": pid, "figure": what, "median": fig["median"], "min": fig["min"],
            "max": fig["max"], "goal": f"{op} {goal:g}x", "met": met,
            "digits": digits}  # fmt: skip
