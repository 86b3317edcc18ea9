"""JSON codecs: group states, controller config and service limits, as PD writes them."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmwatch.errors import DecodeError
from rmwatch.store.codec import (
    decode_controller,
    decode_service_limit,
    decode_states,
    decode_value,
    encode_controller,
    encode_service_limit,
    encode_states,
)
from rmwatch.store.go_json import format_go_float
from rmwatch.store.keys import KeyKind, KeyLayout, ParsedKey
from rmwatch.store.models import (
    Consumption,
    ControllerConfig,
    GroupStates,
    RequestUnitConfig,
    ServiceLimit,
    TokenState,
)

LAYOUT = KeyLayout()
STATES_KEY = LAYOUT.states("rg1", 3)
CONTROLLER_KEY = LAYOUT.controller()
LIMIT_KEY = LAYOUT.service_limit(3)

_doubles = st.floats(allow_nan=False, allow_infinity=False)
_stamps = st.builds(
    lambda dt, ns, tz: f"{dt.year:04d}-{dt:%m-%dT%H:%M:%S}{ns}{tz}",
    st.datetimes(),
    st.sampled_from(["", ".5", ".123456789", ".000000001"]),
    st.sampled_from(["Z", "+08:00", "-05:30"]),
)
_CONSUMPTION_FIELDS = (
    "r_r_u", "w_r_u", "read_bytes", "write_bytes", "total_cpu_time_ms",
    "sql_layer_cpu_time_ms", "kv_read_rpc_count", "kv_write_rpc_count",
)  # fmt: skip
_states = st.builds(
    GroupStates,
    r_u=st.none()
    | st.builds(
        TokenState,
        tokens=st.none() | _doubles,
        last_update=st.none() | _stamps,
        initialized=st.none() | st.booleans(),
    ),
    ru_consumption=st.none()
    | st.builds(Consumption, **dict.fromkeys(_CONSUMPTION_FIELDS, _doubles)),
)
_durations = st.one_of(
    st.sampled_from(["0", "0s", "30s", "1m30s", "250ms", "1h", "1.5s", "100µs", "2h45m"]),
    st.integers(0, 10**6).map(lambda n: f"{n}ms"),
)
_configs = st.builds(
    ControllerConfig,
    degraded_mode_wait_duration=_durations,
    ltb_max_wait_duration=_durations,
    ltb_token_rpc_max_delay=_durations,
    enable_controller_trace_log=st.sampled_from([True, False, "true", "false"]),
    request_unit=st.builds(
        RequestUnitConfig,
        read_base_cost=_doubles,
        read_per_batch_base_cost=_doubles,
        read_cost_per_byte=_doubles,
        write_base_cost=_doubles,
        write_per_batch_base_cost=_doubles,
        write_cost_per_byte=_doubles,
        read_cpu_ms_cost=_doubles,
    ),
)


def _decoders() -> list[tuple[str, Any]]:
    """(name, decoder taking key and bytes) for every JSON value kind."""
    return [
        ("states", decode_states),
        ("controller", decode_controller),
        ("service_limit", lambda key, data: decode_service_limit(key, data, 3)),
    ]


class TestStates:
    """Group states JSON."""

    def test_pd_written_states(self) -> None:
        """A states value as PD writes it decodes field by field."""
        data = (
            b'{"r_u":{"tokens":123.5,"last_update":"2024-05-01T12:34:56.123456789+08:00",'
            b'"initialized":true},"ru_consumption":{"r_r_u":1.5,"w_r_u":2,"read_bytes":10,'
            b'"write_bytes":20,"total_cpu_time_ms":3,"sql_layer_cpu_time_ms":1,'
            b'"kv_read_rpc_count":4,"kv_write_rpc_count":5}}'
        )
        states = decode_states(STATES_KEY, data)
        assert states.r_u == TokenState(
            tokens=123.5, last_update="2024-05-01T12:34:56.123456789+08:00", initialized=True
        )
        assert states.ru_consumption is not None
        assert states.ru_consumption.w_r_u == 2
        assert states.ru_consumption.kv_write_rpc_count == 5

    def test_empty_fields_omitted(self) -> None:
        """Empty states encode as {} and fields that are None are left out."""
        assert encode_states(GroupStates()) == b"{}"
        assert encode_states(GroupStates(r_u=TokenState(tokens=1.0))) == b'{"r_u":{"tokens":1.0}}'

    def test_timestamp_text_kept(self) -> None:
        """last_update keeps Go's text exactly (nanoseconds and offset), not a reformatted time."""
        data = b'{"r_u":{"last_update":"2024-05-01T12:34:56.000000001-07:00"}}'
        assert encode_states(decode_states(STATES_KEY, data)) == data

    def test_unknown_keys_survive(self) -> None:
        """Keys this version does not know (top level and inside r_u) survive a round-trip."""
        data = b'{"r_u":{"tokens":1.0,"future":[1]},"cpu":{"tokens":2.0}}'
        out = json.loads(encode_states(decode_states(STATES_KEY, data)))
        assert out == {"r_u": {"tokens": 1.0, "future": [1]}, "cpu": {"tokens": 2.0}}

    @settings(max_examples=200, deadline=None)
    @given(states=_states)
    def test_round_trip(self, states: GroupStates) -> None:
        """decode_states(encode_states(s)) == s for any valid states."""
        assert decode_states(STATES_KEY, encode_states(states)) == states

    @pytest.mark.parametrize(
        "data",
        [
            b"not json",
            b"{",
            b"\xff\xfe\x00",
            b"",
            b"[]",
            b"null",
            b"1",
            b'"s"',
            b'{"r_u":1}',
            b'{"r_u":{"last_update":"yesterday"}}',
            b'{"r_u":{"last_update":"2024-05-01 12:34:56Z"}}',
            b'{"r_u":{"last_update":5}}',
            b'{"r_u":{"tokens":"x"}}',
            b'{"r_u":{"tokens":NaN}}',
            b'{"ru_consumption":{"r_r_u":Infinity}}',
        ],
    )
    def test_bad_states(self, data: bytes) -> None:
        """States that are not JSON, not an object, or have a bad field raise DecodeError."""
        with pytest.raises(DecodeError) as info:
            decode_states(STATES_KEY, data)
        assert info.value.key == STATES_KEY


class TestController:
    """Controller config JSON."""

    def test_encode_defaults(self) -> None:
        """The default config encodes to PD's keys, with the trace-log flag as a string."""
        out = json.loads(encode_controller(ControllerConfig()))
        assert out == {
            "degraded-mode-wait-duration": "0s",
            "ltb-max-wait-duration": "30s",
            "ltb-token-rpc-max-delay": "1s",
            "enable-controller-trace-log": "false",
            "request-unit": {
                "read-base-cost": 0.125,
                "read-per-batch-base-cost": 0.5,
                "read-cost-per-byte": 1 / 65536,
                "write-base-cost": 1.0,
                "write-per-batch-base-cost": 1.0,
                "write-cost-per-byte": 1 / 1024,
                "read-cpu-ms-cost": 1 / 3,
            },
            "push-metrics-address": "",
            "push-metrics-interval": "0s",
        }
        assert b'"enable-controller-trace-log":"false"' in encode_controller(ControllerConfig())

    def test_missing_keys_take_defaults(self) -> None:
        """A stored config with only some keys decodes with PD's defaults for the rest."""
        config = decode_controller(CONTROLLER_KEY, b'{"ltb-max-wait-duration":"1m"}')
        assert config == ControllerConfig(ltb_max_wait_duration="1m")

    def test_unknown_keys_survive_update(self) -> None:
        """push-metrics-address, ru-version-policy, an unknown key and an unknown
        request-unit key survive decode, with_updates and encode."""
        data = json.dumps(
            {
                "degraded-mode-wait-duration": "0s",
                "push-metrics-address": "http://gw:9091",
                "push-metrics-interval": "15s",
                "ru-version-policy": {"default": 2, "overrides": {"7": 1}},
                "future-policy": {"default": 2, "overrides": [1, 2]},
                "request-unit": {"read-base-cost": 0.125, "read-future-cost": 0.75},
            }
        ).encode()
        config = decode_controller(CONTROLLER_KEY, data)
        updated = config.with_updates({"read-base-cost": 0.5, "ltb-max-wait-duration": "10s"})
        out = json.loads(encode_controller(updated))
        assert out["push-metrics-address"] == "http://gw:9091"
        assert out["push-metrics-interval"] == "15s"
        assert out["ru-version-policy"] == {"default": 2, "overrides": {"7": 1}}
        assert out["future-policy"] == {"default": 2, "overrides": [1, 2]}
        assert out["request-unit"]["read-future-cost"] == 0.75
        assert out["request-unit"]["read-base-cost"] == 0.5
        assert out["ltb-max-wait-duration"] == "10s"
        assert decode_controller(CONTROLLER_KEY, encode_controller(updated)) == updated

    def test_unknown_keys_updatable(self) -> None:
        """An unknown key already stored can itself be updated through with_updates."""
        config = decode_controller(CONTROLLER_KEY, b'{"future-policy":"v1"}')
        out = json.loads(encode_controller(config.with_updates({"future-policy": "v2"})))
        assert out["future-policy"] == "v2"

    def test_trace_log_bool_from_json(self) -> None:
        """A JSON bool true for the trace-log flag is re-encoded as the string "true"."""
        config = decode_controller(CONTROLLER_KEY, b'{"enable-controller-trace-log":true}')
        assert b'"enable-controller-trace-log":"true"' in encode_controller(config)

    @settings(max_examples=200, deadline=None)
    @given(config=_configs)
    def test_round_trip(self, config: ControllerConfig) -> None:
        """decode_controller(encode_controller(c)) == c for any valid config."""
        assert decode_controller(CONTROLLER_KEY, encode_controller(config)) == config

    @pytest.mark.parametrize(
        "data",
        [
            b"nope",
            b"[]",
            b"null",
            b'{"ltb-max-wait-duration":"30"}',
            b'{"ltb-max-wait-duration":30}',
            b'{"degraded-mode-wait-duration":"abc"}',
            b'{"ltb-token-rpc-max-delay":""}',
            b'{"enable-controller-trace-log":"yes"}',
            b'{"request-unit":[]}',
            b'{"request-unit":{"read-base-cost":"x"}}',
            b'{"request-unit":{"read-base-cost":NaN}}',
        ],
    )
    def test_bad_controller(self, data: bytes) -> None:
        """A controller value with a bad duration or field raises DecodeError naming the key."""
        with pytest.raises(DecodeError) as info:
            decode_controller(CONTROLLER_KEY, data)
        assert info.value.key == CONTROLLER_KEY


class TestServiceLimit:
    """Service limits are bare JSON numbers."""

    @pytest.mark.parametrize(
        ("value", "encoded"),
        [(100, b"100"), (100.0, b"100"), (0, b"0"), (0.5, b"0.5"), (1 / 3, b"0.3333333333333333"),
         (1e20, b"100000000000000000000"), (1e21, b"1e+21"), (1.5e300, b"1.5e+300"),
         (123456.789, b"123456.789"), (0.0001, b"0.0001")],
    )  # fmt: skip
    def test_encode_like_go(self, value: float, encoded: bytes) -> None:
        """Integral limits encode without ".0" and others in shortest form, as Go writes them."""
        assert encode_service_limit(value) == encoded
        assert encode_service_limit(ServiceLimit(keyspace_id=1, service_limit=value)) == encoded

    @pytest.mark.parametrize(
        ("value", "encoded"),
        [(0.00001, "0.00001"), (0.000001, "0.000001"), (2.5e-5, "0.000025"), (1e-7, "1e-7"),
         (-0.0, "-0")],
    )  # fmt: skip
    def test_small_floats_like_go(self, value: float, encoded: str) -> None:
        """Small floats are formatted exactly as Go's encoding/json formats a float64."""
        assert format_go_float(value) == encoded

    @pytest.mark.parametrize("bad", [math.nan, math.inf])
    def test_non_finite_cannot_be_built(self, bad: float) -> None:
        """NaN and infinite limits cannot be built, so the encoder never meets them."""
        with pytest.raises(ValueError, match="finite"):
            ServiceLimit(service_limit=bad)

    @pytest.mark.parametrize(
        ("data", "value"), [(b"100", 100.0), (b"100.0", 100.0), (b"0", 0.0), (b"2.5e3", 2500.0)]
    )
    def test_decode(self, data: bytes, value: float) -> None:
        """A bare JSON number decodes to that limit, carrying the given keyspace id."""
        limit = decode_service_limit(LIMIT_KEY, data, 3)
        assert limit == ServiceLimit(keyspace_id=3, service_limit=value)

    @settings(max_examples=200, deadline=None)
    @given(value=st.one_of(st.floats(min_value=0, allow_infinity=False), st.integers(0, 2**53)))
    def test_round_trip(self, value: float) -> None:
        """Any finite non-negative limit survives encode then decode exactly."""
        data = encode_service_limit(value)
        assert not data.endswith(b".0")
        decoded = decode_service_limit(LIMIT_KEY, data, 7)
        assert decoded.service_limit == value
        assert decoded.keyspace_id == 7

    @pytest.mark.parametrize(
        "data",
        [b"abc", b"-1", b"-0.5", b"true", b"false", b"null", b"[1]", b'"100"', b"{}", b"",
         b"NaN", b"Infinity", b"1e400"],
    )  # fmt: skip
    def test_bad_limits(self, data: bytes) -> None:
        """Non-numbers, negatives, booleans and non-finite limits raise DecodeError with .key."""
        with pytest.raises(DecodeError) as info:
            decode_service_limit(LIMIT_KEY, data, 3)
        assert info.value.key == LIMIT_KEY


class TestGarbage:
    """No input makes a JSON decoder raise anything but DecodeError."""

    @settings(max_examples=200, deadline=None)
    @given(data=st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
    def test_random_bytes(self, data: bytes) -> None:
        """Random bytes decode or raise DecodeError naming the key, for every JSON kind."""
        for _, decoder in _decoders():
            try:
                decoder("k", data)
            except DecodeError as exc:
                key = exc.key
                assert key == "k"

    @settings(max_examples=200, deadline=None)
    @given(
        value=st.recursive(
            st.none() | st.booleans() | _doubles | st.integers() | st.text(max_size=8),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(
                    st.sampled_from(["r_u", "tokens", "request-unit", "read-base-cost", "x"]),
                    inner,
                    max_size=3,
                )
            ),
            max_leaves=8,
        )
    )
    def test_random_json(self, value: Any) -> None:
        """Random JSON documents decode or raise DecodeError, for every JSON kind."""
        data = json.dumps(value).encode()
        for _, decoder in _decoders():
            try:
                decoder("k", data)
            except DecodeError as exc:
                key = exc.key
                assert key == "k"

    @pytest.mark.parametrize("name", ["states", "controller", "service_limit"])
    @pytest.mark.parametrize(
        "data",
        [
            b"[" * 100_000,  # nesting deeper than Python's recursion limit
            b'{"a":' * 100_000,
            b"1" * 5000,  # more digits than int() accepts by default
            b'{"r_u":{"tokens":' + b"9" * 5000 + b"}}",
        ],
        ids=["deep-list", "deep-object", "huge-int", "huge-int-nested"],
    )
    def test_pathological_json(self, name: str, data: bytes) -> None:
        """Deeply nested or huge-integer JSON raises DecodeError, not RecursionError/ValueError."""
        decoder = dict(_decoders())[name]
        with pytest.raises(DecodeError) as info:
            decoder("k", data)
        assert info.value.key == "k"


class TestDecodeValueJson:
    """decode_value dispatches JSON kinds by the parsed key."""

    def test_states(self) -> None:
        """A states key decodes to GroupStates."""
        value = decode_value(STATES_KEY, LAYOUT.parse(STATES_KEY), b'{"r_u":{"tokens":1}}')
        assert value == GroupStates(r_u=TokenState(tokens=1.0))

    def test_controller(self) -> None:
        """The controller key decodes to ControllerConfig."""
        value = decode_value(CONTROLLER_KEY, LAYOUT.parse(CONTROLLER_KEY), b"{}")
        assert value == ControllerConfig()

    @pytest.mark.parametrize("ks", [0, 3, 4294967295])
    def test_service_limit_takes_keyspace_from_key(self, ks: int) -> None:
        """A service-limit key decodes to a ServiceLimit of the key's keyspace."""
        key = LAYOUT.service_limit(ks)
        value = decode_value(key, LAYOUT.parse(key), b"100")
        assert value == ServiceLimit(keyspace_id=ks, service_limit=100)

    @pytest.mark.parametrize(
        ("parsed", "data"),
        [
            (ParsedKey(KeyKind.STATES, 3, "rg1"), b"[1]"),
            (ParsedKey(KeyKind.CONTROLLER), b'{"ltb-max-wait-duration":"x"}'),
            (ParsedKey(KeyKind.SERVICE_LIMIT, 3), b"-1"),
        ],
    )
    def test_errors_carry_the_key(self, parsed: ParsedKey, data: bytes) -> None:
        """DecodeError from decode_value names the key that was passed in."""
        with pytest.raises(DecodeError) as info:
            decode_value("given/key", parsed, data)
        assert info.value.key == "given/key"
