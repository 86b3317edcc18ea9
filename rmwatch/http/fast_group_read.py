"""The sidecar's fast path: ``GET config/group/{name}`` answered with remembered JSON bytes.

Why it exists: a group GET is the read RM nodes and PD clients issue most, and the cache
answers it from memory; what is left to spend is the framework's routing, request objects
and JSON encoding of the same group again and again. Snapshots are immutable and share
unchanged group objects across revisions, so a group's body can be encoded once and reused
for as long as the snapshot still holds the very same objects.

Only the plain case is taken (ready replica, no ``min_revision``/``keyspace_name``, a valid
or absent ``keyspace_id``, the group exists); everything else -- 503, 404, 400, waits,
keyspace resolution -- falls through to the routed handler. The answer is the same as the
routed one: status, body bytes and headers (``X-Revision``, ``X-Revision-Age``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from rmwatch.errors import NotReadyError
from rmwatch.http import pdjson
from rmwatch.http.gojson import PD_JSON_MEDIA_TYPE
from rmwatch.http.pd import PREFIX, with_stats
from rmwatch.store import go_json
from rmwatch.store.keys import NULL_KEYSPACE_ID, parse_keyspace_id
from rmwatch.store.models import GroupStates, ResourceGroup
from rmwatch.store.stored_group import StoredGroup
from rmwatch.watcher.cache import Snapshot
from rmwatch.watcher.replica import Replica

GROUP_ROUTE = "/config/group/{name}"
"""The route this path answers, relative to ``PREFIX``."""

_CONTENT_TYPE = PD_JSON_MEDIA_TYPE.encode()


BODY_CACHE_BYTES = 96 * 1024 * 1024
"""The remembered bodies' budget: ~110k group bodies (~690-1300 B each indented as PD sends
them, plus ``ENTRY_OVERHEAD``; 689 B for the benchmark's typical group, 367 B compact),
so every group of a 100k-group cluster stays encoded once read and a read spread over all of
them costs what a hot read costs (encoding one is ~25-35 us, most of a miss). Bounded, so
reading every group cannot grow the process past it; ``rmwatch replica --body-cache-mib``
sets it. A body that fell out is encoded again, never wrong."""

ENTRY_OVERHEAD = 200
"""Bytes charged per remembered body beyond its length: the key tuple, the entry tuple, the
bytes object's header and the dict slots (~200 B measured with sys.getsizeof on CPython 3.11)."""


ADDED_BATCH = 2048
"""Bodies remembered between two calls of ``GroupBodies``' ``on_added``. The sidecar refreezes
the heap there (``HeapFreezer.refreeze``: a collection of what is not frozen yet, then a
freeze): each remembered body is a tracked tuple, and with every group's body kept (~100k)
a gen-2 collection walking them paused a first pass over all groups for 53 ms; a refreeze per
2048 bodies walks a few thousand objects instead."""


class GroupBodies:
    """JSON bodies of group reads, kept while the group's objects are unchanged.

    A body is valid as long as the snapshot still returns the very same group (and states)
    objects: the entry holds them, and an identity check decides. Bounded by bytes
    (``max_bytes``, each entry charged its length plus ``ENTRY_OVERHEAD``): past the budget
    the least recently used bodies are dropped one by one, so a pass over more groups than fit
    costs a re-encode of the coldest, never a wholesale clear (which made every hot group
    miss at once).
    """

    def __init__(
        self, max_bytes: int = BODY_CACHE_BYTES, *, on_added: Callable[[], None] | None = None
    ) -> None:
        """``max_bytes``: the budget; ``on_added``: called every ``ADDED_BATCH`` new bodies
        (the sidecar passes ``HeapFreezer.refreeze``)."""
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._on_added = on_added
        self._added = 0
        self._entries: OrderedDict[
            tuple[str, int, bool], tuple[ResourceGroup | StoredGroup, GroupStates | None, bytes]
        ] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def of(self, snap: Snapshot, group: StoredGroup, keyspace: int, stats: bool) -> bytes:
        """``body`` of ``group`` with its states from the same snapshot: what the group GET
        (routed, fast path or lane) and the group list send."""
        states = snap.get_states(group.name, keyspace)
        return self.body(group.name, keyspace, stats, group, states)

    def body(self, name: str, keyspace: int, stats: bool, group: ResourceGroup | StoredGroup,
             states: GroupStates | None) -> bytes:  # fmt: skip
        """The JSON bytes of ``group`` as PD shows it, encoded again only if it changed."""
        key = (name, keyspace, stats)
        entries = self._entries
        entry = entries.get(key)
        if entry is not None:
            if entry[0] is group and entry[1] is states:
                entries.move_to_end(key)
                return entry[2]
            del entries[key]
            self.nbytes -= len(entry[2]) + ENTRY_OVERHEAD
        body = go_json.marshal_indent(pdjson.group_json(group, states, with_stats=stats))
        entries[key] = (group, states, body)
        self.nbytes += len(body) + ENTRY_OVERHEAD
        self._added += 1
        if self._on_added is not None and self._added % ADDED_BATCH == 0:
            self._on_added()
        while self.nbytes > self.max_bytes and entries:
            _, (_, _, dropped) = entries.popitem(last=False)
            self.nbytes -= len(dropped) + ENTRY_OVERHEAD
        return body


class GroupReads:
    """The plain group GET answered from the replica's snapshot (see the module doc), for the
    ASGI middleware below and the sidecar's HTTP fast lane (``rmwatch.http.fast_lane``).

    Args:
        replica: the replica whose snapshots answer.
        route: the routed handler's route object, put in ``scope["route"]`` so the request
            tracker labels a fast answer like a routed one.
        bodies: the remembered bodies (shared with the routed group and list reads).
    """

    PREFIX = PREFIX + "/config/group/"
    _FAST_KEYS = frozenset({"with_stats", "keyspace_id"})

    def __init__(self, *, replica: Replica, route: Any, bodies: GroupBodies) -> None:
        self.replica = replica
        self.route = route
        self.route_path: str = route.path
        self.bodies = bodies

    def answer(self, name: str, query: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
        """The body and headers for group ``name`` (the path's part after ``PREFIX``) and the
        raw query string, or None when the routed handler must answer."""
        found = self.lookup(name, query)
        if found is None:
            return None
        body, revision, age = found
        return body, [  # IndentedJSONResponse's headers, in its order
            (b"x-revision", str(revision).encode()),
            (b"x-revision-age", f"{age:.3f}".encode()),
            (b"content-length", str(len(body)).encode()),
            (b"content-type", _CONTENT_TYPE),
        ]

    def lookup(self, name: str, query: bytes) -> tuple[bytes, int, float] | None:
        """(body, revision, the replica's age) for ``answer``'s request, or None."""
        if not name or "/" in name:
            return None
        keyspace = NULL_KEYSPACE_ID
        stats = False
        if query:
            params: dict[str, str] = {}
            for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
                params.setdefault(key, value)  # the first of repeated values, as gin's c.Query
            if not self._FAST_KEYS.issuperset(params):
                return None
            raw = params.get("keyspace_id")
            if raw:
                try:
                    keyspace = parse_keyspace_id(raw)
                except ValueError:
                    return None
            stats = with_stats(params.get("with_stats"))
        replica = self.replica
        try:
            snap = replica.snapshot()
        except NotReadyError:
            return None
        group = snap.get_group(name, keyspace)
        if group is None:
            return None
        return self.bodies.of(snap, group, keyspace, stats), snap.revision, replica.age()


class FastGroupRead:
    """ASGI middleware: the plain group GET answered by ``reads``, the rest by ``app``."""

    def __init__(self, app: ASGIApp, *, reads: GroupReads) -> None:
        self.app = app
        self.reads = reads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            reads = self.reads
            if path.startswith(reads.PREFIX):
                answer = reads.answer(path[len(reads.PREFIX) :], scope["query_string"])
                if answer is not None:
                    scope["route"] = reads.route
                    body, headers = answer
                    await send({"type": "http.response.start", "status": 200,
                                "headers": headers})  # fmt: skip
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)


__all__ = ["BODY_CACHE_BYTES", "GROUP_ROUTE", "FastGroupRead", "GroupBodies", "GroupReads"]
