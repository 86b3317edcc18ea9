"""The controller config, GET config and the RU-version route, as PD answers them, on the
writer and (reads from its cache, writes forwarded) the replica's sidecar.

PD: pkg/mcs/resourcemanager/server/config.go (ControllerConfig, HEAD a186e0c),
metadataapi/config_service.go:414-446 and apis/v1/api.go:305,338.
"""

from __future__ import annotations

import json

import pytest
from conformance_support import KEYSPACE_ID, KEYSPACE_NAME, Services

from rmwatch.store import codec
from rmwatch.store.controller import ControllerConfig, go_duration_ns, go_duration_string

from .support import go_indent

# Go's encoding/json writes float64 1 as `1`, 1/65536 as `0.0000152587890625` (fixed-point for
# 1e-6 <= |x| < 1e21; encoding/json's floatEncoder), durations as Duration.String().
PD_DEFAULT_BODY = (
    b'{"degraded-mode-wait-duration":"0s","ltb-max-wait-duration":"30s",'
    b'"ltb-token-rpc-max-delay":"1s","request-unit":{"read-base-cost":0.125,'
    b'"read-per-batch-base-cost":0.5,"read-cost-per-byte":0.0000152587890625,'
    b'"write-base-cost":1,"write-per-batch-base-cost":1,"write-cost-per-byte":0.0009765625,'
    b'"read-cpu-ms-cost":0.3333333333333333},"enable-controller-trace-log":"false",'
    b'"push-metrics-address":"","push-metrics-interval":"0s"}'
)


class TestControllerGet:
    """GET config/controller."""

    def test_default_bytes(self, services: Services) -> None:
        """Nothing stored: PD's defaults, in PD's key order, floats and durations as Go prints
        them; push-metrics-address and -interval always present (config.go:160-184). Indented
        as gin's ``c.IndentedJSON`` writes it (config_service.go:416)."""
        for service, r in services.both("GET", "/config/controller").items():
            assert r.content == go_indent(PD_DEFAULT_BODY), (service, r.content)
            assert r.headers["content-type"] == "application/json; charset=utf-8", service

    def test_stored_floats_as_go(self, services: Services) -> None:
        """A stored 1.0 and 1e-07 read back as Go writes them: ``1`` and ``1e-7``."""
        services.node.client.put(
            services.layout.controller(),
            b'{"request-unit":{"write-base-cost":1.0,"read-base-cost":1e-07}}',
        )
        for service, r in services.both("GET", "/config/controller").items():
            assert b'"write-base-cost": 1,' in r.content, service
            assert b'"read-base-cost": 1e-7,' in r.content, service

    def test_unknown_stored_keys_kept(self, services: Services) -> None:
        """A key a newer PD wrote is shown and survives an update."""
        services.node.client.put(services.layout.controller(), b'{"future-key":{"a":1}}')
        services.writer.post("/resource-manager/api/v1/config/controller",
                             json={"ltb-max-wait-duration": "5s"})  # fmt: skip
        for service, r in services.both("GET", "/config/controller").items():
            assert r.json()["future-key"] == {"a": 1}, service
            assert r.json()["ltb-max-wait-duration"] == "5s", service


class TestControllerPost:
    """POST config/controller (config_service.go:420)."""

    @pytest.mark.parametrize(
        ("items", "shown"),
        [
            ({"push-metrics-address": "http://gw:9091"}, {"push-metrics-address": "http://gw:9091"}),
            ({"push-metrics-interval": "90s"}, {"push-metrics-interval": "1m30s"}),
            ({"ltb-max-wait-duration": "3600s"}, {"ltb-max-wait-duration": "1h0m0s"}),
            ({"enable-controller-trace-log": "true"}, {"enable-controller-trace-log": "true"}),
            ({"ru-version-policy": {"default": 1, "overrides": {"7": 2}}},
             {"ru-version-policy": {"default": 1, "overrides": {"7": 2}}}),
        ],
    )  # fmt: skip
    def test_pd_keys(self, services: Services, items: dict[str, object], shown: dict[str, object]
                     ) -> None:  # fmt: skip
        """push-metrics-*, ru-version-policy are PD keys; durations normalised (``90s`` ->
        ``1m30s``, Go's Duration.String())."""
        for service, r in services.both("POST", "/config/controller", json=items).items():
            assert (r.status_code, r.text) == (200, "Success!"), service
        for service, r in services.both("GET", "/config/controller").items():
            got = r.json()
            assert {k: got[k] for k in shown} == shown, service

    def test_bytes_after_the_body_are_not_read(self, services: Services) -> None:
        """ShouldBindJSON decodes one value (config_service.go:422): what follows is ignored."""
        body = b'{"ltb-max-wait-duration": "7s"} and more'
        for service, r in services.both("POST", "/config/controller", content=body).items():
            assert (r.status_code, r.text) == (200, "Success!"), service
        for service, r in services.both("GET", "/config/controller").items():
            assert r.json()["ltb-max-wait-duration"] == "7s", service

    @pytest.mark.parametrize("body", [b"{}", b"null"])
    def test_nothing_to_apply_writes_nothing(self, services: Services, body: bytes) -> None:
        """``{}`` and ``null`` (a nil map for ShouldBindJSON) are 200 ``Success!`` with no
        write (config_service.go:420-445: the loop applies nothing)."""
        key = services.layout.controller()
        services.node.client.put(key, b'{"ltb-max-wait-duration":"5s"}')
        before = services.node.client.get(key)[1].mod_revision
        for service, r in services.both("POST", "/config/controller", content=body).items():
            assert (r.status_code, r.text) == (200, "Success!"), service
        assert services.node.client.get(key)[1].mod_revision == before

    @pytest.mark.parametrize(
        ("items", "text"),
        [
            ({"enable-controller-trace-log": True}, "invalid use of ,string struct tag"),
            ({"request-unit": {"read-base-cost": 1}}, "config item request-unit not found"),
            ({"bogus": 1}, "config item bogus not found"),
            ({"ru-version-policy": {"default": 0}},
             "ru-version-policy default must be positive, got 0"),
            ({"ru-version-policy": {"default": 1, "overrides": {"3": -1}}},
             "override for keyspace 3 must be positive"),
            ({"read-base-cost": "1"}, "float64"),
            ({"ltb-max-wait-duration": 30}, "Go duration"),
        ],
    )  # fmt: skip
    def test_refused(self, services: Services, items: dict[str, object], text: str) -> None:
        """A bare bool for the ``,string`` bool (config.go:175), a nested request-unit
        (manager.go:525), unknown keys (config_service.go:430), a policy PD's validate refuses
        (config.go:129) are 400 with PD's words, and nothing is stored."""
        key = services.layout.controller()
        before = services.node.client.get(key)[0]
        for service, r in services.both("POST", "/config/controller", json=items).items():
            assert r.status_code == 400, (service, r.text)
            assert text in r.text, (service, r.text)
            if text.startswith(("config item", "ru-version-policy")):  # PD's words, exactly
                assert r.text == text, service
        assert services.node.client.get(key)[0] == before


class TestRoutes:
    """GET config (api.go:338); POST config/controller/ru-version/{name} (api.go:305)."""

    def test_get_config(self, services: Services) -> None:
        """GET config answers PD's Config shape with the controller inside it."""
        for service, r in services.both("GET", "/config").items():
            assert r.status_code == 200, service
            assert json.dumps(r.json()["controller"], sort_keys=True) == json.dumps(
                json.loads(PD_DEFAULT_BODY), sort_keys=True
            ), service

    def test_ru_version(self, services: Services) -> None:
        """A keyspace's RU version lands in ru-version-policy.overrides (manager.go:246); the
        default version removes the override again."""
        path = f"/config/controller/ru-version/{KEYSPACE_NAME}"
        for service, r in services.both("POST", path, json={"ru_version": 2}).items():
            assert (r.status_code, r.text) == (200, "Success!"), service
        for service, r in services.both("GET", "/config/controller").items():
            assert r.json()["ru-version-policy"] == {
                "default": 1, "overrides": {str(KEYSPACE_ID): 2}}, service  # fmt: skip
        services.writer.post("/resource-manager/api/v1" + path, json={"ru_version": 1})
        for service, r in services.both("GET", "/config/controller").items():
            assert r.json()["ru-version-policy"] == {"default": 1}, service

    @pytest.mark.parametrize(
        ("name", "body", "text"),
        [(KEYSPACE_NAME, {"ru_version": 0}, "ru_version must be positive"),
         (KEYSPACE_NAME, {}, "ru_version must be positive"),
         ("ghost", {"ru_version": 2}, "keyspace not found with name: ghost")],
    )  # fmt: skip
    def test_ru_version_refused(self, services: Services, name: str, body: object, text: str
                                ) -> None:  # fmt: skip
        """A version that is not positive, and an unknown keyspace, are 400 (api.go:309,318)."""
        path = f"/config/controller/ru-version/{name}"
        for service, r in services.both("POST", path, json=body).items():
            assert r.status_code == 400, (service, r.text)
            assert text in r.text, service
            if text.startswith("ru_version"):  # PD's words, exactly (api.go:318)
                assert r.text == text, service


class TestGoFormatting:
    """The formatting rules themselves."""

    @pytest.mark.parametrize(
        ("text", "shown"),
        [("90s", "1m30s"), ("1h", "1h0m0s"), ("1.5s", "1.5s"), ("0", "0s"), ("1500ms", "1.5s"),
         ("999us", "999µs"), ("1ns", "1ns"), ("-90s", "-1m30s"), ("25h", "25h0m0s")],
    )  # fmt: skip
    def test_duration_string(self, text: str, shown: str) -> None:
        """Go's time.Duration.String() (time/time.go)."""
        assert go_duration_string(go_duration_ns(text)) == shown

    def test_stored_bytes_are_go(self) -> None:
        """The stored controller JSON is what PD's json.Marshal writes (floats included)."""
        stored = codec.encode_controller(ControllerConfig())
        assert stored == PD_DEFAULT_BODY
