"""Build the rmwatch image from docker/Dockerfile and prove that it runs.

Run it as ``scripts/image-test`` (which sets up .venv first). Steps, each timed:

1. engine: docker where a daemon answers, else podman (apt-get installs podman, mmdebstrap and
   runc when missing and we are root). podman gets a private containers.conf (runc, because
   crun 1.8 refuses a hybrid cgroup layout; nofile/nproc limits it may set without
   CAP_SYS_RESOURCE), pointed to by CONTAINERS_CONF for this run only.
2. base (podman only): a Debian bookworm root file system made by mmdebstrap from this host's
   apt sources, with the host's extra CA certificates trusted (pip works behind a TLS-
   intercepting proxy) and a venv first on PATH so that it looks like python:3.11-slim
   (``python``, ``pip``); ``podman import``ed as ``localhost/rmwatch-base:<hash of inputs>`` and
   kept in podman's storage, so a later run on the same machine skips it.
3. etcd image: the base plus Debian's etcd-server/etcd-client (no registry is reachable here);
   with docker, quay.io/coreos/etcd.
4. image: ``build -f docker/Dockerfile`` from the repository root (``--format docker``: the OCI
   format drops HEALTHCHECK), with ``--build-arg PYTHON_IMAGE=<base>`` under podman.
5. checks, on the host network (every connection is to 127.0.0.1): ``rmwatch --version``; an
   etcd, a writer and a replica container; ``/health`` on both and ``/ready`` on the replica; a
   write through the writer read back from the replica with ``min_revision``; the image's
   HEALTHCHECK passes on both (run by hand: no systemd schedules it); both processes run as uid
   10001; SIGTERM drains (the replica's ``/ready`` turns 503 while it still serves) and both
   containers exit 0.
6. suite: the test suite's etcd-facing tests with the session etcd in a real container
   (testcontainers through podman's Docker-compatible API, ``RMWATCH_TEST_ETCD_IMAGE``).

Prints a table of timings at the end; exits 1 with the failing step named on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
API = "/resource-manager/api/v1"
RUN_AS_UID = 10001
IMAGE = "localhost/rmwatch:image-test"
DOCKER_ETCD_IMAGE = "quay.io/coreos/etcd:v3.5.17"
APT_TOOLS = [
    "podman",
    "mmdebstrap",
    "runc",
    "uidmap",
    "netavark",
    "aardvark-dns",
    "containernetworking-plugins",
]
CONTAINERS_CONF = """\
# Written by scripts/image-test for its own podman calls (CONTAINERS_CONF).
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=20000:20000"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
# Version of the base recipe below: bump it to force a rebuild everywhere.
BASE_RECIPE = "bookworm minbase python3 python3-venv venv=/opt/python v1"
BASE_PACKAGES = "passwd,python3,python3-venv,ca-certificates"
BASE_PATH = "/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ETCD_CONTAINERFILE = """\
ARG BASE
FROM ${BASE}
RUN apt-get update \\
 && apt-get install -y --no-install-recommends etcd-server etcd-client \\
 && rm -rf /var/lib/apt/lists/* \\
 && ln -s /usr/bin/etcd /usr/local/bin/etcd && ln -s /usr/bin/etcdctl /usr/local/bin/etcdctl
ENV ETCDCTL_API=3
CMD ["etcd"]
"""
PROMETHEUS_CONTAINERFILE = """\
ARG BASE
FROM ${BASE}
RUN apt-get update \\
 && apt-get install -y --no-install-recommends prometheus \\
 && rm -rf /var/lib/apt/lists/* \\
 && mkdir -p /prometheus && chown prometheus:prometheus /prometheus
USER prometheus
WORKDIR /prometheus
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml"]
"""
COMPOSE_PROJECT = "rmwatch-image-test"
COMPOSE_PORTS = {
    "writer1": 18080,
    "writer2": 18081,
    "replica1": 18091,
    "replica2": 18092,
    "prometheus": 9090,
}
ETCD_SERVICES = ["etcd1", "etcd2", "etcd3"]
RMWATCH_SERVICES = ["writer1", "writer2", "replica1", "replica2"]
# The default subset of the suite run against the container etcd (all of them talk to etcd).
SUITE = [
    "tests/test_replica_consistency.py",
    "tests/test_sidecar_reads.py",
    "tests/test_writer_ops.py",
    "tests/test_writer_fencing.py",
]
GROUP = {
    "name": "image_test_rg",
    "mode": 1,
    "r_u_settings": {"r_u": {"settings": {"fill_rate": 1234, "burst_limit": 2000}}},
    "priority": 8,
}


class ImageTestError(Exception):
    """A check failed or a tool is missing: the message says which and why."""


class Run:
    """The timed steps of one run."""

    def __init__(self) -> None:
        self.timings: list[tuple[str, float, str]] = []

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[list[str]]:
        notes: list[str] = []
        print(f"\n==> {name}", flush=True)
        start = time.monotonic()
        try:
            yield notes
        except BaseException:
            self.timings.append((name, time.monotonic() - start, "FAILED"))
            raise
        took = time.monotonic() - start
        self.timings.append((name, took, "; ".join(notes)))
        print(f"<== {name}: {took:.1f} s", flush=True)

    def summary(self) -> None:
        print("\nimage-test timings:")
        for name, took, note in self.timings:
            print(f"  {name:<12} {took:7.1f} s  {note}")
        total = sum(t for _, t, _ in self.timings)
        print(f"  {'total':<12} {total:7.1f} s")


def sh(
    cmd: list[str],
    *,
    check: bool = True,
    quiet: bool = False,
    timeout: float = 900,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command; its output is captured and shown on failure (or always, unless quiet)."""
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(
        cmd,
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )
    out = (proc.stdout + proc.stderr).strip()
    if check and proc.returncode != 0:
        raise ImageTestError(f"`{' '.join(cmd)}` exited {proc.returncode}:\n{_tail(out, 60)}")
    if out and not quiet:
        print(_tail(out, 15), flush=True)
    return proc


def _tail(text: str, lines: int) -> str:
    parts = text.splitlines()
    cut = f"... ({len(parts) - lines} lines before)\n" if len(parts) > lines else ""
    return cut + "\n".join(parts[-lines:])


def _hash(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ----------------------------------------------------------------------------------- engine


class Engine:
    """docker or podman: the same CLI for what we use, plus the differences spelled out."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return sh([self.name, *args], **kwargs)  # type: ignore[arg-type]

    def image_exists(self, ref: str) -> bool:
        return sh([self.name, "image", "inspect", ref], check=False, quiet=True).returncode == 0


def docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        proc = subprocess.run(
            ["docker", "info"],
            check=False,
            capture_output=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def setup_engine(cache: Path, notes: list[str]) -> Engine:
    wanted = os.environ.get("RMWATCH_IMAGE_TEST_ENGINE", "").strip()
    if wanted not in ("", "docker", "podman"):
        raise ImageTestError(f"RMWATCH_IMAGE_TEST_ENGINE={wanted!r}: use docker or podman")
    if wanted == "docker" or (not wanted and docker_answers()):
        if not docker_answers():
            raise ImageTestError("RMWATCH_IMAGE_TEST_ENGINE=docker but `docker info` fails")
        notes.append("docker daemon")
        return Engine("docker")
    missing = [tool for tool in ("podman", "mmdebstrap", "runc") if not shutil.which(tool)]
    if missing:
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            raise ImageTestError(
                f"no docker daemon answers and {', '.join(missing)} missing: install podman, "
                "mmdebstrap and runc (Debian: apt-get install podman mmdebstrap runc), "
                "or run as root on Debian to have them installed"
            )
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        sh(["apt-get", "update", "-q"], quiet=True, env=env)
        sh(["apt-get", "install", "-y", "-q", *APT_TOOLS], quiet=True, env=env)
        notes.append("installed " + " ".join(APT_TOOLS))
    cache.mkdir(parents=True, exist_ok=True)
    conf = cache / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    os.environ["CONTAINERS_CONF"] = str(conf)
    version = sh(["podman", "--version"], quiet=True).stdout.strip()
    notes.append(f"{version}, runc, CONTAINERS_CONF={conf}")
    return Engine("podman")


# ------------------------------------------------------------------------------------ base


def _apt_sources() -> tuple[list[str], bytes]:
    """mmdebstrap mirror arguments (the host's apt sources files) and their contents."""
    files = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    files += sorted(Path("/etc/apt/sources.list.d").glob("*.list"))
    if Path("/etc/apt/sources.list").is_file():
        files.insert(0, Path("/etc/apt/sources.list"))
    debian = [f for f in files if "debian" in f.read_text(errors="replace")]
    content = b"".join(f.read_bytes() for f in debian)
    return [str(f) for f in debian], content


def _extra_cas() -> list[Path]:
    """The host's locally added CA certificates (a TLS-intercepting proxy's among them)."""
    return sorted(Path("/usr/local/share/ca-certificates").rglob("*.crt"))


def _pip_conf() -> str:
    """A pip.conf for the base: the system CA bundle, and the host's index URL if it has one."""
    lines = ["[global]", "cert = /etc/ssl/certs/ca-certificates.crt"]
    index = os.environ.get("PIP_INDEX_URL", "").strip()
    if not index:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
            check=False,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        index = proc.stdout.strip() if proc.returncode == 0 else ""
    if index and not index.startswith("file:"):
        lines.append(f"index-url = {index}")
    return "\n".join(lines) + "\n"


def build_base(engine: Engine, cache: Path, notes: list[str]) -> str:
    mirrors, sources = _apt_sources()
    if not mirrors:
        raise ImageTestError(
            "no Debian apt sources found under /etc/apt: mmdebstrap needs a mirror"
        )
    cas = _extra_cas()
    pip_conf = _pip_conf()
    key = _hash(
        BASE_RECIPE,
        BASE_PACKAGES,
        sources,
        pip_conf,
        *[c.name.encode() + c.read_bytes() for c in cas],
    )
    ref = f"localhost/rmwatch-base:{key}"
    if engine.image_exists(ref):
        notes.append(f"cached {ref}")
        return ref
    work = Path(tempfile.mkdtemp(prefix="base-", dir=cache))
    try:
        (work / "pip.conf").write_text(pip_conf)
        ca_dir = work / "ca"
        ca_dir.mkdir()
        for i, ca in enumerate(cas):
            shutil.copy(ca, ca_dir / f"{i:02d}-{ca.name}")
        tar = work / "rootfs.tar"
        sh(
            [
                "mmdebstrap",
                "--variant=minbase",
                f"--include={BASE_PACKAGES}",
                '--aptopt=Acquire::Retries "3"',
                f'--customize-hook=mkdir -p "$1/usr/local/share/ca-certificates/host"'
                f' && cp {ca_dir}/. "$1/usr/local/share/ca-certificates/host/" -r'
                ' && chroot "$1" update-ca-certificates',
                f'--customize-hook=cp {work}/pip.conf "$1/etc/pip.conf"',
                '--customize-hook=chroot "$1" python3 -m venv /opt/python',
                '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin',
                "bookworm",
                str(tar),
                *mirrors,
            ],
            quiet=True,
            timeout=1200,
        )
        engine(
            "import",
            "--change",
            f"ENV PATH={BASE_PATH}",
            "--change",
            "ENV LANG=C.UTF-8",
            "--change",
            'CMD ["python"]',
            str(tar),
            ref,
            quiet=True,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    probe = engine(
        "run",
        "--rm",
        ref,
        "sh",
        "-c",
        "command -v python; command -v pip; python --version",
        quiet=True,
    ).stdout.split()
    if probe[:2] != ["/opt/python/bin/python", "/opt/python/bin/pip"]:
        raise ImageTestError(f"base {ref}: python/pip are not the venv's first on PATH: {probe}")
    notes.append(f"built {ref} ({' '.join(probe[2:])})")
    _prune(engine, "localhost/rmwatch-base", keep=ref)
    return ref


def _prune(engine: Engine, repo: str, keep: str) -> None:
    """Drop older tags of our own cache images (their inputs changed)."""
    refs = engine("images", "--format", "{{.Repository}}:{{.Tag}}", repo, quiet=True).stdout
    for ref in refs.split():
        if ref != keep and ref.startswith(repo + ":"):
            engine("rmi", ref, check=False, quiet=True)


def build_etcd_image(engine: Engine, base: str, cache: Path, notes: list[str]) -> str:
    if engine.name == "docker":
        if not engine.image_exists(DOCKER_ETCD_IMAGE):
            engine("pull", DOCKER_ETCD_IMAGE, quiet=True)
        notes.append(DOCKER_ETCD_IMAGE)
        return DOCKER_ETCD_IMAGE
    ref = build_local(
        engine, "localhost/rmwatch-etcd", ETCD_CONTAINERFILE, base, cache=cache, notes=notes
    )
    version = engine("run", "--rm", ref, "etcd", "--version", quiet=True).stdout.split("\n")[0]
    notes.append(version.strip())
    return ref


def build_local(
    engine: Engine, repo: str, containerfile: str, base: str, *, cache: Path, notes: list[str]
) -> str:
    """An image from the base plus Debian packages, tagged by a hash of base and recipe."""
    ref = f"{repo}:{_hash(base, containerfile)}"
    if engine.image_exists(ref):
        notes.append(f"cached {ref}")
        return ref
    with tempfile.TemporaryDirectory(dir=cache) as ctx:
        (Path(ctx) / "Containerfile").write_text(containerfile)
        engine(
            "build",
            "--format",
            "docker",
            "--build-arg",
            f"BASE={base}",
            "-t",
            ref,
            ctx,
            quiet=True,
            timeout=1200,
        )
    notes.append(f"built {ref}")
    _prune(engine, repo, keep=ref)
    return ref


def build_image(engine: Engine, base: str | None, notes: list[str]) -> None:
    args = ["build", "-f", "docker/Dockerfile", "-t", IMAGE]
    if engine.name == "podman":
        args += ["--format", "docker", "--build-arg", f"PYTHON_IMAGE={base}"]
    previous = engine("image", "inspect", "--format", "{{.Id}}", IMAGE, check=False, quiet=True)
    with contextlib.chdir(ROOT):
        engine(*args, ".", quiet=True, timeout=1800)
    now = engine("image", "inspect", "--format", "{{.Id}} {{.Size}}", IMAGE, quiet=True)
    image_id, size = now.stdout.split()
    notes.append(f"{IMAGE} {int(size) / 1e6:.0f} MB")
    old_id = previous.stdout.strip()
    if previous.returncode == 0 and old_id and old_id != image_id:
        # The last run's image, now untagged: drop it so runs do not pile up images.
        engine("rmi", old_id, check=False, quiet=True)


# ---------------------------------------------------------------------------------- checks


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise ImageTestError(what)
    print(f"  ok: {what}", flush=True)


def wait_http(url: str, timeout: float, status: int = 200) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(url, timeout=2)
            if answer.status_code == status:
                return answer
            last = f"{answer.status_code} {answer.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise ImageTestError(f"GET {url}: no {status} within {timeout:.0f} s (last: {last})")


class Containers:
    """Containers started by the checks; removed at the end, logs shown on failure."""

    def __init__(self, engine: Engine, keep: bool) -> None:
        self.engine = engine
        self.names: list[str] = []
        self.suffix = f"{os.getpid()}"
        self.keep = keep

    def start(self, role: str, image: str, *args: str, env: dict[str, str]) -> str:
        name = f"rmwatch-it-{role}-{self.suffix}"
        env_args = [f"--env={k}={v}" for k, v in env.items()]
        self.engine(
            "run", "-d", "--name", name, "--network=host", *env_args, image, *args, quiet=True
        )
        self.names.append(name)
        return name

    def show_logs(self) -> None:
        for name in self.names:
            logs = sh([self.engine.name, "logs", name], check=False, quiet=True)
            print(f"--- logs of {name} ---\n{_tail(logs.stdout + logs.stderr, 40)}")

    def remove(self) -> None:
        if self.keep:
            print(f"kept containers: {' '.join(self.names)}")
            return
        for name in reversed(self.names):
            sh([self.engine.name, "rm", "-f", "-t", "2", name], check=False, quiet=True)


def healthcheck(engine: Engine, name: str) -> None:
    if engine.name == "podman":
        proc = engine("healthcheck", "run", name, check=False, quiet=True)
        expect(
            proc.returncode == 0,
            f"HEALTHCHECK of {name} passes (podman healthcheck run: "
            f"{(proc.stdout + proc.stderr).strip() or 'exit 0'})",
        )
        return
    deadline = time.monotonic() + 60
    status = ""
    while time.monotonic() < deadline:
        status = engine(
            "inspect", "--format", "{{.State.Health.Status}}", name, quiet=True
        ).stdout.strip()
        if status == "healthy":
            break
        time.sleep(1)
    expect(status == "healthy", f"HEALTHCHECK of {name} passes (docker: {status})")


def process_uid(engine: Engine, name: str) -> tuple[int, int]:
    """(uid inside via `exec id -u`, real uid of PID 1 as the host sees it)."""
    inside = int(engine("exec", name, "id", "-u", quiet=True).stdout.strip())
    pid = engine("inspect", "--format", "{{.State.Pid}}", name, quiet=True).stdout.strip()
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE)
    return inside, int(match.group(1)) if match else -1


def stop_and_wait(engine: Engine, name: str, timeout: float) -> tuple[int, float]:
    start = time.monotonic()
    engine("kill", "--signal", "TERM", name, quiet=True)
    code = engine("wait", name, quiet=True, timeout=timeout).stdout.strip().splitlines()[-1]
    return int(code), time.monotonic() - start


def check_containers(engine: Engine, etcd_image: str, keep: bool, notes: list[str]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    out = engine("run", "--rm", IMAGE, "--version", quiet=True).stdout.strip()
    expect(out == f"rmwatch {version}", f"`rmwatch --version` prints 'rmwatch {version}' ({out!r})")

    c = Containers(engine, keep)
    try:
        _check_running(engine, etcd_image, c, notes)
    except BaseException:
        c.show_logs()
        raise
    finally:
        c.remove()


def _check_running(engine: Engine, etcd_image: str, c: Containers, notes: list[str]) -> None:
    client, peer, writer_port, replica_port = (free_port() for _ in range(4))
    c.start(
        "etcd",
        etcd_image,
        "etcd",
        "--name=it",
        "--data-dir=/tmp/etcd-data",
        f"--listen-client-urls=http://127.0.0.1:{client}",
        f"--advertise-client-urls=http://127.0.0.1:{client}",
        f"--listen-peer-urls=http://127.0.0.1:{peer}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
        f"--initial-cluster=it=http://127.0.0.1:{peer}",
        env={},
    )
    wait_http(f"http://127.0.0.1:{client}/health", 30)
    token = "image-test-token"
    writer = c.start(
        "writer",
        IMAGE,
        "writer",
        "--name=w1",
        f"--advertise-url=http://127.0.0.1:{writer_port}",
        env={
            "RMWATCH_LISTEN": f"127.0.0.1:{writer_port}",
            "RMWATCH_ETCD": f"127.0.0.1:{client}",
            "RMWATCH_ROLE": "PDMetaOnly",
            "RMWATCH_TOKEN": token,
        },
    )
    replica = c.start(
        "replica",
        IMAGE,
        "replica",
        "--drain-seconds=2",
        env={"RMWATCH_LISTEN": f"127.0.0.1:{replica_port}", "RMWATCH_ETCD": f"127.0.0.1:{client}"},
    )
    w = f"http://127.0.0.1:{writer_port}"
    r = f"http://127.0.0.1:{replica_port}"
    wait_http(f"{w}/health", 60)
    expect(True, f"writer /health 200 ({w})")
    wait_http(f"{r}/health", 60)
    expect(True, f"replica /health 200 ({r})")
    wait_http(f"{r}/ready", 60)
    expect(True, "replica /ready 200")

    # The writer elects itself leader shortly after start: retry a write refused before that.
    deadline = time.monotonic() + 30
    while True:
        created = httpx.post(
            f"{w}{API}/config/group",
            json=GROUP,
            timeout=10,
            headers={"Authorization": f"Bearer {token}"},
        )
        if created.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    expect(
        created.status_code == 200,
        f"POST {API}/config/group through the writer: {created.status_code} {created.text}",
    )
    revision = int(created.headers["X-Revision"])
    read = httpx.get(
        f"{r}{API}/config/group/{GROUP['name']}", params={"min_revision": revision}, timeout=10
    )
    body = read.json() if read.status_code == 200 else {}
    expect(
        read.status_code == 200
        and int(read.headers["X-Revision"]) >= revision
        and body.get("name") == GROUP["name"]
        and body["r_u_settings"]["r_u"]["settings"]["fill_rate"] == 1234,
        f"replica reads the write back with min_revision={revision}: {read.status_code} "
        f"X-Revision={read.headers.get('X-Revision')} {read.text[:160]}",
    )
    notes.append(f"write at revision {revision} read back")

    for name in (writer, replica):
        healthcheck(engine, name)
    for name in (writer, replica):
        inside, host = process_uid(engine, name)
        expect(
            inside == RUN_AS_UID and host == RUN_AS_UID,
            f"{name} runs as uid {RUN_AS_UID} (id -u: {inside}, PID 1 on the host: {host})",
        )

    # SIGTERM: the replica keeps serving with /ready at 503 for --drain-seconds, then exits 0.
    start = time.monotonic()
    engine("kill", "--signal", "TERM", replica, quiet=True)
    drained = False
    while time.monotonic() - start < 10:
        try:
            drained = httpx.get(f"{r}/ready", timeout=1).status_code == 503
        except httpx.HTTPError:
            break
        if drained:
            break
        time.sleep(0.1)
    expect(drained, "replica: after SIGTERM, /ready answers 503 while it still serves (drain)")
    code = engine("wait", replica, quiet=True, timeout=60).stdout.strip().splitlines()[-1]
    took = time.monotonic() - start
    expect(code == "0", f"replica exits {code} {took:.1f} s after SIGTERM (expect 0)")
    code_w, took_w = stop_and_wait(engine, writer, 60)
    expect(code_w == 0, f"writer exits {code_w} {took_w:.1f} s after SIGTERM (expect 0)")
    notes.append(f"SIGTERM: replica {took:.1f} s, writer {took_w:.1f} s")


# --------------------------------------------------------------------------------- compose


def podman_compose(cache: Path, notes: list[str]) -> list[str]:
    """podman-compose from PyPI in its own venv under the cache (Debian's 1.0 is too old)."""
    found = shutil.which("podman-compose")
    venv = cache / "podman-compose-venv"
    exe = venv / "bin" / "podman-compose"
    works = exe.exists() and sh([str(exe), "--version"], check=False, quiet=True).returncode == 0
    if not works:  # missing, or its Python is gone (the venv outlives the interpreter)
        shutil.rmtree(venv, ignore_errors=True)
        sh([sys.executable, "-m", "venv", str(venv)], quiet=True)
        sh(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "podman-compose>=1.1"],
            quiet=True,
        )
    out = sh([str(exe), "--version"], quiet=True).stdout
    version = next((line for line in out.splitlines() if "compose" in line), out.strip())
    notes.append(version + (f" (ignoring {found})" if found else ""))
    return [str(exe)]


class Stack:
    """docker/compose.yaml under podman-compose, as project COMPOSE_PROJECT, with the local
    images swapped in by an override file (no registry is reachable here)."""

    def __init__(
        self, engine: Engine, cache: Path, images: dict[str, str], notes: list[str]
    ) -> None:
        self.engine = engine
        self.override = cache / "compose.override.yaml"
        lines = ["services:"]
        for service, image in images.items():
            lines += [f"  {service}:", f"    image: {image}"]
        self.override.write_text("\n".join(lines) + "\n")
        self.cmd = [
            *podman_compose(cache, notes),
            "-p",
            COMPOSE_PROJECT,
            "-f",
            str(ROOT / "docker/compose.yaml"),
            "-f",
            str(self.override),
        ]

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh([*self.cmd, *args], quiet=True, check=check, timeout=600)

    def container(self, service: str) -> str:
        out = self.engine(
            "ps",
            "-a",
            "--format",
            "{{.Names}}",
            "--filter",
            f"label=io.podman.compose.project={COMPOSE_PROJECT}",
            "--filter",
            f"label=com.docker.compose.service={service}",
            quiet=True,
        ).stdout.split()
        if len(out) != 1:
            raise ImageTestError(f"compose service {service}: expected one container, found {out}")
        return out[0]

    def wait_healthy(self, service: str, timeout: float) -> None:
        """Run the service's HEALTHCHECK by hand until it passes (no systemd schedules it)."""
        name = self.container(service)
        deadline = time.monotonic() + timeout
        while True:
            proc = self.engine("healthcheck", "run", name, check=False, quiet=True)
            if proc.returncode == 0:
                print(f"  ok: {service} healthy", flush=True)
                return
            if time.monotonic() > deadline:
                raise ImageTestError(
                    f"{service}: HEALTHCHECK still failing after {timeout:.0f} s: "
                    f"{(proc.stdout + proc.stderr).strip()}"
                )
            time.sleep(1)

    def show_logs(self) -> None:
        for service in [*ETCD_SERVICES, "etcd-setup", *RMWATCH_SERVICES, "prometheus"]:
            logs = self.engine(
                "logs", "--tail", "25", self.container(service), check=False, quiet=True
            )
            print(f"--- logs of {service} ---\n{logs.stdout}{logs.stderr}")

    def up(self, round_: int) -> None:
        """What `docker compose up` does with its depends_on conditions, step by step:
        podman-compose ignores `condition: service_healthy` and fails on dependency links."""
        self.compose("up", "-d", "--no-deps", *ETCD_SERVICES)
        for service in ETCD_SERVICES:
            self.wait_healthy(service, 90)
        self.compose("up", "-d", "--no-deps", "etcd-setup")
        setup = self.container("etcd-setup")
        code = self.engine("wait", setup, quiet=True, timeout=180).stdout.strip().splitlines()
        logs = self.engine("logs", setup, quiet=True)
        expect(
            code[-1:] == ["0"],
            f"round {round_}: etcd-setup exits 0 (got {code[-1:]}): "
            + _tail(logs.stdout + logs.stderr, 3 if code[-1:] == ["0"] else 30),
        )
        # Auth is on now: the members' HEALTHCHECK must still pass (it needs no credentials).
        for service in ETCD_SERVICES:
            self.wait_healthy(service, 30)
        self.compose("up", "-d", "--no-deps", *RMWATCH_SERVICES, "prometheus")
        for service in ("writer1", "writer2"):
            wait_http(f"http://127.0.0.1:{COMPOSE_PORTS[service]}/health", 90)
        for service in ("replica1", "replica2"):
            wait_http(f"http://127.0.0.1:{COMPOSE_PORTS[service]}/ready", 90)
        expect(True, f"round {round_}: writers /health and replicas /ready answer 200")
        for service in RMWATCH_SERVICES:
            self.wait_healthy(service, 30)


def _leaders() -> dict[str, float]:
    found = {}
    for service in ("writer1", "writer2"):
        text = httpx.get(f"http://127.0.0.1:{COMPOSE_PORTS[service]}/metrics", timeout=5).text
        match = re.search(r"^rmwatch_writer_is_leader (\S+)$", text, re.MULTILINE)
        found[service] = float(match.group(1)) if match else -1.0
    return found


def check_stack_round(round_: int, earlier: tuple[str, int] | None) -> tuple[str, int]:
    deadline = time.monotonic() + 30
    while (leaders := _leaders()) and sorted(leaders.values()) != [0.0, 1.0]:
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    expect(
        sorted(leaders.values()) == [0.0, 1.0],
        f"round {round_}: exactly one of the two writers leads ({leaders})",
    )
    token = (ROOT / "docker/secrets/writer-token").read_text().strip()
    name = f"compose_rg_{round_}"
    follower = next(s for s, v in leaders.items() if v == 0.0)
    body = {**GROUP, "name": name}
    created = httpx.post(
        f"http://127.0.0.1:{COMPOSE_PORTS[follower]}{API}/config/group",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=20,
    )
    expect(
        created.status_code == 200,
        f"round {round_}: a write through the follower {follower} (forwarded to the leader): "
        f"{created.status_code} {created.text[:200]}",
    )
    revision = int(created.headers["X-Revision"])
    for replica in ("replica1", "replica2"):
        for group, rev in [(name, revision), *([earlier] if earlier else [])]:
            read = httpx.get(
                f"http://127.0.0.1:{COMPOSE_PORTS[replica]}{API}/config/group/{group}",
                params={"min_revision": rev},
                timeout=10,
            )
            expect(
                read.status_code == 200 and read.json().get("name") == group,
                f"round {round_}: {replica} serves {group} (min_revision={rev}): "
                f"{read.status_code} {read.text[:120]}",
            )
    return name, revision


def check_prometheus(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    health: dict[str, str] = {}
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(
                f"http://127.0.0.1:{COMPOSE_PORTS['prometheus']}/api/v1/targets", timeout=5
            ).json()
            health = {t["labels"]["instance"]: t["health"] for t in answer["data"]["activeTargets"]}
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        want = {f"{s}:{8080 if s.startswith('writer') else 8081}" for s in RMWATCH_SERVICES}
        if set(health) == want and set(health.values()) == {"up"}:
            expect(True, f"Prometheus scrapes all four targets: {sorted(health)}")
            return
        time.sleep(1)
    raise ImageTestError(f"Prometheus targets not all up within {timeout:.0f} s: {health}")


def run_stack(
    engine: Engine, base: str, etcd_image: str, *, cache: Path, keep: bool, notes: list[str]
) -> None:
    busy = []
    for service, port in COMPOSE_PORTS.items():
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                busy.append(f"{service} {port}")
    prometheus = build_local(
        engine,
        "localhost/rmwatch-prometheus",
        PROMETHEUS_CONTAINERFILE,
        base,
        cache=cache,
        notes=notes,
    )
    images = dict.fromkeys(ETCD_SERVICES, etcd_image)
    images.update(dict.fromkeys(["etcd-setup", *RMWATCH_SERVICES], IMAGE))
    images["prometheus"] = prometheus
    stack = Stack(engine, cache, images, notes)
    stack.compose("down", "-v", "-t", "2", check=False)  # leftovers of an interrupted run
    if busy:
        raise ImageTestError(f"compose publishes host ports that are in use: {', '.join(busy)}")
    try:
        stack.up(1)
        first = check_stack_round(1, None)
        check_prometheus(60)
        # A second `up` on the same volumes: setup runs again against etcd with auth on.
        stack.compose("down", "-t", "10")
        stack.up(2)
        check_stack_round(2, first)
        notes.append(
            "3 etcd + auth, setup x2, 2 writers (1 leader), 2 replicas, Prometheus; "
            "Grafana not started (no Debian package, no registry)"
        )
    except BaseException:
        with contextlib.suppress(Exception):
            stack.show_logs()
        raise
    finally:
        if keep:
            print(f"kept the stack: {' '.join(stack.cmd)} down -v")
        else:
            stack.compose("down", "-v", "-t", "5", check=False)


# ----------------------------------------------------------------------------------- suite


@contextlib.contextmanager
def docker_api(engine: Engine, cache: Path) -> Iterator[str]:
    """DOCKER_HOST for testcontainers: docker's own, or a `podman system service` we start."""
    if engine.name == "docker":
        yield os.environ.get("DOCKER_HOST", "")
        return
    sock = cache / f"podman-{os.getpid()}.sock"
    sock.unlink(missing_ok=True)
    log = open(cache / "podman-service.log", "w")  # noqa: SIM115
    print(f"$ podman system service --time=0 unix://{sock}", flush=True)
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{sock}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if service.poll() is not None or time.monotonic() > deadline:
                raise ImageTestError(
                    f"podman system service did not listen on {sock}: see {log.name}"
                )
            time.sleep(0.1)
        yield f"unix://{sock}"
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(10)
        except subprocess.TimeoutExpired:
            service.kill()
        log.close()
        sock.unlink(missing_ok=True)


def run_suite(
    engine: Engine, etcd_image: str, cache: Path, tests: list[str], notes: list[str]
) -> None:
    with docker_api(engine, cache) as docker_host:
        # No reaper container (its image is on a registry); and the ports as mapped on this
        # host's loopback, also where testcontainers believes it runs inside a container
        # (/.dockerenv), in which case it would go to the bridge's gateway address instead.
        env = {
            **os.environ,
            "RMWATCH_TEST_ETCD_IMAGE": etcd_image,
            "TESTCONTAINERS_RYUK_DISABLED": "true",
            "TESTCONTAINERS_CONNECTION_MODE": "docker_host",
            "TESTCONTAINERS_HOST_OVERRIDE": "127.0.0.1",
        }
        env.pop("RMWATCH_TEST_ETCD_ENDPOINTS", None)
        env.pop("RMWATCH_IMAGE_TEST", None)
        if docker_host:
            env["DOCKER_HOST"] = docker_host
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
        print(
            "$ RMWATCH_TEST_ETCD_IMAGE="
            + etcd_image
            + " DOCKER_HOST="
            + docker_host
            + " "
            + " ".join(cmd),
            flush=True,
        )
        proc = subprocess.run(
            cmd,
            check=False,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=1200,
        )
    out = proc.stdout + proc.stderr
    print(_tail(out, 12), flush=True)
    source = re.search(r"^etcd source used: (.*)$", out, re.MULTILINE)
    if proc.returncode != 0:
        raise ImageTestError(
            f"the suite against the container etcd failed (exit {proc.returncode})"
        )
    expect(
        source is not None and source.group(1).startswith(f"docker:{etcd_image}"),
        f"the session etcd was the container ({source.group(1) if source else 'not reported'})",
    )
    counts = re.findall(r"(\d+ passed.*?) in ", out)
    notes.append(f"{counts[-1] if counts else '?'} against {etcd_image}")


# ------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/image-test",
        description="Build the rmwatch image from docker/Dockerfile and prove it runs "
        "(docker if a daemon answers, else podman with a local Debian base).",
    )
    parser.add_argument(
        "--cache",
        default=os.environ.get("RMWATCH_IMAGE_TEST_CACHE", "/var/cache/rmwatch-image-test"),
        help="state folder: containers.conf, build scratch, podman socket "
        "(images themselves stay in the engine's storage)",
    )
    parser.add_argument(
        "--no-suite",
        action="store_true",
        help="skip running the suite's etcd tests against the container etcd",
    )
    parser.add_argument(
        "--suite",
        nargs="+",
        metavar="TEST",
        default=None,
        help=f"pytest arguments for that step (default: {' '.join(SUITE)})",
    )
    parser.add_argument(
        "--no-compose",
        action="store_true",
        help="skip bringing up docker/compose.yaml (podman only)",
    )
    parser.add_argument(
        "--only",
        choices=["checks", "compose", "suite"],
        default=None,
        help="build what is needed, then run only this part",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the check containers and the compose stack running",
    )
    args = parser.parse_args(argv)
    cache = Path(args.cache)
    run = Run()
    status = 0
    try:
        with run.step("engine") as notes:
            engine = setup_engine(cache, notes)
        base = None
        if engine.name == "podman":
            with run.step("base") as notes:
                base = build_base(engine, cache, notes)
        with run.step("etcd image") as notes:
            etcd_image = build_etcd_image(engine, base or "", cache, notes)
        with run.step("image") as notes:
            build_image(engine, base, notes)
        if args.only in (None, "checks"):
            with run.step("checks") as notes:
                check_containers(engine, etcd_image, args.keep, notes)
        if args.only in (None, "compose") and not args.no_compose:
            with run.step("compose") as notes:
                if engine.name != "podman":
                    notes.append("skipped: with docker run `docker compose` yourself")
                else:
                    run_stack(
                        engine, base or "", etcd_image, cache=cache, keep=args.keep, notes=notes
                    )
        if args.only in (None, "suite") and not args.no_suite:
            with run.step("suite") as notes:
                run_suite(engine, etcd_image, cache, args.suite or SUITE, notes)
    except (ImageTestError, subprocess.TimeoutExpired) as exc:
        print(f"\nimage-test FAILED in step '{run.timings[-1][0]}':\n{exc}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        status = 130
    run.summary()
    print("image-test: " + ("all checks passed" if status == 0 else "FAILED"))
    return status


if __name__ == "__main__":
    sys.exit(main())
