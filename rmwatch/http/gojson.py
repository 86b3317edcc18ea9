"""Request bodies decoded as Go's encoding/json decodes them into PD's structs, safely.

PD reads every body with Go's encoding/json (gin's ``ShouldBindJSON``, or ``json.Unmarshal``
in ``decodeResourceGroup``), so a PD client may rely on its rules:

- object keys match struct fields case-insensitively (an exact match first);
- unknown fields are ignored; of duplicate keys the last one wins;
- a JSON type that does not fit the field (a string for a number, ``1.5`` for an integer, a
  number out of the field's range) fails the whole body.

Python's ``json`` would also take bodies Go refuses, and fail on some in ways that escaped
as 500: ``NaN``/``Infinity`` (not JSON), a 5,000-digit integer (``ValueError`` from Python's
int-digit limit) and 100,000 nested arrays (``RecursionError``). Each is answered here as an
``InvalidInputError`` (400) naming the problem. Go stops at 10,000 levels of nesting
(encoding/json's ``maxNestingDepth``); bodies are at most 1 MiB, and nothing PD takes nests
deeper than 5 levels, so the lower Python recursion bound refuses nothing PD would accept.
"""

from __future__ import annotations

import functools
import json
import types
import typing
from collections.abc import Callable
from enum import IntEnum
from typing import Any, Union

from pydantic import BaseModel
from starlette.responses import Response

from rmwatch.errors import InvalidInputError
from rmwatch.store import go_json

MAX_NUMBER_DIGITS = 400
"""Longest number literal taken: float64 needs at most ~25 significant digits plus an
exponent, so longer literals are refused before Python parses them (its int parser is
quadratic, and refuses 4,300+ digits anyway)."""


def _reject_constant(name: str) -> Any:
    raise InvalidInputError("body", f"{name} is not valid JSON (Go's encoding/json refuses it)")


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_DIGITS:
        raise InvalidInputError("body", f"number of {len(text)} digits is out of range")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_DIGITS:
        raise InvalidInputError("body", f"number of {len(text)} characters is out of range")
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise InvalidInputError("body", f"number {text} is out of range of float64")
    return value


class Pairs(dict[str, Any]):
    """A decoded JSON object that also remembers its keys in order, duplicates included
    (PD refuses a duplicated ``keyspace_id``, which a plain dict would hide)."""

    keys_seen: list[str]


def _pairs(items: list[tuple[str, Any]]) -> Pairs:
    out = Pairs(items)
    out.keys_seen = [k for k, _ in items]
    return out


_DECODER = json.JSONDecoder(
    parse_int=_parse_int,
    parse_float=_parse_float,
    parse_constant=_reject_constant,
    object_pairs_hook=_pairs,
)
_LEADING_SPACE = " \t\n\r"  # JSON's whitespace, what Go's decoder skips before a value


def loads(body: bytes) -> Any:
    """Decode ``body`` as JSON (``json.Unmarshal``: the whole body is one value);
    InvalidInputError (400) naming the problem if it is not JSON Go would take (invalid UTF-8,
    NaN, too deep, a number out of range). Objects decode to ``Pairs`` (a dict; the last
    duplicate wins, as in Go)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError("body", f"invalid UTF-8 at byte {exc.start}") from None
    return _decoded(lambda: _DECODER.decode(text))


def loads_first(body: bytes) -> Any:
    """The first JSON value of ``body``, as gin's ``ShouldBindJSON`` reads a body (Go's
    ``json.Decoder.Decode``, once): what follows the value is never read, so trailing bytes
    are ignored (PD answers ``{"service_limit": 1} x`` 200). An empty body is ``EOF``, as Go
    says it; otherwise the rules of ``loads``."""
    text = body.decode("utf-8", "surrogateescape")  # trailing bytes may be anything
    start = len(text) - len(text.lstrip(_LEADING_SPACE))
    if start == len(text):
        raise InvalidInputError("body", "EOF (an empty body)")
    value, end = _decoded(lambda: _DECODER.raw_decode(text, start))
    try:
        text[start:end].encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = len(text[: start + exc.start].encode("utf-8", "surrogateescape"))
        raise InvalidInputError("body", f"invalid UTF-8 at byte {bad}") from None
    return value


def _decoded(decode: Callable[[], Any]) -> Any:
    try:
        return decode()
    except RecursionError:
        raise InvalidInputError("body", "exceeded max depth (JSON nested too deeply)") from None
    except json.JSONDecodeError as exc:
        raise InvalidInputError("body", f"not valid JSON: {exc}") from None


@functools.cache
def _fields(model: type[BaseModel]) -> dict[str, tuple[str, Any]]:
    """JSON name (alias, else field name) -> (field name, the field's type with Optional and
    Annotated unwrapped), for every field of ``model``; once per model (recomputing it for
    every request cost ~40 us of a group write)."""
    return {
        (info.alias or name): (name, _unwrap_optional(info.annotation))
        for name, info in model.model_fields.items()
    }


def match_key(key: str, names: dict[str, Any] | list[str]) -> str | None:
    """The JSON name ``key`` selects: an exact match, else the first case-insensitive one
    (Go's ``foldName`` rule); None when it selects no field (ignored, as Go ignores it)."""
    if key in names:
        return key
    folded = key.casefold()
    for name in names:
        if name.casefold() == folded:
            return name
    return None


def _unwrap_optional(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _unwrap_optional(args[0])
    if origin is typing.Annotated:
        return _unwrap_optional(typing.get_args(annotation)[0])
    return annotation


def _go_type_error(where: str, value: Any, want: str) -> InvalidInputError:
    got = type(value).__name__ if value is not None else "null"
    return InvalidInputError(where, f"cannot unmarshal {got} into a Go value of type {want}")


def _check(where: str, value: Any, kind: Any, skip: frozenset[str]) -> Any:
    """``value`` fitted to ``kind`` (a field's unwrapped type) by Go's rules (models recurse;
    see the module doc)."""
    if value is None:
        return None  # Go leaves the field at its zero value on null
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        if not isinstance(value, dict):
            raise _go_type_error(where, value, "object")
        return go_fields(value, kind, where=where, skip=skip)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _go_type_error(where, value, "integer")
    elif isinstance(kind, type) and issubclass(kind, IntEnum):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _go_type_error(where, value, "int32 enum")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _go_type_error(where, value, "float64")
    elif kind is str:
        if not isinstance(value, str):
            raise _go_type_error(where, value, "string")
    elif kind is bool and not isinstance(value, bool):
        raise _go_type_error(where, value, "bool")
    return value


def go_fields(
    data: dict[str, Any],
    model: type[BaseModel],
    *,
    where: str = "",
    skip: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """``data`` as Go's decoder maps it onto ``model``: keys matched case-insensitively to the
    model's JSON names, unknown keys dropped, the last duplicate winning, types checked.

    Args:
        data: a decoded JSON object.
        model: the pydantic model whose fields (by alias) stand for the Go struct's.
        where: the dotted path of ``data`` (for error messages).
        skip: JSON names handled by the caller (left out here), e.g. the keyspace_id oneof.
    """
    fields = _fields(model)
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = match_key(key, fields)
        if name is None or name in skip:
            continue
        path = f"{where}.{name}" if where else name
        out[name] = _check(path, value, fields[name][1], frozenset())
    return out


PD_JSON_MEDIA_TYPE = "application/json; charset=utf-8"
"""The Content-Type of gin's JSON renders (render/json.go ``jsonContentType``)."""


class IndentedJSONResponse(Response):
    """A JSON answer as PD's metadata GETs give it: gin's ``c.IndentedJSON`` (Go's
    ``json.MarshalIndent`` with four spaces, Go's floats and HTML escapes; see
    ``rmwatch.store.go_json``), ``Content-Type: application/json; charset=utf-8``."""

    media_type = PD_JSON_MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        """The body bytes of ``content``."""
        return go_json.marshal_indent(content)


__all__ = [
    "MAX_NUMBER_DIGITS",
    "PD_JSON_MEDIA_TYPE",
    "IndentedJSONResponse",
    "Pairs",
    "go_fields",
    "loads",
    "loads_first",
    "match_key",
]
