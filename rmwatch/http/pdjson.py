"""PD's HTTP JSON shapes for groups, service limits and the controller: pure functions, no I/O.

The writer's API and the replica's sidecar both answer PD's routes, so both build their bodies
here. PD serializes its server-side ``ResourceGroup`` with Go's encoding/json:

- ``name``, ``mode``, ``priority`` always; ``r_u_settings``, ``raw_resource_settings``,
  ``runaway_settings``, ``background_settings`` only when set (pointers with omitempty);
- protobuf scalars with gogoproto's ``omitempty``: zero values are left out
  (``fill_rate`` 0, ``burst_limit`` 0, ``max_tokens`` 0 ...), present-but-empty messages stay;
- each bucket carries ``state`` from the group's states key: ``tokens`` and ``last_update``
  only when set, ``initialized`` always (a plain bool without omitempty);
- ``RUStats`` only when asked for (``with_stats=true``).
"""

from __future__ import annotations

from typing import Any

from rmwatch.store.models import (
    Consumption,
    ControllerConfig,
    GroupStates,
    ResourceGroup,
    ServiceLimit,
    TokenBucket,
    TokenState,
)

__all__ = ["controller_json", "group_json", "omit_zero", "service_limit_json"]


def omit_zero(value: Any) -> Any:
    """Drop zero scalars (0, 0.0, "", False, None, empty lists) from dicts, recursively.

    Nested dicts stay even when they end up empty: a set pointer is emitted by Go.
    """
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if isinstance(item, dict):
                out[key] = omit_zero(item)
            elif item not in (None, 0, 0.0, "", False) and item not in ([], ()):
                out[key] = list(item) if isinstance(item, tuple) else item
        return out
    return value


def _state(state: TokenState | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if state is not None and state.tokens:
        out["tokens"] = state.tokens
    if state is not None and state.last_update:
        out["last_update"] = state.last_update
    out["initialized"] = bool(state.initialized) if state is not None else False
    return out


def _bucket(bucket: TokenBucket, state: TokenState | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if bucket.settings is not None:
        out["settings"] = omit_zero(bucket.settings.model_dump(mode="json"))
    out["state"] = _state(state)
    return out


def _stats(group: ResourceGroup, states: GroupStates | None) -> dict[str, Any] | None:
    # PD keeps consumption in the states key; the settings' own RUStats is the fallback.
    consumption: Consumption | None = states.ru_consumption if states is not None else None
    if consumption is None:
        consumption = group.ru_stats
    return None if consumption is None else omit_zero(consumption.model_dump(mode="json"))


def group_json(
    group: ResourceGroup, states: GroupStates | None = None, *, with_stats: bool = False
) -> dict[str, Any]:
    """A group as PD's ``GET config/group/{name}`` answers it."""
    out: dict[str, Any] = {"name": group.name, "mode": int(group.mode)}
    ru_state = states.r_u if states is not None else None
    if group.r_u_settings is not None:
        ru = group.r_u_settings.r_u
        out["r_u_settings"] = {"r_u": _bucket(ru, ru_state)} if ru is not None else {}
    if group.raw_resource_settings is not None:
        raw = group.raw_resource_settings
        out["raw_resource_settings"] = {
            part: _bucket(bucket, None)
            for part in ("cpu", "io_read", "io_write")
            if (bucket := getattr(raw, part)) is not None
        }
    out["priority"] = group.priority
    if group.runaway_settings is not None:
        out["runaway_settings"] = omit_zero(group.runaway_settings.model_dump(mode="json"))
    if group.background_settings is not None:
        out["background_settings"] = omit_zero(group.background_settings.model_dump(mode="json"))
    if with_stats:
        stats = _stats(group, states)
        if stats is not None:
            out["RUStats"] = stats
    return out


def service_limit_json(limit: ServiceLimit) -> dict[str, Any]:
    """PD's service-limit GET body: ``{"service_limit", "available_tokens", "last_update"}``.

    The running ``available_tokens`` and ``last_update`` live in an RM node's limiter, not in
    etcd: they are ``null`` rather than invented (Go's decoder leaves a float64 or a time.Time
    at its zero value on ``null``, so PD's clients read the shape unchanged).
    """
    value = limit.service_limit
    # Go prints float64 100 as ``100``: integral values go out as JSON integers.
    number: float | int = int(value) if value.is_integer() and abs(value) < 1e21 else value
    return {"service_limit": number, "available_tokens": None, "last_update": None}


def controller_json(config: ControllerConfig) -> dict[str, Any]:
    """PD's controller-config GET body: hyphenated keys, unknown (newer) keys kept."""
    return config.to_json_dict()
