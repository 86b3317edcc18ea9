"""The remembered JSON group bodies stay within their byte budget, and the group list is built
from them.

``GroupBodies`` drops the least recently used bodies once the budget is spent; an evicted
group is encoded again on its next read, and the answer is byte-identical to the first one.
Checked on groups from a real etcd, both on the cache itself and through the sidecar's HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from harness import put_group
from hypothesis import given, settings
from hypothesis import strategies as st
from sidecar_support import API, layout, replica, serve

from rmwatch.http import fast_group_read, pdjson, sidecar_app
from rmwatch.http.fast_group_read import ENTRY_OVERHEAD, GroupBodies
from rmwatch.http.sidecar_app import create_sidecar_app
from rmwatch.store import go_json
from rmwatch.store.keys import NULL_KEYSPACE_ID, KeyLayout
from rmwatch.store.stored_group import StoredGroup
from rmwatch.watcher.replica import Replica

__all__ = ["layout", "replica"]  # fixtures, re-exported so pytest finds them here

GROUPS = 30


def _seed(etcd_client: Any, layout: KeyLayout, replica: Replica) -> list[str]:
    names = [f"cache-{n:03d}" for n in range(GROUPS)]
    rev = 0
    for n, name in enumerate(names):
        rev = put_group(etcd_client, layout, name, priority=n % 16)
    replica.wait_for_revision(rev, 10)
    return names


def _groups(replica: Replica, names: list[str]) -> dict[str, StoredGroup]:
    snap = replica.snapshot()
    out = {}
    for name in names:
        group = snap.get_group(name, NULL_KEYSPACE_ID)
        assert group is not None
        out[name] = group
    return out


class TestGroupBodies:
    """The cache object: budget, eviction order, identical bytes."""

    def test_it_evicts_to_its_budget_and_re_encodes_the_same_bytes(
        self, replica: Replica, etcd_client: Any, layout: KeyLayout
    ) -> None:
        """Reading more groups than fit keeps the charged bytes under the budget, and an
        evicted group's body, encoded again, is the very same bytes."""
        groups = _groups(replica, _seed(etcd_client, layout, replica))
        probe = GroupBodies()
        first = {n: probe.body(n, NULL_KEYSPACE_ID, False, g, None) for n, g in groups.items()}
        bodies = GroupBodies(max_bytes=(max(map(len, first.values())) + ENTRY_OVERHEAD) * 5)
        for name, group in groups.items():
            bodies.body(name, NULL_KEYSPACE_ID, False, group, None)
            assert bodies.nbytes <= bodies.max_bytes
        assert 4 <= len(bodies) <= 5
        name = next(iter(groups))
        assert bodies.body(name, NULL_KEYSPACE_ID, False, groups[name], None) == first[name]

    def test_on_added_runs_once_per_batch_of_new_bodies(
        self, replica: Replica, etcd_client: Any, layout: KeyLayout, monkeypatch: Any
    ) -> None:
        """``on_added`` (the sidecar's heap refreeze) runs after every ``ADDED_BATCH`` bodies
        encoded, not on a body served from memory."""
        monkeypatch.setattr(fast_group_read, "ADDED_BATCH", 2)
        groups = _groups(replica, _seed(etcd_client, layout, replica))
        calls: list[int] = []
        bodies = GroupBodies(on_added=lambda: calls.append(len(bodies)))
        names = list(groups)[:5]
        for name in names:
            bodies.body(name, NULL_KEYSPACE_ID, False, groups[name], None)
        assert calls == [2, 4]
        for name in names:  # all remembered: nothing added
            bodies.body(name, NULL_KEYSPACE_ID, False, groups[name], None)
        assert calls == [2, 4]

    def test_a_recently_read_body_outlives_colder_ones(
        self, replica: Replica, etcd_client: Any, layout: KeyLayout
    ) -> None:
        """Least recently used goes first: a body read again between others is kept (the
        same bytes object is returned), while the coldest is encoded anew."""
        names = _seed(etcd_client, layout, replica)
        groups = _groups(replica, names)
        sizes = GroupBodies()
        width = max(len(sizes.body(n, 0, False, g, None)) for n, g in groups.items())
        bodies = GroupBodies(max_bytes=(width + ENTRY_OVERHEAD) * 3)

        def read(name: str) -> bytes:
            return bodies.body(name, NULL_KEYSPACE_ID, False, groups[name], None)

        hot, cold = read(names[0]), read(names[1])
        for name in names[2:6]:
            assert read(names[0]) is hot
            read(name)
        assert read(names[0]) is hot
        fresh = read(names[1])
        assert fresh == cold
        assert fresh is not cold


@pytest.fixture
def small_cache_sidecar(replica: Replica) -> Iterator[httpx.Client]:
    """A sidecar over real HTTP whose body cache holds about two groups."""
    app = create_sidecar_app(replica, writer_url=None, discover_leader=None,
                             body_cache_bytes=2 * (600 + ENTRY_OVERHEAD))  # fmt: skip
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def test_answers_over_http_stay_byte_identical_through_evictions(
    small_cache_sidecar: httpx.Client, replica: Replica, etcd_client: Any, layout: KeyLayout
) -> None:
    """Two passes over 30 groups through a two-group cache: every answer of the second pass
    (each one re-encoded after its eviction) has the bytes of the first, and of the routed
    handler."""
    names = _seed(etcd_client, layout, replica)
    first = {n: small_cache_sidecar.get(f"{API}/config/group/{n}").content for n in names}
    for name in names:
        answer = small_cache_sidecar.get(f"{API}/config/group/{name}")
        assert answer.status_code == 200
        assert answer.content == first[name]
        routed = small_cache_sidecar.get(f"{API}/config/group/{name}?min_revision=1")
        assert routed.content == first[name]


def test_the_list_is_built_from_remembered_bodies_and_follows_changes(
    small_cache_sidecar: httpx.Client, replica: Replica, etcd_client: Any, layout: KeyLayout
) -> None:
    """``GET config/groups`` joins the remembered group bodies (``go_json.array_item``,
    ``join_array``): its bytes are those of encoding the whole list afresh, through a cache
    too small to hold it, and a group changed in etcd shows its new value in the next list."""
    names = _seed(etcd_client, layout, replica)

    def fresh() -> bytes:
        snap = replica.snapshot()
        return go_json.marshal_indent([pdjson.group_json(g, snap.get_states(g.name))
                                       for g in snap.list_groups()])  # fmt: skip

    for _ in range(2):  # the second pass reads bodies the first one remembered (or evicted)
        listed = small_cache_sidecar.get(f"{API}/config/groups")
        assert listed.status_code == 200
        assert listed.content == fresh()
    revision = put_group(etcd_client, layout, names[3], priority=15)
    changed = small_cache_sidecar.get(f"{API}/config/groups", params={"min_revision": revision})
    assert changed.content == fresh()
    entry = next(g for g in changed.json() if g["name"] == names[3])
    assert entry["priority"] == 15


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.recursive(
    st.none() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10), max_size=5))  # fmt: skip
def test_joined_items_are_marshal_indent_of_the_list(values: list[Any]) -> None:
    """A list joined from its items' indented bodies is the list's own indented encoding
    (strings with newlines included: they are escaped, so every newline is layout)."""
    items = [go_json.array_item(go_json.marshal_indent(v)) for v in values]
    assert go_json.join_array(items) == go_json.marshal_indent(values)


def test_a_list_longer_than_a_slice_yields_to_the_loop_and_is_whole(
    small_cache_sidecar: httpx.Client,
    replica: Replica,
    etcd_client: Any,
    layout: KeyLayout,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With slices of 4 groups, a list of 31 groups (30 and ``default``) is built in 8 slices,
    giving the event loop back 7 times, and is the same bytes as encoding it whole."""
    names = _seed(etcd_client, layout, replica)
    monkeypatch.setattr(sidecar_app, "LIST_SLICE", 4)
    yields = 0
    real_sleep = asyncio.sleep

    async def counted(delay: float) -> None:
        nonlocal yields
        yields += delay == 0
        await real_sleep(delay)

    monkeypatch.setattr(asyncio, "sleep", counted)  # the module sidecar_app calls it through
    listed = small_cache_sidecar.get(f"{API}/config/groups")
    snap = replica.snapshot()
    groups = snap.list_groups()
    assert len(groups) == len(names) + 1
    assert listed.content == go_json.marshal_indent(
        [pdjson.group_json(g, snap.get_states(g.name)) for g in groups]
    )
    assert yields == (len(groups) - 1) // 4
