"""JSON written byte for byte as Go's encoding/json writes it: what PD stores and answers.

PD stores the controller config with ``json.Marshal`` and answers its GETs with gin's
``c.IndentedJSON``, which is ``json.MarshalIndent(v, "", "    ")`` (gin render/json.go; PD's
uses: pkg/mcs/resourcemanager/metadataapi/config_service.go:381, 397, 416, 486 and
pkg/mcs/resourcemanager/server/apis/v1/api.go:341, HEAD a186e0c). Python's ``json`` differs
from Go's in three ways that a byte-for-byte comparison sees:

- floats: Go writes a float64 with the shortest digits, fixed-point for 1e-6 <= |x| < 1e21
  and ``1e-7``/``1e+21`` otherwise (Python: ``1.0``, ``1e-05``, ``1e+16``);
- strings: Go escapes ``<``, ``>``, ``&``, U+2028 and U+2029 as ``\\u003c`` etc. (its HTML
  escaping, on by default in Marshal); control characters and non-ASCII text are written
  alike by both (Go >= 1.22 writes ``\\b``/``\\f`` as Python does; PD builds with Go 1.25);
- indentation: MarshalIndent keeps ``{}``/``[]`` empty on one line, puts every member on its
  own line and writes ``"key": value`` with one space; no newline at the end.

A hand-rolled encoder because no option of ``json.dumps`` writes Go's floats or HTML escapes,
and its indenting encoder is pure Python anyway (~35 us for a group body; this one ~11-19 us).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any

_HTML = re.compile("[<>&\u2028\u2029]")
_HTML_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)
_EXACT_INTS = float(2**53)
_KEY_MEMO_LIMIT = 4096
"""Object keys whose encoded form is remembered: PD's bodies use a few dozen fixed names (an
unknown controller key from a newer PD adds one), so a bound only guards against misuse."""


def format_go_float(value: float) -> str:
    """A float64 exactly as Go's encoding/json writes it: shortest digits, fixed-point for
    1e-6 <= |x| < 1e21 (``100``, ``0.00001``), exponent otherwise with ``e-7`` not ``e-07``."""
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    if value.is_integer() and -_EXACT_INTS < value < _EXACT_INTS:
        # Below 2**53 every integer is a float64 and floats are at most 1 apart, so the
        # integer's own digits are the shortest that read back (~0.5 us; Decimal ~2.1 us).
        return int.__repr__(int(value))
    if 1e-6 <= abs(value) < 1e21:
        text = format(Decimal(repr(value)), "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text
    mantissa, _, exponent = repr(value).partition("e")
    sign = exponent[0] if exponent[0] in "+-" else "+"
    digits = exponent.lstrip("+-").lstrip("0") or "0"
    if len(digits) < 2 and sign == "+":
        digits = digits.rjust(2, "0")
    return f"{mantissa}e{sign}{digits}"


def go_string(text: str) -> str:
    """``text`` as a quoted JSON string, escaped as Go's encoding/json escapes it."""
    out: str = encode_basestring(text)  # C: quotes, \\ and control characters, as Go
    if _HTML.search(out) is not None:
        out = out.translate(_HTML_ESCAPES)
    return out


class _Writer:
    """One layout (compact or indented); encodes into a list of string pieces."""

    def __init__(self, newline: list[str], colon: str) -> None:
        self._newline = newline  # "" at every depth when compact
        self._colon = colon
        self._keys: dict[str, str] = {}

    def key(self, name: Any) -> str:
        text = self._keys.get(name)
        if text is None:
            text = go_string(str(name)) + self._colon
            if len(self._keys) < _KEY_MEMO_LIMIT and type(name) is str:
                self._keys[name] = text
        return text

    def encode(self, value: Any, depth: int, out: Callable[[str], object]) -> None:
        kind = type(value)
        if kind is str:
            out(go_string(value))
        elif kind is int:
            out(int.__repr__(value))
        elif value is True:
            out("true")
        elif value is False:
            out("false")
        elif value is None:
            out("null")
        elif kind is float:
            out(format_go_float(value))
        elif isinstance(value, dict):
            self._object(value, depth, out)
        elif isinstance(value, list | tuple):
            self._array(value, depth, out)
        elif isinstance(value, int):  # IntEnum and other int subclasses: their number
            out(int.__repr__(value))
        elif isinstance(value, float):
            out(format_go_float(float(value)))
        elif isinstance(value, str):
            out(go_string(str(value)))
        else:
            raise TypeError(f"{kind.__name__} is not JSON serializable")

    def _object(self, value: dict[Any, Any], depth: int, out: Callable[[str], object]) -> None:
        if not value:
            out("{}")
            return
        inner = self._newline[depth + 1]
        keys = self._keys
        separator = "{" + inner
        for name, item in value.items():
            out(separator)
            out(keys.get(name) or self.key(name))
            kind = type(item)
            if kind is int:  # most members of PD's bodies: skip a call (~15% of an encode)
                out(int.__repr__(item))
            elif kind is str:
                out(go_string(item))
            else:
                self.encode(item, depth + 1, out)
            separator = "," + inner
        out(self._newline[depth])
        out("}")

    def _array(self, value: list[Any] | tuple[Any, ...], depth: int,
               out: Callable[[str], object]) -> None:  # fmt: skip
        if not value:
            out("[]")
            return
        inner = self._newline[depth + 1]
        separator = "[" + inner
        for item in value:
            out(separator)
            self.encode(item, depth + 1, out)
            separator = "," + inner
        out(self._newline[depth])
        out("]")


_MAX_DEPTH = 256
_COMPACT = _Writer([""] * _MAX_DEPTH, ":")
_INDENTED = _Writer(["\n" + "    " * depth for depth in range(_MAX_DEPTH)], ": ")


def _run(writer: _Writer, value: Any) -> bytes:
    pieces: list[str] = []
    try:
        writer.encode(value, 0, pieces.append)
    except IndexError:
        raise ValueError(f"JSON nested deeper than {_MAX_DEPTH - 1} levels") from None
    return "".join(pieces).encode()


def marshal(value: Any) -> bytes:
    """``value`` as Go's ``json.Marshal`` writes it (compact): how PD stores JSON values."""
    return _run(_COMPACT, value)


def marshal_indent(value: Any) -> bytes:
    """``value`` as Go's ``json.MarshalIndent(v, "", "    ")`` writes it: gin's
    ``IndentedJSON``, the body of PD's metadata GETs."""
    return _run(_INDENTED, value)


def array_item(body: bytes) -> bytes:
    """An indented body (``marshal_indent``) moved one level in, as an item of an indented
    array: a newline in indented JSON is always layout (strings carry ``\\n`` escaped)."""
    return body.replace(b"\n", b"\n    ")


def join_array(items: list[bytes]) -> bytes:
    """The indented array of ``items`` (each already ``array_item``'s), as ``marshal_indent``
    writes the list: a list of remembered bodies costs a join, not an encode."""
    if not items:
        return b"[]"
    return b"[\n    " + b",\n    ".join(items) + b"\n]"


__all__ = [
    "array_item",
    "format_go_float",
    "go_string",
    "join_array",
    "marshal",
    "marshal_indent",
]
