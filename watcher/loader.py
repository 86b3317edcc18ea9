"""Load the whole prefix at ONE revision, and measure how far the store has moved since.

Page one is read at the current revision; its header revision R pins every later page, so the
snapshot never mixes revisions (PD's legacy loader reads each page at the latest revision).
If R is compacted mid-load (gRPC OUT_OF_RANGE) the load starts over at a fresh revision.
Pages are large (5000 keys by default) because every page costs the server a fixed overhead
on top of its keys, so fewer, larger pages load a big prefix faster (see bench/README.md).
A caller that works on each page (``on_kvs``: the replica decodes it) gets the next page
fetched meanwhile, so etcd serves page n+1 while page n is decoded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import grpc
from pyetcd import utils as etcd_utils

from rmwatch.store.etcd import EtcdClient, call_with_retry

if TYPE_CHECKING:
    from rmwatch.watcher.cache import Snapshot

DEFAULT_PAGE_SIZE = 5000


@dataclass(frozen=True)
class LoadedPrefix:
    """Every key under a prefix at ``revision`` (``kvs``: empty when the pages went to an
    ``on_kvs`` consumer, which keeps what it needs); ``restarts`` lists why earlier tries
    restarted."""

    revision: int
    kvs: list[tuple[str, bytes, int]]
    pages: int
    restarts: list[str] = field(default_factory=list)
    count: int = 0  # keys loaded, with or without ``kvs``


@dataclass(frozen=True)
class StoreMark:
    """The store as seen after a load: its revision S, the newest mod revision M under the
    prefix at S, and the number of keys under the prefix at S.

    The cache has caught up once applied >= S, or once applied >= M and it holds ``count`` keys:
    in (M, S] only deletes can have happened under the prefix (any put would raise M), so equal
    counts prove none is pending. Progress notifications alone are not trusted: etcd before
    3.4.25 / 3.5.8 can send one ahead of pending events (etcd-io/etcd#15220).
    """

    store_revision: int
    max_mod_revision: int
    count: int

    def unchanged_since(self, snap: Snapshot) -> bool:
        """True when etcd at ``store_revision`` holds exactly ``snap``'s keys and values.

        In (snap.revision, S] no put happened under the prefix (the newest mod revision there
        is not after the snapshot), and no delete either (a delete without a later put would
        leave fewer keys than the snapshot holds).
        """
        return self.max_mod_revision <= snap.revision and self.count == len(snap.entries)


def _range(client: EtcdClient, start: bytes, end: bytes, **kwargs: Any) -> Any:
    return client.get_range_response(start, end, **kwargs)


def load_prefix(
    client: EtcdClient,
    prefix: str,
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
    deadline: float = 30.0,
    max_restarts: int = 10,
    at_revision: int | None = None,
    on_page: Callable[[int, int], None] | None = None,
    on_kvs: Callable[[int, Sequence[tuple[str, bytes, int]]], None] | None = None,
    stop: threading.Event | None = None,
) -> LoadedPrefix:
    """Read every key under ``prefix`` at one revision (see module doc).

    With ``at_revision`` every page is read at that revision and compaction is not retried
    (the caller asked for that revision only): gRPC OUT_OF_RANGE propagates. ``on_kvs`` is
    called with each page's number (from 1) and ``(key, value, mod_revision)`` while the next
    page is fetched, and the pages are not also kept in ``kvs`` (a rebuild would hold every
    value twice); a load that starts over calls it again with page 1, after which the
    consumer must forget the pages of the try that was abandoned. Once ``stop`` is set no
    retry starts (EtcdUnavailableError at once).
    """
    start = prefix.encode()
    end = etcd_utils.prefix_range_end(start)
    restarts: list[str] = []
    while True:
        try:
            return _load_once(
                client,
                start=start,
                end=end,
                page_size=page_size,
                deadline=deadline,
                restarts=restarts,
                at_revision=at_revision,
                on_page=on_page,
                on_kvs=on_kvs,
                stop=stop,
            )
        except grpc.RpcError as exc:
            if (
                exc.code() != grpc.StatusCode.OUT_OF_RANGE
                or at_revision is not None
                or len(restarts) >= max_restarts
            ):
                raise
            restarts.append(f"revision compacted during paginated load: {exc.details()}")


def _load_once(
    client: EtcdClient,
    *,
    start: bytes,
    end: bytes,
    page_size: int,
    deadline: float,
    restarts: list[str],
    at_revision: int | None,
    on_page: Callable[[int, int], None] | None,
    on_kvs: Callable[[int, Sequence[tuple[str, bytes, int]]], None] | None,
    stop: threading.Event | None,
) -> LoadedPrefix:
    pinned = {} if at_revision is None else {"revision": at_revision}
    first = call_with_retry(
        partial(_range, client, start, end, limit=page_size, **pinned),
        deadline=deadline,
        what="load page 1",
        stop=stop,
    )
    revision = at_revision if at_revision is not None else int(first.header.revision)
    kvs: list[tuple[str, bytes, int]] = []
    count = 0
    response, pages = first, 1
    # One fetcher thread, only when there is per-page work to overlap with.
    pool = ThreadPoolExecutor(1, "rmwatch-load") if on_kvs is not None else None
    try:
        while True:
            more = bool(response.more and response.kvs)
            fetch: Callable[[], Any] | None = None
            pending: Future[Any] | None = None
            if more:
                fetch = partial(
                    call_with_retry,
                    partial(_range, client, response.kvs[-1].key + b"\0", end,
                            limit=page_size, revision=revision),
                    deadline=deadline,
                    what=f"load page {pages + 1} at revision {revision}",
                    stop=stop,
                )  # fmt: skip
                if pool is not None:
                    pending = pool.submit(fetch)
            page = [
                (kv.key.decode("utf-8", "surrogateescape"), kv.value, kv.mod_revision)
                for kv in response.kvs
            ]
            count += len(page)
            if on_kvs is not None:
                on_kvs(pages, page)
            else:
                kvs.extend(page)
            if on_page is not None:
                on_page(pages, count)
            if fetch is None:
                break
            pages += 1
            response = pending.result() if pending is not None else fetch()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return LoadedPrefix(revision, kvs, pages, list(restarts), count)


def store_mark(
    client: EtcdClient,
    prefix: str,
    *,
    deadline: float = 10.0,
    stop: threading.Event | None = None,
) -> StoreMark:
    """One range (newest mod revision first, limit 1) gives S, M and the key count at S."""
    start = prefix.encode()
    end = etcd_utils.prefix_range_end(start)
    response = call_with_retry(
        lambda: _range(
            client, start, end, limit=1, sort_order="descend", sort_target="mod", keys_only=True
        ),
        deadline=deadline,
        what="read store revision",
        stop=stop,
    )
    newest = int(response.kvs[0].mod_revision) if response.kvs else 0
    return StoreMark(int(response.header.revision), newest, int(response.count))
