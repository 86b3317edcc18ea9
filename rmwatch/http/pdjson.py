"""PD's HTTP JSON shapes for groups, service limits and the controller: pure functions, no I/O.

The writer's API and the replica's sidecar both answer PD's routes, so both build their bodies
here, and one request gets one answer from either. PD serializes its REST ``ResourceGroup``
(pkg/mcs/resourcemanager/server/resource_group.go:39-50) with Go's encoding/json, after loading
the stored settings (``FromProtoResourceGroup``) and applying the states key (``setState``):

- ``name``, ``mode``, ``priority`` always; ``runaway_settings``, ``background_settings`` when
  set; ``raw_resource_settings`` never (PD's REST struct has no such field);
- ``r_u_settings`` for every RU-mode group, with ``r_u`` always (an empty bucket when the
  stored group has none): ``{"r_u":{"state":{"initialized":false}}}``;
- protobuf scalars with gogoproto's ``omitempty``: zero values are left out (``fill_rate`` 0,
  ``burst_limit`` 0 ...), present-but-empty messages stay;
- each bucket's ``state``: from the states key when it has ``r_u``, else the ``tokens`` kept in
  the settings' ``TokenBucket``; ``tokens`` and ``last_update`` only when set, ``initialized``
  always;
- ``ru_consumption`` with ``with_stats=true`` only, then always (at least ``{}``): the settings'
  ``RUStats`` plus the states key's ``ru_consumption``, as PD adds them on load.

Floats stay floats: ``rmwatch.store.go_json`` prints them as Go does (``100``, not ``100.0``;
``1152921504606847000`` for 2**60, Go's shortest digits, not the exact ``1152921504606846976``).
"""

from __future__ import annotations

from typing import Any

from rmwatch.store.models import (
    Consumption,
    ControllerConfig,
    GroupMode,
    GroupStates,
    ResourceGroup,
    TokenBucket,
    TokenState,
)
from rmwatch.store.stored_group import StoredGroup

__all__ = [
    "consumption_json",
    "controller_json",
    "group_json",
    "omit_zero",
]


def omit_zero(value: Any) -> Any:
    """Drop zero scalars (0, 0.0, "", False, None, empty lists) from dicts, recursively.

    Nested dicts stay even when they end up empty: a set pointer is emitted by Go.
    """
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if isinstance(item, dict):
                out[key] = omit_zero(item)
            elif item:
                # Falsy is exactly the zeros above for JSON's types (None, bool, int, float,
                # str, list; tuples too): one truth test instead of seven comparisons.
                out[key] = list(item) if type(item) is tuple else item
        return out
    return value


def _state(tokens: float, state: TokenState | None) -> dict[str, Any]:
    # PD: pkg/mcs/resourcemanager/server/token_buckets.go:131-135 (HEAD a186e0c): a states
    # key's r_u replaces tokens, last_update and initialized together.
    out: dict[str, Any] = {}
    if state is not None:
        tokens = state.tokens or 0.0
    if tokens:
        out["tokens"] = tokens
    if state is not None and state.last_update:
        out["last_update"] = state.last_update
    out["initialized"] = bool(state.initialized) if state is not None else False
    return out


def _bucket(limits: dict[str, Any] | None, tokens: float, state: TokenState | None
            ) -> dict[str, Any]:  # fmt: skip
    # PD: token_buckets.go:409-423: without settings the bucket is empty (its tokens dropped).
    # ``limits``: the bucket's settings as a dict (None when it has none), from either form.
    out: dict[str, Any] = {}
    if limits is None:
        tokens = 0.0
    else:
        out["settings"] = omit_zero(limits)
    out["state"] = _state(tokens, state)
    return out


def _model_bucket(bucket: TokenBucket | None, state: TokenState | None) -> dict[str, Any]:
    if bucket is None or bucket.settings is None:
        return _bucket(None, 0.0, state)
    return _bucket(bucket.settings.model_dump(mode="json"), bucket.tokens, state)


def consumption_json(consumption: Consumption) -> dict[str, Any]:
    """A ``Consumption`` as Go's encoding/json writes kvproto's struct: known fields only,
    zeros omitted (``{}`` when nothing was consumed)."""
    known: dict[str, Any] = omit_zero(
        consumption.model_dump(mode="json", include=set(Consumption.model_fields))
    )
    return known


def _stats(group: ResourceGroup, states: GroupStates | None) -> dict[str, Any]:
    # PD: resource_group.go:254-265 starts from the settings' RUStats (RU mode only, else {});
    # states keys add theirs (resource_group.go:385-386, 394-411).
    if group.mode is not GroupMode.RU_MODE:
        return {}
    total = group.ru_stats if group.ru_stats is not None else Consumption()
    if states is not None and states.ru_consumption is not None:
        total = total.plus(states.ru_consumption)
    return consumption_json(total)


def group_json(
    group: ResourceGroup | StoredGroup,
    states: GroupStates | None = None,
    *,
    with_stats: bool = False,
) -> dict[str, Any]:
    """A group as PD's ``GET config/group/{name}`` answers it."""
    if isinstance(group, StoredGroup):
        return _stored_group_json(group, states, with_stats=with_stats)
    out: dict[str, Any] = {"name": group.name, "mode": int(group.mode)}
    if group.mode is GroupMode.RU_MODE:
        # PD: resource_group.go:256-262: an RU group always has RU settings and a bucket.
        settings = group.r_u_settings
        bucket = settings.r_u if settings is not None else None
        ru_state = states.r_u if states is not None else None
        out["r_u_settings"] = {"r_u": _model_bucket(bucket, ru_state)}
    out["priority"] = group.priority
    if group.runaway_settings is not None:
        out["runaway_settings"] = omit_zero(group.runaway_settings.model_dump(mode="json"))
    if group.background_settings is not None:
        out["background_settings"] = omit_zero(group.background_settings.model_dump(mode="json"))
    if with_stats:
        out["ru_consumption"] = _stats(group, states)
    return out


# ---- the same answers, read from a stored group's protobuf message -------------------------
# A replica keeps groups as ``StoredGroup`` (bytes and a few fields): building the pydantic model
# to answer one GET costs ~50 us, reading the parsed message ~10 us. Each function below mirrors
# the model-based one above it; tests/test_pdjson_stored.py checks they agree on any group.


def _bucket_pb(bucket: Any, state: TokenState | None) -> dict[str, Any]:
    if bucket is None or not bucket.HasField("settings"):
        return _bucket(None, 0.0, state)
    limits = bucket.settings
    fields = {"fill_rate": limits.fill_rate, "burst_limit": limits.burst_limit,
              "max_tokens": limits.max_tokens}  # fmt: skip
    return _bucket(fields, bucket.tokens, state)


def _runaway_pb(msg: Any) -> dict[str, Any]:
    rule = watch = None
    if msg.HasField("rule"):
        r = msg.rule
        rule = {"exec_elapsed_time_ms": r.exec_elapsed_time_ms,
                "processed_keys": r.processed_keys, "request_unit": r.request_unit}  # fmt: skip
    if msg.HasField("watch"):
        watch = {"lasting_duration_ms": msg.watch.lasting_duration_ms, "type": msg.watch.type}
    out: dict[str, Any] = omit_zero({"rule": rule, "action": msg.action, "watch": watch,
                                     "switch_group_name": msg.switch_group_name})  # fmt: skip
    return out


def _stats_pb(msg: Any, mode: GroupMode, states: GroupStates | None) -> dict[str, Any]:
    if mode is not GroupMode.RU_MODE:
        return {}
    stored = msg.RUStats if msg.HasField("RUStats") else None
    total = {name: getattr(stored, name) if stored is not None else 0 for name in _CONSUMED}
    extra = states.ru_consumption if states is not None else None
    if extra is not None:
        total = {name: total[name] + getattr(extra, name) for name in _CONSUMED}
    known: dict[str, Any] = omit_zero(total)
    return known


_CONSUMED = tuple(Consumption.model_fields)


def _stored_group_json(
    group: StoredGroup, states: GroupStates | None, *, with_stats: bool
) -> dict[str, Any]:
    msg = group.message()
    mode = group.mode
    out: dict[str, Any] = {"name": group.name, "mode": int(mode)}
    if mode is GroupMode.RU_MODE:
        settings = msg.r_u_settings if msg.HasField("r_u_settings") else None
        bucket = settings.r_u if settings is not None and settings.HasField("r_u") else None
        ru_state = states.r_u if states is not None else None
        out["r_u_settings"] = {"r_u": _bucket_pb(bucket, ru_state)}
    out["priority"] = group.priority
    if msg.HasField("runaway_settings"):
        out["runaway_settings"] = _runaway_pb(msg.runaway_settings)
    if msg.HasField("background_settings"):
        bg = msg.background_settings
        background = {"job_types": list(bg.job_types), "utilization_limit": bg.utilization_limit}
        out["background_settings"] = omit_zero(background)
    if with_stats:
        out["ru_consumption"] = _stats_pb(msg, mode, states)
    return out


def controller_json(config: ControllerConfig) -> dict[str, Any]:
    """PD's controller-config GET body: hyphenated keys, unknown (newer) keys kept."""
    return config.to_json_dict()
