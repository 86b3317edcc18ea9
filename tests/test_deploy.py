"""The deployment files in docker/ are consistent with the code, checked without docker.

No docker daemon exists here or in CI, so nothing is built or started. Instead: the compose
file references only services, volumes, configs and secrets that exist; every rmwatch command
in it (and in the Kubernetes example) parses with the real ``rmwatch`` parser, and every
``RMWATCH_*`` variable is a setting of that subcommand (pydantic-settings ignores unknown ones,
so a typo would silently do nothing); every PromQL expression of the dashboard names only
metrics the code registers; the Dockerfile has the promised shape and its HEALTHCHECK command
really probes /health; the Kubernetes probes point at /ready and /health.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import find_etcd_binary
from prometheus_client import CollectorRegistry
from pydantic_settings import BaseSettings

from rmwatch.cli.main import build_parser
from rmwatch.http.sidecar_app import create_sidecar_app
from rmwatch.http.writer_app import create_writer_app
from rmwatch.store.keys import KeyLayout
from rmwatch.store.writer import Writer
from rmwatch.watcher.replica import Replica

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "rmwatch.json"
PROMETHEUS = DOCKER / "prometheus.yml"
K8S = DOCKER / "k8s" / "rm-with-replica-sidecar.yaml"
RMWATCH_IMAGE = "rmwatch:"


# ---- helpers ---------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE)
    assert isinstance(data, dict)
    return data


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in compose["services"].items() if isinstance(v, dict)}


def is_rmwatch(service: dict[str, Any]) -> bool:
    image = str(service.get("image", ""))
    build = service.get("build") or {}
    return image.startswith(RMWATCH_IMAGE) or build.get("dockerfile") == "docker/Dockerfile"


def parse_rmwatch(argv: list[str], where: str) -> Any:
    """Parse with the real parser; a rejected flag fails the test naming ``where``."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"{where}: `rmwatch {shlex.join(argv)}` is rejected") from exc


def settings_class(args: Any) -> type[BaseSettings]:
    """The pydantic-settings class of the subcommand ``args`` selected."""
    module = sys.modules[args.run.__module__]
    found = [
        obj
        for name, obj in vars(module).items()
        if name.endswith("Settings")
        and isinstance(obj, type)
        and issubclass(obj, BaseSettings)
        and obj.__module__ == module.__name__
    ]
    assert len(found) == 1, f"{module.__name__} should define one *Settings class: {found}"
    return found[0]


def check_env(env: dict[str, Any], args: Any, where: str) -> None:
    """Every RMWATCH_* variable names a field of the subcommand's settings."""
    fields = set(settings_class(args).model_fields)
    for name in env:
        if name.startswith("RMWATCH_"):
            field = name.removeprefix("RMWATCH_").lower()
            assert field in fields, f"{where}: {name} is not a setting of `rmwatch {args.command}`"


def listen_port(env: dict[str, Any], default: int) -> int:
    listen = str(env.get("RMWATCH_LISTEN", f":{default}"))
    return int(listen.rpartition(":")[2])


def env_dict(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return dict(env)


def names(entries: Any) -> list[str]:
    """Names from a compose short (list of str) or long (list of dict / dict) form."""
    if entries is None:
        return []
    if isinstance(entries, dict):
        return list(entries)
    return [e if isinstance(e, str) else e["source"] for e in entries]


# ---- compose ---------------------------------------------------------------------------


def test_compose_topology(compose: dict[str, Any]) -> None:
    """3 etcd members at v3.5.17, two writers, two replicas, Prometheus and Grafana."""
    svc = services(compose)
    etcd = {
        n: s for n, s in svc.items() if str(s.get("image", "")).startswith("quay.io/coreos/etcd")
    }
    assert len(etcd) == 3
    assert {s["image"] for s in etcd.values()} == {"quay.io/coreos/etcd:v3.5.17"}
    cluster = env_dict(next(iter(etcd.values())))["ETCD_INITIAL_CLUSTER"]
    members = dict(item.split("=", 1) for item in cluster.split(","))
    assert set(members) == set(etcd)
    for name, service in etcd.items():
        assert f"--name={name}" in service["command"]
        assert members[name] == f"http://{name}:2380"
    commands = {
        n: parse_rmwatch(list(s["command"]), n).command for n, s in svc.items() if is_rmwatch(s)
    }
    assert sorted(c for c in commands.values() if c == "writer") == ["writer", "writer"]
    assert sorted(c for c in commands.values() if c == "replica") == ["replica", "replica"]
    assert "prometheus" in svc
    assert "grafana" in svc


def test_compose_etcd_flags_exist_in_etcd(compose: dict[str, Any]) -> None:
    """Every etcd flag the compose file sets (command, or ETCD_* variable) is one the local
    etcd binary knows (the flags used are the same in 3.4 and 3.5)."""
    help_text = subprocess.run(
        [find_etcd_binary(), "--help"], capture_output=True, text=True, timeout=10, check=False
    )
    known = set(re.findall(r"--([a-z0-9-]+)", help_text.stdout + help_text.stderr))
    assert "initial-cluster" in known
    for name, service in services(compose).items():
        if not str(service.get("image", "")).startswith("quay.io/coreos/etcd"):
            continue
        used = [a[2:].split("=", 1)[0] for a in service["command"] if a.startswith("--")]
        used += [v.removeprefix("ETCD_").lower().replace("_", "-") for v in env_dict(service)]
        unknown = set(used) - known
        assert not unknown, f"{name}: etcd does not know {sorted(unknown)}"


def test_compose_references_exist(compose: dict[str, Any]) -> None:
    svc = services(compose)
    volumes = set(compose.get("volumes") or {})
    secrets = set(compose.get("secrets") or {})
    configs = set(compose.get("configs") or {})
    for section in ("secrets", "configs"):
        for name, spec in (compose.get(section) or {}).items():
            assert (DOCKER / spec["file"]).is_file(), f"{section}.{name}: {spec['file']} missing"
    used_volumes: set[str] = set()
    for name, service in svc.items():
        for dep in names(service.get("depends_on")):
            assert dep in svc, f"{name} depends on unknown service {dep}"
        for secret in names(service.get("secrets")):
            assert secret in secrets, f"{name} uses undeclared secret {secret}"
        for config in names(service.get("configs")):
            assert config in configs, f"{name} uses undeclared config {config}"
        for mount in service.get("volumes") or []:
            source = mount.split(":", 1)[0] if isinstance(mount, str) else mount["source"]
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in volumes, f"{name} uses undeclared volume {source}"
                used_volumes.add(source)
        build = service.get("build")
        if build:
            context = (DOCKER / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file()
        # A secret a command or variable reads must be mounted into that service.
        text = json.dumps(service.get("command")) + json.dumps(env_dict(service))
        for ref in re.findall(r"/run/secrets/([\w.-]+)", text):
            assert ref in names(service.get("secrets")), f"{name} reads unmounted secret {ref}"
    assert used_volumes == volumes, f"declared but unused volumes: {volumes - used_volumes}"


def test_compose_rmwatch_commands_and_env_are_real(compose: dict[str, Any]) -> None:
    """Each command parses with ``rmwatch.cli.main.build_parser()``; each RMWATCH_* is a setting."""
    checked = 0
    for name, service in services(compose).items():
        if not is_rmwatch(service):
            continue
        args = parse_rmwatch(list(service["command"]), f"compose service {name}")
        check_env(env_dict(service), args, f"compose service {name}")
        checked += 1
    assert checked >= 5  # setup job, two writers, two replicas


def test_compose_writers_and_replicas_start_after_auth_setup(compose: dict[str, Any]) -> None:
    svc = services(compose)
    setup = [n for n, s in svc.items() if is_rmwatch(s) and s["command"][0] == "etcd-setup-auth"]
    assert len(setup) == 1
    args = parse_rmwatch(list(svc[setup[0]]["command"]), setup[0])
    assert args.enable_auth is True
    for name, service in svc.items():
        if is_rmwatch(service) and service["command"][0] in ("writer", "replica"):
            deps = service.get("depends_on") or {}
            assert deps[setup[0]]["condition"] == "service_completed_successfully", name
            env = env_dict(service)
            user = {"writer": "rmwatch-writer", "replica": "rmwatch-replica"}[service["command"][0]]
            assert env["RMWATCH_ETCD_USER"] == user, f"{name} must use its least-privilege user"
            assert "RMWATCH_ETCD_PASSWORD" not in env, f"{name}: use a password file"
        ports = service.get("ports") or []
        for port in ports:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"


def test_prometheus_scrapes_every_writer_and_replica(compose: dict[str, Any]) -> None:
    svc = services(compose)
    config = load_yaml(PROMETHEUS)
    targets = {
        t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    expected = set()
    for name, service in svc.items():
        if is_rmwatch(service) and service["command"][0] in ("writer", "replica"):
            expected.add(f"{name}:{listen_port(env_dict(service), 8080)}")
    assert targets == expected
    assert all(
        job.get("metrics_path", "/metrics") == "/metrics" for job in config["scrape_configs"]
    )
    prom = svc["prometheus"]
    mounts = dict(m.split(":")[:2] for m in prom["volumes"] if isinstance(m, str))
    target = mounts["./prometheus.yml"]
    assert f"--config.file={target}" in prom["command"]


def test_compose_is_portable() -> None:
    """No top-level `configs:` (podman-compose ignores them, Prometheus then has no config)."""
    assert "configs" not in load_yaml(COMPOSE)


def test_compose_etcd_healthcheck_needs_no_credentials(compose: dict[str, Any]) -> None:
    """etcd-setup enables auth; a health check that reads a key without a user then fails
    ("user name is empty") and a second `up` never gets past setup. `endpoint status` needs
    no user (scripts/image-test runs it against a cluster with auth on)."""
    for name, service in services(compose).items():
        if not str(service.get("image", "")).startswith("quay.io/coreos/etcd"):
            continue
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD"
        assert test[-2:] == ["endpoint", "status"], f"{name}: {test}"
        assert not any(a.startswith(("--user", "--password")) for a in test)


# ---- dashboard -------------------------------------------------------------------------

_PROMQL_WORDS = {
    # functions and aggregations used (or plausible) in dashboards
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "topk",
    "bottomk",
    "quantile",
    "stddev",
    "group",
    "rate",
    "irate",
    "increase",
    "delta",
    "idelta",
    "deriv",
    "changes",
    "resets",
    "histogram_quantile",
    "abs",
    "clamp_min",
    "clamp_max",
    "time",
    "timestamp",
    "vector",
    "scalar",
    "label_replace",
    "absent",
    "min_over_time",
    "max_over_time",
    "avg_over_time",
    "sum_over_time",
    "count_over_time",
    "last_over_time",
    # keywords
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "and",
    "or",
    "unless",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (labels, functions, numbers removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\b\d+(?:\.\d+)?(?:ms|[smhdwy])?\b", "", text)  # numbers, durations
    tokens = re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text)
    return {t for t in tokens if t.lower() not in _PROMQL_WORDS}


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name a registry can expose (counters ``_total``, histograms ``_bucket`` …),
    also for labelled metrics that have no child yet."""
    out: set[str] = set()
    for metric in registry.collect():
        if metric.type == "counter":
            out |= {f"{metric.name}_total", f"{metric.name}_created"}
        elif metric.type == "histogram":
            out |= {f"{metric.name}_{s}" for s in ("bucket", "sum", "count", "created")}
        elif metric.type == "summary":
            out |= {metric.name, f"{metric.name}_sum", f"{metric.name}_count"}
        else:
            out.add(metric.name)
        out |= {sample.name for sample in metric.samples}
    return out


@pytest.fixture(scope="module")
def registered_metrics() -> set[str]:
    """Names from the registries of a real Writer app, Replica and sidecar app, in process.

    Nothing connects: a Writer given a client object does not call it until a write, and a
    Replica connects only in start()."""
    writer = Writer(client=object(), layout=KeyLayout(""))  # type: ignore[arg-type]
    create_writer_app(writer, token=None)
    replica = Replica(endpoints=["127.0.0.1:1"])
    app = create_sidecar_app(replica, writer_url=None, discover_leader=None)
    out = exposed_names(writer.metrics.registry) | exposed_names(replica.metrics.registry)
    out |= exposed_names(app.state.metrics.registry)
    assert any(n.startswith("rmwatch_writer_") for n in out)
    assert any(n.startswith("rmwatch_replica_") for n in out)
    assert any(n.startswith("rmwatch_sidecar_") for n in out)
    return out


def dashboard_targets() -> Iterator[tuple[str, str]]:
    def walk(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            for target in panel.get("targets", []):
                yield panel["title"], target["expr"]
            yield from walk(panel.get("panels", []))

    yield from walk(json.loads(DASHBOARD.read_text())["panels"])


def test_metric_name_extraction() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, route) "
        '(rate(rmwatch_sidecar_http_request_seconds_bucket{job="x",code!~"2.."}[5m]))) '
        "/ on (instance) group_left max(up_thing) offset 5m"
    )
    assert metric_names(expr) == {"rmwatch_sidecar_http_request_seconds_bucket", "up_thing"}


def test_dashboard_queries_use_only_registered_metrics(registered_metrics: set[str]) -> None:
    seen: set[str] = set()
    for title, expr in dashboard_targets():
        found = metric_names(expr)
        assert found, f"panel {title!r}: no metric in {expr!r}"
        unknown = found - registered_metrics
        assert not unknown, f"panel {title!r} queries unregistered metrics {sorted(unknown)}"
        seen |= found
    # The panels the issue asks for, by the metric each one needs.
    for needed in (
        "rmwatch_replica_applied_revision",
        "rmwatch_replica_lag_revisions",
        "rmwatch_replica_rebuilds_total",
        "rmwatch_writer_writes_total",
        "rmwatch_sidecar_http_requests_total",
        "rmwatch_sidecar_http_request_seconds_bucket",
        "rmwatch_writer_leader_epoch",
    ):
        assert needed in seen, f"no panel queries {needed}"


def test_dashboard_is_wired_to_provisioning(compose: dict[str, Any]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    sources = load_yaml(DOCKER / "grafana/provisioning/datasources/prometheus.yaml")["datasources"]
    uids = {s["uid"] for s in sources}
    assert all(s["url"] == "http://prometheus:9090" for s in sources)
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] in uids, panel["title"]
    jobs = {job["job_name"] for job in load_yaml(PROMETHEUS)["scrape_configs"]}
    for title, expr in dashboard_targets():
        for job in re.findall(r'job="([^"]+)"', expr):
            assert job in jobs, f"panel {title!r} selects unknown job {job}"
    provider = load_yaml(DOCKER / "grafana/provisioning/dashboards/rmwatch.yaml")["providers"][0]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in compose["services"]["grafana"]["volumes"]}
    assert mounts[provider["options"]["path"]] == "./grafana/dashboards"
    assert mounts["/etc/grafana/provisioning/datasources"] == "./grafana/provisioning/datasources"
    assert mounts["/etc/grafana/provisioning/dashboards"] == "./grafana/provisioning/dashboards"


# ---- Dockerfile ------------------------------------------------------------------------


def dockerfile_stages() -> tuple[dict[str, str], list[tuple[str, list[str]]]]:
    """(ARG defaults, [(FROM line, instructions of that stage)]) with continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    args: dict[str, str] = {}
    stages: list[tuple[str, list[str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "ARG" and not stages and "=" in rest:
            key, _, value = rest.partition("=")
            args[key.strip()] = value.strip()
        elif word.upper() == "FROM":
            stages.append((rest, []))
        elif stages:
            stages[-1][1].append(line)
    return args, stages


def test_dockerfile_is_a_slim_multistage_build() -> None:
    args, stages = dockerfile_stages()
    assert len(stages) == 2
    images = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], s.split()[0]) for s, _ in stages]
    assert images == ["python:3.11-slim", "python:3.11-slim"]
    (_, build), (_, final) = stages
    build_text, final_text = "\n".join(build), "\n".join(final)
    # Build stage: a wheel of this project (and of its dependencies) from the checkout root.
    assert re.search(r"pip wheel .*--wheel-dir[ =]/wheels \.$", build_text, re.M), build_text
    for copied in ("pyproject.toml", "README.md", "store", "watcher"):
        assert copied in build_text
        assert (REPO / copied).exists()
    # Final stage: offline install of those wheels, no compilers, a non-root user.
    assert re.search(r"pip install --no-index --find-links=/wheels rmwatch", final_text)
    for tool in ("gcc", "build-essential", "apt-get install", "git "):
        assert tool not in final_text
    users = [i.split()[1] for i in final if i.upper().startswith("USER ")]
    assert users, "final stage must switch to a non-root user"
    assert users[-1].split(":")[0] not in ("0", "root")
    entry = [i for i in final if i.upper().startswith("ENTRYPOINT")]
    assert entry == ['ENTRYPOINT ["rmwatch"]']
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "rmwatch" in scripts
    # The files the build copies are not excluded by the Dockerfile's ignore file.
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    for kept in ("!pyproject.toml", "!README.md", "!store/", "!watcher/"):
        assert kept in ignore


def healthcheck_command() -> list[str]:
    _, stages = dockerfile_stages()
    line = next(i for i in stages[-1][1] if i.upper().startswith("HEALTHCHECK"))
    exec_form = line[line.index("CMD") + 3 :].strip()
    command = json.loads(exec_form)
    assert isinstance(command, list)
    return [str(c) for c in command]


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_dockerfile_healthcheck_probes_health() -> None:
    """The HEALTHCHECK command itself, run here: 0 against a server answering /health on
    the RMWATCH_LISTEN port, non-zero when nothing listens."""
    command = healthcheck_command()
    assert command[:2] == ["python", "-c"]
    assert "urllib" in command[2]
    assert "/health" in command[2]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        for listen, ok in ((f"0.0.0.0:{port}", True), (":1", False)):
            env = {**os.environ, "RMWATCH_LISTEN": listen}
            done = subprocess.run(
                [sys.executable, "-c", command[2]],
                env=env,
                capture_output=True,
                timeout=10,
                check=False,
            )
            assert (done.returncode == 0) is ok, done.stderr
    finally:
        server.shutdown()
        server.server_close()


def test_dockerfile_install_matches_readme() -> None:
    """The image builds the project from the checkout root, as the README installs it.

    The README line this matches is ``pip install .`` (run in a checkout); extras such as
    ``pip install -e ".[test]"`` install from the same root. Checked when the README has an
    install line at all."""
    build = "\n".join(dockerfile_stages()[1][0][1])
    assert re.search(r"pip wheel .* \.$", build, re.M)
    readme = (REPO / "README.md").read_text() if (REPO / "README.md").exists() else ""
    lines = [ln for ln in readme.splitlines() if re.search(r"\bpip install\b", ln)]
    if lines:
        from_root = re.compile(
            r"pip install (?:-e |--editable )?[\"']?\.(?:\[[\w,-]+\])?[\"']?(?:\s|`|$)"
        )
        assert any(from_root.search(ln) for ln in lines), (
            f"README installs differently from the Dockerfile (`pip install .`): {lines}"
        )


# ---- Kubernetes ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s_docs() -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(K8S.read_text()) if d]
    assert all("apiVersion" in d and "kind" in d for d in docs)
    return docs


def replica_container(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    found = [c for c in pod["containers"] if c.get("image", "").startswith(RMWATCH_IMAGE)]
    assert len(found) == 1
    return pod, found[0]


def test_k8s_deployment_has_rm_and_replica_sidecar(k8s_docs: list[dict[str, Any]]) -> None:
    deployment = next(d for d in k8s_docs if d["kind"] == "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pod, sidecar = replica_container(k8s_docs)
    assert len(pod["containers"]) == 2  # the RM placeholder and the replica
    args = parse_rmwatch(list(sidecar["args"]), "k8s rmwatch-replica")
    assert args.command == "replica"
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    check_env(env, args, "k8s rmwatch-replica")
    assert env["RMWATCH_ETCD_USER"] == "rmwatch-replica"
    assert all(url.startswith("https://") for url in env["RMWATCH_ETCD"].split(","))


def test_k8s_probes_and_graceful_shutdown(k8s_docs: list[dict[str, Any]]) -> None:
    pod, sidecar = replica_container(k8s_docs)
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/health"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        port = sidecar[probe]["httpGet"]["port"]
        assert ports.get(port, port) == listen_port(env, 8081), probe
    assert env["RMWATCH_LISTEN"].startswith("0.0.0.0:")  # the kubelet probes the pod IP
    sleeps = {}
    for container in pod["containers"]:
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep"
        sleeps[container["name"]] = float(command[1])
    rm = next(n for n in sleeps if n != sidecar["name"])
    assert sleeps[sidecar["name"]] > sleeps[rm], "the sidecar must outlive the RM container"
    budget = (
        sleeps[sidecar["name"]]
        + float(env["RMWATCH_DRAIN_SECONDS"])
        + float(env["RMWATCH_SHUTDOWN_TIMEOUT"])
    )
    assert pod["terminationGracePeriodSeconds"] > budget
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_k8s_secrets_are_mounted_where_the_env_points(k8s_docs: list[dict[str, Any]]) -> None:
    pod, sidecar = replica_container(k8s_docs)
    secrets = {d["metadata"]["name"]: d for d in k8s_docs if d["kind"] == "Secret"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in sidecar["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    for var in (
        "RMWATCH_ETCD_CA",
        "RMWATCH_ETCD_CERT",
        "RMWATCH_ETCD_KEY",
        "RMWATCH_ETCD_PASSWORD_FILE",
    ):
        path = Path(env[var])
        volume = volumes[mounts[str(path.parent)]]
        secret = secrets[volume["secret"]["secretName"]]
        assert path.name in secret["stringData"], (
            f"{var}: no key {path.name} in {secret['metadata']['name']}"
        )
    assert "RMWATCH_ETCD_PASSWORD" not in env  # never the password itself in the manifest
