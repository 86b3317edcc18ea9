"""RM's controller config (the JSON under ``resource_group/controller``), with PD's defaults.

One concept: the keys PD's ``ControllerConfig`` has, their defaults and PD's validation, and
how a ``POST config/controller`` map updates them. Kept apart from the group models so the
controller rules (Go durations, Go's float printing, string bools) live in one place.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr, field_validator

Double = Annotated[float, Field(allow_inf_nan=False)]
"""A JSON number; NaN and infinities are refused (JSON cannot carry them)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


_GO_DURATION = re.compile(r"^(0|[+-]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+)\Z", re.ASCII)
_GO_PART = re.compile(r"(\d*)(?:\.(\d*))?(ns|us|µs|μs|ms|s|m|h)")
_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
       "h": 3600 * 10**9}  # fmt: skip
_INT64_MAX = 2**63 - 1


def go_duration_ns(text: str) -> int:
    """Nanoseconds in a Go duration string, as Go's ``time.ParseDuration`` reads it (each
    fraction truncated to whole nanoseconds; ValueError past int64, as Go's overflow)."""
    if not _GO_DURATION.match(text):
        raise ValueError(f"{text!r} is not a Go duration (e.g. '30s', '1m0s', '250ms')")
    total = 0
    for whole, frac, unit in _GO_PART.findall(text):
        scale = _NS[unit]
        total += int(whole or "0") * scale
        if frac:
            total += int(frac) * scale // 10 ** len(frac)
    if total > _INT64_MAX:
        raise ValueError(f"{text!r}: invalid duration (overflows int64 nanoseconds)")
    return -total if text.startswith("-") else total


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string such as ``"1m30s"`` or ``"250ms"``."""
    return go_duration_ns(text) / 1e9


def _frac(value: int, digits: int) -> str:
    """``value / 10**digits`` printed as Go's fmtFrac/fmtInt do: trailing zeros dropped."""
    whole, rest = divmod(value, 10**digits)
    tail = str(rest).rjust(digits, "0").rstrip("0")
    return f"{whole}.{tail}" if tail else str(whole)


def go_duration_string(ns: int) -> str:
    """``ns`` as Go's ``time.Duration.String()`` prints it: ``1m30s``, ``1h0m0s``, ``1.5s``,
    ``250ms``, ``0s`` (PD stores and shows durations this way, so ``90s`` reads ``1m30s``)."""
    if ns == 0:
        return "0s"
    sign, u = ("-" if ns < 0 else ""), abs(ns)
    if u < 10**3:
        return f"{sign}{u}ns"
    if u < 10**6:
        return f"{sign}{_frac(u, 3)}µs"
    if u < 10**9:
        return f"{sign}{_frac(u, 6)}ms"
    seconds = _frac(u % (60 * 10**9), 9) + "s"
    minutes, hours = (u // (60 * 10**9)) % 60, u // (3600 * 10**9)
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return sign + seconds


def _go_duration(value: Any) -> Any:
    # PD's typeutil.Duration unmarshals a JSON string only, and marshals Duration.String().
    if isinstance(value, str):
        return go_duration_string(go_duration_ns(value))
    raise ValueError("must be a Go duration string such as '30s'")


GoDuration = Annotated[str, BeforeValidator(_go_duration)]


def _string_bool(value: Any) -> Any:
    # PD marshals this bool with Go's ",string" option: the JSON holds "true"/"false". A bare
    # bool is read when loading a stored value (lenient); POST refuses it (``with_updates``).
    if isinstance(value, bool):
        return "true" if value else "false"
    if value in ("true", "false"):
        return value
    raise ValueError("must be the string 'true' or 'false' (PD's ,string bool)")


StringBool = Annotated[str, BeforeValidator(_string_bool)]


class RequestUnitConfig(_Frozen):
    """How requests are converted to RU (``request-unit`` of the controller config)."""

    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)

    read_base_cost: Double = Field(0.125, alias="read-base-cost")
    read_per_batch_base_cost: Double = Field(0.5, alias="read-per-batch-base-cost")
    read_cost_per_byte: Double = Field(1 / 65536, alias="read-cost-per-byte")
    write_base_cost: Double = Field(1.0, alias="write-base-cost")
    write_per_batch_base_cost: Double = Field(1.0, alias="write-per-batch-base-cost")
    write_cost_per_byte: Double = Field(1 / 1024, alias="write-cost-per-byte")
    read_cpu_ms_cost: Double = Field(1 / 3, alias="read-cpu-ms-cost")


Int32 = Annotated[int, Field(strict=True, ge=-(2**31), le=2**31 - 1)]


class RUVersionPolicy(_Frozen):
    """Which RU calculation version each keyspace uses (PD's ``ru-version-policy``).

    PD: pkg/mcs/resourcemanager/server/config.go:110 -- ``default`` and every override must be
    positive (``validate``, config.go:129); override keys are keyspace ids (uint32).
    """

    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)

    default: Int32 = 0
    overrides: dict[str, Int32] | None = None

    @field_validator("overrides")
    @classmethod
    def _keyspace_keys(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        if value is None:
            return None
        out: dict[int, int] = {}
        for key, version in value.items():
            if not (key.isascii() and key.isdigit()) or int(key) > 0xFFFFFFFF:
                raise ValueError(f"override key {key!r} is not a keyspace id (uint32)")
            out[int(key)] = version
        return {str(k): out[k] for k in sorted(out)}  # Go writes map keys sorted

    def validate_positive(self) -> None:
        """PD's ``RUVersionPolicy.validate``; ValueError with PD's message."""
        if self.default <= 0:
            raise ValueError(f"ru-version-policy default must be positive, got {self.default}")
        for keyspace, version in (self.overrides or {}).items():
            if version <= 0:
                raise ValueError(
                    f"ru-version-policy override for keyspace {keyspace} must be positive, "
                    f"got {version}"
                )

    def with_keyspace(self, keyspace_id: int, version: int) -> RUVersionPolicy:
        """PD's SetKeyspaceRUVersion (manager.go:246): an override, or none when ``version``
        is the default."""
        overrides = dict(self.overrides or {})
        if version == self.default:
            overrides.pop(str(keyspace_id), None)
        else:
            overrides[str(keyspace_id)] = version
        return RUVersionPolicy(default=self.default, overrides=overrides)


DEFAULT_RU_VERSION = 1
"""PD's DefaultRUVersion (config.go:107): the policy a first per-keyspace override starts."""


class ControllerConfig(_Frozen):
    """RM's controller config (JSON under ``controller``), with PD's defaults and key order.

    PD: pkg/mcs/resourcemanager/server/config.go:160. Stored keys this version does not know
    (a newer PD's) are kept as extras and survive an update.
    """

    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)

    degraded_mode_wait_duration: GoDuration = Field("0s", alias="degraded-mode-wait-duration")
    ltb_max_wait_duration: GoDuration = Field("30s", alias="ltb-max-wait-duration")
    ltb_token_rpc_max_delay: GoDuration = Field("1s", alias="ltb-token-rpc-max-delay")
    request_unit: RequestUnitConfig = Field(default_factory=RequestUnitConfig, alias="request-unit")
    enable_controller_trace_log: StringBool = Field("false", alias="enable-controller-trace-log")
    push_metrics_address: StrictStr = Field("", alias="push-metrics-address")
    push_metrics_interval: GoDuration = Field("0s", alias="push-metrics-interval")
    ru_version_policy: RUVersionPolicy | None = Field(None, alias="ru-version-policy")

    def to_json_dict(self) -> dict[str, Any]:
        """PD's JSON form: hyphenated keys in PD's order, ``ru-version-policy`` only when set
        (``omitempty`` on a pointer), its ``overrides`` only when non-empty; extras kept."""
        out = self.model_dump(mode="json", by_alias=True)
        policy = out.get("ru-version-policy")
        if policy is None:
            out.pop("ru-version-policy", None)
        elif not policy.get("overrides"):
            policy.pop("overrides", None)
        return out

    def with_updates(self, items: dict[str, Any]) -> ControllerConfig:
        """Apply PD's ``POST config/controller`` map; any unknown key fails the whole update.

        A key names a top-level field or a child of ``request-unit`` (``read-base-cost``), as
        PD's reflective update does (metadataapi/config_service.go:427). ``request-unit``
        itself is refused (KeyError), as PD finds no such child of RequestUnitConfig; a bare
        bool for ``enable-controller-trace-log`` is refused (ValueError), as Go's ``,string``
        option refuses it. Keys already stored (written by a newer PD) count as known.
        """
        top = self.to_json_dict()
        unit = dict(top["request-unit"])
        for key, value in items.items():
            if key == "request-unit":
                raise KeyError(key)
            if key == "enable-controller-trace-log" and not isinstance(value, str):
                raise ValueError(
                    "enable-controller-trace-log: json: invalid use of ,string struct tag, "
                    "trying to unmarshal unquoted value into bool"
                )
            if key == "ru-version-policy" and isinstance(value, dict):
                top[key] = _merged_policy(top.get(key), value)
            elif key in top or key in type(self).known_keys():
                top[key] = value
            elif key in unit:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"{key}: json: cannot unmarshal into a Go float64")
                unit[key] = value
            else:
                raise KeyError(key)
        top["request-unit"] = unit
        updated = ControllerConfig.model_validate(top)
        if updated.ru_version_policy is not None:
            updated.ru_version_policy.validate_positive()
        return updated

    @classmethod
    def known_keys(cls) -> set[str]:
        """PD's top-level controller keys (the JSON names)."""
        return {info.alias or name for name, info in cls.model_fields.items()}

    @classmethod
    def first_unknown_key(cls, items: dict[str, Any]) -> str | None:
        """The first key of a ``POST config/controller`` map that names no field of PD's
        struct, top level or a child of ``request-unit`` (``request-unit`` itself included,
        as in ``with_updates``), or None. PD's struct only: keys stored by a newer PD, which
        ``with_updates`` takes, count as unknown here, as PD checks them
        (metadataapi/config_service.go:427-431)."""
        known = cls.known_keys() | set(cls().to_json_dict()["request-unit"])
        for key in items:
            if key == "request-unit" or key not in known:
                return key
        return None


def _merged_policy(old: Any, new: dict[str, Any]) -> dict[str, Any]:
    """``new`` decoded onto ``old`` as Go's json.Unmarshal does into an existing struct: the
    fields given replace, a given map adds to the old map's entries."""
    merged = dict(old) if isinstance(old, dict) else {}
    for key, value in new.items():
        if key == "overrides" and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


__all__ = [
    "DEFAULT_RU_VERSION",
    "ControllerConfig",
    "GoDuration",
    "RUVersionPolicy",
    "RequestUnitConfig",
    "StringBool",
    "go_duration_ns",
    "go_duration_string",
    "parse_go_duration",
]
