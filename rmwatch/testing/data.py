"""Metadata written the way PD writes it, for tests of code that reads it through a replica.

PD stores a resource group's settings as a protobuf under
``{root}resource_group/settings/...``; these helpers put exactly that with a plain etcd
transaction, bypassing the rmwatch writer, as PD itself would::

    revision = put_group(etcd.endpoint, {"name": "rg1", "mode": 1, "priority": 8})
    replica.wait_for_revision(revision, timeout=5)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rmwatch.store.codec import encode_settings
from rmwatch.store.etcd import EtcdConfig, connect
from rmwatch.store.keys import NULL_KEYSPACE_ID, KeyLayout
from rmwatch.store.models import ResourceGroup

Endpoints = str | Sequence[str] | EtcdConfig


def _config(endpoints: Endpoints) -> EtcdConfig:
    return endpoints if isinstance(endpoints, EtcdConfig) else EtcdConfig.parse(endpoints)


def put_group(
    endpoints: Endpoints, group: ResourceGroup | Mapping[str, Any], *, root_prefix: str = ""
) -> int:
    """Store ``group`` (a model, or its PD JSON form) as PD does; return the commit revision."""
    model = group if isinstance(group, ResourceGroup) else ResourceGroup.model_validate(group)
    key = KeyLayout(root_prefix).settings(model.name, model.effective_keyspace_id)
    client = connect(_config(endpoints))
    try:
        return int(client.put(key, encode_settings(model)).header.revision)
    finally:
        client.close()


def delete_group(
    endpoints: Endpoints,
    name: str,
    *,
    keyspace_id: int = NULL_KEYSPACE_ID,
    root_prefix: str = "",
) -> int:
    """Delete a group's settings as PD does; return the commit revision."""
    key = KeyLayout(root_prefix).settings(name, keyspace_id)
    client = connect(_config(endpoints))
    try:
        return int(client.delete(key, return_response=True).header.revision)
    finally:
        client.close()


__all__ = ["Endpoints", "delete_group", "put_group"]
