"""``rmwatch.http.gojson``: the rules of Go's encoding/json that PD's clients rely on, in
isolation (the request tables in the other conformance files show them end to end)."""

from __future__ import annotations

import pytest

from rmwatch.errors import InvalidInputError
from rmwatch.http import gojson
from rmwatch.store.models import ResourceGroup


class TestDecode:
    """Decoding into a model as encoding/json decodes into PD's struct."""

    def test_exact_match_before_folded(self) -> None:
        """A key matches its field exactly first, then case-insensitively (Go's foldName)."""
        assert gojson.match_key("Name", ["name"]) == "name"
        assert gojson.match_key("name", ["NAME", "name"]) == "name"
        assert gojson.match_key("nope", ["name"]) is None

    def test_unknown_dropped_and_last_duplicate_wins(self) -> None:
        """Unknown keys vanish; of two keys folding to one field the last wins."""
        data = gojson.loads(b'{"name":"a","NAME":"b","whatever":1}')
        assert gojson.go_fields(data, ResourceGroup) == {"name": "b"}

    @pytest.mark.parametrize(
        ("raw", "field"),
        [(b'{"priority":"8"}', "priority"), (b'{"priority":1.5}', "priority"),
         (b'{"mode":true}', "mode"), (b'{"name":5}', "name"),
         (b'{"r_u_settings":{"r_u":{"settings":{"fill_rate":"1"}}}}', "fill_rate")],
    )  # fmt: skip
    def test_type_mismatch_names_field(self, raw: bytes, field: str) -> None:
        """A JSON type the Go field cannot take fails, naming the field."""
        with pytest.raises(InvalidInputError, match=field):
            gojson.go_fields(gojson.loads(raw), ResourceGroup)

    def test_depth_bound(self) -> None:
        """100,000 levels of nesting are a named 400, not a RecursionError."""
        with pytest.raises(InvalidInputError, match="max depth"):
            gojson.loads(b"[" * 100_000 + b"]" * 100_000)


class TestFirstValue:
    """``loads_first``: the body as gin's ShouldBindJSON reads it (one json.Decoder.Decode)."""

    @pytest.mark.parametrize(
        ("body", "value"),
        [(b'{"a":1} x', {"a": 1}), (b' \n{"a":1}{"b":2}', {"a": 1}), (b'{"a":1}\xff\xfe', {"a": 1}),
         (b"null trailing", None), (b"7 8", 7)],
    )  # fmt: skip
    def test_what_follows_the_value_is_not_read(self, body: bytes, value: object) -> None:
        """Trailing bytes, even a second value or invalid UTF-8, are ignored."""
        assert gojson.loads_first(body) == value

    def test_whole_body_decode_refuses_trailing_bytes(self) -> None:
        """``loads`` (json.Unmarshal, PD's group body) refuses them."""
        with pytest.raises(InvalidInputError, match="Extra data"):
            gojson.loads(b'{"a":1} x')

    @pytest.mark.parametrize(
        ("body", "message"),
        [(b"", "EOF"), (b" \t\r\n", "EOF"), (b'{"a":"\xff"}', "invalid UTF-8 at byte 6"),
         (b'  {"a":"\xc3\xa9\xff"}', "invalid UTF-8 at byte 10"), (b"{nope", "not valid JSON"),
         (b"NaN", "NaN is not valid JSON")],
    )  # fmt: skip
    def test_refusals(self, body: bytes, message: str) -> None:
        """Nothing but space is EOF; invalid UTF-8 inside the value is named by its byte."""
        with pytest.raises(InvalidInputError, match=message):
            gojson.loads_first(body)
