"""The settings decoder that builds models straight from the protobuf message agrees with the
validated path it replaced (protobuf -> dict -> ``ResourceGroup.model_validate``), kept here as
the oracle: same models, same JSON, same wire bytes, and a DecodeError for the same values.
"""

from __future__ import annotations

import copy
import math
import re
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from rmwatch.errors import DecodeError
from rmwatch.http.pdjson import group_json
from rmwatch.store._pb import apipb_pb2
from rmwatch.store._pb import resource_manager_pb2 as pb
from rmwatch.store.codec import decode_settings, encode_settings
from rmwatch.store.models import (
    Consumption,
    GroupStates,
    KeyspaceIdentity,
    ResourceGroup,
    TokenLimitSettings,
    TokenState,
    construct_trusted,
    default_group,
)

# ---- the oracle: the validated path --------------------------------------------------------


def _message_to_dict(msg: Any) -> dict[str, Any]:
    """Set fields only, as the validated decoder read them (sub-messages when present)."""
    out: dict[str, Any] = {}
    for field, value in msg.ListFields():
        if field.message_type is not None:
            out[field.name] = _message_to_dict(value)
        elif field.is_repeated:
            out[field.name] = list(value)
        else:
            out[field.name] = value
    return out


def validated_decode(data: bytes) -> ResourceGroup:
    """The validated decode of settings bytes; raises ValueError where the codec must refuse.

    Known fields with a wrong wire type are refused by the codec before either path runs.
    """
    msg = pb.ResourceGroup.FromString(data)
    fields = _message_to_dict(msg)
    fields.setdefault("mode", 0)
    identity = None
    if "keyspace_id" in fields:
        case = fields["keyspace_id"]
        if "keyspace_identity" in case:
            identity = KeyspaceIdentity.model_validate(case["keyspace_identity"])
            fields["keyspace_id"] = identity.keyspace_id
        else:
            fields["keyspace_id"] = case.get("value", 0)
    try:
        group = ResourceGroup.model_validate(fields)
    except ValidationError as exc:
        raise ValueError(str(exc)) from None
    group._wire = data
    group._identity = identity
    return group


# ---- messages, valid and not ---------------------------------------------------------------

_u32 = st.integers(0, 2**32 - 1)
_u64 = st.integers(0, 2**64 - 1)
_i64 = st.integers(-(2**63), 2**63 - 1)
_edgy_doubles = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0])
_enum = st.integers(0, 6)


@st.composite
def _limits(draw: st.DrawFn, doubles: st.SearchStrategy[float]) -> pb.TokenLimitSettings:
    return pb.TokenLimitSettings(
        fill_rate=draw(_u64), burst_limit=draw(_i64), max_tokens=draw(doubles)
    )


@st.composite
def _bucket(draw: st.DrawFn, doubles: st.SearchStrategy[float]) -> pb.TokenBucket:
    bucket = pb.TokenBucket(tokens=draw(doubles))
    if draw(st.booleans()):
        bucket.settings.CopyFrom(draw(_limits(doubles)))
    return bucket


@st.composite
def messages(draw: st.DrawFn, *, valid: bool) -> pb.ResourceGroup:
    """A ResourceGroup message; with ``valid`` False, names, enums, priorities and doubles also
    take values PD refuses."""
    doubles = _edgy_doubles if not valid else st.floats(allow_nan=False, allow_infinity=False)
    if valid:
        name = draw(st.text(min_size=1, max_size=8))
        mode, priority = draw(st.sampled_from([0, 1])), draw(st.integers(0, 16))
        enum = st.integers(0, 3)
    else:
        name = draw(st.text(max_size=34))
        mode, priority, enum = draw(_enum), draw(st.integers(0, 20)), _enum
    fields: dict[str, Any] = {"name": name, "mode": mode, "priority": priority}
    msg = pb.ResourceGroup(**fields)  # enum fields take any number on the wire
    if draw(st.booleans()):
        msg.r_u_settings.SetInParent()
        if draw(st.booleans()):
            msg.r_u_settings.r_u.CopyFrom(draw(_bucket(doubles)))
    if draw(st.booleans()):
        msg.raw_resource_settings.SetInParent()
        for part in ("cpu", "io_read", "io_write"):
            if draw(st.booleans()):
                getattr(msg.raw_resource_settings, part).CopyFrom(draw(_bucket(doubles)))
    if draw(st.booleans()):
        runaway: Any = msg.runaway_settings  # enum fields take any number on the wire
        runaway.SetInParent()
        runaway.action = draw(enum if not valid else st.integers(0, 4))
        runaway.switch_group_name = draw(st.text(max_size=6))
        if draw(st.booleans()):
            runaway.rule.exec_elapsed_time_ms = draw(_u64)
            runaway.rule.processed_keys = draw(_i64)
            runaway.rule.request_unit = draw(_i64)
            runaway.rule.SetInParent()
        if draw(st.booleans()):
            runaway.watch.lasting_duration_ms = draw(_i64)
            runaway.watch.type = draw(enum)
            runaway.watch.SetInParent()
    if draw(st.booleans()):
        msg.background_settings.SetInParent()
        msg.background_settings.job_types.extend(draw(st.lists(st.text(max_size=5), max_size=3)))
        msg.background_settings.utilization_limit = draw(_u64)
    if draw(st.booleans()):
        msg.RUStats.SetInParent()
        for field in pb.Consumption.DESCRIPTOR.fields:
            if draw(st.booleans()):
                is_int = field.type == field.TYPE_UINT64
                setattr(msg.RUStats, field.name, draw(_u64 if is_int else doubles))
    case = draw(st.sampled_from(["none", "empty", "value", "identity"]))
    if case == "empty":
        msg.keyspace_id.SetInParent()
    elif case == "value":
        msg.keyspace_id.value = draw(_u32)
    elif case == "identity":
        msg.keyspace_id.keyspace_identity.CopyFrom(
            apipb_pb2.KeyspaceIdentity(namespace_id=draw(_u32), keyspace_id=draw(_u32))
        )
    return msg


def _states() -> GroupStates:
    return GroupStates(
        r_u=TokenState(tokens=12.5, last_update="2024-01-01T00:00:00Z", initialized=True),
        ru_consumption=Consumption(r_r_u=1.5, read_cross_az_traffic_bytes=7),
    )


def assert_same(fast: ResourceGroup, slow: ResourceGroup) -> None:
    """Equal models, field by field and type by type, with the same JSON and private state."""
    assert fast == slow
    assert fast.model_dump() == slow.model_dump()
    assert fast.model_dump_json() == slow.model_dump_json()
    assert repr(fast) == repr(slow)
    assert type(fast.mode) is type(slow.mode)
    assert fast.wire == slow.wire
    assert fast.keyspace_identity == slow.keyspace_identity
    for with_stats in (False, True):
        for states in (None, _states()):
            assert group_json(fast, states, with_stats=with_stats) == group_json(
                slow, states, with_stats=with_stats
            )


# ---- the tests -----------------------------------------------------------------------------


class TestEquivalence:
    """The fast decoder's answer is the validated path's, for every value."""

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(msg=messages(valid=True))
    def test_valid_values_decode_alike(self, msg: pb.ResourceGroup) -> None:
        """A valid value decodes to the same model, JSON and wire bytes on both paths."""
        data = msg.SerializeToString()
        assert_same(decode_settings("k", data), validated_decode(data))

    @settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(msg=messages(valid=False))
    def test_any_value_decodes_or_fails_alike(self, msg: pb.ResourceGroup) -> None:
        """Either both paths refuse a value (the fast one with DecodeError naming the key) or
        both decode it to the same group."""
        data = msg.SerializeToString()
        try:
            slow = validated_decode(data)
        except ValueError:
            with pytest.raises(DecodeError) as info:
                decode_settings("the-key", data)
            assert info.value.key == "the-key"
        else:
            assert_same(decode_settings("the-key", data), slow)

    @pytest.mark.parametrize(
        "group",
        [
            default_group(),
            default_group(0),
            default_group(7),
            ResourceGroup(name="a", ru_stats=Consumption(tikv_r_u_v2=2.5)),
        ],
    )
    def test_golden_values_decode_alike(self, group: ResourceGroup) -> None:
        """PD's default group, in and out of keyspaces, and RU stats decode alike."""
        data = encode_settings(group)
        fast = decode_settings("k", data)
        assert_same(fast, validated_decode(data))
        assert fast == group

    @pytest.mark.parametrize(
        ("field", "value", "reason"),
        [
            ("name", "", "name: name must be 1-32 bytes, got 0"),
            ("name", "x" * 33, "name: name must be 1-32 bytes, got 33"),
            ("mode", 2, "no implementation"),
            ("mode", 9, "mode: unknown GroupMode (9)"),
            ("priority", 17, "priority: priority must be 0-16, got 17"),
        ],
    )
    def test_refusals_name_the_field(self, field: str, value: Any, reason: str) -> None:
        """A refused value's DecodeError says which field and why."""
        msg = pb.ResourceGroup(name="a")
        setattr(msg, field, value)
        with pytest.raises(DecodeError, match=re.escape(reason)) as info:
            decode_settings("the-key", msg.SerializeToString())
        assert info.value.key == "the-key"

    def test_nan_names_its_path(self) -> None:
        """A NaN deep inside the message is refused with its dotted path."""
        msg = pb.ResourceGroup(name="a")
        msg.raw_resource_settings.io_write.settings.max_tokens = math.nan
        with pytest.raises(
            DecodeError, match=r"raw_resource_settings\.io_write\.settings\.max_tokens"
        ):
            decode_settings("k", msg.SerializeToString())


class TestConstructTrusted:
    """``construct_trusted`` builds what ``model_construct`` builds, sharing what it safely can."""

    def test_same_as_model_construct(self) -> None:
        """Fields, fields-set, extras and private state match ``model_construct``'s."""
        fields = {"fill_rate": 1, "burst_limit": -1, "max_tokens": 2.5}
        fast = construct_trusted(TokenLimitSettings, dict(fields))
        slow = TokenLimitSettings.model_construct(fill_rate=1, burst_limit=-1, max_tokens=2.5)
        assert fast == slow
        assert fast.model_fields_set == slow.model_fields_set
        assert fast.__pydantic_extra__ == slow.__pydantic_extra__
        assert fast.__pydantic_private__ == slow.__pydantic_private__
        consumption = construct_trusted(Consumption, Consumption().model_dump())
        assert consumption == Consumption.model_construct(**Consumption().model_dump())

    def test_copies_do_not_touch_shared_state(self) -> None:
        """``model_copy(update=...)`` of one decoded group leaves the others as they were."""
        one = decode_settings("k", encode_settings(default_group(1)))
        two = decode_settings("k", encode_settings(default_group(2)))
        assert one.__pydantic_fields_set__ is two.__pydantic_fields_set__
        before = set(two.model_fields_set)
        changed = one.model_copy(update={"priority": 3})
        assert changed.priority == 3
        assert two.model_fields_set == before
        assert copy.deepcopy(two) == two

    def test_frozen(self) -> None:
        """A decoded group stays frozen: assigning a field raises."""
        group = decode_settings("k", encode_settings(default_group()))
        with pytest.raises(ValidationError):
            cast(Any, group).priority = 3
