"""``python -m rmwatch.cli.watchdog FD CMD...``: run CMD, and kill it when FD reads EOF.

The portable half of ``rmwatch.cli.supervisor``: FD is the read end of a pipe whose write end
only the supervising process holds, so end-of-file means that process is gone (even after a
SIGKILL, which nothing can catch). SIGTERM, SIGINT and SIGHUP sent to the watchdog are passed
on to CMD, so stopping the watchdog stops CMD the usual, graceful way. The watchdog exits with
CMD's status (128 + N when CMD died of signal N, as a shell reports it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from types import FrameType


def _kill_on_eof(fd: int, child: subprocess.Popen[bytes]) -> None:
    try:
        while os.read(fd, 64):
            pass  # nobody writes: only EOF (the supervisor exited) ends this loop
    except OSError:
        pass
    child.kill()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command in ``argv[1:]`` under the watch of the pipe end ``argv[0]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or not (args[0].isascii() and args[0].isdigit()):
        print("usage: python -m rmwatch.cli.watchdog FD COMMAND [ARG...]", file=sys.stderr)
        return 2
    fd = int(args[0])
    # Signal handlers first, then the command: a SIGTERM that arrives while the command is
    # being started is held and passed on, instead of killing the watchdog and orphaning it.
    started: list[subprocess.Popen[bytes]] = []
    held: list[int] = []

    def forward(sig: int, _frame: FrameType | None) -> None:
        if started:
            started[0].send_signal(sig)
        else:
            held.append(sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    child = subprocess.Popen(args[1:])
    started.append(child)
    for held_sig in held:
        child.send_signal(held_sig)
    threading.Thread(target=_kill_on_eof, args=(fd, child), daemon=True).start()
    code = child.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
