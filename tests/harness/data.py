"""Writing PD-shaped metadata with a raw client, and reading etcd's truth to compare against."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pyetcd import utils as etcd_utils

from rmwatch.store.codec import encode_settings
from rmwatch.store.keys import NULL_KEYSPACE_ID, KeyLayout
from rmwatch.store.models import ResourceGroup


def group_bytes(
    name: str, priority: int = 0, keyspace_id: int | None = None, **extra: Any
) -> bytes:
    """Encoded settings of a simple RU-mode group."""
    return encode_settings(
        ResourceGroup.model_validate(
            {"name": name, "priority": priority, "keyspace_id": keyspace_id, **extra}
        )
    )


def put_group(
    client: Any, layout: KeyLayout, name: str, priority: int = 0,
    keyspace_id: int = NULL_KEYSPACE_ID, **extra: Any,
) -> int:  # fmt: skip
    """Put a group's settings with a raw client; return the commit revision."""
    ks = None if keyspace_id == NULL_KEYSPACE_ID else keyspace_id
    value = group_bytes(name, priority, ks, **extra)
    return int(client.put(layout.settings(name, keyspace_id), value).header.revision)


def etcd_items(
    client: Any, prefix: str, revision: int | None = None
) -> dict[str, tuple[bytes, int]]:
    """``key → (value, mod_revision)`` of the prefix in etcd (at ``revision`` if given)."""
    start = prefix.encode()
    kwargs: dict[str, Any] = {} if revision is None else {"revision": revision}
    response = client.get_range_response(start, etcd_utils.prefix_range_end(start), **kwargs)
    return {
        kv.key.decode("utf-8", "surrogateescape"): (kv.value, kv.mod_revision)
        for kv in response.kvs
    }


def etcd_revision(client: Any) -> int:
    """The store's current revision."""
    return int(client.get_response(b"\0rmwatch-probe").header.revision)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 20 ms; fail the test with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)
