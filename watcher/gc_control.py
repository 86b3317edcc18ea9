"""The replica's hands on the process's cyclic GC: paused during bulk builds, and the steady
snapshot frozen out of the collector's reach.

A replica of 100k groups holds millions of GC-tracked objects (entries and their decoded
models), none of them in a cycle. Left to the collector, every gen-2 collection walks all of
them: a 65-190 ms pause on the read and watch paths, for nothing found. So:

- ``gc_paused``: bulk builds run with the collector off (nested, thread-safe), and the
  application's own setting comes back when the last holder leaves;
- ``HeapFreezer``: after a snapshot is loaded, ``gc.freeze()`` moves every tracked object to
  the permanent generation, which collections skip. Objects there are still freed by reference
  counting (a replaced snapshot goes as usual); only cyclic garbage that happens to exist at
  that moment is kept until ``gc.unfreeze()``. Values the watch brings in afterwards (each
  decoded value is dozens of tracked objects) are frozen in turn by ``refreeze`` every few
  hundred: a full collection first -- cheap, since it walks only what is not frozen yet, and
  it frees the cyclic garbage made meanwhile instead of freezing it -- then a freeze. The
  process has one permanent generation, so the replicas of a process share it: it is unfrozen
  when the last of them closes, and never touched at all when the application had frozen
  objects itself (it manages its GC then).
"""

from __future__ import annotations

import gc
import threading
from contextlib import AbstractContextManager

_lock = threading.RLock()  # reentrant: a finalizer run by refreeze's collection may pause
_paused_holders = 0
_was_enabled = True


class _GcPause:
    """One hold on the paused GC (``gc_paused``); a class rather than a generator-based
    context manager: entered once per watch response and per validator slice, where
    contextlib's generator cost ~2.7 us an entry and exit against ~1.7 (timeit)."""

    __slots__ = ()

    def __enter__(self) -> None:
        global _paused_holders, _was_enabled  # noqa: PLW0603 (one process-wide switch)
        with _lock:
            if _paused_holders == 0:
                _was_enabled = gc.isenabled()  # the application's own setting, restored below
            _paused_holders += 1
            gc.disable()

    def __exit__(self, *exc: object) -> None:
        global _paused_holders  # noqa: PLW0603
        with _lock:
            _paused_holders -= 1
            if _paused_holders == 0 and _was_enabled:
                gc.enable()


def gc_paused() -> AbstractContextManager[None]:
    """Pause the cyclic GC during a bulk build, which otherwise spends much of its time in
    gen-2 collections that find nothing (entries hold no cycles). Nested and thread-safe:
    the GC comes back when the last holder leaves, if it was on before."""
    return _PAUSE


_PAUSE = _GcPause()


class HeapFreezer:
    """Process-wide ``gc.freeze`` shared by the replicas of a process (see module doc).

    ``acquire`` when a replica starts, ``freeze`` after each snapshot it loads, ``release``
    when it closes.
    """

    _holders = 0
    _app_froze = False  # the application had frozen objects before the first replica started
    _we_froze = False

    @classmethod
    def acquire(cls) -> None:
        """A replica starts using the freezer."""
        with _lock:
            if cls._holders == 0:
                cls._app_froze = gc.get_freeze_count() > 0
                cls._we_froze = False
            cls._holders += 1

    @classmethod
    def freeze(cls) -> None:
        """Move every tracked object to the permanent generation (unless the application
        manages freezing itself, or no replica holds the freezer)."""
        with _lock:
            if cls._holders == 0 or cls._app_froze:
                return
            gc.freeze()
            cls._we_froze = True

    @classmethod
    def refreeze(cls) -> None:
        """Collect what is not frozen yet, then freeze the survivors (see module doc)."""
        with _lock:
            if cls._holders == 0 or cls._app_froze:
                return
            gc.collect()
            gc.freeze()
            cls._we_froze = True

    @classmethod
    def release(cls) -> None:
        """A replica closes; the last one out gives the frozen objects back to the collector."""
        with _lock:
            if cls._holders == 0:
                return
            cls._holders -= 1
            if cls._holders == 0 and cls._we_froze:
                gc.unfreeze()
                cls._we_froze = False
