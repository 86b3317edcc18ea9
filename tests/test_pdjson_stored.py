"""PD's JSON for a group read from its stored bytes (``StoredGroup``, the sidecar's path) is the
JSON built from the full model, for any group PD accepts, with and without states and stats."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_codec_fast import messages

from rmwatch.http.fast_group_read import GroupBodies
from rmwatch.http.pdjson import group_json, omit_zero
from rmwatch.store._pb import resource_manager_pb2 as pb
from rmwatch.store.codec import decode_stored_group, stored_group
from rmwatch.store.models import Consumption, GroupStates, TokenState, default_group

_STATES = [
    None,
    GroupStates(),
    GroupStates(r_u=TokenState(tokens=12.5, last_update="2024-01-01T00:00:00Z", initialized=True)),
    GroupStates(ru_consumption=Consumption(r_r_u=1.5, read_cross_az_traffic_bytes=7)),
    GroupStates(
        r_u=TokenState(tokens=3.0, initialized=False),
        ru_consumption=Consumption(w_r_u=2.0, tiflash_r_u_v2=0.25),
    ),
]


class TestSameJsonAsTheModel:
    """The stored group's JSON equals the model's, key order included (the bytes match)."""

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(msg=messages(valid=True), states=st.sampled_from(_STATES), stats=st.booleans())
    def test_any_valid_group(
        self, msg: pb.ResourceGroup, states: GroupStates | None, stats: bool
    ) -> None:
        """Every accepted group answers alike from the bytes and from the model."""
        stored = decode_stored_group("k", msg.SerializeToString())
        from_model = group_json(stored.model(), states, with_stats=stats)
        from_bytes = group_json(stored, states, with_stats=stats)
        assert from_bytes == from_model
        assert list(from_bytes) == list(from_model)
        bodies = GroupBodies()
        assert bodies.body("k", 0, stats, stored, states) == bodies.body(
            "m", 0, stats, stored.model(), states
        )

    def test_pd_default_group(self) -> None:
        """PD's reserved default group, the most read of all, answers alike."""
        for keyspace in (None, 7):
            stored = stored_group(default_group(keyspace))
            for stats in (False, True):
                assert group_json(stored, None, with_stats=stats) == group_json(
                    default_group(keyspace), None, with_stats=stats
                )


def _omit_zero_by_comparison(value: Any) -> Any:
    """The rule spelled as PD's zero values compared one by one (``omit_zero``'s oracle)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if isinstance(item, dict):
                out[key] = _omit_zero_by_comparison(item)
            elif item not in (None, 0, 0.0, "", False) and item not in ([], ()):
                out[key] = list(item) if isinstance(item, tuple) else item
        return out
    return value


_SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=3)
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=12,
)


class TestOmitZero:
    @settings(max_examples=500, deadline=None)
    @given(value=st.dictionaries(st.text(max_size=3), _JSON, max_size=5))
    def test_one_truth_test_drops_exactly_the_zero_values(self, value: dict[str, Any]) -> None:
        """For JSON's types (and tuples) the falsy values are exactly the zeros PD omits:
        ``-0.0`` and ``0.0``, ``0``, ``False``, ``""``, ``None``, ``[]`` and ``()``."""
        ours = omit_zero(value)
        assert ours == _omit_zero_by_comparison(value)
        assert _types(ours) == _types(_omit_zero_by_comparison(value))


def _types(value: Any) -> Any:
    # == says 1 == 1.0 == True: compare the types too (Go prints them differently).
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    return type(value).__name__
