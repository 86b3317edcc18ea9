"""PD's etcd key layout, byte for byte, and parsing every key back."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmwatch.errors import InvalidKeyError
from rmwatch.store.keys import NULL_KEYSPACE_ID, KeyKind, KeyLayout, ParsedKey, parse_keyspace_id

NULL = 4294967295
KEYSPACES = [0, 1, 4294967294]

# (how the key is built, the exact relative key PD uses)
EXPECTED_KEYS: list[tuple[ParsedKey, str]] = [
    (ParsedKey(KeyKind.SETTINGS, NULL, "rg1"), "resource_group/settings/rg1"),
    (ParsedKey(KeyKind.STATES, NULL, "rg1"), "resource_group/states/rg1"),
    (ParsedKey(KeyKind.CONTROLLER), "resource_group/controller"),
    (ParsedKey(KeyKind.SERVICE_LIMIT, NULL), "resource_group/keyspace/service_limits/4294967295"),
    *[
        (ParsedKey(KeyKind.SETTINGS, ks, "rg1"), f"resource_group/keyspace/settings/{ks}/rg1")
        for ks in KEYSPACES
    ],
    *[
        (ParsedKey(KeyKind.STATES, ks, "rg1"), f"resource_group/keyspace/states/{ks}/rg1")
        for ks in KEYSPACES
    ],
    *[
        (ParsedKey(KeyKind.SERVICE_LIMIT, ks), f"resource_group/keyspace/service_limits/{ks}")
        for ks in KEYSPACES
    ],
]
KEY_IDS = [key for _, key in EXPECTED_KEYS]


def _build(layout: KeyLayout, parsed: ParsedKey) -> str:
    """Build a key through the public per-kind builders (not key_for)."""
    if parsed.kind is KeyKind.CONTROLLER:
        return layout.controller()
    if parsed.kind is KeyKind.SERVICE_LIMIT:
        return layout.service_limit(parsed.keyspace_id)
    assert parsed.name is not None
    if parsed.kind is KeyKind.SETTINGS:
        return layout.settings(parsed.name, parsed.keyspace_id)
    return layout.states(parsed.name, parsed.keyspace_id)


class TestConstants:
    """The null keyspace constant."""

    def test_null_keyspace_is_0xffffffff(self) -> None:
        """The null keyspace id is 4294967295, PD's constant.NullKeyspaceID."""
        assert NULL_KEYSPACE_ID == 0xFFFFFFFF == NULL


class TestBuildKeys:
    """Every key kind is built byte for byte as PD writes it."""

    @pytest.mark.parametrize(("parsed", "expected"), EXPECTED_KEYS, ids=KEY_IDS)
    def test_key_without_root_prefix(self, parsed: ParsedKey, expected: str) -> None:
        """With the default empty root prefix each builder returns PD's exact relative key."""
        layout = KeyLayout()
        assert _build(layout, parsed) == expected
        assert _build(layout, parsed).encode() == expected.encode()
        assert layout.key_for(parsed) == expected

    @pytest.mark.parametrize("root", ["/pd/123", "/pd/123/"])
    @pytest.mark.parametrize(("parsed", "expected"), EXPECTED_KEYS, ids=KEY_IDS)
    def test_key_under_root_prefix(self, root: str, parsed: ParsedKey, expected: str) -> None:
        """A root prefix with or without a trailing slash is joined with exactly one slash."""
        layout = KeyLayout(root)
        assert _build(layout, parsed) == "/pd/123/" + expected
        assert layout.key_for(parsed) == "/pd/123/" + expected

    def test_default_builders_use_null_keyspace(self) -> None:
        """Builders called without a keyspace use the legacy keys and the null service limit."""
        layout = KeyLayout()
        assert layout.settings("a") == "resource_group/settings/a"
        assert layout.states("a") == "resource_group/states/a"
        assert layout.service_limit() == "resource_group/keyspace/service_limits/4294967295"

    @pytest.mark.parametrize(
        ("root", "prefix"),
        [("", "resource_group/"), ("/pd/123", "/pd/123/resource_group/"),
         ("/pd/123/", "/pd/123/resource_group/")],
    )  # fmt: skip
    def test_watch_prefix(self, root: str, prefix: str) -> None:
        """The watched prefix is the root prefix joined with ``resource_group/``."""
        assert KeyLayout(root).prefix == prefix

    def test_keyspace_zero_is_not_the_null_keyspace(self) -> None:
        """Keyspace 0 is ordinary and uses the keyspace keys, not the legacy ones."""
        layout = KeyLayout()
        assert layout.settings("a", 0) == "resource_group/keyspace/settings/0/a"
        assert layout.states("a", 0) == "resource_group/keyspace/states/0/a"


class TestParseKeys:
    """Every key parses back to what built it."""

    @pytest.mark.parametrize("root", ["", "/pd/123", "/pd/123/"])
    @pytest.mark.parametrize(("parsed", "expected"), EXPECTED_KEYS, ids=KEY_IDS)
    def test_parse_round_trip(self, root: str, parsed: ParsedKey, expected: str) -> None:
        """parse gives the parts back and key_for(parse(k)) == k, under any root prefix."""
        layout = KeyLayout(root)
        key = layout.key_for(parsed)
        assert layout.parse(key) == parsed
        assert layout.key_for(layout.parse(key)) == key

    @pytest.mark.parametrize(("parsed", "expected"), EXPECTED_KEYS, ids=KEY_IDS)
    def test_bytes_keys_accepted(self, parsed: ParsedKey, expected: str) -> None:
        """A key given as bytes (as etcd returns it) parses like the same key as str."""
        assert KeyLayout().parse(expected.encode()) == parsed

    def test_bytes_key_with_utf8_name(self) -> None:
        """A UTF-8 group name in a bytes key is decoded to the same str name."""
        key = "resource_group/keyspace/settings/3/组-é".encode()
        assert KeyLayout().parse(key) == ParsedKey(KeyKind.SETTINGS, 3, "组-é")

    @pytest.mark.parametrize(
        ("key", "parsed"),
        [
            ("resource_group/settings/a/b/c", ParsedKey(KeyKind.SETTINGS, NULL, "a/b/c")),
            ("resource_group/states/a/b/c", ParsedKey(KeyKind.STATES, NULL, "a/b/c")),
            ("resource_group/keyspace/settings/7/a/b/c", ParsedKey(KeyKind.SETTINGS, 7, "a/b/c")),
            ("resource_group/keyspace/states/7/a/b/c", ParsedKey(KeyKind.STATES, 7, "a/b/c")),
            ("resource_group/keyspace/settings/7//", ParsedKey(KeyKind.SETTINGS, 7, "/")),
            ("resource_group/settings/controller", ParsedKey(KeyKind.SETTINGS, NULL, "controller")),
        ],
    )
    def test_names_with_slashes(self, key: str, parsed: ParsedKey) -> None:
        """The keyspace id ends at the first '/', the name is everything after and may hold '/'."""
        layout = KeyLayout()
        assert layout.parse(key) == parsed
        assert layout.key_for(parsed) == key

    def test_max_keyspace_id_parses(self) -> None:
        """Keyspace id 4294967295 is accepted in a keyspace key."""
        parsed = KeyLayout().parse("resource_group/keyspace/settings/4294967295/a")
        assert parsed == ParsedKey(KeyKind.SETTINGS, NULL, "a")

    @pytest.mark.parametrize(
        "key",
        [
            "resource_group/keyspace/settings/4294967296/a",
            "resource_group/keyspace/states/4294967296/a",
            "resource_group/keyspace/service_limits/4294967296",
        ],
    )
    def test_keyspace_id_overflow_rejected(self, key: str) -> None:
        """Keyspace id 4294967296 is rejected with an InvalidKeyError naming the id."""
        with pytest.raises(InvalidKeyError, match="4294967296") as info:
            KeyLayout().parse(key)
        assert info.value.key == key

    @pytest.mark.parametrize(
        "ks", ["x", "-1", "+1", " 1", "1 ", "1e3", "٣", "\uff11", "²", "0x1", ""]
    )
    @pytest.mark.parametrize(
        "template",
        [
            "resource_group/keyspace/settings/{ks}/a",
            "resource_group/keyspace/states/{ks}/a",
            "resource_group/keyspace/service_limits/{ks}",
        ],
    )
    def test_non_decimal_keyspace_rejected(self, template: str, ks: str) -> None:
        """Signs, spaces, exponents, hex, empty and non-ASCII digits are not keyspace ids."""
        key = template.format(ks=ks)
        with pytest.raises(InvalidKeyError) as info:
            KeyLayout().parse(key)
        assert info.value.key == key

    @pytest.mark.parametrize(
        ("key", "keyspace_id"),
        [
            ("resource_group/keyspace/settings/07/a", 7),
            ("resource_group/keyspace/states/00/a", 0),
            ("resource_group/keyspace/service_limits/007", 7),
        ],
    )
    def test_zero_padded_keyspace_read_as_pd_reads_it(self, key: str, keyspace_id: int) -> None:
        """A zero-padded id ("07") is the keyspace PD's ParseUint reads (7), marked
        non-canonical (see tests/conformance/test_values.py)."""
        parsed = KeyLayout().parse(key)
        assert parsed.keyspace_id == keyspace_id
        assert parsed.canonical is False

    def test_canonical_is_left_out_of_equality_and_hash(self) -> None:
        """A non-canonical key equals (and hashes as) the canonical one for the same group;
        the parts stay immutable."""
        padded = KeyLayout().parse("resource_group/keyspace/settings/07/a")
        plain = KeyLayout().parse("resource_group/keyspace/settings/7/a")
        assert padded == plain
        assert (padded != plain) is False  # __ne__ agrees with __eq__
        assert hash(padded) == hash(plain)
        assert padded.canonical is False
        assert plain.canonical is True
        assert padded != ParsedKey(KeyKind.STATES, 7, "a")
        assert {padded: 1}[plain] == 1
        with pytest.raises(AttributeError):
            padded.name = "b"  # type: ignore[misc]

    @pytest.mark.parametrize(
        "key",
        [
            "resource_group/settings/",
            "resource_group/states/",
            "resource_group/keyspace/settings/7/",
            "resource_group/keyspace/states/7/",
            "resource_group/keyspace/settings/7",
            "resource_group/keyspace/states/7",
        ],
    )
    def test_missing_name_rejected(self, key: str) -> None:
        """A settings or states key without a group name is rejected."""
        with pytest.raises(InvalidKeyError):
            KeyLayout().parse(key)

    @pytest.mark.parametrize(
        ("root", "key"),
        [
            ("", "other/settings/a"),
            ("", "/resource_group/settings/a"),
            ("", "resource_groups/settings/a"),
            ("/pd/123", "resource_group/settings/a"),
            ("/pd/123", "/pd/1234/resource_group/settings/a"),
            ("/pd/123", "/pd/12/resource_group/settings/a"),
        ],
    )
    def test_key_outside_prefix_rejected(self, root: str, key: str) -> None:
        """A key not under this layout's prefix is rejected."""
        with pytest.raises(InvalidKeyError, match="prefix"):
            KeyLayout(root).parse(key)

    @pytest.mark.parametrize(
        "key",
        [
            "resource_group/",
            "resource_group/controller/x",
            "resource_group/controllers",
            "resource_group/settings",
            "resource_group/unknown/a",
            "resource_group/keyspace/settingz/1/a",
            "resource_group/keyspace/service_limits/",
            "resource_group/keyspace/service_limits/1/x",
            "resource_group/keyspace/service_limit/1",
            "resource_group/keyspace/",
        ],
    )
    def test_unknown_kind_rejected(self, key: str) -> None:
        """Keys under the prefix that are no known kind (or malformed) are rejected."""
        with pytest.raises(InvalidKeyError):
            KeyLayout().parse(key)

    def test_invalid_key_error_is_value_error(self) -> None:
        """InvalidKeyError is a ValueError carrying the key and a reason."""
        with pytest.raises(ValueError, match="unknown kind") as info:
            KeyLayout().parse("resource_group/nope")
        assert isinstance(info.value, InvalidKeyError)
        assert info.value.key == "resource_group/nope"
        assert info.value.reason


class TestParseKeyspaceId:
    """The keyspace id parser on its own."""

    @pytest.mark.parametrize(
        ("text", "value"), [("0", 0), ("1", 1), ("10", 10), ("4294967295", 4294967295)]
    )
    def test_accepts_plain_decimal(self, text: str, value: int) -> None:
        """Plain decimal ids in range parse to their value."""
        assert parse_keyspace_id(text) == value

    @pytest.mark.parametrize("text", ["4294967296", "99999999999999999999", "07", "-0", "٣"])
    def test_rejects_out_of_range_or_odd_forms(self, text: str) -> None:
        """Out-of-range, padded, signed and non-ASCII ids raise ValueError."""
        with pytest.raises(ValueError, match="keyspace id"):
            parse_keyspace_id(text)


_NAMES = st.text(min_size=1, max_size=32).filter(lambda s: 1 <= len(s.encode()) <= 32)
_NAMES_WITH_SLASH = st.lists(st.sampled_from(["/", "a", "é", "组", "0", " "]), min_size=1,
                             max_size=10).map("".join)  # fmt: skip


class TestKeyProperties:
    """Properties over random names and keyspace ids."""

    @settings(max_examples=200, deadline=None)
    @given(name=st.one_of(_NAMES, _NAMES_WITH_SLASH), ks=st.integers(0, 2**32 - 1))
    def test_settings_round_trip(self, name: str, ks: int) -> None:
        """parse(settings(name, ks)) == (SETTINGS, ks, name) for any name and keyspace."""
        layout = KeyLayout("/pd/9")
        key = layout.settings(name, ks)
        assert layout.parse(key) == ParsedKey(KeyKind.SETTINGS, ks, name)
        assert layout.parse(key.encode()) == ParsedKey(KeyKind.SETTINGS, ks, name)

    @settings(max_examples=100, deadline=None)
    @given(name=st.one_of(_NAMES, _NAMES_WITH_SLASH), ks=st.integers(0, 2**32 - 1))
    def test_states_and_service_limit_round_trip(self, name: str, ks: int) -> None:
        """States and service-limit keys parse back to their keyspace (and name)."""
        layout = KeyLayout()
        assert layout.parse(layout.states(name, ks)) == ParsedKey(KeyKind.STATES, ks, name)
        assert layout.parse(layout.service_limit(ks)) == ParsedKey(KeyKind.SERVICE_LIMIT, ks)
