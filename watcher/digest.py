"""The digest check: the cache compared with etcd's own range at the cache's revision.

The replica's structure makes divergence unlikely; this check makes it detectable. It compares
bytes and mod revisions, key for key, so it needs no decoding. A mismatch is logged, counted
and repaired by a rebuild; in strict mode it also raises ``DigestMismatchError`` (for tests and
audits). The last result, and the strict-mode error if one was raised, appear on ``status()``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc

from rmwatch._logging import get_logger
from rmwatch.errors import DigestMismatchError
from rmwatch.store.etcd import EtcdClient
from rmwatch.watcher.cache import Snapshot
from rmwatch.watcher.failures import describe
from rmwatch.watcher.loader import load_prefix
from rmwatch.watcher.metrics import ReplicaMetrics
from rmwatch.watcher.published import Published

_log = get_logger("replica")


@dataclass(frozen=True)
class DigestResult:
    """Outcome of comparing the cache with etcd at ``revision``."""

    revision: int
    keys: int
    mismatched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when cache and etcd agree key for key."""
        return not self.mismatched


def compare(snap: Snapshot, etcd_kvs: Iterable[tuple[str, bytes, int]]) -> DigestResult:
    """Keys whose bytes or mod revision differ between ``snap`` and etcd's range at its
    revision (missing on either side included), sorted."""
    ours = snap.raw_items()
    theirs = {key: (value, mod) for key, value, mod in etcd_kvs}
    mismatched = sorted(
        key for key in ours.keys() | theirs.keys() if ours.get(key) != theirs.get(key)
    )
    return DigestResult(snap.revision, len(theirs), mismatched)


class DigestJob:
    """Checks on demand (``check``) or every ``interval`` seconds on its own thread (``run``).

    ``request_rebuild(reason, cause)`` is the sync worker's: a mismatch asks it for a rebuild.
    """

    def __init__(
        self,
        *,
        client: EtcdClient,
        prefix: str,
        page_size: int,
        published: Published,
        metrics: ReplicaMetrics,
        strict: bool,
        request_rebuild: Callable[[str, str], None],
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._page_size = page_size
        self._published = published
        self._metrics = metrics
        self._strict = strict
        self._request_rebuild = request_rebuild
        # The last check's result and the error it raised in strict mode, as one pair.
        self._outcome: tuple[DigestResult, DigestMismatchError | None] | None = None

    def run(self, stop: threading.Event, interval: float) -> None:
        """The thread: one check per ``interval``; failures are logged, never fatal."""
        while not stop.wait(interval):
            try:
                self.check()
            except DigestMismatchError:
                pass  # already logged, counted, and kept for status()
            except Exception as exc:
                _log.warning("digest_skipped", error=describe(exc))

    def check(self) -> DigestResult | None:
        """Compare now (see ``Replica.check_digest``); None when the cache's revision is
        already compacted, so there is nothing to compare against."""
        snap = self._published.current
        if snap is None:
            return None
        try:
            loaded = load_prefix(
                self._client, self._prefix, page_size=self._page_size, at_revision=snap.revision
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.OUT_OF_RANGE:
                return None
            raise
        result = compare(snap, loaded.kvs)
        mismatched = result.mismatched
        if not mismatched:
            self._outcome = (result, None)
            _log.debug("digest_matched", revision=snap.revision, keys=result.keys)
            return result
        self._metrics.digest_mismatches.inc()
        _log.error(
            "digest_mismatch", revision=snap.revision, count=len(mismatched), keys=mismatched[:10]
        )
        self._request_rebuild(
            "digest_mismatch",
            f"digest mismatch at {snap.revision}: {len(mismatched)} keys differ",
        )
        error = (
            DigestMismatchError(f"cache differs from etcd at {snap.revision}: {mismatched[:10]}")
            if self._strict
            else None
        )
        self._outcome = (result, error)  # one reference: status() never mixes two checks
        if error is not None:
            raise error
        return result

    @property
    def last(self) -> DigestResult | None:
        """The result of the last completed check."""
        outcome = self._outcome
        return None if outcome is None else outcome[0]

    def status(self) -> dict[str, Any] | None:
        """The last result for /status, with the strict-mode error it raised (None before the
        first check)."""
        outcome = self._outcome
        if outcome is None:
            return None
        last, error = outcome
        return {
            "revision": last.revision,
            "keys": last.keys,
            "mismatched": last.mismatched[:20],
            "mismatched_count": len(last.mismatched),
            "ok": last.ok,
            "error": None if error is None else str(error),
        }
