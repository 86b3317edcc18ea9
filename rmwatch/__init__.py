"""rmwatch: one write path and provably in-sync replicas for PD resource-manager metadata.

The library lives in two subpackages: ``rmwatch.watcher`` (the replica, a cache that is in sync
with etcd) and ``rmwatch.store`` (PD's key layout, models and codecs, and the single writer).
Every error either can raise is in ``rmwatch.errors``; helpers for tests in ``rmwatch.testing``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rmwatch")
except PackageNotFoundError:  # pragma: no cover - run from a checkout that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
