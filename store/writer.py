"""The single metadata writer: every write is one fenced, compare-guarded etcd transaction.

What each write does, in order:
1. the role gate (``rmwatch.store.roles``): a refused write raises before etcd is touched;
2. the drain gate: a draining writer takes no new writes (DrainingError), counts those in flight;
3. the reads it needs (linearizable, retried: reads cannot apply anything twice), except that a
   modify or controller update plans from the value this writer last committed or saw at the
   key (``rmwatch.store.known_values``), which the compare below checks like a read;
4. ONE transaction whose compares are the leadership fence (``Leadership.fence_compares``) plus
   ``mod_revision == read revision`` on every key it writes; the failure branch reads the leader
   key and those keys back, so one round trip tells a lost fence (NotLeaderError) from a lost
   race (conflict, with the current revision). A plan made from a remembered value that moved
   is made again from what the failure branch brought, once, without counting as a lost race.

Retry policy (why a retry can never apply a write twice):
- Reads: retried on transient errors with backoff (``call_with_retry``) until the deadline.
- Compare-guarded writes (add, modify, delete, controller): if the txn's outcome is unknown (the
  connection dropped or the deadline hit after sending), we do not resend blindly. We re-read
  the keys: if they hold exactly what we wrote, it applied: success at their mod_revision. If
  they still carry the revisions we compared against, it did not apply (and cannot apply later
  alongside a resend: both carry the same ``mod_revision == r`` compare, so at most one of them
  succeeds), so resending is safe. Anything else is reported as EtcdUnavailableError
  ("outcome unknown"), never as success.
- Blind writes (service limit, states put/delete): their effect is idempotent (the same value,
  or the key gone), so after an unknown outcome we re-read and resend until the key shows our
  effect; a retry can only re-apply the same value.
- A plain ``modify_group``/``update_controller`` (no ``expected_revision``) that loses a race to
  another writer re-reads and re-applies its change up to ``modify_attempts`` (3) times: the
  change is a patch of the latest settings, so re-applying it on fresh state is the caller's
  intent. With ``expected_revision`` it is a strict compare-and-set: ConflictError.

Deadlines: every etcd RPC carries the client deadline, and every operation stops retrying after
``timeout`` seconds (5 s by default), so no call hangs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from prometheus_client import Counter, Histogram
from pydantic import ValidationError
from pyetcd import exceptions as etcd_exc
from pyetcd.utils import prefix_range_end

from rmwatch._logging import get_logger
from rmwatch.errors import (
    AlreadyExistsError,
    ConflictError,
    DecodeError,
    DrainingError,
    EtcdUnavailableError,
    InvalidInputError,
    NotFoundError,
    NotLeaderError,
    ReservedGroupError,
    WriteError,
    WriteRefusedError,
    group_not_found,
)
from rmwatch.store import codec
from rmwatch.store.controller import DEFAULT_RU_VERSION, RUVersionPolicy
from rmwatch.store.etcd import (
    Compare,
    EtcdClient,
    EtcdConfig,
    TxnOp,
    TxnResult,
    call_with_retry,
    connect,
    describe,
    is_transient,
    txn,
)
from rmwatch.store.etcd_refusal import etcd_refusal
from rmwatch.store.keys import NULL_KEYSPACE_ID, KeyKind, KeyLayout
from rmwatch.store.keyspaces import KeyspaceResolver
from rmwatch.store.known_values import KnownValues
from rmwatch.store.leadership import Leadership
from rmwatch.store.metrics import WriterMetrics
from rmwatch.store.models import (
    DEFAULT_GROUP_NAME,
    RAW_MODE_REFUSED,
    ControllerConfig,
    GroupMode,
    GroupStates,
    ResourceGroup,
    ServiceLimit,
    TokenBucket,
    default_group,
)
from rmwatch.store.roles import WriteKind, WriteRole, allows, check_write

log = get_logger("writer")

DEFAULT_TIMEOUT = 5.0
MODIFY_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class GroupView:
    """A group's settings and states read at one revision.

    ``mod_revision`` is the settings key's (0 for a synthesized ``default`` never stored).
    """

    group: ResourceGroup
    states: GroupStates | None
    revision: int
    mod_revision: int


@dataclass(frozen=True, slots=True)
class _Plan:
    """One write: keys to put/delete and the mod_revision each written key must still have.

    ``guards`` None means a blind write (its effect is idempotent; see the module docstring).
    """

    op: str
    kind: WriteKind
    key: str
    puts: dict[str, bytes] = field(default_factory=dict)
    deletes: tuple[str, ...] = ()
    guards: dict[str, int] | None = None
    # Keep what the commit put in ``KnownValues``: the keys a later modify or controller update
    # plans from (group settings, the controller), not service limits or token states, which
    # are never read-modify-written and would only push those out.
    remember: bool = False
    # Planned from a remembered value rather than a read (see ``_run``).
    from_known: bool = False


class _LostRaceError(Exception):
    """A guard compare failed: ``current`` holds each guarded key's mod_revision now."""

    def __init__(self, current: dict[str, int]) -> None:
        super().__init__("compare failed")
        self.current = current


_OUTCOMES: dict[type[Exception], str] = {
    NotFoundError: "not_found",
    AlreadyExistsError: "exists",
    ConflictError: "conflict",
    NotLeaderError: "not_leader",
    DrainingError: "draining",
}


def _ks(keyspace_id: int | None) -> int:
    return NULL_KEYSPACE_ID if keyspace_id is None else keyspace_id


class Writer:
    """PD's RM metadata writes and reads, as etcd transactions under one key layout.

    Args:
        client: the etcd connection; or give ``etcd`` and the writer connects (and closes) its
            own.
        layout: key layout (root prefix).
        role: write role; gates every write (``rmwatch.store.roles``).
        leadership: election membership whose fence every write carries. None runs unfenced,
            which is only safe when exactly one writer exists (single-process tools, benches).
        timeout: overall deadline of one operation, retries included (seconds).
        modify_attempts: read-modify-write attempts of a non-strict modify/controller update.
        metrics: where to count writes (a fresh registry by default).
    """

    def __init__(
        self,
        *,
        client: EtcdClient | None = None,
        etcd: EtcdConfig | None = None,
        layout: KeyLayout,
        role: WriteRole = WriteRole.LEGACY_ALL,
        leadership: Leadership | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        modify_attempts: int = MODIFY_ATTEMPTS,
        metrics: WriterMetrics | None = None,
    ) -> None:
        if client is None:
            if etcd is None:
                raise ValueError("Writer needs a client or an EtcdConfig")
            client = connect(etcd)
            self._owns_client = True
        else:
            self._owns_client = False
        self.client: EtcdClient = client
        self.layout = layout
        self.role = WriteRole(role)
        self.leadership = leadership
        self.timeout = timeout
        self.modify_attempts = max(1, modify_attempts)
        self.metrics = metrics if metrics is not None else WriterMetrics()
        self.metrics.track_leadership(self._epoch)
        self._metric_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self._known = KnownValues()
        self._drain_lock = threading.Condition()
        self._draining = False
        self._in_flight = 0
        # PD's keyspace index, looked up as the sidecar does, within the writer's deadline.
        self._keyspaces = KeyspaceResolver(client, layout, deadline=timeout)

    def close(self) -> None:
        """Close the etcd client if this writer opened it."""
        if self._owns_client:
            self.client.close()

    def _epoch(self) -> int | None:
        return self.leadership.epoch if self.leadership is not None else None

    # ---- drain -------------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        """True once ``begin_drain()`` ran: new writes raise DrainingError."""
        return self._draining

    @property
    def in_flight(self) -> int:
        """Writes started and not finished yet."""
        with self._drain_lock:
            return self._in_flight

    def begin_drain(self) -> None:
        """Refuse new writes from now on (DrainingError); writes in flight continue."""
        with self._drain_lock:
            self._draining = True
            self._drain_lock.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Block until no write is in flight, at most ``timeout`` s; True if idle."""
        end = time.monotonic() + timeout
        with self._drain_lock:
            while self._in_flight:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._drain_lock.wait(left)
            return True

    @contextmanager
    def _write_slot(self) -> Iterator[None]:
        with self._drain_lock:
            if self._draining:
                raise DrainingError("this writer is draining and takes no new writes")
            self._in_flight += 1
        try:
            yield
        finally:
            with self._drain_lock:
                self._in_flight -= 1
                self._drain_lock.notify_all()

    # ---- writes ------------------------------------------------------------------------

    def add_group(self, group: ResourceGroup) -> int:
        """Store a group's settings, replacing any stored ones; returns the revision.

        An upsert, as PD's ``addResourceGroup`` (keyspace_manager.go) persists the settings
        whatever is stored: TiDB retries Add, so a second Add of the same group must succeed.
        A blind put is safe to resend (the same bytes land again), so no guard is needed.
        """
        _refuse_raw_mode(group)
        key = self.layout.settings(group.name, group.effective_keyspace_id)

        def plan() -> _Plan:
            return _Plan("add_group", WriteKind.METADATA, key,
                         puts={key: codec.encode_settings(group, base=b"")},
                         remember=True)  # fmt: skip

        return self._run("add_group", WriteKind.METADATA, key, plan,
                         lost=lambda _: None, retry_lost=False)  # fmt: skip

    def modify_group(self, group: ResourceGroup, *, expected_revision: int | None = None) -> int:
        """Apply new settings to an existing group, never touching its states (tokens).

        The settings are patched as PD's ``PatchSettings`` does (same mode required; priority,
        runaway and background settings replaced; the bucket settings replaced but the legacy
        ``tokens`` in settings kept), encoded on the old wire bytes so unknown protobuf fields
        survive. With ``expected_revision`` (the settings key's mod_revision the caller saw)
        it is a strict compare-and-set: ConflictError with the current revision if it moved.
        """
        _refuse_raw_mode(group)
        ks = group.effective_keyspace_id
        key = self.layout.settings(group.name, ks)

        def plan() -> _Plan:
            old, old_rev, known = self._settings_to_modify(key, group.name, ks, expected_revision)
            if expected_revision is not None and old_rev != expected_revision:
                raise ConflictError(
                    f"resource group {group.name!r} changed: revision {old_rev}, "
                    f"expected {expected_revision}",
                    current_revision=old_rev,
                )
            patched = _patch_settings(old, group)
            wire = codec.encode_settings(patched, base=old.wire or b"")
            return _Plan("modify_group", WriteKind.METADATA, key, puts={key: wire},
                         guards={key: old_rev}, remember=True, from_known=known)  # fmt: skip

        def lost(exc: _LostRaceError) -> WriteError | None:
            current = exc.current.get(key, 0)
            if current == 0:
                # ``default`` exists unstored: PD keeps it in its cache and a modify persists
                # it (PD: pkg/mcs/resourcemanager/server/keyspace_manager.go:209-221 and
                # 274-291, HEAD a186e0c); planned again, the write stores it. Any other group
                # is gone.
                if group.name == DEFAULT_GROUP_NAME and expected_revision is None:
                    return None
                return group_not_found(group.name)
            return ConflictError(
                f"resource group {group.name!r} changed concurrently: revision {current}",
                current_revision=current,
            )

        return self._run("modify_group", WriteKind.METADATA, key, plan, lost=lost,
                         retry_lost=expected_revision is None)  # fmt: skip

    def delete_group(self, name: str, keyspace_id: int | None = None) -> int:
        """Delete a group's settings and states in one txn; ``default`` is refused."""
        if name == DEFAULT_GROUP_NAME:
            check_write(self.role, WriteKind.METADATA)
            # PD answers 500 with errs.ErrDeleteReservedGroup (keyspace_manager.go:295);
            # rmwatch answers 403 (a refusal, not a server fault) with PD's text.
            raise ReservedGroupError(
                "[PD:resourcemanager:ErrDeleteReservedGroup]cannot delete reserved group"
            )
        ks = _ks(keyspace_id)
        skey, tkey = self.layout.settings(name, ks), self.layout.states(name, ks)

        def plan() -> _Plan:
            revs = self._mod_revisions([skey, tkey])
            if revs[skey] == 0:
                raise group_not_found(name)
            return _Plan("delete_group", WriteKind.METADATA, skey, deletes=(skey, tkey),
                         guards=revs)  # fmt: skip

        return self._run("delete_group", WriteKind.METADATA, skey, plan,
                         lost=lambda _: None, retry_lost=True)  # fmt: skip

    def update_controller(
        self, items: dict[str, Any], *, expected_revision: int | None = None
    ) -> int:
        """Apply PD's controller-config map all or nothing; any unknown key fails the lot.

        An empty map writes nothing and returns the controller's mod_revision: PD answers it
        200 without a write or a role check (metadataapi/config_service.go:420-445).
        """
        if not isinstance(items, dict):
            raise InvalidInputError("body", "must be a JSON object of controller keys")
        if not items:
            return self.get_controller_at()[1]
        if not allows(self.role, WriteKind.METADATA):
            # PD names an unknown key (400) before its role refuses the write (403):
            # config_service.go:427-431 runs before UpdateControllerConfigItem's check.
            unknown = ControllerConfig.first_unknown_key(items)
            if unknown is not None:
                raise _unknown_controller_key(unknown)
        key = self.layout.controller()

        def plan() -> _Plan:
            config, rev, known = self._controller_to_modify(expected_revision)
            if expected_revision is not None and rev != expected_revision:
                raise ConflictError(
                    f"controller config changed: revision {rev}, expected {expected_revision}",
                    current_revision=rev,
                )
            updated = _controller_update(lambda: config.with_updates(items))
            return _Plan("update_controller", WriteKind.METADATA, key,
                         puts={key: codec.encode_controller(updated)},
                         guards={key: rev}, remember=True, from_known=known)  # fmt: skip

        def lost(exc: _LostRaceError) -> WriteError:
            current = exc.current.get(key, 0)
            return ConflictError(
                f"controller config changed concurrently: revision {current}",
                current_revision=current,
            )

        return self._run("update_controller", WriteKind.METADATA, key, plan, lost=lost,
                         retry_lost=expected_revision is None)  # fmt: skip

    def set_ru_version(self, keyspace_id: int, version: int) -> int:
        """Set one keyspace's RU version in the controller config (PD's SetKeyspaceRUVersion,
        pkg/mcs/resourcemanager/server/manager.go:246): an override, removed when ``version``
        is the policy's default; a policy of default 1 is started when none is stored."""
        if version <= 0:
            raise InvalidInputError("ru_version", "ru_version must be positive", pd_text=True)
        key = self.layout.controller()

        def plan() -> _Plan:
            config, rev, known = self._controller_to_modify(None)
            policy = config.ru_version_policy or RUVersionPolicy(default=DEFAULT_RU_VERSION)
            updated = _controller_update(
                lambda: config.model_copy(
                    update={"ru_version_policy": policy.with_keyspace(keyspace_id, version)}
                )
            )
            return _Plan("set_ru_version", WriteKind.METADATA, key,
                         puts={key: codec.encode_controller(updated)},
                         guards={key: rev}, remember=True, from_known=known)  # fmt: skip

        return self._run("set_ru_version", WriteKind.METADATA, key, plan,
                         lost=lambda _: None, retry_lost=True)  # fmt: skip

    def set_service_limit(self, keyspace_id: int | None, value: float) -> int:
        """Set a keyspace's service limit (RU/s); negative, NaN or infinite is refused."""
        ks = _ks(keyspace_id)
        try:
            limit = ServiceLimit(keyspace_id=ks, service_limit=value)
        except ValidationError as exc:
            raise InvalidInputError("service_limit", exc.errors()[0]["msg"]) from None
        key = self.layout.service_limit(ks)

        def plan() -> _Plan:
            return _Plan("set_service_limit", WriteKind.METADATA, key,
                         puts={key: codec.encode_service_limit(limit)})  # fmt: skip

        return self._run("set_service_limit", WriteKind.METADATA, key, plan,
                         lost=lambda _: None, retry_lost=False)  # fmt: skip

    def put_states(self, name: str, states: GroupStates, keyspace_id: int | None = None) -> int:
        """Write a group's token states (states role only)."""
        key = self.layout.states(name, _ks(keyspace_id))

        def plan() -> _Plan:
            return _Plan("put_states", WriteKind.STATES, key,
                         puts={key: codec.encode_states(states)})  # fmt: skip

        return self._run("put_states", WriteKind.STATES, key, plan,
                         lost=lambda _: None, retry_lost=False)  # fmt: skip

    def delete_states(self, name: str, keyspace_id: int | None = None) -> int:
        """Delete a group's token states (states role only)."""
        key = self.layout.states(name, _ks(keyspace_id))

        def plan() -> _Plan:
            return _Plan("delete_states", WriteKind.STATES, key, deletes=(key,))

        return self._run("delete_states", WriteKind.STATES, key, plan,
                         lost=lambda _: None, retry_lost=False)  # fmt: skip

    # ---- the write engine --------------------------------------------------------------

    def _run(
        self,
        op: str,
        kind: WriteKind,
        key: str,
        plan_fn: Callable[[], _Plan],
        *,
        lost: Callable[[_LostRaceError], WriteError | None],
        retry_lost: bool,
    ) -> int:
        """Gate, plan, commit; log and count the outcome.

        ``lost`` maps a lost race to the error to raise (None: plan again); with
        ``retry_lost`` a lost race is planned again up to ``modify_attempts`` times.
        """
        started = time.monotonic()
        outcome, revision = "error", 0
        try:
            # Role gate first, before any read: a refused write touches nothing.
            check_write(self.role, kind)
            with self._write_slot():
                revision = self._plan_and_commit(key, plan_fn, lost, retry_lost, started)
                outcome = "ok"
                return revision
        except WriteError as exc:
            outcome = _OUTCOMES.get(type(exc), "error")
            if isinstance(exc, WriteRefusedError):
                outcome = "refused"
            raise
        except InvalidInputError:
            outcome = "invalid"
            raise
        except EtcdUnavailableError as exc:
            outcome = "unavailable"
            refusal = etcd_refusal(exc, op=op)  # retried until the deadline: name the cause
            if refusal is not None:
                raise refusal from exc
            raise
        except Exception as exc:
            refusal = etcd_refusal(exc, op=op)
            if refusal is not None:
                outcome = "etcd_refused"
                raise refusal from exc
            if isinstance(exc, grpc.RpcError | etcd_exc.Etcd3Exception):
                # An etcd failure nothing above names: typed, never the client's raw error.
                outcome = "unavailable"
                raise EtcdUnavailableError(
                    f"{op} on {key}: etcd failed ({describe(exc)}); the write may or may not "
                    "have applied"
                ) from exc
            raise
        finally:
            elapsed = time.monotonic() - started
            self._counted(op, outcome, elapsed)
            log.info("write", op=op, key=key, revision=revision or None, role=str(self.role),
                     epoch=self._epoch(), outcome=outcome,
                     ms=round(elapsed * 1000, 2))  # fmt: skip

    def _plan_and_commit(
        self,
        key: str,
        plan_fn: Callable[[], _Plan],
        lost: Callable[[_LostRaceError], WriteError | None],
        retry_lost: bool,
        started: float,
    ) -> int:
        """Plan and commit until it applies, raising what ``lost`` says for a lost race (see
        ``_run``); the commit revision."""
        attempts = self.modify_attempts if retry_lost else 1
        attempt, stale_forgiven = 0, False
        while True:
            plan = plan_fn()
            try:
                return self._commit(plan, started)
            except _LostRaceError as exc:
                if plan.from_known and not stale_forgiven:
                    # Planned from a remembered value that moved behind our back: plan again
                    # from the value the failure branch brought (or a read), as the read-first
                    # write would have, before judging the race.
                    stale_forgiven = True
                    continue
                attempt += 1
                err = lost(exc)
                last = attempt >= attempts
                if err is not None and (last or isinstance(err, NotFoundError)):
                    raise err from None
                if err is None and last:
                    raise ConflictError(
                        f"{key} kept changing concurrently",
                        current_revision=max(exc.current.values(), default=0),
                    ) from None

    def _counted(self, op: str, outcome: str, elapsed: float) -> None:
        """Count one write. The labelled children are looked up once per (op, outcome):
        prometheus' ``labels()`` validates and locks on every call (~15-20 us each on a loaded
        2-CPU machine, twice a write)."""
        children = self._metric_children.get((op, outcome))
        if children is None:
            children = (self.metrics.writes.labels(op=op, outcome=outcome),
                        self.metrics.latency.labels(op=op))  # fmt: skip
            self._metric_children[(op, outcome)] = children
        children[0].inc()
        children[1].observe(elapsed)

    def _commit(self, plan: _Plan, started: float) -> int:
        """One fenced txn for ``plan``; on an unknown outcome, reconcile (see module doc)."""
        tx = self.client.transactions
        success = [tx.put(k, v) for k, v in plan.puts.items()]
        success += [tx.delete(k) for k in plan.deletes]
        guarded = list(plan.guards or {})
        while True:
            fence: list[Compare] = []
            failure: list[TxnOp] = []
            if self.leadership is not None:
                fence = self.leadership.fence_compares()
                failure = self.leadership.fence_failure_ops()
            compares = fence + [tx.mod(k) == r for k, r in (plan.guards or {}).items()]
            failure += [tx.get(k) for k in guarded]
            try:
                result = txn(self.client, compares, success, failure)
            except Exception as exc:
                # The outcome is not known: nothing is known of the plan's keys either.
                for k in (*plan.puts, *plan.deletes):
                    self._known.forget(k)
                if not is_transient(exc):
                    raise
                applied = self._reconcile(plan, started, exc)
                if applied is not None:
                    return applied
                continue  # provably not applied: resending is safe
            if result.succeeded:
                if plan.remember:
                    for k, v in plan.puts.items():
                        self._known.put(k, v, result.revision)
                for k in plan.deletes:
                    self._known.forget(k)
                return result.revision
            responses = list(result.responses)
            if self.leadership is not None:
                self.leadership.check_fence(responses[0])  # raises if deposed
                responses = responses[1:]
            current = {}
            for k, response in zip(guarded, responses, strict=True):
                kvs = list(response.response_range.kvs)
                current[k] = int(kvs[0].mod_revision) if kvs else 0
                # The failure branch read the key: the next plan starts from it, no read.
                if kvs and plan.remember:
                    self._known.put(k, bytes(kvs[0].value), current[k])
                else:
                    self._known.forget(k)
            raise _LostRaceError(current)

    def _reconcile(self, plan: _Plan, started: float, cause: BaseException) -> int | None:
        """After an unknown outcome: the revision if ``plan`` applied, None if it provably
        did not (safe to resend), EtcdUnavailableError otherwise or past the deadline."""
        left = self.timeout - (time.monotonic() - started)
        if left <= 0:
            raise EtcdUnavailableError(
                f"{plan.op} on {plan.key}: outcome unknown after {self.timeout:.1f}s ({cause!r})"
            ) from cause
        keys = list(plan.puts) + list(plan.deletes)
        values, revs, header = self._read_keys(keys, deadline=left)
        applied = all(values[k] == v for k, v in plan.puts.items()) and all(
            values[k] is None for k in plan.deletes
        )
        if applied:
            # Deletes leave no mod_revision behind: the read's header revision is >= the
            # delete's, which is what read-your-writes (min_revision) needs.
            put_revs = [revs[k] for k in plan.puts]
            log.info("write_outcome_recovered", op=plan.op, key=plan.key)
            return max(put_revs) if put_revs else header
        if plan.guards is None or all(revs[k] == r for k, r in plan.guards.items()):
            return None
        raise EtcdUnavailableError(
            f"{plan.op} on {plan.key}: outcome unknown ({cause!r}) and the key changed since"
        ) from cause

    # ---- reads -------------------------------------------------------------------------

    def _read_keys(
        self, keys: Sequence[str], *, deadline: float | None = None
    ) -> tuple[dict[str, bytes | None], dict[str, int], int]:
        """Values and mod_revisions of ``keys`` at one revision (one read-only txn)."""
        tx = self.client.transactions

        def read() -> TxnResult:
            return txn(self.client, [], [tx.get(k) for k in keys])

        result = call_with_retry(read, deadline=deadline or self.timeout, what="read")
        values: dict[str, bytes | None] = {}
        revs: dict[str, int] = {}
        for k, response in zip(keys, result.responses, strict=True):
            kvs = list(response.response_range.kvs)
            values[k] = bytes(kvs[0].value) if kvs else None
            revs[k] = int(kvs[0].mod_revision) if kvs else 0
        return values, revs, result.revision

    def _mod_revisions(self, keys: Sequence[str]) -> dict[str, int]:
        return self._read_keys(keys)[1]

    def _settings_to_modify(
        self, key: str, name: str, ks: int, expected_revision: int | None
    ) -> tuple[ResourceGroup, int, bool]:
        """The settings a modify patches, the revision its commit is guarded by, and whether
        they were remembered: what this writer last committed or saw at ``key``
        (``KnownValues``; the guard catches a stale one), else a read. With
        ``expected_revision`` a remembered revision other than it is checked by a read (the key
        may have moved to it since)."""
        known = self._remembered(key, expected_revision)
        if known is not None:
            return codec.decode_settings(key, known[0]), known[1], True
        return (*self._read_settings(key, name, ks), False)

    def _controller_to_modify(
        self, expected_revision: int | None
    ) -> tuple[ControllerConfig, int, bool]:
        """The controller config an update patches, its guard revision and whether it was
        remembered, as ``_settings_to_modify``."""
        key = self.layout.controller()
        known = self._remembered(key, expected_revision)
        if known is not None:
            return codec.decode_controller(key, known[0]), known[1], True
        return (*self.get_controller_at(), False)

    def _remembered(self, key: str, expected_revision: int | None) -> tuple[bytes, int] | None:
        """The value and revision remembered at ``key`` to plan from, or None to read: with
        ``expected_revision``, only a remembered revision equal to it (another may be stale)."""
        known = self._known.get(key)
        if known is None or expected_revision not in (None, known[1]):
            return None
        return known

    def _read_settings(self, key: str, name: str, ks: int) -> tuple[ResourceGroup, int]:
        values, revs, _ = self._read_keys([key])
        data = values[key]
        if data is None:
            if name == DEFAULT_GROUP_NAME:
                return default_group(ks).with_wire(b""), 0
            raise group_not_found(name)
        return codec.decode_settings(key, data), revs[key]

    def get_group(self, name: str, keyspace_id: int | None = None) -> GroupView:
        """A group's settings and states at one revision; NotFoundError if missing.

        ``default`` exists in every keyspace: when it was never stored, PD's reserved
        defaults are returned with ``mod_revision`` 0.
        """
        ks = _ks(keyspace_id)
        skey, tkey = self.layout.settings(name, ks), self.layout.states(name, ks)
        values, revs, header = self._read_keys([skey, tkey])
        data = values[skey]
        if data is None:
            if name != DEFAULT_GROUP_NAME:
                raise group_not_found(name)
            group = default_group(ks)
        else:
            group = codec.decode_settings(skey, data)
        states_data = values[tkey]
        states = codec.decode_states(tkey, states_data) if states_data is not None else None
        return GroupView(group, states, header, revs[skey])

    def list_groups(self, keyspace_id: int | None = None) -> tuple[list[GroupView], int]:
        """Every group of a keyspace (settings and states at one revision), sorted by name.

        A value that does not decode is logged and skipped, never hiding the others.
        """
        ks = _ks(keyspace_id)
        sprefix = self.layout.settings("", ks).encode()
        tprefix = self.layout.states("", ks).encode()
        tx = self.client.transactions

        def read() -> TxnResult:
            return txn(self.client, [], [
                tx.get(sprefix, prefix_range_end(sprefix)),
                tx.get(tprefix, prefix_range_end(tprefix)),
            ])  # fmt: skip

        result = call_with_retry(read, deadline=self.timeout, what="list groups")
        states: dict[str, GroupStates] = {}
        for kv in result.responses[1].response_range.kvs:
            key = kv.key.decode("utf-8", "surrogateescape")
            try:
                parsed = self.layout.parse(key)
                if parsed.kind is KeyKind.STATES and parsed.name is not None:
                    states[parsed.name] = codec.decode_states(key, kv.value)
            except (DecodeError, ValueError) as exc:
                log.warning("undecodable_value", key=key, revision=kv.mod_revision, error=str(exc))
        views: dict[str, GroupView] = {}
        for kv in result.responses[0].response_range.kvs:
            key = kv.key.decode("utf-8", "surrogateescape")
            try:
                parsed = self.layout.parse(key)
                value = codec.decode_value(key, parsed, kv.value)
            except (DecodeError, ValueError) as exc:
                log.warning("undecodable_value", key=key, revision=kv.mod_revision, error=str(exc))
                continue
            if parsed.kind is not KeyKind.SETTINGS or parsed.keyspace_id != ks:
                continue  # a keyspace whose id merely starts with ours ("1/" vs "12/")
            assert isinstance(value, ResourceGroup)
            views[value.name] = GroupView(
                value, states.get(value.name), result.revision, int(kv.mod_revision)
            )
        if DEFAULT_GROUP_NAME not in views:
            views[DEFAULT_GROUP_NAME] = GroupView(
                default_group(ks), states.get(DEFAULT_GROUP_NAME), result.revision, 0
            )
        return [views[n] for n in sorted(views)], result.revision

    def get_controller_at(self) -> tuple[ControllerConfig, int]:
        """The controller config and its mod_revision (PD's defaults and 0 when absent)."""
        key = self.layout.controller()
        values, revs, _ = self._read_keys([key])
        data = values[key]
        if data is None:
            return ControllerConfig(), 0
        return codec.decode_controller(key, data), revs[key]

    def get_controller(self) -> ControllerConfig:
        """The controller config (PD's defaults when never written)."""
        return self.get_controller_at()[0]

    def get_service_limit(self, keyspace_id: int | None = None) -> ServiceLimit:
        """A keyspace's service limit; NotFoundError when none is set."""
        ks = _ks(keyspace_id)
        key = self.layout.service_limit(ks)
        values, _, _ = self._read_keys([key])
        data = values[key]
        if data is None:
            raise NotFoundError(f"no service limit for keyspace {ks}")
        return codec.decode_service_limit(key, data, ks)

    def resolve_keyspace(self, name: str) -> int:
        """A keyspace name to its id, through PD's index key ``keyspaces/id/{name}``
        (``rmwatch.store.keyspaces``); NotFoundError when PD has no such keyspace."""
        keyspace_id = self._keyspaces(name)
        if keyspace_id is None:
            raise NotFoundError("keyspace not found")
        return keyspace_id


def _controller_update(update: Callable[[], ControllerConfig]) -> ControllerConfig:
    """``update()``, its failures as PD words them (400): an unknown key is PD's
    ``config item <key> not found`` (metadataapi/config_service.go:430)."""
    try:
        return update()
    except KeyError as exc:
        raise _unknown_controller_key(str(exc.args[0])) from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise InvalidInputError(where, err["msg"]) from None
    except ValueError as exc:
        # PD's words: the policy's validate (config.go:129-140)
        raise InvalidInputError("controller", str(exc), pd_text=True) from None


def _unknown_controller_key(item: str) -> InvalidInputError:
    """PD's ``config item <key> not found`` (metadataapi/config_service.go:430), a 400."""
    return InvalidInputError(item, f"config item {item} not found", pd_text=True)


def _refuse_raw_mode(group: ResourceGroup) -> None:
    """RawMode is not implemented in PD: loading a stored one panics ("no implementation",
    pkg/mcs/resourcemanager/server/resource_group.go:240), so it is never stored (400)."""
    if group.mode is GroupMode.RAW_MODE:
        raise InvalidInputError("mode", RAW_MODE_REFUSED)


def _patch_settings(old: ResourceGroup, new: ResourceGroup) -> ResourceGroup:
    """PD's PatchSettings: new settings onto the old group, tokens and stats untouched."""
    if new.mode != old.mode:
        raise InvalidInputError(
            "mode",
            "only support reconfigure in same mode, maybe you should delete and create a new one",
            pd_text=True,  # resource_group.go:220
        )
    update: dict[str, Any] = {
        "priority": new.priority,
        "runaway_settings": new.runaway_settings,
        "background_settings": new.background_settings,
    }
    if old.mode is GroupMode.RU_MODE:
        if new.r_u_settings is None:
            raise InvalidInputError(
                "r_u_settings",
                "invalid resource group settings, RU mode should set RU settings",
                pd_text=True,  # resource_group.go:232
            )
        old_ru = old.r_u_settings.r_u if old.r_u_settings and old.r_u_settings.r_u else None
        fresh = new.r_u_settings.r_u
        # PD's GroupTokenBucket.patch/applySettings (token_buckets.go:438-457, HEAD a186e0c):
        # no ``r_u``, or an ``r_u`` without ``settings``, keeps the stored bucket settings.
        settings = fresh.settings if fresh is not None else None
        if settings is None and old_ru is not None:
            settings = old_ru.settings
        bucket = TokenBucket(
            settings=settings,
            tokens=old_ru.tokens if old_ru else 0.0,  # no token delta: settings only
        )
        update["r_u_settings"] = new.r_u_settings.model_copy(update={"r_u": bucket})
    elif old.mode is GroupMode.RAW_MODE:
        if new.raw_resource_settings is None:
            raise InvalidInputError("raw_resource_settings", "required to modify a raw-mode group")
        old_raw = old.raw_resource_settings
        parts: dict[str, TokenBucket | None] = {}
        for part in ("cpu", "io_read", "io_write"):
            fresh = getattr(new.raw_resource_settings, part)
            prior = getattr(old_raw, part) if old_raw is not None else None
            parts[part] = (
                None
                if fresh is None
                else TokenBucket(settings=fresh.settings, tokens=prior.tokens if prior else 0.0)
            )
        update["raw_resource_settings"] = new.raw_resource_settings.model_copy(update=parts)
    return old.model_copy(update=update)


def parse_json_object(body: bytes, what: str = "body") -> Any:
    """Decode a JSON request body, InvalidInputError naming ``what`` if it is not JSON."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(what, f"not valid JSON: {exc}") from None


__all__ = ["DEFAULT_TIMEOUT", "GroupView", "Writer", "parse_json_object"]
