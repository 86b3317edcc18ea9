"""Options both HTTP apps pass to ``FastAPI(...)``: FastAPI's native OpenTelemetry bridge off.

Why: FastAPI (>= 0.16x) asks, on every request, whether a tracer, meter or logger provider has
been configured, and each answer reads ``os.environ`` (3 lookups per request, ~20% of a cached
sidecar group GET in a profile). rmwatch exports Prometheus metrics and structured logs, not
OpenTelemetry, so the bridge has nothing to report; with it off the check is three dict reads.
Older FastAPI versions have no such bridge and no ``telemetry`` argument: nothing is passed.
"""

from __future__ import annotations

import inspect
from typing import Any

from fastapi import FastAPI

APP_OPTIONS: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)
"""Keyword arguments for ``FastAPI(...)`` (empty where FastAPI has no telemetry bridge)."""

__all__ = ["APP_OPTIONS"]
