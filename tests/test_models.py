"""The metadata models validate as PD validates, and carry PD's defaults exactly."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from rmwatch.store.models import (
    BackgroundSettings,
    ControllerConfig,
    GroupMode,
    GroupRequestUnitSettings,
    GroupStates,
    RequestUnitConfig,
    ResourceGroup,
    ServiceLimit,
    TokenBucket,
    TokenLimitSettings,
    TokenState,
    default_group,
    parse_go_duration,
)

PD_CONTROLLER_DEFAULTS: dict[str, Any] = {
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
    # PD: pkg/mcs/resourcemanager/server/config.go:178,181 (HEAD a186e0c) -- always present.
    "push-metrics-address": "",
    "push-metrics-interval": "0s",
}


class TestGroupName:
    """Group names are 1-32 bytes of UTF-8, as PD's len() on a Go string."""

    @pytest.mark.parametrize("name", ["a", "x" * 32, "é" * 16, "组" * 10 + "ab", "a/b"])
    def test_accepts_up_to_32_bytes(self, name: str) -> None:
        """Names of 1 to 32 UTF-8 bytes are accepted unchanged."""
        assert ResourceGroup(name=name).name == name

    @pytest.mark.parametrize("name", ["", "x" * 33, "é" * 17, "组" * 11, "😀" * 8 + "a"])
    def test_rejects_empty_or_over_32_bytes(self, name: str) -> None:
        """An empty name, or one over 32 bytes (multi-byte chars counted in bytes), is rejected."""
        with pytest.raises(ValidationError, match="name"):
            ResourceGroup(name=name)

    def test_multibyte_counted_in_bytes_not_chars(self) -> None:
        """Eleven 3-byte characters (33 bytes, 11 chars) are rejected though short in chars."""
        assert len("组" * 11) == 11
        with pytest.raises(ValidationError, match="33"):
            ResourceGroup(name="组" * 11)


class TestGroupFields:
    """Priority, mode, keyspace id and the reserved default group."""

    @pytest.mark.parametrize("priority", [0, 1, 8, 16])
    def test_priority_in_range(self, priority: int) -> None:
        """Priorities 0 through 16 are accepted."""
        assert ResourceGroup(name="a", priority=priority).priority == priority

    @pytest.mark.parametrize("priority", [17, 255, -1, 2**32])
    def test_priority_out_of_range(self, priority: int) -> None:
        """Priority 17 and above (and negatives) are rejected."""
        with pytest.raises(ValidationError, match="priority"):
            ResourceGroup(name="a", priority=priority)

    @pytest.mark.parametrize("mode", [0, 1])
    def test_known_modes(self, mode: int) -> None:
        """Modes 0 (Unknown) and 1 (RU) are accepted as GroupMode; 2 (Raw) is refused (PD
        cannot load it: tests/conformance/test_values.py::TestRawMode)."""
        assert ResourceGroup(name="a", mode=mode).mode is GroupMode(mode)

    @pytest.mark.parametrize("mode", [7, 3, -1])
    def test_unknown_mode_rejected(self, mode: int) -> None:
        """A mode outside the GroupMode enum (e.g. 7) is rejected."""
        with pytest.raises(ValidationError, match="mode"):
            ResourceGroup(name="a", mode=mode)

    def test_default_mode_is_ru(self) -> None:
        """A group built without a mode is in RU mode."""
        assert ResourceGroup(name="a").mode is GroupMode.RU_MODE

    def test_default_group_is_pds_reserved_default(self) -> None:
        """default_group() is named default, RU mode, fill_rate 2**31-1, burst -1, priority 8."""
        group = default_group()
        assert group == ResourceGroup(
            name="default",
            mode=GroupMode.RU_MODE,
            r_u_settings=GroupRequestUnitSettings(
                r_u=TokenBucket(settings=TokenLimitSettings(fill_rate=2147483647, burst_limit=-1))
            ),
            priority=8,
        )
        assert group.r_u_settings is not None
        assert group.r_u_settings.r_u is not None
        assert group.r_u_settings.r_u.settings is not None
        assert group.r_u_settings.r_u.settings.fill_rate == 2147483647
        assert group.r_u_settings.r_u.settings.burst_limit == -1
        assert group.priority == 8
        assert group.keyspace_id is None
        assert group.effective_keyspace_id == 4294967295

    @pytest.mark.parametrize(("ks", "stored"), [(None, None), (4294967295, None), (0, 0), (5, 5)])
    def test_default_group_keyspace(self, ks: int | None, stored: int | None) -> None:
        """default_group(ks) stores ks, except the null keyspace, which stays absent."""
        assert default_group(ks).keyspace_id == stored

    @pytest.mark.parametrize(
        ("value", "expected"), [(5, 5), ({"value": 5}, 5), ({}, 0), (0, 0), (None, None)]
    )
    def test_keyspace_id_int_or_object(self, value: Any, expected: int | None) -> None:
        """keyspace_id is accepted as a plain int and as protobuf JSON {"value": N}."""
        assert ResourceGroup(name="a", keyspace_id=value).keyspace_id == expected

    @pytest.mark.parametrize("value", [{"value": 5, "x": 1}, -1, 2**32, {"value": 2**32}])
    def test_bad_keyspace_id_rejected(self, value: Any) -> None:
        """A keyspace_id out of uint32 range or with extra object keys is rejected."""
        with pytest.raises(ValidationError):
            ResourceGroup(name="a", keyspace_id=value)

    def test_effective_keyspace_id(self) -> None:
        """effective_keyspace_id maps an absent keyspace_id to 0xFFFFFFFF and keeps others."""
        assert ResourceGroup(name="a").effective_keyspace_id == 0xFFFFFFFF
        assert ResourceGroup(name="a", keyspace_id=0).effective_keyspace_id == 0

    def test_ru_stats_alias(self) -> None:
        """RUStats is accepted by its protobuf name and by its python name."""
        by_alias = ResourceGroup.model_validate({"name": "a", "RUStats": {"r_r_u": 1.5}})
        by_name = ResourceGroup.model_validate({"name": "a", "ru_stats": {"r_r_u": 1.5}})
        assert by_alias == by_name
        assert by_alias.ru_stats is not None
        assert by_alias.ru_stats.r_r_u == 1.5

    def test_unknown_group_field_rejected(self) -> None:
        """A ResourceGroup field the model does not know is rejected (extra=forbid)."""
        with pytest.raises(ValidationError):
            ResourceGroup.model_validate({"name": "a", "bogus": 1})

    @pytest.mark.parametrize(
        ("model", "kwargs"),
        [
            (TokenLimitSettings, {"fill_rate": -1}),
            (TokenLimitSettings, {"fill_rate": 2**64}),
            (TokenLimitSettings, {"burst_limit": 2**63}),
            (TokenLimitSettings, {"max_tokens": math.nan}),
            (TokenBucket, {"tokens": math.inf}),
            (BackgroundSettings, {"utilization_limit": -1}),
        ],
    )
    def test_wire_ranges_enforced(self, model: Any, kwargs: dict[str, Any]) -> None:
        """Integers outside their protobuf type's range and non-finite doubles are rejected."""
        with pytest.raises(ValidationError):
            model(**kwargs)

    def test_frozen_group(self) -> None:
        """A ResourceGroup refuses attribute assignment."""
        group = default_group()
        with pytest.raises(ValidationError):
            group.priority = 3  # type: ignore[misc]
        assert group.priority == 8

    def test_frozen_nested(self) -> None:
        """Nested settings models refuse attribute assignment too."""
        settings = TokenLimitSettings(fill_rate=1)
        with pytest.raises(ValidationError):
            settings.fill_rate = 2  # type: ignore[misc]

    def test_equality_ignores_wire(self) -> None:
        """Two groups with the same fields are equal (and hash equal) whatever their wire bytes."""
        a = default_group()
        b = default_group().with_wire(b"\x0a\x07default")
        assert a == b
        assert hash(a) == hash(b)
        assert b.wire == b"\x0a\x07default"
        assert a.wire is None


class TestServiceLimit:
    """A service limit is a finite, non-negative number."""

    @pytest.mark.parametrize("value", [0, 0.0, 0.5, 100, 1e300])
    def test_accepts_non_negative(self, value: float) -> None:
        """Zero and positive finite limits are accepted."""
        assert ServiceLimit(keyspace_id=1, service_limit=value).service_limit == value

    @pytest.mark.parametrize("value", [-1, -0.001, math.nan, math.inf, -math.inf])
    def test_rejects_negative_and_non_finite(self, value: float) -> None:
        """Negative, NaN and infinite limits are rejected."""
        with pytest.raises(ValidationError):
            ServiceLimit(keyspace_id=1, service_limit=value)

    def test_default_keyspace_is_null(self) -> None:
        """A service limit built without a keyspace belongs to the null keyspace."""
        assert ServiceLimit(service_limit=1).keyspace_id == 4294967295


class TestGroupStates:
    """States models: RFC3339 times and unknown keys."""

    @pytest.mark.parametrize(
        "stamp",
        ["2024-05-01T12:34:56Z", "2024-05-01T12:34:56.123456789+08:00", "2024-05-01t00:00:00z"],
    )
    def test_rfc3339_accepted(self, stamp: str) -> None:
        """Go's RFC3339Nano timestamps are accepted and kept as the original text."""
        assert TokenState(last_update=stamp).last_update == stamp

    @pytest.mark.parametrize(
        "stamp",
        [
            "2024-05-01 12:34:56Z",
            "2024-05-01T12:34:56",
            "yesterday",
            "",
            "2024-05-01T12:34:56Z\n",
            "٢٠٢٤-05-01T12:34:56Z",
        ],
    )
    def test_bad_timestamps_rejected(self, stamp: str) -> None:
        """Non-RFC3339 text (incl. a trailing newline or non-ASCII digits) is rejected."""
        with pytest.raises(ValidationError, match="last_update"):
            TokenState(last_update=stamp)

    def test_unknown_keys_kept(self) -> None:
        """Keys of GroupStates the model does not know (e.g. raw 'cpu') are kept as extras."""
        states = GroupStates.model_validate({"cpu": {"tokens": 1.0}, "r_u": {"tokens": 2.0}})
        assert states.model_dump(exclude_none=True) == {
            "r_u": {"tokens": 2.0},
            "cpu": {"tokens": 1.0},
        }


class TestControllerDefaults:
    """The controller config defaults are PD's."""

    def test_defaults_equal_pd(self) -> None:
        """ControllerConfig() dumps to exactly PD's default controller JSON."""
        assert ControllerConfig().to_json_dict() == PD_CONTROLLER_DEFAULTS

    def test_default_floats_exact(self) -> None:
        """The request-unit defaults are the exact doubles 1/65536, 1/1024 and 1/3."""
        unit = ControllerConfig().request_unit
        assert unit.read_cost_per_byte == 1 / 65536 == 1.52587890625e-05
        assert unit.write_cost_per_byte == 1 / 1024 == 0.0009765625
        assert unit.read_cpu_ms_cost == 1 / 3 == 0.3333333333333333

    def test_trace_log_is_a_string(self) -> None:
        """enable-controller-trace-log is the JSON string "false", not the bool false."""
        value = ControllerConfig().to_json_dict()["enable-controller-trace-log"]
        assert value == "false"
        assert isinstance(value, str)

    def test_empty_object_gives_defaults(self) -> None:
        """Validating {} yields PD's defaults."""
        assert ControllerConfig.model_validate({}) == ControllerConfig()

    def test_request_unit_partial(self) -> None:
        """A partial request-unit object keeps defaults for the keys it lacks."""
        config = ControllerConfig.model_validate({"request-unit": {"read-base-cost": 2}})
        assert config.request_unit.read_base_cost == 2
        assert config.request_unit.write_base_cost == 1.0


class TestStringBool:
    """enable-controller-trace-log takes a bool or its string and always outputs a string."""

    @pytest.mark.parametrize(
        ("value", "out"), [(True, "true"), ("true", "true"), (False, "false"), ("false", "false")]
    )
    def test_accepts_bool_and_string(self, value: Any, out: str) -> None:
        """true and "true" both give "true" in the JSON form (likewise false)."""
        config = ControllerConfig.model_validate({"enable-controller-trace-log": value})
        assert config.to_json_dict()["enable-controller-trace-log"] == out

    @pytest.mark.parametrize("value", ["True", "1", 1, 0, None, "yes", ""])
    def test_rejects_other_values(self, value: Any) -> None:
        """Anything but true/false and their lower-case strings is rejected."""
        with pytest.raises(ValidationError, match="enable-controller-trace-log"):
            ControllerConfig.model_validate({"enable-controller-trace-log": value})


class TestGoDuration:
    """Durations are Go duration strings."""

    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            ("0", 0.0),
            ("0s", 0.0),
            ("30s", 30.0),
            ("1m30s", 90.0),
            ("250ms", 0.25),
            ("1h", 3600.0),
            ("1h2m3s", 3723.0),
            ("1.5s", 1.5),
            (".5s", 0.5),
            ("100us", 1e-4),
            ("100µs", 1e-4),
            ("100μs", 1e-4),
            ("10ns", 1e-8),
            ("-1m", -60.0),
            ("+2s", 2.0),
        ],
    )
    def test_parse_values(self, text: str, seconds: float) -> None:
        """parse_go_duration returns the duration in seconds."""
        assert parse_go_duration(text) == pytest.approx(seconds)

    @pytest.mark.parametrize(
        ("text", "shown"),
        [("1m30s", "1m30s"), ("90s", "1m30s"), ("250ms", "250ms"), ("1h", "1h0m0s"), ("0", "0s")],
    )
    def test_accepted_in_config(self, text: str, shown: str) -> None:
        """Valid Go durations are accepted and normalised as Go's Duration.String() prints
        them (PD's typeutil.Duration marshals String())."""
        config = ControllerConfig.model_validate({"ltb-max-wait-duration": text})
        assert config.ltb_max_wait_duration == shown

    @pytest.mark.parametrize(
        "text", ["30", "abc", "", "1x", "s", "1 s", "1s ", "30s\n", "٣s", "1.2.3s", "."]
    )
    def test_rejected(self, text: str) -> None:
        """Bare numbers, unknown units, spaces, newlines and non-ASCII digits are rejected."""
        with pytest.raises(ValueError, match="Go duration"):
            parse_go_duration(text)
        with pytest.raises(ValidationError, match="degraded-mode-wait-duration"):
            ControllerConfig.model_validate({"degraded-mode-wait-duration": text})

    @pytest.mark.parametrize("value", [30, 1.5, None, True])
    def test_non_string_rejected(self, value: Any) -> None:
        """A duration that is not a JSON string is rejected."""
        with pytest.raises(ValidationError):
            ControllerConfig.model_validate({"ltb-token-rpc-max-delay": value})


class TestControllerUpdates:
    """with_updates follows PD's POST config/controller: nested child keys, all or nothing."""

    def test_child_key_updates_nested(self) -> None:
        """A request-unit child key such as read-base-cost updates the nested value."""
        original = ControllerConfig()
        updated = original.with_updates({"read-base-cost": 0.25})
        assert updated.request_unit.read_base_cost == 0.25
        assert updated.request_unit.write_base_cost == 1.0
        assert original.request_unit.read_base_cost == 0.125

    def test_top_level_key(self) -> None:
        """A top-level key updates that field and nothing else."""
        updated = ControllerConfig().with_updates({"ltb-max-wait-duration": "1m"})
        expected = dict(PD_CONTROLLER_DEFAULTS, **{"ltb-max-wait-duration": "1m0s"})
        assert updated.to_json_dict() == expected

    def test_trace_log_bool_update(self) -> None:
        """A bare JSON bool for the trace-log flag is refused, as Go's ``,string`` option
        refuses it (PD: server/config.go:175); the string "true" is taken."""
        with pytest.raises(ValueError, match="string"):
            ControllerConfig().with_updates({"enable-controller-trace-log": True})
        updated = ControllerConfig().with_updates({"enable-controller-trace-log": "true"})
        assert updated.to_json_dict()["enable-controller-trace-log"] == "true"

    def test_request_unit_object_update(self) -> None:
        """A nested request-unit object is refused as PD refuses it: no child of
        RequestUnitConfig is named request-unit (PD: server/manager.go:525)."""
        with pytest.raises(KeyError, match="request-unit"):
            ControllerConfig().with_updates({"request-unit": {"write-base-cost": 3}})

    def test_several_keys_at_once(self) -> None:
        """Several top-level and child keys in one map are all applied."""
        updated = ControllerConfig().with_updates(
            {"ltb-token-rpc-max-delay": "2s", "write-cost-per-byte": 0.5}
        )
        assert updated.ltb_token_rpc_max_delay == "2s"
        assert updated.request_unit.write_cost_per_byte == 0.5

    @pytest.mark.parametrize(
        "items",
        [
            {"no-such-key": 1},
            {"read-base-cost": 9.0, "no-such-key": 1},
            {"ltb-max-wait-duration": "5s", "bogus": 1},
            {"request-unit": {"read-base-cost": 9.0, "bogus": 1}},
            {"ltb_max_wait_duration": "5s"},
        ],
    )
    def test_unknown_key_changes_nothing(self, items: dict[str, Any]) -> None:
        """One unknown key raises KeyError and the original config is left unchanged."""
        original = ControllerConfig()
        before = original.to_json_dict()
        with pytest.raises(KeyError):
            original.with_updates(items)
        assert original.to_json_dict() == before == PD_CONTROLLER_DEFAULTS

    def test_bad_value_rejected(self) -> None:
        """A known key with an invalid value raises ValidationError and changes nothing."""
        original = ControllerConfig()
        with pytest.raises(ValidationError):
            original.with_updates({"ltb-max-wait-duration": "30"})
        assert original.to_json_dict() == PD_CONTROLLER_DEFAULTS

    def test_request_unit_must_be_object(self) -> None:
        """A request-unit value that is not an object is refused (as any request-unit)."""
        with pytest.raises(KeyError, match="request-unit"):
            ControllerConfig().with_updates({"request-unit": 1})

    def test_stored_extras_kept_and_updatable(self) -> None:
        """Keys from a newer PD (top level and in request-unit) survive and can be updated."""
        stored = ControllerConfig.model_validate(
            {
                "push-metrics-address": "http://gw:9091",
                "future-policy": {"v": 2},
                "request-unit": {"read-base-cost": 0.5, "future-cost": 7},
            }
        )
        updated = stored.with_updates(
            {"push-metrics-address": "http://other:9091", "future-cost": 8}
        )
        out = updated.to_json_dict()
        assert out["push-metrics-address"] == "http://other:9091"
        assert out["future-policy"] == {"v": 2}
        assert out["request-unit"]["future-cost"] == 8
        assert out["request-unit"]["read-base-cost"] == 0.5
        assert stored.to_json_dict()["push-metrics-address"] == "http://gw:9091"

    def test_frozen_config(self) -> None:
        """The controller config and its request-unit refuse attribute assignment."""
        config = ControllerConfig()
        with pytest.raises(ValidationError):
            config.ltb_max_wait_duration = "1s"  # type: ignore[misc]
        with pytest.raises(ValidationError):
            config.request_unit.read_base_cost = 1.0  # type: ignore[misc]
        assert RequestUnitConfig().read_base_cost == 0.125
