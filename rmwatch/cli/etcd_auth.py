"""Least-privilege etcd roles and users for writers and replicas: the plan, and applying it.

The logic behind ``rmwatch etcd-setup-auth``, usable without the command line::

    plan = plan_for(KeyLayout("", cluster_id=7), writer_password=SecretStr("..."),
                    enable_auth=True, root_password=SecretStr("..."))
    summary = apply(connect(EtcdConfig.parse("127.0.0.1:2379")), plan)

What each role may do (``{root}`` is the layout's RM root prefix, empty on a PD cluster;
``{id}`` its cluster id; every grant is a key prefix except ``/pd/cluster_id``, one key):

==================  ===========================  =========  ==================================
role                keys                         access     why
==================  ===========================  =========  ==================================
``rmwatch-writer``  ``{root}resource_group/``    readwrite  the metadata it writes (and reads)
``rmwatch-writer``  ``{root}rmwatch/writer/``    readwrite  the leader key (election, fencing)
``rmwatch-writer``  ``/pd/cluster_id`` (key)     read       PD's cluster id, read at start
``rmwatch-writer``  ``/pd/{id}/keyspaces/id/``   read       PD's keyspace name index
``rmwatch-replica`` ``{root}resource_group/``    read       snapshot and watch
``rmwatch-replica`` ``/pd/cluster_id`` (key)     read       PD's cluster id, read at start
``rmwatch-replica`` ``/pd/{id}/keyspaces/id/``   read       keyspace names on the HTTP routes
``rmwatch-replica`` ``{root}rmwatch/writer/``    read       finding the leader to forward writes
==================  ===========================  =========  ==================================

The keyspace index grant needs the cluster id: without one (no ``/pd/cluster_id`` yet, no
``--cluster-id``) it is left out, and names do not resolve until the setup runs again.

Neither role can touch any other key, compact, defragment, change membership or auth. A
permission a role holds beyond this list is revoked, so a re-run undoes hand-made grants.
An existing user given a password gets that password if etcd does not already accept it
(rotation); the role grant is ensured.
With ``enable_auth`` the ``root`` user is created if missing (etcd refuses to enable auth
without it; its password is ``SetupPlan.root_password``) and auth is enabled. Before auth is
enabled the root credentials are accepted and ignored by etcd, so the same plan applies before
and after.

The summary ``apply`` returns names roles, users and grants; never a password.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from pydantic import SecretStr
from pyetcd import etcdrpc
from pyetcd import utils as etcd_utils
from pyetcd.etcdrpc import auth_pb2

from rmwatch._logging import get_logger
from rmwatch.errors import AuthSetupError, EtcdAuthError, EtcdUnavailableError
from rmwatch.store.keys import CLUSTER_ID_KEY, KeyLayout, keyspace_index_prefix
from rmwatch.store.leadership import leader_key

log = get_logger("setup_auth")

READ = "read"
WRITE = "write"
READWRITE = "readwrite"
_PERM_TYPES = {
    READ: auth_pb2.Permission.READ,
    WRITE: auth_pb2.Permission.WRITE,
    READWRITE: auth_pb2.Permission.READWRITE,
}
_PERM_NAMES = {v: k for k, v in _PERM_TYPES.items()}

DEFAULT_WRITER_ROLE = "rmwatch-writer"
DEFAULT_REPLICA_ROLE = "rmwatch-replica"
DEFAULT_WRITER_USER = "rmwatch-writer"
DEFAULT_REPLICA_USER = "rmwatch-replica"


@dataclass(frozen=True, slots=True)
class Grant:
    """Access of one kind to every key under ``prefix`` (to that one key when ``exact``)."""

    access: str
    prefix: str
    exact: bool = False

    def permission(self) -> Any:
        """The etcd Permission message (key range = the whole prefix, or the one key)."""
        key = self.prefix.encode()
        range_end = b"" if self.exact else etcd_utils.prefix_range_end(key)
        return auth_pb2.Permission(permType=_PERM_TYPES[self.access], key=key, range_end=range_end)

    def as_dict(self) -> dict[str, str]:
        """How the summary shows it: ``{"access", "prefix"}``, or ``{"access", "key"}``."""
        return {"access": self.access, "key" if self.exact else "prefix": self.prefix}


def _pd_grants(layout: KeyLayout) -> list[Grant]:
    """Read access to PD's cluster id, and to its keyspace index when the id is known."""
    grants = [Grant(READ, CLUSTER_ID_KEY, exact=True)]
    if layout.cluster_id is not None:
        grants.append(Grant(READ, keyspace_index_prefix(layout.cluster_id)))
    return grants


def writer_grants(layout: KeyLayout) -> list[Grant]:
    """Exactly what a writer needs (see the module doc)."""
    return [
        Grant(READWRITE, layout.prefix),
        Grant(READWRITE, _leader_prefix(layout)),
        *_pd_grants(layout),
    ]


def replica_grants(layout: KeyLayout) -> list[Grant]:
    """Exactly what a replica (and its sidecar) needs: reads only."""
    return [
        Grant(READ, layout.prefix),
        *_pd_grants(layout),
        Grant(READ, _leader_prefix(layout)),
    ]


def _leader_prefix(layout: KeyLayout) -> str:
    key = leader_key(layout)
    return key[: key.rindex("/") + 1]  # "{root}rmwatch/writer/"


@dataclass
class Account:
    """One user to ensure, with its role and grants; ``password`` None keeps the current one."""

    user: str
    role: str
    grants: list[Grant]
    password: SecretStr | None = field(default=None, repr=False)


@dataclass
class SetupPlan:
    """Everything ``apply`` does, in order."""

    accounts: list[Account]
    enable_auth: bool = False
    root_password: SecretStr | None = field(default=None, repr=False)


def plan_for(
    layout: KeyLayout,
    *,
    writer_user: str = DEFAULT_WRITER_USER,
    writer_password: SecretStr | None = None,
    replica_user: str = DEFAULT_REPLICA_USER,
    replica_password: SecretStr | None = None,
    writer_role: str = DEFAULT_WRITER_ROLE,
    replica_role: str = DEFAULT_REPLICA_ROLE,
    enable_auth: bool = False,
    root_password: SecretStr | None = None,
) -> SetupPlan:
    """The standard plan: one writer account and one replica account under ``layout``."""
    if layout.cluster_id is None:
        log.warning(
            "keyspace_index_not_granted",
            key=CLUSTER_ID_KEY,
            reason="no cluster id: run again once PD wrote it, or give --cluster-id",
        )
    return SetupPlan(
        accounts=[
            Account(writer_user, writer_role, writer_grants(layout), writer_password),
            Account(replica_user, replica_role, replica_grants(layout), replica_password),
        ],
        enable_auth=enable_auth,
        root_password=root_password,
    )


def _details(exc: grpc.RpcError) -> str:
    return str(exc.details() or "").lower()


class _Auth:
    """The auth RPCs, each with the client's deadline and errors turned into ours."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def call(
        self,
        what: str,
        method: str,
        request: Any,
        tolerate: Callable[[str], bool] = lambda _d: False,
    ) -> Any | None:
        stub = self._client.authstub
        try:
            return getattr(stub, method)(request, self._client.timeout)
        except grpc.RpcError as exc:
            if tolerate(_details(exc)):
                return None
            code = exc.code()
            message = f"{what}: {code.name}: {exc.details()}"
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise EtcdUnavailableError(message) from None
            if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
                raise EtcdAuthError(f"{message} (setup needs the root user)") from None
            raise AuthSetupError(message) from None

    def password_works(self, user: str, password: SecretStr) -> bool:
        """True when etcd (auth enabled) accepts ``password`` for ``user`` already.

        A re-run with unchanged password files then changes nothing: a password change
        moves etcd's auth revision, which makes every client authenticate again.
        """
        request = etcdrpc.AuthenticateRequest(name=user, password=password.get_secret_value())
        try:
            self._client.authstub.Authenticate(request, self._client.timeout)
        except grpc.RpcError:
            return False  # wrong password, or auth not enabled yet (a change is harmless)
        return True


def _ensure_role(auth: _Auth, role: str, grants: Sequence[Grant]) -> dict[str, Any]:
    auth.call(
        f"add role {role}",
        "RoleAdd",
        etcdrpc.AuthRoleAddRequest(name=role),
        tolerate=lambda d: "already exists" in d,
    )
    wanted = {(g.permission().key, g.permission().range_end): g for g in grants}
    current = auth.call(f"get role {role}", "RoleGet", etcdrpc.AuthRoleGetRequest(role=role))
    revoked: list[str] = []
    for perm in current.perm if current is not None else []:
        grant = wanted.get((perm.key, perm.range_end))
        if grant is not None and _PERM_TYPES[grant.access] == perm.permType:
            continue
        auth.call(
            f"revoke {perm.key!r} from role {role}",
            "RoleRevokePermission",
            etcdrpc.AuthRoleRevokePermissionRequest(
                role=role, key=perm.key, range_end=perm.range_end
            ),
        )
        revoked.append(f"{_PERM_NAMES.get(perm.permType, perm.permType)} {perm.key.decode()}")
    for grant in grants:
        auth.call(
            f"grant {grant.access} {grant.prefix} to role {role}",
            "RoleGrantPermission",
            etcdrpc.AuthRoleGrantPermissionRequest(name=role, perm=grant.permission()),
        )
    return {
        "role": role,
        "grants": [g.as_dict() for g in grants],
        "revoked": revoked,
    }


def _user_exists(auth: _Auth, user: str) -> bool:
    found = auth.call(
        f"get user {user}",
        "UserGet",
        etcdrpc.AuthUserGetRequest(name=user),
        tolerate=lambda d: "not found" in d,
    )
    return found is not None


def _ensure_user(auth: _Auth, user: str, password: SecretStr | None, role: str) -> str:
    if _user_exists(auth, user):
        outcome = "exists"
        if password is not None and not auth.password_works(user, password):
            auth.call(
                f"change password of {user}",
                "UserChangePassword",
                etcdrpc.AuthUserChangePasswordRequest(
                    name=user, password=password.get_secret_value()
                ),
            )
            outcome = "password changed"
    else:
        if password is None:
            raise AuthSetupError(f"user {user!r} does not exist: give its password to create it")
        auth.call(
            f"add user {user}",
            "UserAdd",
            etcdrpc.AuthUserAddRequest(name=user, password=password.get_secret_value()),
        )
        outcome = "created"
    auth.call(
        f"grant role {role} to {user}",
        "UserGrantRole",
        etcdrpc.AuthUserGrantRoleRequest(user=user, role=role),
    )
    return outcome


def apply(client: Any, plan: SetupPlan) -> dict[str, Any]:
    """Make etcd match ``plan``; return a summary (no secrets). Idempotent."""
    auth = _Auth(client)
    summary: dict[str, Any] = {"roles": [], "users": [], "auth_enabled": False}
    for account in plan.accounts:
        summary["roles"].append(_ensure_role(auth, account.role, account.grants))
        outcome = _ensure_user(auth, account.user, account.password, account.role)
        summary["users"].append({"user": account.user, "role": account.role, "outcome": outcome})
        log.info("etcd_auth_account", user=account.user, role=account.role, outcome=outcome)
    if plan.enable_auth:
        if not _user_exists(auth, "root"):
            if plan.root_password is None:
                raise AuthSetupError(
                    "etcd needs a root user to enable auth: give --root-password-file"
                )
            _ensure_user(auth, "root", plan.root_password, "root")
            summary["users"].append({"user": "root", "role": "root", "outcome": "created"})
        auth.call("enable auth", "AuthEnable", etcdrpc.AuthEnableRequest())
        summary["auth_enabled"] = True
        log.info("etcd_auth_enabled")
    return summary


def plan_summary(plan: SetupPlan) -> dict[str, Any]:
    """What ``plan`` would set up (roles, users, grants), for a dry run; no secrets."""
    return {
        "roles": [
            {
                "role": a.role,
                "user": a.user,
                "grants": [g.as_dict() for g in a.grants],
            }
            for a in plan.accounts
        ],
        "enable_auth": plan.enable_auth,
    }


__all__ = [
    "DEFAULT_REPLICA_ROLE",
    "DEFAULT_REPLICA_USER",
    "DEFAULT_WRITER_ROLE",
    "DEFAULT_WRITER_USER",
    "Account",
    "Grant",
    "SetupPlan",
    "apply",
    "plan_for",
    "plan_summary",
    "replica_grants",
    "writer_grants",
]
