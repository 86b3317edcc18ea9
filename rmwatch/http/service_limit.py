"""PD's service-limit routes' bodies: the POST body as gin binds it, the GET body as PD shows it.

PD (pkg/mcs/resourcemanager/metadataapi/config_service.go:449-487, HEAD a186e0c) binds
``{"service_limit": f}`` into a Go struct, so the key matches case-insensitively, ``{}`` and
``null`` set 0, a non-number is 400, and a negative limit is 400
``service_limit must be non-negative``. GET answers PD's ``serviceLimiter`` JSON
(server/service_limit.go:34): ``service_limit``, ``available_tokens`` and ``last_update``.
"""

from __future__ import annotations

from typing import Any

from rmwatch.errors import InvalidInputError
from rmwatch.http import gojson

GO_ZERO_TIME = "0001-01-01T00:00:00Z"
"""How Go's encoding/json writes a zero ``time.Time``."""


def parse_limit_body(body: bytes) -> float:
    """The limit a POST body sets (see the module doc); InvalidInputError (400) otherwise."""
    if not body.strip():
        raise InvalidInputError("body", 'EOF (an empty body; send {"service_limit": f})')
    data = gojson.loads_first(body)  # gin's ShouldBindJSON
    if data is None:
        return 0.0
    if not isinstance(data, dict):
        raise InvalidInputError("body", 'must be a JSON object {"service_limit": f}')
    value: Any = 0.0
    for key, item in data.items():  # the last matching key wins, as in Go
        if gojson.match_key(key, ["service_limit"]) is not None:
            value = 0.0 if item is None else item
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError("service_limit", "must be a number")
    if value < 0:
        raise InvalidInputError("service_limit", "service_limit must be non-negative", pd_text=True)
    return float(value)


def limit_json(limit: float | None) -> dict[str, Any]:
    """PD's GET body for a keyspace whose stored limit is ``limit`` (None: nothing stored, 0).

    ``available_tokens`` and ``last_update`` are an RM node's running limiter state, not
    metadata in etcd: rmwatch shows them as a fresh limiter with no tokens would have them
    (``0`` and Go's zero time), in PD's shape, so PD's clients decode the answer unchanged.
    The float is written as Go writes a float64 by the answer's encoder (``go_json``).
    """
    return {
        "service_limit": limit or 0.0,
        "available_tokens": 0,
        "last_update": GO_ZERO_TIME,
    }


__all__ = ["GO_ZERO_TIME", "limit_json", "parse_limit_body"]
