"""The paginated load hands each page to its caller while the next page is being fetched, and
the replica decodes pages as they come, decoding again only what changed on a rebuild."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, cast

from harness import make_client, put_group

from rmwatch.store.etcd import EtcdClient, connect
from rmwatch.store.etcd.config import EtcdConfig
from rmwatch.store.keys import KeyLayout
from rmwatch.watcher.cache import PageDecoder
from rmwatch.watcher.loader import load_prefix


class _Recording:
    """A real client that notes each range call's start key and signals every call."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.starts: list[bytes] = []
        self.called = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def get_range_response(self, range_start: str | bytes, *args: Any, **kwargs: Any) -> Any:
        self.starts.append(
            bytes(range_start, "utf-8") if isinstance(range_start, str) else range_start
        )
        response = self._inner.get_range_response(range_start, *args, **kwargs)
        self.called.set()
        return response


class TestPagesOverlap:
    def test_next_page_is_fetched_while_a_page_is_worked_on(
        self, etcd_endpoints: list[str]
    ) -> None:
        """While ``on_kvs`` holds page n, page n+1's range is already answered; the pages come
        in key order, once each, and make up the whole prefix at one revision."""
        layout = KeyLayout("/pipe/")
        writer = make_client(etcd_endpoints)
        for i in range(7):
            put_group(writer, layout, f"g{i}")
        client = _Recording(connect(EtcdConfig(endpoints=tuple(etcd_endpoints))))
        pages: list[list[str]] = []
        overlapped: list[bool] = []

        def on_kvs(number: int, page: Sequence[tuple[str, bytes, int]]) -> None:
            assert number == len(pages) + 1
            client.called.clear()
            # The fetch of the next page runs on its own thread: it lands while we wait here.
            overlapped.append(client.called.wait(5))
            pages.append([key for key, _, _ in page])

        loaded = load_prefix(cast(EtcdClient, client), layout.prefix, page_size=2, on_kvs=on_kvs)
        keys = [key for page in pages for key in page]
        assert keys == sorted(keys)
        assert keys == [layout.settings(f"g{i}") for i in range(7)]
        assert (loaded.count, loaded.kvs) == (7, [])
        assert [len(p) for p in pages] == [2, 2, 2, 1]
        assert overlapped == [True, True, True, False]  # the last page has no successor
        assert loaded.pages == 4
        assert len(client.starts) == 4
        writer.close()


class TestPageDecoder:
    def test_a_rebuild_decodes_only_what_changed(self, etcd_endpoints: list[str]) -> None:
        """Decoding pages against the served snapshot keeps the entries of the values it holds
        unchanged (not decoded again, not held twice) and decodes the changed one; the load
        keeps no second list of the pages."""
        layout = KeyLayout("/redecode/")
        writer = make_client(etcd_endpoints)
        for i in range(6):
            put_group(writer, layout, f"g{i}", priority=1)
        client = connect(EtcdConfig(endpoints=tuple(etcd_endpoints)))
        first = PageDecoder(layout, None)
        loaded = load_prefix(client, layout.prefix, page_size=4, on_kvs=first)
        assert (loaded.count, loaded.kvs, loaded.pages) == (6, [], 2)
        old = first.snapshot(loaded.revision)
        assert all(entry.decoded for entry in old.entries.values())

        put_group(writer, layout, "g2", priority=5)
        again = PageDecoder(layout, old)
        loaded = load_prefix(client, layout.prefix, page_size=4, on_kvs=again)
        new = again.snapshot(loaded.revision)
        changed = layout.settings("g2")
        for key, entry in new.entries.items():
            assert (entry is old.entries[key]) is (key != changed), key
        group = new.get_group("g2")
        assert group is not None
        assert group.priority == 5
        assert new.revision == loaded.revision > old.revision
        writer.close()
