"""etcd TLS + authentication end to end, against a real etcd serving https with client-cert
auth and user/password auth enabled by ``rmwatch etcd-setup-auth``.

One private etcd for the module (PKI generated here with ``cryptography``); every test uses
the least-privilege users the setup command created, never root, unless it says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
import structlog
from fastapi.testclient import TestClient
from harness import EtcdMember, free_port
from process_support import stop_process
from pydantic import SecretStr
from pyetcd import etcdrpc
from pyetcd.etcdrpc import auth_pb2
from tls_support import Pki, make_pki

from rmwatch.cli.etcd_auth import replica_grants, writer_grants
from rmwatch.cli.writer import WriterSettings
from rmwatch.errors import EtcdAuthError, EtcdUnavailableError, NotReadyError
from rmwatch.http.sidecar_app import create_sidecar_app
from rmwatch.http.writer_app import PREFIX, create_writer_app
from rmwatch.store.etcd import EtcdConfig, connect
from rmwatch.store.keys import KeyLayout
from rmwatch.store.leadership import Leadership, leader_key
from rmwatch.store.models import (
    GroupRequestUnitSettings,
    ResourceGroup,
    TokenBucket,
    TokenLimitSettings,
)
from rmwatch.store.roles import WriteRole
from rmwatch.store.writer import Writer
from rmwatch.watcher.replica import Replica

REPO = Path(__file__).resolve().parent.parent
ROOT_PREFIX = "/auth-test/"
ROOT_PW = "root-Pa55-word"
WRITER_PW = "writer-S3cret-pw"
REPLICA_PW = "replica-S3cret-pw"
BEARER = "bearer-T0ken-value"
# A wrong credential must fail as fast as one round trip, far below this.
FAST = 10.0


@dataclass
class SecureEtcd:
    member: EtcdMember
    pki: Pki
    secrets: Path

    def config(
        self, user: str | None = None, password: str | None = None, **kw: object
    ) -> EtcdConfig:
        """TLS (CA + client certificate) to the member, as ``user`` when given."""
        base: dict[str, object] = {
            "ca_cert": str(self.pki.ca),
            "cert": str(self.pki.client_cert),
            "key": str(self.pki.client_key),
            "timeout": 3.0,
        }
        base.update(kw)
        return EtcdConfig.parse(
            self.member.endpoint,
            user=user,
            password=SecretStr(password) if password is not None else None,
            **base,
        )

    def writer(self) -> EtcdConfig:
        return self.config("rmwatch-writer", WRITER_PW)

    def replica(self) -> EtcdConfig:
        return self.config("rmwatch-replica", REPLICA_PW)

    def root(self) -> EtcdConfig:
        return self.config("root", ROOT_PW)

    def tls_flags(self) -> list[str]:
        return [
            "--etcd",
            f"https://{self.member.endpoint}",
            "--etcd-ca",
            str(self.pki.ca),
            "--etcd-cert",
            str(self.pki.client_cert),
            "--etcd-key",
            str(self.pki.client_key),
        ]


def _secret_file(directory: Path, name: str, value: str) -> Path:
    path = directory / name
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def _rmwatch(
    *args: str, timeout: float = 30, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rmwatch", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        check=False,
    )


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureEtcd]:
    """An https etcd with --client-cert-auth, then auth enabled by ``etcd-setup-auth``."""
    directory = tmp_path_factory.mktemp("pki")
    pki = make_pki(directory)

    def probe(member: EtcdMember) -> None:
        # Status needs TLS but no token, so it also works once auth is enabled.
        creds = grpc.ssl_channel_credentials(
            pki.ca.read_bytes(), pki.client_key.read_bytes(), pki.client_cert.read_bytes()
        )
        channel = grpc.secure_channel(member.endpoint, creds)
        try:
            etcdrpc.MaintenanceStub(channel).Status(etcdrpc.StatusRequest(), timeout=1.0)
        finally:
            channel.close()

    member = EtcdMember(
        "tls0",
        client_scheme="https",
        probe=probe,
        extra_args=[
            f"--cert-file={pki.server_cert}",
            f"--key-file={pki.server_key}",
            f"--trusted-ca-file={pki.ca}",
            "--client-cert-auth",
        ],
    )
    with member:
        secrets = directory / "secrets"
        secrets.mkdir()
        env = SecureEtcd(member, pki, secrets)
        result = _rmwatch(
            "etcd-setup-auth",
            *env.tls_flags(),
            "--root-prefix",
            ROOT_PREFIX,
            "--etcd-user",
            "root",
            "--etcd-password-file",
            str(_secret_file(secrets, "root", ROOT_PW)),
            "--writer-password-file",
            str(_secret_file(secrets, "writer", WRITER_PW)),
            "--replica-password-file",
            str(_secret_file(secrets, "replica", REPLICA_PW)),
            "--enable-auth",
        )
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["auth_enabled"] is True
        for secret in (ROOT_PW, WRITER_PW, REPLICA_PW):
            assert secret not in result.stdout + result.stderr
        yield env


def ru_group(name: str, fill: int = 100) -> ResourceGroup:
    return ResourceGroup(
        name=name,
        r_u_settings=GroupRequestUnitSettings(
            r_u=TokenBucket(settings=TokenLimitSettings(fill_rate=fill, burst_limit=fill * 2))
        ),
        priority=8,
    )


@pytest.fixture
def writer_node(secure: SecureEtcd) -> Iterator[tuple[Writer, Leadership]]:
    """A leading writer that connected with the writer user's credentials over TLS."""
    client = connect(secure.writer())
    layout = KeyLayout(ROOT_PREFIX)
    leadership = Leadership(
        client=client,
        layout=layout,
        name="w1",
        address="http://127.0.0.1:1",
        ttl=2.0,
        poll_interval=0.05,
    )
    writer = Writer(
        client=client, layout=layout, role=WriteRole.PD_META_ONLY, leadership=leadership
    )
    leadership.start()
    try:
        assert leadership.wait_until_leader(5.0), "writer user could not win the election"
        yield writer, leadership
    finally:
        leadership.close()
        client.close()


# ---- the setup command ------------------------------------------------------------------


def _perms(client: object, role: str) -> set[tuple[int, str, str]]:
    response = client.authstub.RoleGet(  # type: ignore[attr-defined]
        etcdrpc.AuthRoleGetRequest(role=role), 3.0
    )
    return {(p.permType, p.key.decode(), p.range_end.decode()) for p in response.perm}


def _expected(grants: list) -> set[tuple[int, str, str]]:  # type: ignore[type-arg]
    out = set()
    for g in grants:
        perm = g.permission()
        out.add((perm.permType, perm.key.decode(), perm.range_end.decode()))
    return out


def test_setup_grants_exactly_the_planned_permissions(secure: SecureEtcd) -> None:
    """Writer: readwrite metadata + leader prefix, read keyspace index; replica: read only."""
    layout = KeyLayout(ROOT_PREFIX)
    with connect(secure.root()) as root:
        assert _perms(root, "rmwatch-writer") == _expected(writer_grants(layout))
        assert _perms(root, "rmwatch-replica") == _expected(replica_grants(layout))
        assert {p[0] for p in _perms(root, "rmwatch-replica")} == {auth_pb2.Permission.READ}
        assert leader_key(layout).startswith(f"{ROOT_PREFIX}rmwatch/writer/")


def test_setup_is_idempotent_revokes_extra_grants_and_rotates(secure: SecureEtcd) -> None:
    """A re-run converges: a hand-made extra grant is revoked, a new password takes effect."""
    with connect(secure.root()) as root:
        extra = auth_pb2.Permission(
            permType=auth_pb2.Permission.READWRITE, key=b"/other/", range_end=b"/other0"
        )
        root.authstub.RoleGrantPermission(
            etcdrpc.AuthRoleGrantPermissionRequest(name="rmwatch-replica", perm=extra), 3.0
        )
    new_pw = REPLICA_PW + "-rotated"
    try:
        result = _rmwatch(
            "etcd-setup-auth",
            *secure.tls_flags(),
            "--root-prefix",
            ROOT_PREFIX,
            "--etcd-user",
            "root",
            "--etcd-password-file",
            str(secure.secrets / "root"),
            "--replica-password-file",
            str(_secret_file(secure.secrets, "replica2", new_pw)),
        )
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        replica_role = next(r for r in summary["roles"] if r["role"] == "rmwatch-replica")
        assert replica_role["revoked"] == ["readwrite /other/"]
        users = {u["user"]: u["outcome"] for u in summary["users"]}
        assert users == {"rmwatch-writer": "exists", "rmwatch-replica": "password changed"}
        with connect(secure.root()) as root:
            assert _perms(root, "rmwatch-replica") == _expected(
                replica_grants(KeyLayout(ROOT_PREFIX))
            )
        with pytest.raises(EtcdAuthError):
            connect(secure.replica())  # the old password no longer works
        connect(secure.config("rmwatch-replica", new_pw)).close()
    finally:
        result = _rmwatch(
            "etcd-setup-auth",
            *secure.tls_flags(),
            "--root-prefix",
            ROOT_PREFIX,
            "--etcd-user",
            "root",
            "--etcd-password-file",
            str(secure.secrets / "root"),
            "--replica-password-file",
            str(secure.secrets / "replica"),
        )
        assert result.returncode == 0, result.stderr


def test_setup_rerun_with_the_same_passwords_changes_nothing(secure: SecureEtcd) -> None:
    """Unchanged password files: no password change (it would make every client
    re-authenticate), every grant already in place, nothing revoked."""
    result = _rmwatch(
        "etcd-setup-auth",
        *secure.tls_flags(),
        "--root-prefix",
        ROOT_PREFIX,
        "--etcd-user",
        "root",
        "--etcd-password-file",
        str(secure.secrets / "root"),
        "--writer-password-file",
        str(secure.secrets / "writer"),
        "--replica-password-file",
        str(secure.secrets / "replica"),
        "--enable-auth",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert {u["user"]: u["outcome"] for u in summary["users"]} == {
        "rmwatch-writer": "exists",
        "rmwatch-replica": "exists",
    }
    assert all(role["revoked"] == [] for role in summary["roles"])
    assert summary["auth_enabled"] is True


def test_setup_with_replica_credentials_is_refused(secure: SecureEtcd) -> None:
    """Only root may change auth: the replica user gets a clear refusal, exit status 1."""
    result = _rmwatch(
        "etcd-setup-auth",
        *secure.tls_flags(),
        "--root-prefix",
        ROOT_PREFIX,
        "--etcd-user",
        "rmwatch-replica",
        "--etcd-password-file",
        str(secure.secrets / "replica"),
    )
    assert result.returncode == 1
    assert "permission denied" in result.stderr
    assert REPLICA_PW not in result.stderr + result.stdout


# ---- what each user can do ----------------------------------------------------------------


def test_replica_loads_and_serves_over_tls_with_auth(
    secure: SecureEtcd, writer_node: tuple[Writer, Leadership]
) -> None:
    """The replica user loads the snapshot, follows the watch, and the sidecar serves it."""
    writer, _ = writer_node
    rev = writer.add_group(ru_group("tls-g1"))
    replica = Replica(etcd=secure.replica(), root_prefix=ROOT_PREFIX)
    with replica:
        replica.wait_ready(10)
        seen = replica.get_group("tls-g1", min_revision=rev)
        assert seen.value is not None
        assert seen.value.name == "tls-g1"
        # Watch: a later write arrives through the authenticated stream.
        rev2 = writer.modify_group(ru_group("tls-g1", fill=555))
        later = replica.get_group("tls-g1", min_revision=rev2, timeout=5)
        assert later.value is not None
        assert later.revision >= rev2
        app = create_sidecar_app(replica, writer_url=None, discover_leader=None, forward=False)
        with TestClient(app) as http:
            assert http.get("/ready").status_code == 200
            assert http.get("/health").status_code == 200
            body = http.get(f"{PREFIX}/config/group/tls-g1").json()
            assert body["r_u_settings"]["r_u"]["settings"]["fill_rate"] == 555


def test_replica_credentials_cannot_write(secure: SecureEtcd) -> None:
    """The replica user's put, delete and txn under the metadata prefix are denied."""
    layout = KeyLayout(ROOT_PREFIX)
    with connect(secure.replica()) as client:
        key = layout.settings("evil")
        attempts: list[Callable[[], object]] = [
            lambda: client.put(key, b"x"),
            lambda: client.delete(layout.controller()),
            lambda: client.put(leader_key(layout), b"{}"),  # cannot fake a leader either
        ]
        for attempt in attempts:
            with pytest.raises(grpc.RpcError) as err:
                attempt()
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert client.get(key)[0] is None  # reads are allowed, and nothing was written
        with pytest.raises(grpc.RpcError) as err:
            client.get("/outside/anything")
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_writer_user_writes_only_its_prefixes(
    secure: SecureEtcd, writer_node: tuple[Writer, Leadership]
) -> None:
    """The writer user leads (lease + leader key) and writes metadata, and nothing else."""
    writer, leadership = writer_node
    assert leadership.epoch is not None
    rev = writer.set_service_limit(None, 42.0)
    assert rev > 0
    with connect(secure.replica()) as reader:
        value, _ = reader.get(KeyLayout(ROOT_PREFIX).service_limit(0xFFFFFFFF))
        assert value is not None
        assert float(value) == 42.0
    with pytest.raises(grpc.RpcError) as err:
        writer.client.put("/outside/key", b"x")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_unauthenticated_tls_client_is_denied(secure: SecureEtcd) -> None:
    """TLS alone (a trusted client certificate, no user) reads nothing: the cert's CN is
    not a user, so every permission comes from user/password."""
    with connect(secure.config()) as client, pytest.raises(grpc.RpcError) as err:
        client.get(KeyLayout(ROOT_PREFIX).controller())
    assert err.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT)


# ---- wrong credentials fail fast and say why ----------------------------------------------


def test_wrong_password_is_a_fast_typed_error(secure: SecureEtcd) -> None:
    started = time.monotonic()
    with pytest.raises(EtcdAuthError) as err:
        connect(secure.config("rmwatch-replica", "not-the-password"))
    assert time.monotonic() - started < FAST
    message = str(err.value)
    assert "rmwatch-replica" in message
    assert "authentication failed" in message
    assert "not-the-password" not in message
    # The library surfaces it from start(), not as an endless not-ready.
    replica = Replica(etcd=secure.config("rmwatch-replica", "nope"), root_prefix=ROOT_PREFIX)
    started = time.monotonic()
    with pytest.raises(EtcdAuthError):
        replica.start()
    assert time.monotonic() - started < FAST
    replica.close()


def test_unknown_user_is_a_fast_typed_error(secure: SecureEtcd) -> None:
    started = time.monotonic()
    with pytest.raises(EtcdAuthError, match="nobody"):
        connect(secure.config("nobody", "pw"))
    assert time.monotonic() - started < FAST


@pytest.mark.parametrize(
    ("ca", "cert", "key", "why"),
    [
        ("other_ca", "client_cert", "client_key", "CERTIFICATE_VERIFY_FAILED"),
        ("ca", "other_client_cert", "other_client_key", ""),
    ],
    ids=["untrusted-server-ca", "untrusted-client-cert"],
)
def test_wrong_ca_or_cert_is_a_fast_clear_error(
    secure: SecureEtcd, ca: str, cert: str, key: str, why: str
) -> None:
    config = secure.config(
        "rmwatch-replica",
        REPLICA_PW,
        ca_cert=str(getattr(secure.pki, ca)),
        cert=str(getattr(secure.pki, cert)),
        key=str(getattr(secure.pki, key)),
    )
    started = time.monotonic()
    with pytest.raises(EtcdUnavailableError) as err:
        connect(config)
    assert time.monotonic() - started < FAST
    assert "cannot reach etcd to authenticate user 'rmwatch-replica'" in str(err.value)
    assert why in str(err.value)


def test_plain_text_client_to_tls_etcd_is_a_fast_clear_error(secure: SecureEtcd) -> None:
    config = EtcdConfig.parse(
        secure.member.endpoint, timeout=3.0, user="rmwatch-replica", password=SecretStr(REPLICA_PW)
    )
    started = time.monotonic()
    with pytest.raises(EtcdUnavailableError):
        connect(config)
    assert time.monotonic() - started < FAST


def test_replica_without_credentials_and_untrusted_ca_does_not_hang(secure: SecureEtcd) -> None:
    """TLS only (no user, so nothing is checked up front): the replica keeps retrying and
    stays not ready, wait_ready gives up at its bound, close() is prompt.

    (Its retry log names CERTIFICATE_VERIFY_FAILED only when one snapshot-load attempt gives
    up, after 30 s; with user/password configured connect() reports it at once, above.)"""
    config = secure.config(ca_cert=str(secure.pki.other_ca))
    replica = Replica(etcd=config, root_prefix=ROOT_PREFIX)
    replica.start()
    try:
        started = time.monotonic()
        with pytest.raises(NotReadyError, match="loading the first snapshot"):
            replica.wait_ready(2.0)
        assert time.monotonic() - started < 3.0
        assert replica.status()["ready"] is False
    finally:
        started = time.monotonic()
        replica.close()
        assert time.monotonic() - started < FAST


# ---- the CLIs ------------------------------------------------------------------------------


def test_writer_cli_wrong_password_exits_fast_without_leaking(secure: SecureEtcd) -> None:
    bad = _secret_file(secure.secrets, "bad", "wrong-Pa55word")
    started = time.monotonic()
    result = _rmwatch(
        "writer",
        *secure.tls_flags(),
        "--etcd-user",
        "rmwatch-writer",
        "--etcd-password-file",
        str(bad),
        "--listen",
        f"127.0.0.1:{free_port()}",
    )
    assert time.monotonic() - started < 20  # interpreter start included
    assert result.returncode == 1
    assert "writer_cannot_start" in result.stderr
    assert "authentication failed" in result.stderr
    assert "wrong-Pa55word" not in result.stderr + result.stdout


def test_writer_cli_over_tls_with_auth_and_bearer_token(secure: SecureEtcd) -> None:
    """``rmwatch writer`` with every TLS/auth flag: leads, takes a write with the token,
    answers 401 without it, and neither secret reaches its logs."""
    port = free_port()
    token_file = _secret_file(secure.secrets, "token", BEARER)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rmwatch",
            "writer",
            *secure.tls_flags(),
            "--etcd-user",
            "rmwatch-writer",
            "--etcd-password-file",
            str(secure.secrets / "writer"),
            "--token-file",
            str(token_file),
            "--root-prefix",
            ROOT_PREFIX,
            "--name",
            "cli-tls",
            "--listen",
            f"127.0.0.1:{port}",
            "--lease-ttl",
            "2",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).json()["leader"]:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "CLI writer did not lead within 20 s"
            time.sleep(0.1)
        path = f"{url}{PREFIX}/config/keyspace/service-limit"
        denied = httpx.post(path, json={"service_limit": 7}, timeout=10)
        assert denied.status_code == 401
        assert denied.headers["www-authenticate"] == "Bearer"
        wrong = httpx.post(
            path, json={"service_limit": 7}, timeout=10, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401
        ok = httpx.post(
            path,
            json={"service_limit": 7},
            timeout=10,
            headers={"Authorization": f"Bearer {BEARER}"},
        )
        assert ok.status_code == 200, ok.text
    finally:
        stop_process(proc, 15)
    out = (proc.stdout.read() if proc.stdout else b"").decode()
    err = (proc.stderr.read() if proc.stderr else b"").decode()
    assert '"event": "writer_starting"' in err
    assert '"etcd_user": "rmwatch-writer"' in err
    assert '"bearer_token": true' in err
    for secret in (BEARER, WRITER_PW):
        assert secret not in out + err


# ---- writer API auth, in process ------------------------------------------------------------


def test_writer_api_bearer_token_is_required_and_never_logged(
    writer_node: tuple[Writer, Leadership],
) -> None:
    writer, _ = writer_node
    app = create_writer_app(writer, token=SecretStr(BEARER))
    with structlog.testing.capture_logs() as logs, TestClient(app) as http:
        body = {
            "name": "api-g1",
            "mode": 1,
            "priority": 8,
            "r_u_settings": {"r_u": {"settings": {"fill_rate": 10, "burst_limit": 20}}},
        }
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": BEARER}):
            answer = http.post(f"{PREFIX}/config/group", json=body, headers=headers)
            assert answer.status_code == 401
            assert BEARER not in answer.text
        assert http.post("/admin/drain", headers={}).status_code == 401
        good = http.post(
            f"{PREFIX}/config/group", json=body, headers={"Authorization": f"Bearer {BEARER}"}
        )
        assert good.status_code == 200, good.text
        assert http.get(f"{PREFIX}/config/group/api-g1").status_code == 200  # reads: no token
    assert BEARER not in repr(logs)


def test_secrets_are_secretstr_in_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RMWATCH_TOKEN", BEARER)
    monkeypatch.setenv("RMWATCH_ETCD_PASSWORD", WRITER_PW)
    monkeypatch.setenv("RMWATCH_ETCD_USER", "rmwatch-writer")
    settings = WriterSettings()
    token = settings.bearer_token()
    assert token is not None
    assert token.get_secret_value() == BEARER
    config = settings.etcd_config("127.0.0.1:2379", timeout=1.0)
    assert config.password is not None
    assert config.password.get_secret_value() == WRITER_PW
    for text in (repr(settings), str(settings.model_dump()), repr(config)):
        assert BEARER not in text
        assert WRITER_PW not in text
    # A file wins over the variable, and its trailing newline is dropped.
    monkeypatch.setenv("RMWATCH_ETCD_PASSWORD_FILE", str(_secret_file(tmp_path, "pw", "from-file")))
    password = WriterSettings().etcd_password_value()
    assert password is not None
    assert password.get_secret_value() == "from-file"
    # Half a pair is a clear error, not a silent unauthenticated connection.
    monkeypatch.delenv("RMWATCH_ETCD_USER")
    with pytest.raises(ValueError, match="--etcd-user"):
        WriterSettings().etcd_config("127.0.0.1:2379", timeout=1.0)


# ---- tokens expire: re-authentication ------------------------------------------------------


def test_clients_reauthenticate_after_member_restart(
    secure: SecureEtcd, writer_node: tuple[Writer, Leadership]
) -> None:
    """etcd's simple tokens live in member memory: after a restart every old token is
    invalid. Writer, replica and plain clients authenticate again by themselves."""
    writer, leadership = writer_node
    replica = Replica(etcd=secure.replica(), root_prefix=ROOT_PREFIX)
    with replica, connect(secure.replica()) as reader:
        replica.wait_ready(10)
        reader.get(KeyLayout(ROOT_PREFIX).controller())
        secure.member.restart()
        # The plain client: its next call re-authenticates (after one UNAVAILABLE at most).
        deadline = time.monotonic() + 10
        while True:
            try:
                reader.get(KeyLayout(ROOT_PREFIX).controller())
                break
            except Exception:
                assert time.monotonic() < deadline, "reader never recovered"
                time.sleep(0.2)
        # The writer: leads again (its lease may have survived) and writes.
        leadership.wait_until_leader(10.0)  # may already lead: its lease can survive
        deadline = time.monotonic() + 15
        rev = 0
        while not rev:
            try:
                rev = writer.set_service_limit(None, 77.0)
            except Exception:
                assert time.monotonic() < deadline, "writer never recovered"
                time.sleep(0.2)
        # The replica: its watch resumes with a fresh token and sees the write.
        replica.wait_for_revision(rev, 15.0)
        replica.wait_ready(10)


def test_replica_cli_over_tls_with_auth(
    secure: SecureEtcd, writer_node: tuple[Writer, Leadership]
) -> None:
    """``rmwatch replica`` with the TLS flags and the user/password from the environment:
    ready, serves a group; a wrong password exits 1 at once without printing it."""
    writer, _ = writer_node
    rev = writer.add_group(ru_group("cli-tls-g1"))
    bad = _secret_file(secure.secrets, "bad-replica", "wrong-Replica-pw")
    env = {"RMWATCH_ETCD_USER": "rmwatch-replica", "RMWATCH_ROOT_PREFIX": ROOT_PREFIX}
    started = time.monotonic()
    refused = _rmwatch(
        "replica",
        *secure.tls_flags(),
        "--etcd-password-file",
        str(bad),
        "--listen",
        f"127.0.0.1:{free_port()}",
        env=env,
    )
    assert time.monotonic() - started < 20  # interpreter start included
    assert refused.returncode == 1
    assert "authentication failed" in refused.stderr
    assert "wrong-Replica-pw" not in refused.stderr + refused.stdout
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rmwatch",
            "replica",
            *secure.tls_flags(),
            "--listen",
            f"127.0.0.1:{port}",
            "--drain-seconds",
            "0",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={
            **os.environ,
            "PYTHONPATH": str(REPO),
            **env,
            "RMWATCH_ETCD_PASSWORD_FILE": str(secure.secrets / "replica"),
        },
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "CLI replica not ready within 20 s"
            time.sleep(0.1)
        answer = httpx.get(f"{url}{PREFIX}/config/group/cli-tls-g1?min_revision={rev}", timeout=5)
        assert answer.status_code == 200, answer.text
        assert answer.json()["name"] == "cli-tls-g1"
    finally:
        stop_process(proc, 20)
    err = (proc.stderr.read() if proc.stderr else b"").decode()
    assert '"etcd_user": "rmwatch-replica"' in err
    assert REPLICA_PW not in err
