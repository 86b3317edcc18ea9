"""The sidecar's fast group read (``fast_group_read``) answers exactly like the routed handler.

A plain ``GET config/group/{name}`` is answered by an ASGI fast path with memoized body bytes;
adding ``min_revision`` sends the same read through FastAPI's route. Both must give the same
status, body bytes and headers, and a memoized body must never outlive its group.
"""

from __future__ import annotations

from typing import Any

import httpx
from harness import put_group
from sidecar_support import API, layout, replica, revision_of, sidecar

from rmwatch.store import codec
from rmwatch.store.keys import KeyLayout
from rmwatch.store.models import Consumption, GroupStates, TokenState
from rmwatch.watcher.replica import Replica

__all__ = ["layout", "replica", "sidecar"]  # fixtures, re-exported so pytest finds them here

GROUP: dict[str, Any] = {
    "r_u_settings": {"r_u": {"settings": {"fill_rate": 100, "burst_limit": -1,
                                          "max_tokens": 1e6}}},
    "raw_resource_settings": {"cpu": {"settings": {"fill_rate": 5}}},
    "runaway_settings": {"rule": {"exec_elapsed_time_ms": 60000}, "action": 2},
    "background_settings": {"job_types": ["br", "ddl"], "utilization_limit": 30},
}  # fmt: skip


def _same(fast: httpx.Response, routed: httpx.Response) -> None:
    assert fast.status_code == routed.status_code == 200
    assert fast.content == routed.content
    for header in ("content-type", "content-length", "x-revision"):
        assert fast.headers[header] == routed.headers[header], header
    assert "x-revision-age" in fast.headers


def test_fast_and_routed_answers_are_identical(
    sidecar: httpx.Client, replica: Replica, etcd_client: Any, layout: KeyLayout
) -> None:
    """Plain, with_stats and keyspace_id reads: same bytes and headers both ways."""
    put_group(etcd_client, layout, "fast", priority=9, **GROUP)
    put_group(etcd_client, layout, "fast", priority=3, keyspace_id=7, **GROUP)
    states = GroupStates(
        r_u=TokenState(tokens=42.5, last_update="2024-05-01T10:00:00Z", initialized=True),
        ru_consumption=Consumption(r_r_u=1.5, w_r_u=2.0),
    )
    rev = int(etcd_client.put(layout.states("fast"), codec.encode_states(states)).header.revision)
    replica.wait_for_revision(rev, 5)
    for query in ("", "with_stats=true", "keyspace_id=7", "keyspace_id=7&with_stats=TRUE",
                  "keyspace_id="):  # fmt: skip
        fast = sidecar.get(f"{API}/config/group/fast?{query}")
        routed = sidecar.get(f"{API}/config/group/fast?{query}&min_revision={rev}")
        _same(fast, routed)
    assert "ru_consumption" in sidecar.get(f"{API}/config/group/fast?with_stats=true").json()
    assert sidecar.get(f"{API}/config/group/fast?keyspace_id=7").json()["priority"] == 3


def test_a_memoized_body_never_outlives_its_group(
    sidecar: httpx.Client, replica: Replica, etcd_client: Any, layout: KeyLayout
) -> None:
    """A change, a delete and a re-create are each seen by the very next read."""
    rev = put_group(etcd_client, layout, "memo", priority=1)
    replica.wait_for_revision(rev, 5)
    assert sidecar.get(f"{API}/config/group/memo").json()["priority"] == 1
    rev = put_group(etcd_client, layout, "memo", priority=2)
    replica.wait_for_revision(rev, 5)
    answer = sidecar.get(f"{API}/config/group/memo")
    assert answer.json()["priority"] == 2
    assert revision_of(answer) >= rev
    rev = int(etcd_client.delete(layout.settings("memo"), return_response=True).header.revision)
    replica.wait_for_revision(rev, 5)
    assert sidecar.get(f"{API}/config/group/memo").status_code == 404
    rev = put_group(etcd_client, layout, "memo", priority=4)
    replica.wait_for_revision(rev, 5)
    assert sidecar.get(f"{API}/config/group/memo").json()["priority"] == 4


def test_unusual_requests_fall_through_to_the_route(sidecar: httpx.Client) -> None:
    """Bad keyspace_id, unknown group and nested paths keep the routed answers."""
    assert sidecar.get(f"{API}/config/group/nope").status_code == 404
    assert sidecar.get(f"{API}/config/group/x?keyspace_id=abc").status_code == 400
    assert sidecar.get(f"{API}/config/group/a/b").status_code == 404
    assert sidecar.post(f"{API}/config/group/x").status_code == 405
