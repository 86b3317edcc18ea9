"""Writes answered as PD answers them, by the writer and (forwarded) by the replica's sidecar.

Each test sends one table of requests to both services (``Services.both``) and cites the line
of PD's code (tikv/pd HEAD a186e0c) the answer encodes.
"""

from __future__ import annotations

import json

import pytest
from conformance_support import KEYSPACE_ID, KEYSPACE_NAME, Services
from fastapi.testclient import TestClient
from writer_support import WriterNode, nodes

from rmwatch.http.writer_app import create_writer_app
from rmwatch.store.models import RAW_MODE_REFUSED
from rmwatch.store.roles import WriteRole

GROUP = {
    "name": "g1",
    "mode": 1,
    "r_u_settings": {"r_u": {"settings": {"fill_rate": 100, "burst_limit": 200}}},
    "priority": 8,
}


def _fill(services: Services, name: str = "g1", **params: str) -> int:
    body = services.both("GET", f"/config/group/{name}", params=params)
    fills = {s: r.json()["r_u_settings"]["r_u"]["settings"]["fill_rate"] for s, r in body.items()}
    assert fills["writer"] == fills["replica"], fills
    return int(fills["writer"])


class TestSuccess:
    """``Success!`` and Add as an upsert."""

    def test_success_is_eight_bytes_of_text(self, services: Services) -> None:
        """PD answers ``c.String(200, "Success!")``: 8 bytes, text/plain, no JSON quotes
        (PD: pkg/mcs/resourcemanager/metadataapi/config_service.go:162)."""
        for service, r in services.both("POST", "/config/group", json=GROUP).items():
            assert r.status_code == 200, (service, r.text)
            assert r.content == b"Success!", service
            assert r.headers["content-type"].startswith("text/plain"), service

    def test_add_twice_upserts(self, services: Services) -> None:
        """A second Add of the same group answers 200 and stores it: PD persists whatever is
        stored (PD: pkg/mcs/resourcemanager/server/keyspace_manager.go:252); TiDB retries Add."""
        services.writer.post("/resource-manager/api/v1/config/group", json=GROUP)
        changed = json.loads(json.dumps(GROUP))
        changed["r_u_settings"]["r_u"]["settings"]["fill_rate"] = 55
        for service, r in services.both("POST", "/config/group", json=changed).items():
            assert (r.status_code, r.text) == (200, "Success!"), service
        assert _fill(services) == 55


class TestBodies:
    """Request bodies decoded as PD's decodeResourceGroup (config_service.go:179)."""

    def test_go_style_keys_and_unknown_field(self, services: Services) -> None:
        """Keys match case-insensitively and unknown fields are ignored (encoding/json)."""
        body = {"Name": "g1", "MODE": 1, "R_U_Settings": {"R_U": {"Settings": {"Fill_Rate": 9}}},
                "priority": 3, "not_a_field": {"x": 1}}  # fmt: skip
        for service, r in services.both("POST", "/config/group", json=body).items():
            assert (r.status_code, r.text) == (200, "Success!"), service
        assert _fill(services) == 9

    def test_last_duplicate_wins(self, services: Services) -> None:
        """Of two keys naming one field the last wins, as in encoding/json."""
        raw = b'{"name":"g1","mode":1,"priority":1,"PRIORITY":4}'
        for service, r in services.both("POST", "/config/group", content=raw).items():
            assert r.status_code == 200, (service, r.text)
        got = services.both("GET", "/config/group/g1")
        assert {s: r.json()["priority"] for s, r in got.items()} == {"writer": 4, "replica": 4}

    def test_protobuf_json_fallback(self, services: Services) -> None:
        """A body encoding/json refuses (an enum name such as ``RUMode``, a quoted 64-bit
        int) is decoded as protobuf JSON (config_service.go:190-199)."""
        body = {"name": "g1", "mode": "RUMode",
                "rUSettings": {"rU": {"settings": {"fillRate": "77"}}}}  # fmt: skip
        for service, r in services.both("POST", "/config/group", json=body).items():
            assert (r.status_code, r.text) == (200, "Success!"), service
        assert _fill(services) == 77

    def test_both_dialects_failing_names_both(self, services: Services) -> None:
        """When both decoders fail, PD's text names both errors (config_service.go:197)."""
        body = {"name": "g1", "mode": "RUMode", "bogus_field": 1}
        for service, r in services.both("POST", "/config/group", json=body).items():
            assert r.status_code == 400, service
            assert "invalid resource group JSON: legacy JSON:" in r.text, service
            assert "protobuf JSON:" in r.text, service

    @pytest.mark.parametrize(
        ("keyspace_id", "stored"),
        [({"value": KEYSPACE_ID}, KEYSPACE_ID), ({}, 0), ({"VALUE": 3}, 3)],
    )
    def test_keyspace_id_oneof(self, services: Services, keyspace_id: object, stored: int) -> None:
        """``keyspace_id`` is split off and decoded as the oneof (config_service.go:184-208);
        ``{}`` is the legacy form of value 0 (config_service.go:354)."""
        body = {**GROUP, "keyspace_id": keyspace_id}
        for service, r in services.both("POST", "/config/group", json=body).items():
            assert r.status_code == 200, (service, r.text)
        assert services.node.writer.get_group("g1", stored).group.keyspace_id == stored

    @pytest.mark.parametrize(
        ("raw", "text"),
        [
            (b'{"name":"g1","keyspace_id":{"value":1},"keyspaceId":{"value":2}}',
             "keyspace_id must be set only once"),
            (b'{"name":"g1","keyspace_id":{"value":1,"value":2}}',
             "keyspace_id value must be set only once"),
            (b'{"name":"g1","keyspace_id":{"keyspace_identity":{"keyspace_id":1}}}',
             "keyspace_id must contain a legacy value"),
        ],
    )  # fmt: skip
    def test_keyspace_id_refusals(self, services: Services, raw: bytes, text: str) -> None:
        """PD's refusals of a malformed keyspace_id (config_service.go:229,325,360) are 400,
        in PD's words exactly."""
        for service, r in services.both("POST", "/config/group", content=raw).items():
            assert r.status_code == 400, (service, r.text)
            assert r.text == text, service


class TestErrorTexts:
    """PD's words for the errors PD's clients match on."""

    def test_modify_missing_group(self, services: Services) -> None:
        """Modify of a missing group: 404 with errs.ErrResourceGroupNotExists
        (PD: pkg/errs/errno.go:538; keyspace_manager.go:282)."""
        for service, r in services.both("PUT", "/config/group", json=GROUP).items():
            assert r.status_code == 404, service
            assert r.text == (
                "[PD:resourcemanager:ErrGroupNotExists]the g1 resource group does not exist"
            ), service

    def test_get_missing_group(self, services: Services) -> None:
        """GET of a missing group: 404 with the same errs.ErrResourceGroupNotExists text on
        both services (PD: metadataapi/config_service.go:378, HEAD a186e0c; PD before
        tikv/pd#9393 answered ``resource group not found``)."""
        for service, r in services.both("GET", "/config/group/nope").items():
            assert r.status_code == 404, service
            assert r.text == (
                "[PD:resourcemanager:ErrGroupNotExists]the nope resource group does not exist"
            ), service

    def test_forbidden_forward_header(self, services: Services) -> None:
        """``X-Forbidden-Forward-To-Microservice: true`` answers Go's http.NotFound on both,
        whatever the method (PD: pkg/mcs/resourcemanager/redirector/redirector.go:89)."""
        headers = {"X-Forbidden-Forward-To-Microservice": "true"}
        for method in ("GET", "POST"):
            answers = services.both(method, "/config/groups", headers=headers)
            for service, r in answers.items():
                assert (r.status_code, r.text) == (404, "404 page not found\n"), service


class TestModifyPatch:
    """PUT config/group applies PD's PatchSettings (resource_group.go:218-244) and
    GroupTokenBucket.patch (token_buckets.go:438-457), PD HEAD a186e0c."""

    @pytest.mark.parametrize(
        "r_u_settings",
        [{}, {"r_u": {}}, {"r_u": {"tokens": 0}}],
        ids=["no-r_u", "empty-r_u", "no-settings"],
    )
    def test_without_bucket_settings_the_stored_ones_stay(
        self, services: Services, r_u_settings: dict[str, object]
    ) -> None:
        """No ``r_u``, or an ``r_u`` without ``settings``: the priority changes, the stored
        bucket settings stay (PD patches nothing into the bucket)."""
        services.writer.post("/resource-manager/api/v1/config/group", json=GROUP)
        body = {"name": "g1", "mode": 1, "r_u_settings": r_u_settings, "priority": 3}
        for service, r in services.both("PUT", "/config/group", json=body).items():
            assert (r.status_code, r.text) == (200, "Success!"), service
        assert _fill(services) == 100
        for service, r in services.both("GET", "/config/group/g1").items():
            assert r.json()["priority"] == 3, service
            assert r.json()["r_u_settings"]["r_u"]["settings"]["burst_limit"] == 200, service

    def test_without_ru_settings_is_refused_in_pds_words(self, services: Services) -> None:
        """An RU group modified without ``r_u_settings``: PD's text (resource_group.go:232; PD
        answers it 500, rmwatch 400), nothing stored."""
        services.writer.post("/resource-manager/api/v1/config/group", json=GROUP)
        body = {"name": "g1", "mode": 1, "priority": 3}
        for service, r in services.both("PUT", "/config/group", json=body).items():
            assert r.status_code == 400, (service, r.text)
            assert r.text == "invalid resource group settings, RU mode should set RU settings"
        assert _fill(services) == 100


class TestServiceLimit:
    """Service limits (config_service.go:449-487)."""

    def test_unset_reads_zero(self, services: Services) -> None:
        """Nothing stored: 200 with 0 for the null keyspace and a keyspace that exists, in
        PD's serviceLimiter shape (server/service_limit.go:34)."""
        for path in ("/config/keyspace/service-limit",
                     f"/config/keyspace/service-limit/{KEYSPACE_NAME}"):  # fmt: skip
            for service, r in services.both("GET", path).items():
                assert r.status_code == 200, (service, path, r.text)
                assert r.json() == {"service_limit": 0, "available_tokens": 0,
                                    "last_update": "0001-01-01T00:00:00Z"}, service  # fmt: skip

    def test_unknown_keyspace_is_404(self, services: Services) -> None:
        """An unknown keyspace name is 404 on both (config_service.go:490)."""
        for method, kwargs in (("GET", {}), ("POST", {"json": {"service_limit": 1}})):
            path = "/config/keyspace/service-limit/ghost"
            for service, r in services.both(method, path, **kwargs).items():
                assert r.status_code == 404, (service, method, r.text)
                assert r.text.endswith("keyspace not found with name: ghost"), service

    @pytest.mark.parametrize(
        ("body", "status", "shown"),
        [(b"{}", 200, 0), (b'{"Service_Limit": 5}', 200, 5), (b'{"service_limit": -1}', 400, None),
         (b'{"service_limit": "5"}', 400, None), (b"", 400, None),
         (b'{"service_limit": 6} trailing', 200, 6)],
    )  # fmt: skip
    def test_post_bodies(
        self, services: Services, body: bytes, status: int, shown: int | None
    ) -> None:
        """``{}`` sets 0 (a Go struct's zero value), keys fold case, negative is 400
        ``service_limit must be non-negative`` (config_service.go:461), a string is 400, bytes
        after the value are not read (ShouldBindJSON: one json.Decoder.Decode, :457)."""
        services.writer.post("/resource-manager/api/v1/config/keyspace/service-limit",
                             json={"service_limit": 9})  # fmt: skip
        path = "/config/keyspace/service-limit"
        answers = services.both("POST", path, content=body)
        for service, r in answers.items():
            assert r.status_code == status, (service, r.text)
        if status == 400 and body.startswith(b'{"service_limit": -'):
            assert all(r.text == "service_limit must be non-negative" for r in answers.values())
        if shown is not None:
            got = services.both("GET", path)
            assert {s: r.json()["service_limit"] for s, r in got.items()} == {
                "writer": shown, "replica": shown}  # fmt: skip


INVALID_GROUP = "[PD:resourcemanager:ErrInvalidGroup]invalid group settings, please check"


class TestListedDeviations:
    """Where PD answers 500 for a client's mistake, rmwatch answers 4xx with PD's words
    (listed in the README's compatibility table)."""

    @pytest.mark.parametrize(
        ("body", "text"),
        [
            ({**GROUP, "name": "n" * 33},
             INVALID_GROUP + " the group name"),
            ({**GROUP, "name": ""}, "please check the group name"),
            ({**GROUP, "priority": 17},
             INVALID_GROUP + " the group priority"),
            ({"name": "g2", "mode": 2,
              "raw_resource_settings": {"cpu": {"settings": {"fill_rate": 5}}}},
             "invalid mode: " + RAW_MODE_REFUSED),
        ],
    )  # fmt: skip
    def test_bad_group_is_400(self, services: Services, body: dict[str, object], text: str
                              ) -> None:  # fmt: skip
        """Bad name / priority (PD 500: keyspace_manager.go:118) and RawMode (PD panics
        loading one: resource_group.go:240) are 400 with PD's text; nothing is stored."""
        for service, r in services.both("POST", "/config/group", json=body).items():
            assert r.status_code == 400, (service, r.text)
            assert text in r.text, (service, r.text)
        assert services.node.client.get(services.layout.settings("g2"))[0] is None

    def test_mode_change_is_400(self, services: Services) -> None:
        """A mode change is 400 with PD's text (PD 500: resource_group.go:220)."""
        services.writer.post("/resource-manager/api/v1/config/group", json=GROUP)
        body = {"name": "g1", "mode": 0}
        for service, r in services.both("PUT", "/config/group", json=body).items():
            assert r.status_code == 400, (service, r.text)
            assert r.text == (
                "only support reconfigure in same mode, "
                "maybe you should delete and create a new one"
            ), service

    def test_delete_default_is_403(self, services: Services) -> None:
        """Deleting ``default`` is 403 with errs.ErrDeleteReservedGroup's text (PD 500:
        keyspace_manager.go:295; pkg/errs/errno.go:539)."""
        for service, r in services.both("DELETE", "/config/group/default").items():
            assert r.status_code == 403, (service, r.text)
            assert r.text == (
                "[PD:resourcemanager:ErrDeleteReservedGroup]cannot delete reserved group"
            ), service

    def test_metadata_write_disabled(self, etcd_endpoints: list[str], root_prefix: str) -> None:
        """An RM-token-only writer refuses metadata writes with PD's errMetadataWriteDisabled
        text, 403 (PD: pkg/mcs/resourcemanager/server/write_role.go:45)."""
        node = WriterNode(etcd_endpoints, root_prefix, name="rm", role=WriteRole.RM_TOKEN_ONLY)
        with nodes(node.start()), TestClient(create_writer_app(node.writer, token=None)) as c:
            r = c.post("/resource-manager/api/v1/config/group", json=GROUP)
            assert (r.status_code, r.text) == (403, "metadata write is disabled")
            # The controller's keys are checked before the role (config_service.go:427-441).
            path = "/resource-manager/api/v1/config/controller"
            r = c.post(path, json={"bogus": 1})
            assert (r.status_code, r.text) == (400, "config item bogus not found")
            r = c.post(path, json={"request-unit": {}})
            assert (r.status_code, r.text) == (400, "config item request-unit not found")
            r = c.post(path, json={"read-base-cost": 0.5})
            assert (r.status_code, r.text) == (403, "metadata write is disabled")
