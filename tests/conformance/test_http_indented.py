"""Every JSON GET of PD's resource-manager API is answered as gin's ``c.IndentedJSON`` writes it,
by the writer and by the replica's sidecar alike: Go's ``json.MarshalIndent(v, "", "    ")``
and ``Content-Type: application/json; charset=utf-8`` (gin v1.11 render/json.go).

PD (HEAD a186e0c): pkg/mcs/resourcemanager/metadataapi/config_service.go:381 (group), 397
(groups), 416 (controller), 486 (service limit, both routes); server/apis/v1/api.go:341
(config). The exact bytes of each body are pinned in test_group_json.py and
test_controller.py; here every route is checked for the layout and the content type.
"""

from __future__ import annotations

import json

import pytest
from conformance_support import KEYSPACE_NAME, Services

from rmwatch.http.pd import PREFIX
from rmwatch.store import go_json

from .support import go_indent

ROUTES = [
    "/config/group/default",
    "/config/group/default?with_stats=true",
    "/config/groups",
    "/config/controller",
    "/config",
    "/config/keyspace/service-limit",
    f"/config/keyspace/service-limit/{KEYSPACE_NAME}",
]


@pytest.mark.parametrize("route", ROUTES)
def test_indented_as_gin(services: Services, route: str) -> None:
    """The body is Go's Indent of its compact form, with gin's JSON content type."""
    limit = services.writer.post(f"{PREFIX}/config/keyspace/service-limit/{KEYSPACE_NAME}",
                                 json={"service_limit": 12.5})  # fmt: skip
    assert limit.status_code == 200, limit.text
    path, _, query = route.partition("?")
    params = dict(item.split("=") for item in query.split("&")) if query else None
    for service, r in services.both("GET", path, params=params).items():
        assert r.status_code == 200, (service, r.text)
        assert r.headers["content-type"] == "application/json; charset=utf-8", service
        compact = go_json.marshal(json.loads(r.content))
        assert r.content == go_indent(compact), (service, r.content)
        assert r.content.startswith((b"{\n    ", b"[\n    ")), (service, r.content)
