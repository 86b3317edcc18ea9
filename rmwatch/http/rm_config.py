"""PD's ``GET config`` body (the resource manager's own config), as far as rmwatch knows it.

PD answers its whole ``rmserver.Config`` (pkg/mcs/resourcemanager/server/config.go:67, served
at apis/v1/api.go:338): listen addresses, name, metric, log, security, lease, controller and
metering. rmwatch is not an RM node and has none of the process settings, so it answers PD's
shape with what it does know: ``name`` (this service) and ``controller`` (from etcd, exactly as
``GET config/controller``); the process keys are PD's zero values (empty strings, ``lease``
0) rather than invented ones. The log, metric, security and metering sections are left out.
"""

from __future__ import annotations

from typing import Any


def rm_config_json(controller: dict[str, Any], *, name: str) -> dict[str, Any]:
    """The ``GET config`` body around ``controller`` (a ``GET config/controller`` body)."""
    return {
        "backend-endpoints": "",
        "listen-addr": "",
        "advertise-listen-addr": "",
        "name": name,
        "lease": 0,
        "controller": controller,
    }


__all__ = ["rm_config_json"]
