"""The watch history and streams behind MetaStorage Watch, without a server: bounds, compacted
starts, rebuild groups, the cut-off; and the library's ``replica_watch`` on a real replica."""

from __future__ import annotations

import pyetcd
import pytest
from harness import group_bytes
from sidecar_support import layout, replica

from rmwatch.errors import WatchCompactedError, WatchCutOffError
from rmwatch.store.keys import KeyLayout
from rmwatch.watcher.cache import ChangeKind
from rmwatch.watcher.fanout import replica_watch
from rmwatch.watcher.history import RevisionChange, RevisionGroup, RevisionHistory
from rmwatch.watcher.replica import Replica
from rmwatch.watcher.watch_stream import KeyRange, WatchBatch, WatchEnd, WatchStream, prefix_end

__all__ = ["layout", "replica"]  # fixtures used by name


def _group(revision: int, after: int, *keys: bytes, rebuild: bool = False) -> RevisionGroup:
    changes = tuple(RevisionChange(ChangeKind.PUT, key, b"v" * 10, revision, None) for key in keys)
    return RevisionGroup(revision, after, changes, rebuild=rebuild)


class TestRevisionHistory:
    """Bounds, floor and the starts it can serve."""

    def test_evicts_past_the_event_bound(self) -> None:
        """Over max_events the oldest groups go and the floor moves to the last one evicted."""
        history = RevisionHistory(max_events=3)
        history.reset(10)
        for revision in range(11, 16):
            history.append(_group(revision, revision - 1, b"k"))
        assert history.events == 3
        assert history.floor == 12
        assert history.check_start(12) is not None
        assert history.check_start(13) is None
        assert [g.revision for g in history.since(13)] == [13, 14, 15]

    def test_evicts_past_the_byte_bound(self) -> None:
        """The byte bound applies too; the newest group always stays."""
        history = RevisionHistory(max_bytes=1)
        history.reset(0)
        history.append(_group(1, 0, b"a"))
        history.append(_group(2, 1, b"b"))
        assert len(history) == 1
        assert history.floor == 1

    def test_compacted_start_names_the_oldest_servable(self) -> None:
        """A start at or below the floor says where to resume (floor + 1), in PD's words."""
        history = RevisionHistory()
        history.reset(20)
        compacted = history.check_start(5)
        assert compacted is not None
        assert compacted.compact_revision == 21
        assert "required watch revision: 5 is smaller than" in compacted.reason

    def test_start_inside_a_rebuild(self) -> None:
        """A rebuild group covers (after, revision]: a start right after `after` is served,
        one strictly inside is compacted to revision + 1."""
        history = RevisionHistory()
        history.reset(10)
        history.append(_group(30, 10, b"k", rebuild=True))
        assert history.check_start(11) is None
        inside = history.check_start(20)
        assert inside is not None
        assert inside.compact_revision == 31


class TestWatchStream:
    """What a stream does with offered groups."""

    def test_filter_and_share(self) -> None:
        """Only keys in range arrive; streams on one range share the batch object."""
        key_range = KeyRange(b"a/", prefix_end(b"a/"))
        one = WatchStream(key_range, start=1)
        two = WatchStream(key_range, start=1)
        shared: dict[KeyRange, WatchBatch | None] = {}
        group = _group(1, 0, b"a/x", b"b/y")
        one.offer(group, shared)
        two.offer(group, shared)
        first, second = one.take(), two.take()
        assert isinstance(first[0], WatchBatch)
        assert [c.key for c in first[0].changes] == [b"a/x"]
        assert first[0] is second[0]

    def test_cut_off_when_the_buffer_fills(self) -> None:
        """Past max_buffer unread batches the stream ends with WatchCutOffError naming the
        revision after the last one taken."""
        stream = WatchStream(KeyRange(b"k"), start=1, max_buffer=2)
        stream.offer(_group(1, 0, b"k"), {})
        assert [i.revision for i in stream.take() if isinstance(i, WatchBatch)] == [1]
        for revision in (2, 3, 4):
            stream.offer(_group(revision, revision - 1, b"k"), {})
        items = stream.take()
        assert len(items) == 1
        assert isinstance(items[0], WatchEnd)
        assert isinstance(items[0].error, WatchCutOffError)
        assert items[0].error.resume_revision == 2

    def test_rebuild_inside_position_is_compacted(self) -> None:
        """A stream positioned inside a rebuild's range is told to reload."""
        stream = WatchStream(KeyRange(b"k"), start=16)
        stream.offer(_group(30, 10, b"k", rebuild=True), {})
        items = stream.take()
        assert isinstance(items[0], WatchEnd)
        assert isinstance(items[0].error, WatchCompactedError)
        assert items[0].error.resume_revision == 31


class TestReplicaWatch:
    """The library's watch on a real replica."""

    def test_batches_from_a_revision(
        self,
        replica: Replica,
        etcd_client: pyetcd.MultiEndpointEtcd3Client,
        layout: KeyLayout,
    ) -> None:
        """replica_watch yields one batch per revision, from the start asked for; a start
        before the hub existed raises WatchCompactedError."""
        with replica_watch(replica, replica.revision + 1) as stream:
            written = [
                int(etcd_client.put(layout.settings(n), group_bytes(n)).header.revision)
                for n in ("x", "y")
            ]
            batches = []
            for batch in stream:
                batches.append(batch)
                if batch.revision == written[-1]:
                    break
        assert [b.revision for b in batches] == written
        assert [c.key for c in batches[0].changes] == [layout.settings("x").encode()]
        with replica_watch(replica, 1) as old, pytest.raises(WatchCompactedError):
            next(iter(old))
