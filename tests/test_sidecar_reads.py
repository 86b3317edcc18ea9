"""The sidecar's read routes over real HTTP against a real etcd: PD's shapes, X-Revision,
min_revision, 503 before ready or when stale, bad data contained."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pyetcd
from harness import EtcdMember, free_port, make_client, put_group, wait_until
from sidecar_support import (
    API,
    layout,
    put_keyspace,
    replica,
    revision_of,
    running_replica,
    serve,
    sidecar,
    wait_listed_bad,
)

from rmwatch.http.sidecar_app import FORBIDDEN_FORWARD_HEADER, create_sidecar_app
from rmwatch.store import codec
from rmwatch.store.keys import NULL_KEYSPACE_ID, KeyLayout
from rmwatch.store.models import (
    Consumption,
    ControllerConfig,
    GroupStates,
    ServiceLimit,
    TokenState,
)
from rmwatch.watcher.replica import Replica

__all__ = ["layout", "replica", "sidecar"]  # fixtures, re-exported so pytest finds them here

RU: dict[str, Any] = {"r_u_settings": {"r_u": {"settings": {"fill_rate": 100, "burst_limit": 200}}}}


def _put(client: Any, key: str, value: bytes) -> int:
    return int(client.put(key, value).header.revision)


class TestGroups:
    """GET config/group/{name} and config/groups."""

    def test_group_has_pds_shape_and_the_revision_of_its_data(
        self, sidecar: httpx.Client, replica: Replica, etcd_client: Any, layout: KeyLayout
    ) -> None:
        """A stored group comes back in PD's JSON shape with X-Revision = its put revision."""
        rev = put_group(etcd_client, layout, "g1", priority=8, **RU)
        replica.wait_for_revision(rev, 5)
        response = sidecar.get(f"{API}/config/group/g1")
        assert response.status_code == 200
        assert response.json() == {
            "name": "g1",
            "mode": 1,
            "r_u_settings": {
                "r_u": {
                    "settings": {"fill_rate": 100, "burst_limit": 200},
                    "state": {"initialized": False},
                }
            },
            "priority": 8,
        }
        assert revision_of(response) == rev
        assert float(response.headers["x-revision-age"]) < 30

    def test_missing_group_is_404_with_the_revision_read(
        self, sidecar: httpx.Client, replica: Replica
    ) -> None:
        """A group that does not exist answers PD's 404 text, still stamped with X-Revision."""
        response = sidecar.get(f"{API}/config/group/nope")
        assert response.status_code == 404
        assert response.text == (
            "[PD:resourcemanager:ErrGroupNotExists]the nope resource group does not exist"
        )
        assert revision_of(response) == replica.revision

    def test_list_is_sorted_and_from_one_revision(
        self, sidecar: httpx.Client, replica: Replica, etcd_client: Any, layout: KeyLayout
    ) -> None:
        """config/groups lists every group of the keyspace by name, at the newest revision."""
        for name in ("c", "a", "b"):
            rev = put_group(etcd_client, layout, name, **RU)
        put_group(etcd_client, layout, "other", keyspace_id=7, **RU)
        rev = put_group(etcd_client, layout, "a", priority=3, **RU)
        replica.wait_for_revision(rev, 5)
        response = sidecar.get(f"{API}/config/groups")
        assert response.status_code == 200
        body = response.json()
        assert [g["name"] for g in body] == ["a", "b", "c", "default"]  # default: PD's reserved
        assert body[0]["priority"] == 3
        assert revision_of(response) == rev

    def test_states_and_with_stats(
        self, sidecar: httpx.Client, replica: Replica, etcd_client: Any, layout: KeyLayout
    ) -> None:
        """Token state comes from the states key; ru_consumption only with ``with_stats=true``."""
        put_group(etcd_client, layout, "s", **RU)
        states = GroupStates(
            r_u=TokenState(tokens=42.5, last_update="2024-05-01T10:00:00Z", initialized=True),
            ru_consumption=Consumption(r_r_u=1.5, w_r_u=2.0),
        )
        rev = _put(etcd_client, layout.states("s"), codec.encode_states(states))
        replica.wait_for_revision(rev, 5)
        plain = sidecar.get(f"{API}/config/group/s").json()
        assert plain["r_u_settings"]["r_u"]["state"] == {
            "tokens": 42.5,
            "last_update": "2024-05-01T10:00:00Z",
            "initialized": True,
        }
        assert "ru_consumption" not in plain
        stats = sidecar.get(f"{API}/config/group/s", params={"with_stats": "TRUE"}).json()
        assert stats["ru_consumption"] == {"r_r_u": 1.5, "w_r_u": 2.0}
        listed = sidecar.get(f"{API}/config/groups", params={"with_stats": "true"}).json()
        assert [g for g in listed if g["name"] != "default"] == [stats]

    def test_keyspace_by_name_and_by_id(
        self, sidecar: httpx.Client, replica: Replica, etcd_client: Any, layout: KeyLayout
    ) -> None:
        """keyspace_name resolves through PD's index key; keyspace_id is accepted too."""
        put_keyspace(etcd_client, layout, "ks1", 7)
        put_group(etcd_client, layout, "g", priority=1, **RU)
        rev = put_group(etcd_client, layout, "g", priority=5, keyspace_id=7, **RU)
        replica.wait_for_revision(rev, 5)
        by_name = sidecar.get(f"{API}/config/group/g", params={"keyspace_name": "ks1"})
        by_id = sidecar.get(f"{API}/config/group/g", params={"keyspace_id": "7"})
        null = sidecar.get(f"{API}/config/group/g")
        assert by_name.json()["priority"] == by_id.json()["priority"] == 5
        assert null.json()["priority"] == 1
        listed = sidecar.get(f"{API}/config/groups", params={"keyspace_name": "ks1"})
        assert [(g["name"], g["priority"]) for g in listed.json()] == [("default", 8), ("g", 5)]

    def test_bad_keyspace_parameters(self, sidecar: httpx.Client) -> None:
        """An unknown keyspace_name is 404 (as PD); a malformed keyspace_id or min_revision 400."""
        unknown = sidecar.get(f"{API}/config/groups", params={"keyspace_name": "ghost"})
        assert unknown.status_code == 404
        assert "ghost" in unknown.text
        for params in ({"keyspace_id": "x"}, {"keyspace_id": "4294967296"},
                       {"min_revision": "-1"}):  # fmt: skip
            response = sidecar.get(f"{API}/config/groups", params=params)
            assert response.status_code == 400, params
            assert "x-revision" in response.headers


class TestControllerAndServiceLimit:
    """GET config/controller and config/keyspace/service-limit[/{name}]."""

    def test_controller_defaults_then_stored(
        self, sidecar: httpx.Client, replica: Replica, etcd_client: Any, layout: KeyLayout
    ) -> None:
        """PD's defaults when nothing is stored; the stored config (unknown keys kept) after."""
        assert sidecar.get(f"{API}/config/controller").json() == ControllerConfig().to_json_dict()
        stored = ControllerConfig.model_validate(
            {"ltb-max-wait-duration": "20s", "push-metrics-interval": "15s"}
        )
        rev = _put(etcd_client, layout.controller(), codec.encode_controller(stored))
        replica.wait_for_revision(rev, 5)
        response = sidecar.get(f"{API}/config/controller")
        body = response.json()
        assert body["ltb-max-wait-duration"] == "20s"
        assert body["push-metrics-interval"] == "15s"
        assert body["request-unit"]["read-base-cost"] == 0.125
        assert revision_of(response) == rev

    def test_service_limits(
        self, sidecar: httpx.Client, replica: Replica, etcd_client: Any, layout: KeyLayout
    ) -> None:
        """The null keyspace's and a named keyspace's limit; 0 if unset, 404 if no keyspace
        (PD: metadataapi/config_service.go:473-487)."""
        unset = sidecar.get(f"{API}/config/keyspace/service-limit")
        assert (unset.status_code, unset.json()["service_limit"]) == (200, 0)
        put_keyspace(etcd_client, layout, "ks1", 7)
        _put(etcd_client, layout.service_limit(NULL_KEYSPACE_ID),
             codec.encode_service_limit(ServiceLimit(service_limit=100.0)))  # fmt: skip
        rev = _put(etcd_client, layout.service_limit(7), codec.encode_service_limit(2.5))
        replica.wait_for_revision(rev, 5)
        null = sidecar.get(f"{API}/config/keyspace/service-limit")
        assert null.status_code == 200
        assert null.json()["service_limit"] == 100
        named = sidecar.get(f"{API}/config/keyspace/service-limit/ks1")
        assert named.json()["service_limit"] == 2.5
        assert revision_of(named) == rev
        by_id = sidecar.get(f"{API}/config/keyspace/service-limit", params={"keyspace_id": 7})
        assert by_id.json() == named.json()
        ghost = sidecar.get(f"{API}/config/keyspace/service-limit/ghost")
        assert ghost.status_code == 404
        assert ghost.text.endswith("keyspace not found with name: ghost")


class TestMinRevision:
    """``?min_revision=`` waits for the cache (read your writes), bounded, then 504."""

    def test_a_write_made_after_the_request_started_is_seen(
        self, replica: Replica, etcd_client: Any, layout: KeyLayout
    ) -> None:
        """A read asking for the next revision waits for the write that makes it, then has it."""
        app = create_sidecar_app(replica, writer_url=None, discover_leader=None,
                                 min_revision_timeout=10.0)  # fmt: skip
        wanted = replica.revision + 1
        results: list[httpx.Response] = []
        with serve(app) as url, httpx.Client(base_url=url, timeout=15) as client:
            reader = threading.Thread(target=lambda: results.append(client.get(
                f"{API}/config/group/late", params={"min_revision": wanted})))  # fmt: skip
            started = time.monotonic()
            reader.start()
            time.sleep(0.3)
            assert not results, "answered before the write existed"
            rev = put_group(etcd_client, layout, "late", **RU)
            reader.join(10)
            elapsed = time.monotonic() - started
        (response,) = results
        assert response.status_code == 200
        assert response.json()["name"] == "late"
        assert revision_of(response) == rev >= wanted
        assert elapsed < 5, "the listener should wake the wait, not the 10 s bound"

    def test_times_out_with_504_and_the_current_revision(
        self, sidecar: httpx.Client, replica: Replica
    ) -> None:
        """A revision never reached answers 504 after the bound, naming the revision reached."""
        wanted = replica.revision + 1000
        started = time.monotonic()
        response = sidecar.get(f"{API}/config/controller", params={"min_revision": wanted})
        elapsed = time.monotonic() - started
        assert response.status_code == 504
        body = response.json()
        assert body["min_revision"] == wanted
        assert body["revision"] == revision_of(response) == replica.revision
        assert 0.9 <= elapsed < 5

    def test_a_reached_revision_answers_at_once(
        self, sidecar: httpx.Client, replica: Replica, etcd_client: Any, layout: KeyLayout
    ) -> None:
        """min_revision at or below the applied revision does not wait."""
        rev = put_group(etcd_client, layout, "now", **RU)
        replica.wait_for_revision(rev, 5)
        started = time.monotonic()
        response = sidecar.get(f"{API}/config/group/now", params={"min_revision": rev})
        assert response.status_code == 200
        assert time.monotonic() - started < 0.5
        assert revision_of(response) == rev


class TestNotReady:
    """503 instead of stale or missing data."""

    def test_503_before_the_first_snapshot(
        self, etcd_client: pyetcd.MultiEndpointEtcd3Client
    ) -> None:
        """A replica that never reached etcd answers every read 503 with state and reason."""
        dead = f"127.0.0.1:{free_port()}"  # nothing listens there
        with running_replica([dead], "/never/") as never:
            app = create_sidecar_app(never, writer_url=None, discover_leader=None)
            with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
                for path in ("/config/group/default", "/config/groups", "/config/controller",
                             "/config/keyspace/service-limit"):  # fmt: skip
                    response = client.get(API + path, params={"min_revision": 1})
                    assert response.status_code == 503, path
                    body = response.json()
                    assert body["state"] in ("LOADING", "DEGRADED")
                    assert body["reason"] == "loading the first snapshot"
                    assert revision_of(response) == 0
                assert client.get("/ready").status_code == 503
                assert client.get("/health").status_code == 200

    def test_ready_flips_to_503_when_stale_and_back(self, etcd_member: EtcdMember) -> None:
        """With max_staleness=1, a frozen etcd turns /ready and reads 503; resumed, 200 again."""
        layout = KeyLayout("/stale/")
        with make_client([etcd_member.endpoint]) as raw:
            put_group(raw, layout, "g", **RU)
        with running_replica([etcd_member.endpoint], "/stale/", max_staleness=1.0,
                             progress_interval=0.2) as fresh:  # fmt: skip
            fresh.wait_ready(10)
            app = create_sidecar_app(fresh, writer_url=None, discover_leader=None)
            with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
                assert client.get("/ready").status_code == 200
                etcd_member.pause()
                try:
                    wait_until(lambda: client.get("/ready").status_code == 503, 5, "stale 503")
                    ready = client.get("/ready").json()
                    assert ready["reason"].startswith("stale: etcd last confirmed the cache")
                    read = client.get(f"{API}/config/group/g")
                    assert read.status_code == 503
                    assert read.json()["reason"].startswith("stale")
                finally:
                    etcd_member.resume()
                wait_until(lambda: client.get("/ready").status_code == 200, 10, "ready again")
                assert client.get(f"{API}/config/group/g").status_code == 200


class TestBadData:
    """A value that does not decode is reported, not served, and hides nothing around it."""

    def test_bad_key_listed_on_status_while_others_serve(
        self, sidecar: httpx.Client, replica: Replica, etcd_client: Any, layout: KeyLayout
    ) -> None:
        """Garbage under settings/ shows on /status with key and revision; neighbours serve."""
        put_group(etcd_client, layout, "aa", **RU)
        bad_rev = _put(etcd_client, layout.settings("bad"), b"\xff\xff not protobuf")
        rev = put_group(etcd_client, layout, "zz", **RU)
        replica.wait_for_revision(rev, 5)
        assert sidecar.get(f"{API}/config/group/aa").status_code == 200
        assert sidecar.get(f"{API}/config/group/zz").status_code == 200
        assert sidecar.get(f"{API}/config/group/bad").status_code == 404
        names = [g["name"] for g in sidecar.get(f"{API}/config/groups").json()]
        assert names == ["aa", "default", "zz"]
        wait_listed_bad(sidecar, [(layout.settings("bad"), bad_rev)], "the bad key on /status")
        assert "rmwatch_replica_bad_keys 1.0" in sidecar.get("/metrics").text


class TestForbiddenForwardHeader:
    """PD's ``X-Forbidden-Forward-To-Microservice: true`` guard."""

    def test_reads_with_the_header_are_404(self, sidecar: httpx.Client) -> None:
        """A read carrying the header is answered 404, as PD's RM fallback handler does."""
        headers = {FORBIDDEN_FORWARD_HEADER: "true"}
        response = sidecar.get(f"{API}/config/controller", headers=headers)
        assert response.status_code == 404
        assert response.text == "404 page not found\n"
        other = sidecar.get(f"{API}/config/controller", headers={FORBIDDEN_FORWARD_HEADER: "no"})
        assert other.status_code == 200
