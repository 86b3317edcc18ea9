"""RM's controller config (the JSON under ``resource_group/controller``), with PD's defaults.

One concept: the keys PD's ``ControllerConfig`` has, their defaults and PD's validation, and
how a ``POST config/controller`` map updates them. Kept apart from the group models so the
controller rules (Go durations, Go's float printing, string bools) live in one place.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

Double = Annotated[float, Field(allow_inf_nan=False)]
"""A JSON number; NaN and infinities are refused (JSON cannot carry them)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


_GO_DURATION = re.compile(r"^(0|[+-]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+)\Z", re.ASCII)
_GO_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}  # fmt: skip


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string such as ``"1m30s"`` or ``"250ms"``."""
    if not _GO_DURATION.match(text):
        raise ValueError(f"{text!r} is not a Go duration (e.g. '30s', '1m0s', '250ms')")
    sign = -1.0 if text.startswith("-") else 1.0
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)", text):
        total += float(number) * _GO_UNITS[unit]
    return sign * total


def _go_duration(value: Any) -> Any:
    if isinstance(value, str):
        parse_go_duration(value)
        return value
    raise ValueError("must be a Go duration string such as '30s'")


GoDuration = Annotated[str, BeforeValidator(_go_duration)]


def _string_bool(value: Any) -> Any:
    # PD marshals this bool with Go's ",string" option: the JSON holds "true"/"false".
    if isinstance(value, bool):
        return "true" if value else "false"
    if value in ("true", "false"):
        return value
    raise ValueError("must be true or false (a JSON bool or the string 'true'/'false')")


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


class ControllerConfig(_Frozen):
    """RM's controller config (JSON under ``controller``), with PD's defaults.

    Keys this version does not know (newer PD: ``push-metrics-address`` ...) are kept as extras.
    """

    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)

    degraded_mode_wait_duration: GoDuration = Field("0s", alias="degraded-mode-wait-duration")
    ltb_max_wait_duration: GoDuration = Field("30s", alias="ltb-max-wait-duration")
    ltb_token_rpc_max_delay: GoDuration = Field("1s", alias="ltb-token-rpc-max-delay")
    enable_controller_trace_log: StringBool = Field("false", alias="enable-controller-trace-log")
    request_unit: RequestUnitConfig = Field(default_factory=RequestUnitConfig, alias="request-unit")

    def to_json_dict(self) -> dict[str, Any]:
        """PD's JSON form: hyphenated keys, extras kept where they were."""
        return self.model_dump(mode="json", by_alias=True)

    def with_updates(self, items: dict[str, Any]) -> ControllerConfig:
        """Apply PD's ``POST config/controller`` map; any unknown key fails the whole update.

        A key may name a top-level field or a child of ``request-unit`` (``read-base-cost``),
        as PD's reflective update does. Keys already stored (written by a newer PD) count as
        known, so a newer cluster's settings stay updatable.
        """
        top = self.to_json_dict()
        unit = dict(top["request-unit"])
        for key, value in items.items():
            if key in top and key != "request-unit":
                top[key] = value
            elif key == "request-unit":
                if not isinstance(value, dict):
                    raise ValueError("request-unit must be an object")
                for child, child_value in value.items():
                    if child not in unit:
                        raise KeyError(f"request-unit.{child}")
                    unit[child] = child_value
            elif key in unit:
                unit[key] = value
            else:
                raise KeyError(key)
        top["request-unit"] = unit
        return ControllerConfig.model_validate(top)


__all__ = [
    "ControllerConfig",
    "GoDuration",
    "RequestUnitConfig",
    "StringBool",
    "parse_go_duration",
]
