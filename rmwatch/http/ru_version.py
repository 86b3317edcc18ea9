"""The body of PD's ``POST config/controller/ru-version/{keyspace_name}``.

PD (pkg/mcs/resourcemanager/server/apis/v1/api.go:261,305, HEAD a186e0c) binds
``{"ru_version": int32}`` with gin (Go's encoding/json: the key matches case-insensitively,
``{}`` leaves 0) and refuses a version that is not positive: ``ru_version must be positive``.
"""

from __future__ import annotations

from typing import Any

from rmwatch.errors import InvalidInputError
from rmwatch.http import gojson

INT32_MAX = 2**31 - 1


def ru_version_body(body: bytes) -> int:
    """The RU version a request body sets; InvalidInputError (400) as PD refuses it."""
    if not body.strip():
        raise InvalidInputError("body", 'EOF (an empty body; send {"ru_version": n})')
    data = gojson.loads_first(body)  # gin's ShouldBindJSON
    if data is not None and not isinstance(data, dict):
        raise InvalidInputError("body", 'must be a JSON object {"ru_version": n}')
    value: Any = 0
    for key, item in (data or {}).items():  # the last matching key wins, as in Go
        if gojson.match_key(key, ["ru_version"]) is not None:
            value = 0 if item is None else item
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > INT32_MAX:
        raise InvalidInputError("ru_version", f"cannot unmarshal {value!r} into a Go int32")
    if value <= 0:
        raise InvalidInputError("ru_version", "ru_version must be positive", pd_text=True)
    return value


__all__ = ["ru_version_body"]
