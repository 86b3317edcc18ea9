"""The snapshot a replica-side gRPC read answers from: readiness and ``min-revision``.

The same rules as the sidecar's HTTP reads: a replica that is not ready is refused at once
(``UNAVAILABLE`` naming its state and reason); ``min-revision`` request metadata waits, bounded,
until the cache has that revision (``DEADLINE_EXCEEDED`` with the revision reached otherwise).
Every refusal carries ``x-revision`` (the revision applied now).
"""

from __future__ import annotations

from typing import Any

import grpc

from rmwatch.errors import NotReadyError, RevisionTimeoutError
from rmwatch.grpc.calls import MIN_REVISION_KEY, RpcAbortError, metadata_value, revision_trailer
from rmwatch.store.keys import parse_revision
from rmwatch.watcher.cache import Snapshot
from rmwatch.watcher.replica import Replica
from rmwatch.watcher.revision_wait import RevisionWaiter

DEFAULT_MIN_REVISION_TIMEOUT = 5.0


class SnapshotReads:
    """Picks the snapshot for one call (on the server's event loop)."""

    def __init__(
        self, replica: Replica, *, min_revision_timeout: float = DEFAULT_MIN_REVISION_TIMEOUT
    ) -> None:
        self.replica = replica
        self.min_revision_timeout = min_revision_timeout
        self._waiter = RevisionWaiter(replica)

    def unavailable(self, state: str, reason: str) -> RpcAbortError:
        """The refusal of a replica that is not ready."""
        return RpcAbortError(
            grpc.StatusCode.UNAVAILABLE,
            f"replica not ready ({state}): {reason}",
            revision_trailer(self.replica.revision),
        )

    async def snapshot(self, context: Any) -> Snapshot:
        """The current snapshot, or one at least at the ``min-revision`` metadata."""
        raw = metadata_value(context, MIN_REVISION_KEY)
        wanted: int | None = None
        if raw:
            try:
                wanted = parse_revision(raw)
            except ValueError as exc:
                raise RpcAbortError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"min-revision {exc}",
                    revision_trailer(self.replica.revision),
                ) from None
        if wanted is not None and self.replica.revision < wanted:
            # Refuse at once when not ready: better another replica than a wait that may end
            # stale anyway.
            reason = self.replica.not_ready_reason()
            if reason is not None:
                raise self.unavailable(str(self.replica.state), reason)
            try:
                await self._waiter.wait(wanted, self.min_revision_timeout)
            except RevisionTimeoutError as exc:
                raise RpcAbortError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"revision {wanted} not reached within {self.min_revision_timeout:g}s "
                    f"(at {exc.current})",
                    revision_trailer(exc.current),
                ) from None
        try:
            return self.replica.snapshot()
        except NotReadyError as exc:
            raise self.unavailable(exc.state, exc.reason) from None

    def close(self) -> None:
        """Stop listening to the replica."""
        self._waiter.close()


__all__ = ["DEFAULT_MIN_REVISION_TIMEOUT", "SnapshotReads"]
