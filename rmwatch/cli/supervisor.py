"""Child processes that cannot outlive the process that started them (``rmwatch dev``'s).

A clean stop (SIGTERM, Ctrl-C) is the parent's job: it signals its children and waits. This
module covers the unclean one: when the parent is killed (SIGKILL, OOM killer, a crash) its
children must not keep running and holding their ports. Two mechanisms:

- ``pdeathsig`` (Linux, where util-linux's ``setpriv`` is installed): ``setpriv --pdeathsig
  KILL -- CMD`` asks the kernel to SIGKILL CMD when its parent dies, then execs CMD, so the
  child *is* CMD (same pid, signals reach it directly). The kernel fires this when the parent
  *thread* that forked the child exits, so children are started from the main thread only.
  Unlike ``preexec_fn`` (a ``prctl`` between fork and exec) it is safe in a threaded parent.
- ``watchdog`` (everywhere else): ``python -m rmwatch.cli.watchdog FD CMD`` runs CMD as its own
  child and kills it when FD reads end-of-file. FD is the read end of a pipe whose only write
  end the supervisor holds, so EOF means the supervisor is gone, however it died.

Every child also gets its own process group, so a Ctrl-C at the terminal reaches only the
parent, which then stops the children in order (writer and replica before etcd).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal, Self

Mechanism = Literal["pdeathsig", "watchdog"]


def default_mechanism() -> Mechanism:
    """``pdeathsig`` on Linux with ``setpriv`` on ``$PATH``, else ``watchdog``."""
    if sys.platform == "linux" and shutil.which("setpriv"):
        return "pdeathsig"
    return "watchdog"


class Supervisor:
    """Starts child processes that die with this one; ``close()`` when done with them."""

    def __init__(self, mechanism: Mechanism | None = None) -> None:
        self.mechanism: Mechanism = mechanism or default_mechanism()
        self._setpriv: str | None = None
        self._pipe: tuple[int, int] | None = None
        if self.mechanism == "pdeathsig":
            self._setpriv = shutil.which("setpriv")
            if self._setpriv is None:
                raise RuntimeError("the pdeathsig mechanism needs util-linux's setpriv")
        else:
            # Both ends are non-inheritable (PEP 446): only a watchdog, through pass_fds,
            # gets the read end; the write end stays here and closes when this process dies.
            self._pipe = os.pipe()

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """``subprocess.Popen(argv, **kwargs)``, wrapped so the child dies with this process."""
        if threading.current_thread() is not threading.main_thread():
            # The parent-death signal follows the forking thread, not the process.
            raise RuntimeError("Supervisor.popen must be called from the main thread")
        kwargs.setdefault("process_group", 0)
        if self._setpriv is not None:
            command = [self._setpriv, "--pdeathsig", "KILL", "--", *argv]
        else:
            if self._pipe is None:
                raise RuntimeError("supervisor is closed")
            read_fd = self._pipe[0]
            command = [sys.executable, "-m", "rmwatch.cli.watchdog", str(read_fd), *argv]
            kwargs["pass_fds"] = (*kwargs.get("pass_fds", ()), read_fd)
        return subprocess.Popen(command, **kwargs)

    def close(self) -> None:
        """Close the watchdog pipe: any child still running under a watchdog is killed."""
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            for fd in pipe:
                os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


__all__ = ["Mechanism", "Supervisor", "default_mechanism"]
