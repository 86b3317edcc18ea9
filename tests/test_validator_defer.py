"""The validator's deferral to the apply path (``Validator._yield_to_apply``): bounded, and
cheap while a steady stream publishes (a unit test: no etcd; the real-etcd paths that submit to
the validator are in test_faults_bad_input.py and test_replica_cache.py)."""

from __future__ import annotations

import threading
import time

from rmwatch.watcher.metrics import ReplicaMetrics
from rmwatch.watcher.validation import Validator


class _Stream:
    """``since_publish`` of a stream that publishes every ``every`` seconds (None: silent)."""

    def __init__(self, every: float | None) -> None:
        self.every = every
        self.started = time.monotonic()
        self.calls = 0

    def since_publish(self) -> float:
        self.calls += 1
        if self.every is None:
            return 1.0
        return (time.monotonic() - self.started) % self.every


def _validator(stream: _Stream) -> Validator:
    return Validator(current=lambda: None, metrics=ReplicaMetrics(),
                     since_publish=stream.since_publish)  # fmt: skip


def _deferred(stream: _Stream, stop: threading.Event | None = None) -> float:
    started = time.monotonic()
    _validator(stream)._yield_to_apply(stop or threading.Event())
    return time.monotonic() - started


def test_a_quiet_stream_is_not_waited_for() -> None:
    stream = _Stream(None)
    assert _deferred(stream) < 0.005
    assert stream.calls == 1


def test_a_steady_stream_is_waited_for_once_up_to_the_bound() -> None:
    """Publishing every 0.5 ms, the stream is never quiet for 2 ms: the validator waits the
    20 ms bound out, looking at the stream twice (it polled every millisecond before: ~20
    wake-ups, each a GIL hand-off, per slice of a steady stream)."""
    stream = _Stream(0.0005)
    waited = _deferred(stream)
    assert 0.018 <= waited < 0.2
    assert stream.calls == 2


def test_stop_ends_the_wait() -> None:
    stop = threading.Event()
    stop.set()
    assert _deferred(_Stream(0.0005), stop) < 0.005
