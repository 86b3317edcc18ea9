"""Which keyspace a request is about: PD's ``keyspace_name`` (query or path), or ``keyspace_id``.

PD resolves a name through its keyspace index and answers an unknown name 404 on every route
(group and service-limit routes alike) with its error text
``[PD:resourcemanager:ErrKeyspaceNotExistsByName]keyspace not found with name: <name>``.
``keyspace_id`` is an rmwatch extension for callers that know the id; neither given means
the null keyspace, which each app names in its own way (``None`` here).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from rmwatch.errors import InvalidInputError, NotFoundError
from rmwatch.http.pd import query
from rmwatch.store.keys import parse_keyspace_id

KeyspaceLookup = Callable[[str], int | None]
"""``name -> keyspace id`` (None: no such keyspace); blocking, run in a worker thread."""


def keyspace_not_found(name: str) -> NotFoundError:
    """PD's error for a ``keyspace_name`` its keyspace index does not hold (HTTP 404)."""
    return NotFoundError(
        f"[PD:resourcemanager:ErrKeyspaceNotExistsByName]keyspace not found with name: {name}"
    )


async def request_keyspace(
    request: Request, lookup: KeyspaceLookup | None, name: str | None = None
) -> int | None:
    """The keyspace id ``request`` names, or None when it names none (the null keyspace).

    Args:
        request: the request; its ``keyspace_name`` and ``keyspace_id`` queries are read.
        lookup: resolves a name; None refuses ``keyspace_name`` (400: use ``keyspace_id``).
        name: the ``{keyspace_name}`` path parameter, which takes the place of the query.

    Raises:
        NotFoundError: the name is not in PD's keyspace index (404).
        InvalidInputError: a malformed ``keyspace_id``, or a name with no ``lookup`` (400).
        EtcdUnavailableError: the index could not be read (503).
    """
    name = name if name is not None else query(request, "keyspace_name")
    if name:
        if lookup is None:
            raise InvalidInputError(
                "keyspace_name", "not supported here (no keyspace resolver); use keyspace_id"
            )
        found = await run_in_threadpool(lookup, name)
        if found is None:
            raise keyspace_not_found(name)
        return found
    raw = query(request, "keyspace_id")
    if raw is None or raw == "":
        return None
    try:
        return parse_keyspace_id(raw)
    except ValueError as exc:
        raise InvalidInputError("keyspace_id", str(exc)) from None


__all__ = ["KeyspaceLookup", "keyspace_not_found", "request_keyspace"]
