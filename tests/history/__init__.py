"""History-based checking of rmwatch under faults.

``recorder`` records what clients were told (acknowledged writes, reads served by replicas,
applied revisions) and, independently of the code under test, what etcd really did (a raw watch
of the whole root prefix from the first revision of the test: the *truth log*).
``checker`` verifies five rules over that history and raises ``HistoryViolation`` with the few
events that show a violation:

- ``durability`` (a): every acknowledged write is in etcd's history at its revision, and in
  every replica's final cache whose revision is at or past it (unless overwritten since);
- ``read`` (b): every read a replica served equals the fold of etcd's history at its revision;
- ``monotonic`` (c): a replica's applied/served revisions never go backwards;
- ``final`` (d): at the end each replica's cache equals etcd's state at the same revision,
  and etcd's final range equals the truth log's fold (the log itself is complete);
- ``fencing`` (e): every metadata change was committed while a writer held the leader key,
  and an acknowledged write with a known epoch was committed under exactly that epoch.
"""

from .checker import RULES, CheckStats, HistoryViolation, check_history
from .recorder import (
    UNKNOWN,
    AppliedRecord,
    History,
    ReadRecord,
    Recorder,
    TrueEvent,
    TruthLog,
    TruthWatcher,
    WriteRecord,
)

__all__ = [
    "RULES",
    "UNKNOWN",
    "AppliedRecord",
    "CheckStats",
    "History",
    "HistoryViolation",
    "ReadRecord",
    "Recorder",
    "TrueEvent",
    "TruthLog",
    "TruthWatcher",
    "WriteRecord",
    "check_history",
]
