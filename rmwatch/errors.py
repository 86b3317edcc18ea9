"""Every error a caller of rmwatch can meet, in one tree (the lowest layer: imports nothing).

RmwatchError
├── InvalidKeyError          a key under the prefix does not parse (kind, keyspace id, name)
├── DecodeError              a value in etcd does not decode; names the key
├── InvalidInputError        a request value fails validation; names the field (HTTP 400)
│   └── BodyTooLargeError    a request body over the size cap (HTTP 413)
├── EtcdUnavailableError     etcd did not answer within the deadline after retries
├── EtcdClientClosedError    a call on an etcd client after its ``close()``
├── EtcdAuthError            etcd refused our credentials (user/password); not transient
├── AuthSetupError           ``rmwatch etcd-setup-auth`` could not finish a step
├── WriteError               a write was not applied; nothing was written
│   ├── WriteRefusedError    the write role forbids it (HTTP 403)
│   │   └── ReservedGroupError   delete of the reserved group ``default`` (HTTP 403)
│   ├── NotFoundError        group or service limit missing (HTTP 404)
│   ├── AlreadyExistsError   add of an existing group (HTTP 400, as PD)
│   ├── ConflictError        compare-and-set lost; carries the current revision (HTTP 409)
│   ├── NotLeaderError       this writer is not (or no longer) the leader; names the leader
│   ├── EtcdRefusedError     etcd refused the write, named: no space, too large, no leader...
│   └── DrainingError        this writer is draining and takes no new writes (HTTP 503)
└── ReplicaError             a replica's reader could not be answered
    ├── NotReadyError        not loaded / not caught up / failed / too stale; state + reason
    ├── RevisionTimeoutError ``min_revision`` not reached in time; carries the current one
    ├── ReplicaClosedError   the replica was closed (or never started)
    ├── DigestMismatchError  strict digest mode: the cache differs from etcd
    └── WatchEndedError      a replica watch stream ended; carries where to resume
        ├── WatchCompactedError  the start revision is older than the replica's history
        └── WatchCutOffError     the watcher fell behind its bounded buffer
"""

from __future__ import annotations


class RmwatchError(Exception):
    """Base of every error raised by rmwatch."""


class InvalidKeyError(RmwatchError, ValueError):
    """A key does not match PD's resource-group key layout."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"invalid key {key!r}: {reason}")
        self.key = key
        self.reason = reason


class DecodeError(RmwatchError, ValueError):
    """A value stored in etcd does not decode; ``key`` says which one."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"cannot decode value of {key!r}: {reason}")
        self.key = key
        self.reason = reason


class InvalidInputError(RmwatchError, ValueError):
    """A request value fails validation; ``field`` names it (dotted path).

    The message is ``invalid <field>: <reason>``, or with ``pd_text`` the reason alone: where
    PD answers the case with words of its own (which name the field themselves), a PD client
    gets exactly those words.
    """

    def __init__(self, field: str, reason: str, *, pd_text: bool = False) -> None:
        super().__init__(reason if pd_text else f"invalid {field}: {reason}")
        self.field = field
        self.reason = reason


class BodyTooLargeError(InvalidInputError):
    """A request body over the size cap (HTTP 413); nothing was read past the cap."""

    def __init__(self, limit: int) -> None:
        super().__init__("body", f"larger than {limit} bytes")
        self.limit = limit


class EtcdUnavailableError(RmwatchError, ConnectionError):
    """etcd did not answer within the deadline, after retrying every endpoint."""


class EtcdClientClosedError(RmwatchError):
    """A call on an etcd client after its ``close()``; not transient (nothing will reopen it)."""


class EtcdAuthError(RmwatchError, PermissionError):
    """etcd refused to authenticate the configured user (wrong user or password).

    Not transient: retrying with the same credentials cannot succeed. The message names the
    user and etcd's reason, never the password.
    """


class AuthSetupError(RmwatchError):
    """``rmwatch etcd-setup-auth`` could not complete; the message says which step and why."""


class WriteError(RmwatchError):
    """A write was not applied. HTTP status ``status`` is PD's answer for it."""

    status = 500


class WriteRefusedError(WriteError):
    """The configured write role forbids this write ("metadata write is disabled")."""

    status = 403


class ReservedGroupError(WriteRefusedError):
    """The reserved group ``default`` cannot be deleted (PD refuses it in every keyspace)."""


class NotFoundError(WriteError, LookupError):
    """The group, keyspace or service limit does not exist."""

    status = 404


def group_not_found(name: str) -> NotFoundError:
    """PD's ``errs.ErrResourceGroupNotExists`` for group ``name`` (pkg/errs/errno.go:538, HEAD
    a186e0c), worded as pingcap/errors prints it (``[code]message``): the text of PD's 404 for
    a group GET or PUT and of its gRPC error for a missing group, which PD's clients match on."""
    return NotFoundError(
        f"[PD:resourcemanager:ErrGroupNotExists]the {name} resource group does not exist"
    )


class AlreadyExistsError(WriteError):
    """Add of a group that already exists."""

    status = 400


class ConflictError(WriteError):
    """A compare-and-set write lost: the key changed since ``expected_revision``."""

    status = 409

    def __init__(self, message: str, *, current_revision: int) -> None:
        super().__init__(message)
        self.current_revision = current_revision


class NotLeaderError(WriteError):
    """This writer is not the elected leader (or lost leadership mid-write)."""

    status = 503

    def __init__(self, message: str, *, leader: str | None = None) -> None:
        super().__init__(message)
        self.leader = leader


class EtcdRefusedError(WriteError):
    """etcd refused the write and said why (no space, too many requests, too large, auth
    expired, no leader); ``status`` is the HTTP answer that names it, ``reason`` etcd's words."""

    def __init__(self, message: str, *, status: int, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class DrainingError(WriteError):
    """This writer is draining: it finishes writes in flight and takes no new ones."""

    status = 503


class ReplicaError(RmwatchError):
    """Base of the errors a replica's reader can meet."""


class NotReadyError(ReplicaError):
    """The replica cannot serve: it has not caught up, it failed, or its data is too old."""

    def __init__(self, state: str, reason: str) -> None:
        super().__init__(f"replica not ready ({state}): {reason}")
        self.state = state
        self.reason = reason


class RevisionTimeoutError(ReplicaError, TimeoutError):
    """The cache did not reach the wanted revision within the timeout."""

    def __init__(self, wanted: int, current: int, timeout: float) -> None:
        super().__init__(f"revision {wanted} not reached within {timeout:.3g}s (at {current})")
        self.wanted = wanted
        self.current = current


class ReplicaClosedError(ReplicaError):
    """The replica was closed (or never started); create a new one."""


class DigestMismatchError(ReplicaError, AssertionError):
    """Strict digest mode: the cache differs from etcd at the cache's revision."""


class WatchEndedError(ReplicaError):
    """A watch on a replica ended before the caller closed it; ``resume_revision`` says where a
    new watch (after a reload, for a compacted one) picks up without missing a change."""

    def __init__(self, message: str, *, resume_revision: int) -> None:
        super().__init__(message)
        self.resume_revision = resume_revision


class WatchCompactedError(WatchEndedError):
    """The start revision is no longer in the replica's history (as etcd's compacted
    revision): reload, then watch from the reload's revision + 1."""


class WatchCutOffError(WatchEndedError):
    """The watcher did not keep up: its bounded buffer filled and the replica cut it off rather
    than slow the others. Nothing after ``resume_revision - 1`` was delivered."""
