"""``rmwatch.store.go_json``: JSON written byte for byte as Go's encoding/json writes it.

PD answers its metadata GETs with gin's ``c.IndentedJSON`` (gin v1.11 render/json.go:
``json.MarshalIndent(obj, "", "    ")``, Content-Type ``application/json; charset=utf-8``):
pkg/mcs/resourcemanager/metadataapi/config_service.go:381 (group), 397 (groups), 416
(controller), 486 (service limit) and pkg/mcs/resourcemanager/server/apis/v1/api.go:341
(config), PD HEAD a186e0c. Go's MarshalIndent is Marshal followed by Indent
(encoding/json/encode.go ``MarshalIndent``), so the property test checks ``marshal_indent``
against ``go_indent`` (tests/conformance/support.py), a transcription of Indent's rules,
applied to ``marshal``.
"""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmwatch.store import go_json

from .support import go_indent


class TestFloats:
    """A float64 as encoding/json's floatEncoder writes it."""

    @pytest.mark.parametrize(
        ("value", "text"),
        [(1.0, b"1"), (1 / 65536, b"0.0000152587890625"), (1e-7, b"1e-7"), (1e21, b"1e+21"),
         (123456789.0, b"123456789"), (0.5, b"0.5"), (-0.0, b"-0"), (1.5e-05, b"0.000015"),
         (1e16, b"10000000000000000"), (2.0**53 - 1, b"9007199254740991"),
         (2.0**53, b"9007199254740992"), (2.0**60, b"1152921504606847000"),
         (-(2.0**60), b"-1152921504606847000"), (1e20 + 2**17, b"100000000000000130000")],
    )  # fmt: skip
    def test_float(self, value: float, text: bytes) -> None:
        """Fixed-point for 1e-6 <= |x| < 1e21, else the exponent form without padding."""
        assert go_json.marshal({"v": value}) == b'{"v":' + text + b"}"
        assert go_json.marshal_indent({"v": value}) == b'{\n    "v": ' + text + b"\n}"

    @settings(max_examples=300, deadline=None)
    @given(whole=st.integers(-(2**69), 2**69))  # 2**69 < 1e21: all fixed-point
    def test_whole_floats_are_the_shortest_digits(self, whole: int) -> None:
        """A whole float below 2**53 prints its integer digits (the fast path); at and past
        it, the shortest digits that read back, zero-padded, as Go's 'f' format does."""
        value = float(whole)
        digits = repr(value).removesuffix(".0")
        if "e" in digits:  # Python's repr: shortest digits in exponent form past 1e16
            significand, _, power = digits.partition("e")
            head, _, tail = significand.lstrip("-").partition(".")
            sign = "-" if value < 0 else ""
            digits = sign + (head + tail).ljust(int(power) + 1, "0")
        assert go_json.format_go_float(value) == digits
        assert float(go_json.format_go_float(value)) == value


class TestStrings:
    """Strings escaped as encoding/json's appendString escapes them (Go 1.25, PD's go.mod)."""

    @pytest.mark.parametrize(
        ("text", "encoded"),
        [("<a&b>", '"\\u003ca\\u0026b\\u003e"'),  # HTMLEscape is on in Marshal
         ("\u2028\u2029", '"\\u2028\\u2029"'),  # JSONP-safe line separators
         ("\x01\b\f\n\r\t", '"\\u0001\\b\\f\\n\\r\\t"'),  # \b \f short since Go 1.22
         ('q"b\\', '"q\\"b\\\\"'), ("é中\x7f", '"é中\x7f"')],
    )  # fmt: skip
    def test_escapes(self, text: str, encoded: str) -> None:
        """HTML characters and line separators escaped; other non-ASCII written as UTF-8."""
        assert go_json.go_string(text) == encoded
        assert go_json.marshal([text]) == f"[{encoded}]".encode()
        assert go_json.marshal({text: 1}) == f"{{{encoded}:1}}".encode()


class TestIndent:
    """MarshalIndent's layout, as gin's IndentedJSON writes PD's GET bodies."""

    def test_group_body(self) -> None:
        """Members one a line, four spaces a level, ``"key": value``, no final newline."""
        body = {"name": "rg1", "mode": 1, "r_u_settings": {"r_u": {"settings": {
            "fill_rate": 100}, "state": {}}}, "priority": 8,
            "background_settings": {"job_types": ["br", "lightning"]}, "empty": []}  # fmt: skip
        assert go_json.marshal_indent(body) == (
            b'{\n    "name": "rg1",\n    "mode": 1,\n    "r_u_settings": {\n'
            b'        "r_u": {\n            "settings": {\n                "fill_rate": 100\n'
            b'            },\n            "state": {}\n        }\n    },\n    "priority": 8,\n'
            b'    "background_settings": {\n        "job_types": [\n            "br",\n'
            b'            "lightning"\n        ]\n    },\n    "empty": []\n}'
        )

    @pytest.mark.parametrize(
        ("value", "encoded"),
        [({}, b"{}"), ([], b"[]"), (None, b"null"), (True, b"true"), (0, b"0"), ("", b'""'),
         ([{}], b"[\n    {}\n]"),
         ({"a": None, "b": False}, b'{\n    "a": null,\n    "b": false\n}')],
    )  # fmt: skip
    def test_scalars_and_empty(self, value: Any, encoded: bytes) -> None:
        """Scalars alone, and empty objects and arrays kept on one line at any depth."""
        assert go_json.marshal_indent(value) == encoded

    def test_int_enum_writes_its_number(self) -> None:
        """An IntEnum member is written as its number (as a Go int32 enum is)."""

        class Mode(IntEnum):
            RU = 1

        assert go_json.marshal_indent({"mode": Mode.RU}) == b'{\n    "mode": 1\n}'

    def test_unencodable_is_type_error(self) -> None:
        """A value JSON cannot hold is a TypeError naming its type, as json.dumps raises."""
        with pytest.raises(TypeError, match="set"):
            go_json.marshal_indent({"a": {1}})

    def test_depth_bound(self) -> None:
        """Nesting past the bound is a ValueError, never an IndexError or RecursionError."""
        deep: Any = []
        for _ in range(400):
            deep = [deep]
        with pytest.raises(ValueError, match="nested deeper"):
            go_json.marshal_indent(deep)


_SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text()
)  # fmt: skip
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=24,
)


class TestProperties:
    """Any JSON value: the indented form is Go's Indent of the compact one, and both read back."""

    @settings(max_examples=400, deadline=None)
    @given(value=_VALUES)
    def test_indent_is_go_indent_of_marshal(self, value: Any) -> None:
        """MarshalIndent == Indent(Marshal), the definition in encoding/json/encode.go."""
        assert go_json.marshal_indent(value) == go_indent(go_json.marshal(value))

    @settings(max_examples=400, deadline=None)
    @given(value=_VALUES)
    def test_reads_back(self, value: Any) -> None:
        """Python's json reads both forms back to the value (floats exactly: shortest digits)."""
        for data in (go_json.marshal(value), go_json.marshal_indent(value)):
            assert _same(json.loads(data), value)


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, float):
        return isinstance(got, int | float) and float(got) == want  # shortest digits: exact
    if isinstance(want, dict):
        return got.keys() == want.keys() and all(_same(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want, strict=True))
    return bool(got == want and type(got) is type(want))
