"""The background jobs of a started replica, wired together, and their threads.

Five threads: the sync worker (the only one that touches the watch stream), the heartbeat, the
relabel confirmer, the validator, and (with ``digest_interval``) the periodic digest. They are
started together and stopped together; the order of the stop matters (see ``stop``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from rmwatch.store.etcd import EtcdClient
from rmwatch.watcher.digest import DigestJob
from rmwatch.watcher.heartbeat import Heartbeat
from rmwatch.watcher.listeners import Listeners
from rmwatch.watcher.metrics import ReplicaMetrics
from rmwatch.watcher.options import ReplicaOptions
from rmwatch.watcher.published import Published
from rmwatch.watcher.relabel import RelabelConfirmer
from rmwatch.watcher.state import StateMachine
from rmwatch.watcher.sync import SessionFactory, SyncWorker
from rmwatch.watcher.validation import Validator


class Jobs:
    """Builds every job over one etcd ``client``; ``start`` runs them, ``stop`` ends them."""

    def __init__(
        self,
        *,
        client: EtcdClient,
        options: ReplicaOptions,
        published: Published,
        machine: StateMachine,
        listeners: Listeners,
        validator: Validator,
        metrics: ReplicaMetrics,
        session_factory: SessionFactory,
        ready: Callable[[], bool],
        stop: threading.Event,
    ) -> None:
        prefix = options.layout.prefix
        self._client = client
        self._options = options
        self._validator = validator
        self._stop = stop
        self._threads: list[threading.Thread] = []
        self.sync = SyncWorker(
            client=client,
            options=options,
            published=published,
            machine=machine,
            listeners=listeners,
            validator=validator,
            metrics=metrics,
            session_factory=session_factory,
            stop=stop,
        )
        self.relabel = RelabelConfirmer(
            client=client,
            prefix=prefix,
            published=published,
            machine=machine,
            listeners=listeners,
        )
        self.digest = DigestJob(
            client=client,
            prefix=prefix,
            page_size=options.page_size,
            published=published,
            metrics=metrics,
            strict=options.strict_digest,
            request_rebuild=self.sync.request_rebuild,
        )
        self.heartbeat = Heartbeat(
            session=lambda: self.sync.session,
            progress_interval=options.progress_interval,
            stall_timeout=options.stall_timeout,
            metrics=metrics,
            age=published.age,
            ready=ready,
        )

    def start(self) -> None:
        """Start every thread; returns at once."""
        stop = self._stop
        self._spawn("worker", self.sync.run)
        self._spawn("heartbeat", lambda: self.heartbeat.run(stop))
        self._spawn("confirmer", lambda: self.relabel.run(stop))
        self._spawn("validator", lambda: self._validator.run(stop))
        interval = self._options.digest_interval
        if interval:
            self._spawn("digest", lambda: self.digest.run(stop, interval))

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=f"rmwatch-replica-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, timeout: float) -> None:
        """Stop every thread (``stop`` is already set) and close the etcd connection.

        The worker is stopped before its channel is closed: closing a gRPC channel while
        another thread is inside ``stub.Watch(...)`` on it crashed the C core (SIGSEGV in
        cygrpc). Only a worker still stuck after 1 s (a unary call to a frozen member, with up
        to 5 s of deadline left) gets its channel closed under it, which cancels that call; its
        retries start no call once stop is set, and a call it still makes raises
        EtcdClientClosedError (``GuardedClient``) instead of building a stub on the closed
        channel, the other way to crash the C core.
        """
        self.relabel.stop()
        started = time.monotonic()
        deadline = started + timeout
        channel_closed = False
        for thread in self._threads:
            while thread.is_alive() and time.monotonic() < deadline:
                session = self.sync.session
                if session is not None:
                    session.cancel()
                thread.join(0.05)
                if thread.is_alive() and not channel_closed and time.monotonic() > started + 1.0:
                    self._client.close()
                    channel_closed = True
        self._threads.clear()
        if not channel_closed:
            self._client.close()
