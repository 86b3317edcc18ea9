"""The writer's HTTP API over real HTTP (uvicorn in a thread) against a real etcd."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr
from writer_support import WriterNode, nodes, raw_get

from rmwatch.http.pd import PREFIX
from rmwatch.http.writer_app import create_writer_app
from rmwatch.store.models import GroupStates, TokenState
from rmwatch.store.roles import WriteRole

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def group_body(
    name: str, fill: int = 100, burst: int = 200, priority: int = 8
) -> dict[str, object]:
    """A PD JSON body for an RU group."""
    return {
        "name": name,
        "mode": 1,
        "r_u_settings": {"r_u": {"settings": {"fill_rate": fill, "burst_limit": burst}}},
        "priority": priority,
    }


class Served:
    """A leading writer node served over HTTP, with an httpx client on it."""

    def __init__(self, node: WriterNode) -> None:
        self.node = node
        self.http = httpx.Client(base_url=node.address + PREFIX, timeout=10)
        self.root = httpx.Client(base_url=node.address, timeout=10)

    def mod_revision(self, key: str) -> int:
        """The key's mod_revision straight from etcd."""
        return raw_get(self.node.client, key)[1]


@pytest.fixture
def served(etcd_endpoints: list[str], root_prefix: str) -> Iterator[Served]:
    """A LegacyAll writer leading, served with a bearer token."""
    node = WriterNode(etcd_endpoints, root_prefix, name="api").start()
    with nodes(node):
        node.serve(create_writer_app(node.writer, token=SecretStr(TOKEN)))
        s = Served(node)
        yield s
        s.http.close()
        s.root.close()


class TestGroupRoutes:
    """POST/PUT/GET/DELETE config/group and GET config/groups."""

    def test_add_success_and_revision(self, served: Served) -> None:
        """Add answers 200 "Success!" with X-Revision equal to the key's mod_revision."""
        r = served.http.post("/config/group", json=group_body("g1"), headers=AUTH)
        assert r.status_code == 200
        assert r.text == "Success!"
        assert int(r.headers["X-Revision"]) == served.mod_revision(
            served.node.layout.settings("g1")
        )

    def test_add_existing_upserts(self, served: Served) -> None:
        """A second add of the same group is 200 ``Success!``: PD upserts (TiDB retries Add)."""
        served.http.post("/config/group", json=group_body("g1"), headers=AUTH)
        r = served.http.post("/config/group", json=group_body("g1", fill=7), headers=AUTH)
        assert (r.status_code, r.text) == (200, "Success!")
        got = served.http.get("/config/group/g1").json()
        assert got["r_u_settings"]["r_u"]["settings"]["fill_rate"] == 7

    def test_bad_priority_names_field(self, served: Served) -> None:
        """A priority over 16 is 400 naming the field, in PD's ErrInvalidGroup words."""
        r = served.http.post("/config/group", json=group_body("g1", priority=17), headers=AUTH)
        assert r.status_code == 400
        assert r.text.startswith(
            "[PD:resourcemanager:ErrInvalidGroup]invalid group settings, please check the group "
            "priority ("
        )

    def test_not_json_is_400(self, served: Served) -> None:
        """A body that is not JSON is 400."""
        r = served.http.post("/config/group", content=b"{nope", headers=AUTH)
        assert r.status_code == 400
        assert "JSON" in r.text

    def test_modify_and_get(self, served: Served) -> None:
        """Modify answers 200 with X-Revision; GET shows PD's JSON with the states' tokens."""
        served.http.post("/config/group", json=group_body("g1"), headers=AUTH)
        served.node.writer.put_states(
            "g1", GroupStates(r_u=TokenState(tokens=123.0, initialized=True))
        )
        states_before = raw_get(served.node.client, served.node.layout.states("g1"))
        r = served.http.put("/config/group", json=group_body("g1", 500, 800), headers=AUTH)
        assert r.status_code == 200
        assert int(r.headers["X-Revision"]) == served.mod_revision(
            served.node.layout.settings("g1")
        )
        assert raw_get(served.node.client, served.node.layout.states("g1")) == states_before
        got = served.http.get("/config/group/g1").json()
        assert got == {
            "name": "g1",
            "mode": 1,
            "r_u_settings": {
                "r_u": {
                    "settings": {"fill_rate": 500, "burst_limit": 800},
                    "state": {"tokens": 123.0, "initialized": True},
                }
            },
            "priority": 8,
        }

    @pytest.mark.parametrize("raw", ["\u00b2", "\u0663", "-1", "1.5", "x", "9" * 5000])
    def test_modify_bad_expected_revision_is_400(self, served: Served, raw: str) -> None:
        """``expected_revision`` must be at most 20 ASCII digits: a superscript two and 5000
        digits (which ``int`` refuses: they were a 500) and an Arabic-Indic three (which
        ``int`` reads as 3) are 400 naming it."""
        served.http.post("/config/group", json=group_body("g1"), headers=AUTH)
        r = served.http.put("/config/group", params={"expected_revision": raw},
                            json=group_body("g1", 2), headers=AUTH)  # fmt: skip
        assert r.status_code == 400, r.text
        assert "expected_revision" in r.text

    def test_modify_stale_revision_is_409(self, served: Served) -> None:
        """A modify with a stale expected_revision is 409 carrying the current revision."""
        r1 = served.http.post("/config/group", json=group_body("g1"), headers=AUTH)
        old = int(r1.headers["X-Revision"])
        r2 = served.http.put("/config/group", json=group_body("g1", 2), headers=AUTH)
        current = int(r2.headers["X-Revision"])
        r3 = served.http.put(
            "/config/group",
            params={"expected_revision": old},
            json=group_body("g1", 3),
            headers=AUTH,
        )
        assert r3.status_code == 409
        assert int(r3.headers["X-Revision"]) == current
        assert str(current) in r3.text

    def test_modify_missing_is_404(self, served: Served) -> None:
        """Modify of a missing group is 404."""
        r = served.http.put("/config/group", json=group_body("ghost"), headers=AUTH)
        assert r.status_code == 404

    def test_default_json_shape(self, served: Served) -> None:
        """The reserved default group reads exactly as PD shows it."""
        r = served.http.get("/config/group/default")
        assert r.status_code == 200
        assert r.json() == {
            "name": "default",
            "mode": 1,
            "r_u_settings": {
                "r_u": {
                    "settings": {"fill_rate": 2147483647, "burst_limit": -1},
                    "state": {"initialized": False},
                }
            },
            "priority": 8,
        }

    def test_get_missing_is_404(self, served: Served) -> None:
        """GET of a missing group is 404."""
        assert served.http.get("/config/group/ghost").status_code == 404

    def test_with_stats(self, served: Served) -> None:
        """ru_consumption appears only with with_stats=true."""
        served.http.post("/config/group", json=group_body("g1"), headers=AUTH)
        served.node.client.put(
            served.node.layout.states("g1"), b'{"ru_consumption":{"r_r_u":1.5,"w_r_u":0}}'
        )
        assert "ru_consumption" not in served.http.get("/config/group/g1").json()
        got = served.http.get("/config/group/g1", params={"with_stats": "true"}).json()
        assert got["ru_consumption"] == {"r_r_u": 1.5}

    def test_list_and_keyspace_name(self, served: Served) -> None:
        """keyspace_name resolves through /pd/{cluster_id}/keyspaces/id/{name}; unknown names
        are 404."""
        served.node.client.put(served.node.layout.keyspace_index("ks1"), b"7")
        r = served.http.post(
            "/config/group", params={"keyspace_name": "ks1"}, json=group_body("g1"), headers=AUTH
        )
        assert r.status_code == 200
        assert raw_get(served.node.client, served.node.layout.settings("g1", 7))[0] is not None
        names = [
            g["name"] for g in served.http.get("/config/groups", params={"keyspace_id": 7}).json()
        ]
        assert names == ["default", "g1"]
        r = served.http.get("/config/groups", params={"keyspace_name": "nope"})
        assert r.status_code == 404
        assert r.text == (
            "[PD:resourcemanager:ErrKeyspaceNotExistsByName]keyspace not found with name: nope"
        )

    def test_delete(self, served: Served) -> None:
        """DELETE answers 200 with X-Revision; default is 403; missing is 404."""
        served.http.post("/config/group", json=group_body("g1"), headers=AUTH)
        r = served.http.delete("/config/group/g1", headers=AUTH)
        assert r.status_code == 200
        assert int(r.headers["X-Revision"]) > 0
        assert raw_get(served.node.client, served.node.layout.settings("g1"))[0] is None
        assert served.http.delete("/config/group/default", headers=AUTH).status_code == 403
        assert served.http.delete("/config/group/g1", headers=AUTH).status_code == 404


class TestConfigRoutes:
    """Controller config and service limits."""

    def test_controller(self, served: Served) -> None:
        """GET shows PD defaults; POST applies all keys or none (400 naming the unknown key)."""
        assert served.http.get("/config/controller").json()["ltb-max-wait-duration"] == "30s"
        r = served.http.post("/config/controller", json={"read-base-cost": 0.25}, headers=AUTH)
        assert r.status_code == 200
        key = served.node.layout.controller()
        assert int(r.headers["X-Revision"]) == served.mod_revision(key)
        before = raw_get(served.node.client, key)
        r = served.http.post(
            "/config/controller", json={"read-base-cost": 9, "bogus-key": 1}, headers=AUTH
        )
        assert r.status_code == 400
        assert "bogus-key" in r.text
        assert raw_get(served.node.client, key) == before
        got = served.http.get("/config/controller").json()
        assert got["request-unit"]["read-base-cost"] == 0.25

    def test_service_limit(self, served: Served) -> None:
        """POST/GET service limits of the null keyspace and of a named keyspace; nothing
        stored reads 0, as PD (metadataapi/config_service.go:480)."""
        unset = served.http.get("/config/keyspace/service-limit")
        assert (unset.status_code, unset.json()["service_limit"]) == (200, 0)
        r = served.http.post("/config/keyspace/service-limit", json={"service_limit": 100},
                             headers=AUTH)  # fmt: skip
        assert r.status_code == 200
        key = served.node.layout.service_limit(0xFFFFFFFF)
        assert raw_get(served.node.client, key) == (b"100", int(r.headers["X-Revision"]))
        assert served.http.get("/config/keyspace/service-limit").json() == {
            "service_limit": 100,
            "available_tokens": 0,
            "last_update": "0001-01-01T00:00:00Z",
        }
        served.node.client.put(served.node.layout.keyspace_index("ks2"), b"9")
        r = served.http.post("/config/keyspace/service-limit/ks2", json={"service_limit": 2.5},
                             headers=AUTH)  # fmt: skip
        assert r.status_code == 200
        assert served.http.get("/config/keyspace/service-limit/ks2").json() == {
            "service_limit": 2.5,
            "available_tokens": 0,
            "last_update": "0001-01-01T00:00:00Z",
        }
        r = served.http.post("/config/keyspace/service-limit/ks2", json={"service_limit": -1},
                             headers=AUTH)  # fmt: skip
        assert r.status_code == 400
        assert "service_limit" in r.text
        r = served.http.post("/config/keyspace/service-limit/nope", json={"service_limit": 1},
                             headers=AUTH)  # fmt: skip
        assert r.status_code == 404


class TestProtection:
    """Bearer token, body limit, role refusal, health/metrics/openapi."""

    def test_token_required_for_writes(self, served: Served) -> None:
        """Writes without or with a wrong token are 401 and write nothing; reads need none."""
        r = served.http.post("/config/group", json=group_body("g1"))
        assert r.status_code == 401
        r = served.http.post("/config/group", json=group_body("g1"),
                             headers={"Authorization": "Bearer wrong"})  # fmt: skip
        assert r.status_code == 401
        assert TOKEN not in r.text
        assert raw_get(served.node.client, served.node.layout.settings("g1"))[0] is None
        assert served.http.get("/config/group/default").status_code == 200

    def test_body_too_large(self, served: Served) -> None:
        """A body over 1 MiB is 413."""
        body = json.dumps({"name": "g1", "pad": "x" * (1024 * 1024)}).encode()
        r = served.http.post("/config/group", content=body, headers=AUTH)
        assert r.status_code == 413

    def test_health_metrics_openapi(self, served: Served) -> None:
        """/health, /metrics (write counters, leader gauges) and /openapi.json answer."""
        served.http.post("/config/group", json=group_body("g1"), headers=AUTH)
        assert served.root.get("/health").json()["leader"] is True
        text = served.root.get("/metrics").text
        assert 'rmwatch_writer_writes_total{op="add_group",outcome="ok"} 1.0' in text
        assert "rmwatch_writer_is_leader 1.0" in text
        assert "rmwatch_writer_write_seconds_bucket" in text
        paths = served.root.get("/openapi.json").json()["paths"]
        assert f"{PREFIX}/config/group" in paths

    def test_role_refusal_is_403(self, etcd_endpoints: list[str], root_prefix: str) -> None:
        """An RMTokenOnly writer answers metadata writes with 403 and writes nothing."""
        node = WriterNode(etcd_endpoints, root_prefix, name="rm", role=WriteRole.RM_TOKEN_ONLY)
        with nodes(node.start()):
            node.serve(create_writer_app(node.writer, token=None))
            with httpx.Client(base_url=node.address + PREFIX) as http:
                r = http.post("/config/group", json=group_body("g1"))
                assert r.status_code == 403
                assert r.text == "metadata write is disabled"
                r = http.post("/config/keyspace/service-limit", json={"service_limit": 1})
                assert r.status_code == 403
            assert raw_get(node.client, node.layout.settings("g1"))[0] is None
