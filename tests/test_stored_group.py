"""``StoredGroup``, the replica's lean form of a stored group: it refuses exactly what the full
decoder refuses, shows the same fields, and builds the same model on demand."""

from __future__ import annotations

import math
import pickle
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_codec_fast import messages

from rmwatch.errors import DecodeError
from rmwatch.store._pb import resource_manager_pb2 as pb
from rmwatch.store.codec import decode_settings, decode_stored_group, encode_settings, stored_group
from rmwatch.store.models import GroupMode, ResourceGroup, default_group
from rmwatch.store.settings_decode import _NON_FINITE_RUN, _may_hold_non_finite
from rmwatch.store.stored_group import StoredGroup

_NON_FINITE = [
    math.inf,
    -math.inf,
    math.nan,
    -math.nan,
    struct.unpack("<d", b"\xff" * 8)[0],  # a NaN whose bytes are all 0xFF, like a varint -1
    struct.unpack("<d", b"\x01\x00\x00\x00\x00\x00\xf0\x7f")[0],  # a signalling NaN payload
]

# Bytes that make or break a NaN's run, and the varint -1 the prefilter removes.
_WIRE_PIECES = st.sampled_from(
    [b"\xff" * 9 + b"\x01", b"\xff", b"\x7f", b"\xf0", b"\xf7", b"\x01", b"\x00", b"\x09"]
)


class TestSameAsTheFullDecoder:
    """Property: for any message, both decoders refuse it or both accept it alike."""

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(msg=messages(valid=False))
    def test_refuses_or_accepts_alike(self, msg: pb.ResourceGroup) -> None:
        """The stored form and the model agree field by field, and on refusals."""
        data = msg.SerializeToString()
        reason: str | None = None
        try:
            full = decode_settings("k", data)
        except DecodeError as exc:
            reason = exc.reason
        if reason is not None:
            with pytest.raises(DecodeError) as info:
                decode_stored_group("k", data)
            assert info.value.reason == reason
            return
        stored = decode_stored_group("k", data)
        assert stored == full
        assert full == stored
        assert (stored.name, stored.mode, stored.priority) == (full.name, full.mode, full.priority)
        assert stored.keyspace_id == full.keyspace_id
        assert stored.keyspace_identity == full.keyspace_identity
        assert stored.wire == data
        assert stored.model().model_dump() == full.model_dump()
        assert stored.r_u_settings == full.r_u_settings
        assert stored.runaway_settings == full.runaway_settings
        assert stored.ru_stats == full.ru_stats
        assert hash(stored) == hash(full)


class TestNonFiniteDoubles:
    """The byte search that skips the per-field check never lets a NaN or an infinity by."""

    @pytest.mark.parametrize("value", _NON_FINITE)
    @pytest.mark.parametrize(
        "where",
        ["RUStats.tikv_r_u_v2", "r_u_settings.r_u.settings.max_tokens", "r_u_settings.r_u.tokens"],
    )
    def test_refused_next_to_varint_minus_one(self, value: float, where: str) -> None:
        """A non-finite double is refused wherever it sits, also right after or before a
        varint -1 (nine 0xFF bytes and a 0x01, which the search skips)."""
        msg = pb.ResourceGroup(name="a", priority=3)
        msg.r_u_settings.r_u.settings.burst_limit = -1
        msg.runaway_settings.rule.processed_keys = -1
        *path, last = where.split(".")
        target = msg
        for part in path:
            target = getattr(target, part)
        setattr(target, last, value)
        with pytest.raises(DecodeError, match=r"must be a finite number") as info:
            decode_stored_group("k", msg.SerializeToString())
        assert where in info.value.reason

    @settings(max_examples=600, deadline=None)
    @given(parts=st.lists(_WIRE_PIECES | st.binary(max_size=12), max_size=24))
    def test_prefilter_never_hides_a_run(self, parts: list[bytes]) -> None:
        """The byte tests and the removal of varint -1 runs before the search only ever settle
        bytes the search itself finds no run in: any bytes, runs of 0xFF and 0x7F included."""
        wire = b"".join(parts)
        if _NON_FINITE_RUN.search(wire) is not None:
            assert _may_hold_non_finite(wire)

    def test_finite_values_with_minus_one_pass(self) -> None:
        """Huge, tiny and negative finite doubles beside -1 varints are accepted."""
        msg = pb.ResourceGroup(name="a", mode=pb.RUMode)
        msg.r_u_settings.r_u.settings.burst_limit = -1
        msg.r_u_settings.r_u.settings.max_tokens = -1.7976931348623157e308
        msg.r_u_settings.r_u.tokens = 5e-324
        msg.RUStats.r_r_u = 1.7976931348623157e308
        stored = decode_stored_group("k", msg.SerializeToString())
        assert stored.model().r_u_settings is not None


class TestTheObject:
    """What a caller holding a ``StoredGroup`` can do with it."""

    def test_fields_are_read_only(self) -> None:
        """The public fields cannot be assigned (a shared cached value must not change)."""
        stored = stored_group(default_group())
        with pytest.raises(AttributeError):
            stored.name = "other"  # type: ignore[misc]
        with pytest.raises(AttributeError):
            stored.extra = 1  # type: ignore[attr-defined]

    def test_pickles_as_its_bytes(self) -> None:
        """A pickled group comes back equal, keyspace included."""
        stored = stored_group(default_group(7)).in_keyspace(9)
        back = pickle.loads(pickle.dumps(stored))
        assert isinstance(back, StoredGroup)
        assert back == stored
        assert back.keyspace_id == 9

    def test_model_copy_gives_a_writable_model(self) -> None:
        """``model_copy(update=...)`` returns a ``ResourceGroup`` to change and write back."""
        stored = stored_group(ResourceGroup(name="g", priority=3))
        changed = stored.model_copy(update={"priority": 5})
        assert isinstance(changed, ResourceGroup)
        assert changed.priority == 5
        assert decode_settings("k", encode_settings(changed)).priority == 5

    def test_equal_across_wire_forms(self) -> None:
        """Two stored forms of the same fields are equal though their bytes differ (an unknown
        field); a changed field makes them differ."""
        plain = pb.ResourceGroup(name="g", mode=pb.RUMode, priority=4).SerializeToString()
        with_unknown = plain + b"\xa8\x06\x01"  # field 101, varint 1: a newer PD's field
        a, b = decode_stored_group("k", plain), decode_stored_group("k", with_unknown)
        assert a.wire != b.wire
        assert a == b
        assert a != stored_group(ResourceGroup(name="g", mode=GroupMode.RU_MODE, priority=5))

    def test_repr_names_the_group(self) -> None:
        """The repr shows the fields kept, not the bytes."""
        text = repr(stored_group(default_group()))
        assert "name='default'" in text
        assert "priority=8" in text
