"""``rmwatch.cli.supervisor``: children started through it die with their parent, even when
the parent is SIGKILLed, by either mechanism (Linux's parent-death signal, or the watchdog)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from process_support import descendants, wait_gone

from rmwatch.cli.supervisor import Mechanism, Supervisor, default_mechanism

MECHANISMS: list[Mechanism] = ["watchdog"]
if default_mechanism() == "pdeathsig":
    MECHANISMS.insert(0, "pdeathsig")

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]

# A parent that starts one sleeping child under the supervisor, says so, then sleeps until
# it is killed.
PARENT = """
import sys, time
from rmwatch.cli.supervisor import Supervisor
supervisor = Supervisor(sys.argv[1])
supervisor.popen([sys.executable, "-c", "import time; time.sleep(120)"])
print("started", flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
class TestParentDeath:
    @pytest.mark.parametrize("mechanism", MECHANISMS)
    def test_sigkill_of_the_parent_kills_its_children(self, mechanism: Mechanism) -> None:
        """SIGKILL of the supervising process: its children are gone within 5 s."""
        parent = subprocess.Popen(
            [sys.executable, "-c", PARENT, mechanism], stdout=subprocess.PIPE, text=True
        )
        assert parent.stdout is not None
        try:
            assert parent.stdout.readline().strip() == "started"
            # The command itself, and under the watchdog mechanism the watchdog above it.
            expected = 2 if mechanism == "watchdog" else 1
            deadline = time.monotonic() + 10
            while len(children := descendants(parent.pid)) < expected:
                assert time.monotonic() < deadline, f"the parent started only {children}"
                time.sleep(0.02)
            parent.kill()
            parent.wait(5)
            assert wait_gone(children, 5.0) == set()
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait()


class TestWatchdog:
    def test_sigterm_is_passed_on_and_status_reported(self) -> None:
        """SIGTERM to a watchdog reaches its command, which stops; the watchdog exits with
        the status a shell reports for it (128 + 15)."""
        with Supervisor("watchdog") as supervisor:
            proc = supervisor.popen(SLEEPER)
            deadline = time.monotonic() + 10
            while not (command := descendants(proc.pid)):  # the watchdog started it
                assert time.monotonic() < deadline, "the watchdog started no command"
                time.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 128 + signal.SIGTERM
        assert wait_gone(command, 5.0) == set()

    def test_close_kills_what_runs_under_a_watchdog(self) -> None:
        """Closing the supervisor (its pipe) is the same as its death for the watchdog."""
        supervisor = Supervisor("watchdog")
        proc = supervisor.popen(SLEEPER)
        supervisor.close()
        assert proc.wait(10) == 128 + signal.SIGKILL


class TestSupervisor:
    def test_children_have_their_own_process_group(self) -> None:
        """A Ctrl-C at the terminal reaches only the parent, which stops children in order."""
        with Supervisor() as supervisor:
            proc = supervisor.popen(SLEEPER)
            try:
                assert os.getpgid(proc.pid) == proc.pid
                assert os.getpgid(proc.pid) != os.getpgrp()
            finally:
                proc.kill()
                proc.wait()

    def test_popen_outside_the_main_thread_is_refused(self) -> None:
        """The parent-death signal follows the forking thread: other threads may not spawn."""
        errors: list[BaseException] = []

        def spawn() -> None:
            try:
                with Supervisor() as supervisor:
                    supervisor.popen(SLEEPER)
            except RuntimeError as exc:
                errors.append(exc)

        thread = threading.Thread(target=spawn)
        thread.start()
        thread.join(10)
        assert len(errors) == 1
        assert "main thread" in str(errors[0])
