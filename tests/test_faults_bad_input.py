"""Bad input: random HTTP requests against the writer API and the sidecar never get a 5xx they
should not, and bad values written to etcd by a raw client never stop a replica serving the
keys around them.

What counts as a legitimate 5xx (decided here):
- writer: none while it leads. 503 is legitimate only when the writer cannot reach a leader
  (it is not the leader and none answers); these tests keep it leading, and we assert it still
  leads whenever a 503 is seen. 500 is a bug (it means an unmapped exception or an etcd error
  on a healthy etcd).
- sidecar (GET routes): 503 only while the replica is not ready (it is ready throughout);
  504 only for ``?min_revision=N`` with N above the replica's revision (the bounded wait ran
  out, documented). Anything else >= 500 is a bug.

Schemathesis was not used: the writer's routes read raw request bodies (PD's handlers do
their own parsing), so its OpenAPI schema has no request-body schemas for schemathesis to
generate from; hypothesis strategies over the routes, query parameters and bodies go further.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conformance_support import Services, running_services
from fastapi.testclient import TestClient
from harness import group_bytes, make_client, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from writer_support import WriterNode, nodes

from rmwatch.http.pd import PREFIX
from rmwatch.http.sidecar_app import create_sidecar_app
from rmwatch.http.writer_app import create_writer_app
from rmwatch.store.keys import KeyLayout
from rmwatch.store.keyspaces import KeyspaceResolver
from rmwatch.watcher.replica import Replica

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=5),
    max_leaves=12,
)  # fmt: skip
FIELDS = ["name", "mode", "priority", "r_u_settings", "raw_resource_settings", "keyspace_id",
          "runaway_settings", "background_settings", "service_limit", "read-base-cost",
          "enable-controller-trace-log", "ltb-max-wait-duration"]  # fmt: skip
GROUPISH = st.fixed_dictionaries(
    {"name": st.text(min_size=0, max_size=40)},
    optional={f: JSON for f in FIELDS if f != "name"} | {
        "mode": st.integers(-3, 5) | JSON,
        "priority": st.integers(-5, 40) | JSON,
        "r_u_settings": st.fixed_dictionaries({"r_u": st.fixed_dictionaries(
            {"settings": st.dictionaries(st.sampled_from(["fill_rate", "burst_limit"]),
                                         st.integers(-(2**64), 2**64) | JSON)})}),
    },
)  # fmt: skip
DEEP = st.integers(1, 60_000).map(lambda n: b"[" * n + b"]" * n) | st.integers(1, 60_000).map(
    lambda n: b'{"name":' + b'{"a":' * n + b"1" + b"}" * n + b"}"
)
HUGE_NUMBERS = st.integers(300, 6_000).map(lambda n: b'{"name":"g1","priority":' + b"9" * n + b"}")
NON_FINITE = st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"]).map(
    lambda v: b'{"name":"g1","service_limit":' + v + b',"priority":' + v + b"}"
)
BAD_UTF8 = st.binary(min_size=1, max_size=8).map(lambda b: b'{"name":"g\xff' + b + b'"}')
DUPLICATES = st.sampled_from(["name", "keyspace_id", "service_limit", "priority"]).map(
    lambda k: f'{{"{k}":1,"{k.upper()}":2,"{k}":{{"value":3}}}}'.encode()
)
HOSTILE = DEEP | HUGE_NUMBERS | NON_FINITE | BAD_UTF8 | DUPLICATES
BODY = (
    GROUPISH.map(lambda d: json.dumps(d, allow_nan=True).encode())
    | JSON.map(lambda d: json.dumps(d, allow_nan=True).encode())
    | st.binary(max_size=200)
    | HOSTILE
)
PARAM_VALUES = st.text(max_size=12) | st.integers(-5, 2**33).map(str)
PARAMS = st.dictionaries(
    st.sampled_from(["keyspace_id", "keyspace_name", "expected_revision", "with_stats",
                     "min_revision"]),
    PARAM_VALUES, max_size=3,
)  # fmt: skip
NAME = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/?#%"),
               min_size=1, max_size=20)  # fmt: skip
WRITER_ROUTES = st.one_of(
    st.tuples(st.just("POST"), st.just("/config/group")),
    st.tuples(st.just("PUT"), st.just("/config/group")),
    st.tuples(st.just("DELETE"), NAME.map(lambda n: f"/config/group/{n}")),
    st.tuples(st.just("GET"), NAME.map(lambda n: f"/config/group/{n}")),
    st.tuples(st.just("GET"), st.just("/config/groups")),
    st.tuples(st.sampled_from(["GET", "POST"]), st.just("/config/controller")),
    st.tuples(st.sampled_from(["GET", "POST"]), st.just("/config/keyspace/service-limit")),
    st.tuples(st.sampled_from(["GET", "POST"]),
              NAME.map(lambda n: f"/config/keyspace/service-limit/{n}")),
    st.tuples(st.just("GET"), st.just("/config")),
    st.tuples(st.just("POST"), NAME.map(lambda n: f"/config/controller/ru-version/{n}")),
)  # fmt: skip
SIDECAR_ROUTES = st.one_of(
    NAME.map(lambda n: f"/config/group/{n}"),
    st.just("/config/groups"),
    st.just("/config/controller"),
    st.just("/config"),
    st.just("/config/keyspace/service-limit"),
    NAME.map(lambda n: f"/config/keyspace/service-limit/{n}"),
)
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])  # fmt: skip


@pytest.fixture
def writer_http(etcd_endpoints: list[str], root_prefix: str) -> Iterator[tuple[TestClient, Any]]:
    with nodes(WriterNode(etcd_endpoints, root_prefix, name="fuzz").start()) as (node,):
        app = create_writer_app(node.writer, token=None, forward_wait=0.5)
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client, node


@FUZZ
@given(route=WRITER_ROUTES, params=PARAMS, body=BODY)
def test_writer_api_never_answers_5xx(writer_http: tuple[TestClient, Any],
                                      route: tuple[str, str], params: dict[str, str],
                                      body: bytes) -> None:  # fmt: skip
    client, node = writer_http
    method, path = route
    r = client.request(method, PREFIX + path, params=params, content=body,
                       headers={"content-type": "application/json"})  # fmt: skip
    if r.status_code == 503:
        assert not node.leadership.is_leader, f"503 while leading: {r.text}"
    assert r.status_code < 500 or r.status_code == 503, (
        f"{method} {path} params={params} body={body[:200]!r} -> {r.status_code} {r.text[:300]}"
    )


@pytest.fixture
def sidecar_http(etcd_endpoints: list[str], root_prefix: str
                 ) -> Iterator[tuple[TestClient, Replica]]:  # fmt: skip
    layout = KeyLayout(root_prefix)
    with make_client(etcd_endpoints) as raw:
        raw.put(layout.settings("g1"), group_bytes("g1", 3))
        replica = Replica(endpoints=etcd_endpoints, root_prefix=root_prefix).start()
        try:
            replica.wait_ready(10)
            app = create_sidecar_app(replica, writer_url=None, discover_leader=lambda: None,
                                     resolve_keyspace=KeyspaceResolver(raw, layout),
                                     min_revision_timeout=0.1)  # fmt: skip
            with TestClient(app, raise_server_exceptions=False) as client:
                yield client, replica
        finally:
            replica.close()


@FUZZ
@given(path=SIDECAR_ROUTES, params=PARAMS)
def test_sidecar_reads_never_answer_5xx(sidecar_http: tuple[TestClient, Replica], path: str,
                                        params: dict[str, str]) -> None:  # fmt: skip
    client, replica = sidecar_http
    r = client.get(PREFIX + path, params=params)
    if r.status_code == 504:
        wanted = params.get("min_revision", "")
        assert wanted.isdigit(), r.text
        assert int(wanted) > replica.revision, r.text
        return
    assert r.status_code < 500, f"GET {path} params={params} -> {r.status_code} {r.text[:300]}"


def test_bad_values_are_contained(etcd_endpoints: list[str], root_prefix: str) -> None:
    """Malformed protobuf, bad JSON, a value naming another group, an oversize value, an
    unknown key kind and a non-UTF-8 key, written by a raw client between good keys: the
    replica stays ready, serves every good key at the right revision, reports each bad key
    (with key and revision) on its status, and forgets one once it is repaired."""
    layout = KeyLayout(root_prefix)
    p = layout.prefix
    bad = {
        layout.settings("proto"): b"\xff\xff\xff\x0f not protobuf",
        layout.controller(): b"{not json",
        layout.settings("named-a"): group_bytes("named-b"),  # key a, value names b
        layout.service_limit(7): b"abc",
        layout.states("st"): b"\x00\x01",
        layout.settings("huge"): b"\x0a" + b"\xff" * (1024 * 1024),  # 1 MiB of garbage
    }
    with make_client(etcd_endpoints) as raw, \
            Replica(endpoints=etcd_endpoints, root_prefix=root_prefix) as replica:  # fmt: skip
        replica.wait_ready(10)
        raw.put(layout.settings("good1"), group_bytes("good1", 1))
        for key, value in bad.items():
            raw.put(key, value)
        raw.put(p + "future-kind/x", b"whatever")  # a kind a newer PD might add
        raw.put(p.encode() + b"settings/\xff\xfe", group_bytes("x"))  # non-UTF-8 key
        last = int(raw.put(layout.settings("good2"), group_bytes("good2", 2)).header.revision)
        replica.wait_for_revision(last, 10)
        assert replica.ready
        assert replica.get_group("good1").value is not None
        assert replica.get_group("good2").value.priority == 2  # type: ignore[union-attr]
        assert replica.get_group("proto").value is None
        non_utf8 = p + "settings/\udcff\udcfe"  # as the replica names it (surrogateescape)
        expected = set(bad) | {non_utf8}
        # Reads never see a bad value; the validator thread lists them moments after apply.
        wait_until(lambda: expected <= {e["key"] for e in replica.status()["decode_errors"]},
                   5, "every bad key listed")  # fmt: skip
        status = replica.status()
        reported = {e["key"] for e in status["decode_errors"]}
        missing = expected - reported
        assert not missing, f"bad keys not reported: {missing}; reported {reported}"
        assert all(e["revision"] > 0 and e["error"] for e in status["decode_errors"])
        # a repaired key leaves the report
        fixed = int(raw.put(layout.settings("proto"), group_bytes("proto", 4)).header.revision)
        replica.wait_for_revision(fixed, 10)
        wait_until(lambda: layout.settings("proto") not in
                   {e["key"] for e in replica.status()["decode_errors"]}, 5, "repair")  # fmt: skip
        assert replica.get_group("proto").value.priority == 4  # type: ignore[union-attr]
        # a fresh replica (snapshot load, not the watch) contains them the same way
        with Replica(endpoints=etcd_endpoints, root_prefix=root_prefix) as second:
            second.wait_ready(10)
            assert second.get_group("good2").value is not None
            wait_until(lambda: second.status()["validation_pending"] == 0, 5, "validation")
            again = {e["key"] for e in second.status()["decode_errors"]}
            assert again == expected - {layout.settings("proto")}, again
        time.sleep(0)


# ---- hostile bodies on both services, over real HTTP -------------------------------------------

WRITE_ROUTES = [
    ("POST", "/config/group"),
    ("PUT", "/config/group"),
    ("POST", "/config/controller"),
    ("POST", "/config/keyspace/service-limit"),
    ("POST", "/config/controller/ru-version/ks1"),
]
NAMED_HOSTILE = [
    ("deep", b"[" * 100_000 + b"]" * 100_000, "exceeded max depth"),
    ("deep_object", b'{"name":' + b'{"a":' * 100_000 + b"1" + b"}" * 100_001, "max depth"),
    ("5000_digits", b'{"name":"g1","service_limit":' + b"9" * 5_000 + b"}", "out of range"),
    ("nan", b'{"name":"g1","service_limit":NaN}', "NaN is not valid JSON"),
    ("infinity", b'{"name":"g1","service_limit":-Infinity}', "-Infinity is not valid JSON"),
    ("1e400", b'{"name":"g1","service_limit":1e400}', "out of range of float64"),
    ("invalid_utf8", b'{"name":"g\xff\xfe1"}', "invalid UTF-8"),
    ("not_json", b'{"name":', "not valid JSON"),
]


@pytest.fixture
def services(etcd_endpoints: list[str], root_prefix: str) -> Iterator[Services]:
    """The writer's app and the replica's sidecar (forwarding to it) over real HTTP."""
    with running_services(etcd_endpoints, root_prefix) as both:
        yield both


class TestHostileBodies:
    """Hostile bodies answer 4xx naming the problem on the writer AND the replica's sidecar
    (which forwards writes to the writer), never a 5xx or a broken connection."""

    @pytest.mark.parametrize(("method", "path"), WRITE_ROUTES)
    @pytest.mark.parametrize(("shape", "body", "named"), NAMED_HOSTILE,
                             ids=[h[0] for h in NAMED_HOSTILE])  # fmt: skip
    def test_named_4xx(self, services: Services, method: str, path: str, shape: str,
                       body: bytes, named: str) -> None:  # fmt: skip
        """Each shape is a 400 whose text names it, on both services."""
        for service, r in services.both(method, path, content=body).items():
            assert r.status_code == 400, (service, shape, r.status_code, r.text[:200])
            assert named in r.text, (service, shape, r.text[:300])

    def test_duplicate_keyspace_id(self, services: Services) -> None:
        """A duplicated ``keyspace_id`` is 400, as PD refuses it (PD:
        pkg/mcs/resourcemanager/metadataapi/config_service.go:229); other duplicates take the
        last value, as Go's encoding/json does."""
        raw = b'{"name":"g1","keyspace_id":{"value":1},"keyspace_id":{"value":2}}'
        for service, r in services.both("POST", "/config/group", content=raw).items():
            assert r.status_code == 400, service
            assert "keyspace_id must be set only once" in r.text, service

    @pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
    def test_oversize_is_413_on_both(self, services: Services, chunked: bool) -> None:
        """2 MiB (over the 1 MiB limit) answers 413 on both, with and without Content-Length:
        the rest of the body is read and dropped first, so the client reads the answer
        instead of a broken pipe."""
        blob = b'{"name":"' + b"x" * (2 * 1024 * 1024) + b'"}'

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(blob), 64 * 1024):
                yield blob[start : start + 64 * 1024]

        for service in ("writer", "replica"):
            client = services.writer if service == "writer" else services.replica
            r = client.post(PREFIX + "/config/group", content=chunks() if chunked else blob)
            assert r.status_code == 413, (service, r.status_code, r.text[:200])
            assert "request body over 1048576 bytes" in r.text, service

    def test_chunked_body_accepted(self, services: Services) -> None:
        """A well-formed chunked body (no Content-Length) is read whole on both."""
        body = json.dumps({"name": "g1", "mode": 1, "priority": 3}).encode()

        def chunks() -> Iterator[bytes]:
            yield from (body[i : i + 5] for i in range(0, len(body), 5))

        for service in ("writer", "replica"):
            client = services.writer if service == "writer" else services.replica
            r = client.post(PREFIX + "/config/group", content=chunks())
            assert (r.status_code, r.text) == (200, "Success!"), service
