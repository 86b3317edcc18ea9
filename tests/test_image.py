"""The image, built and run: ``scripts/image-test`` as one test (marker ``image``).

It builds docker/Dockerfile (docker where a daemon answers, else podman on a local Debian
base), runs a writer and a replica container against a real etcd container and checks them,
brings up docker/compose.yaml twice on the same volumes, and runs part of this suite with its
session etcd in a container. Minutes, not seconds, and it installs podman as root where it is
missing: so it runs only when ``RMWATCH_IMAGE_TEST=1``, which the full ``./scripts/test`` (the
README's test command, and so CI) sets unless told ``RMWATCH_IMAGE_TEST=0``. The script's timing
table is printed at the end of the pytest run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from harness import SUMMARY_KEY

ROOT = Path(__file__).resolve().parent.parent
ENV = "RMWATCH_IMAGE_TEST"

needs_opt_in = pytest.mark.skipif(
    os.environ.get(ENV) != "1",
    reason=f"builds and runs the container image (minutes): set {ENV}=1 to run it "
    "(the full ./scripts/test does), or run scripts/image-test",
)


def summary_lines(output: str) -> list[str]:
    """The timing table and verdict that scripts/image-test prints last."""
    lines = output.splitlines()
    start = max((i for i, line in enumerate(lines) if line == "image-test timings:"), default=-1)
    return lines[start:] if start >= 0 else lines[-5:]


def test_summary_lines_finds_the_table() -> None:
    out = "noise\nimage-test timings:\n  base  1.0 s\nimage-test: all checks passed\n"
    assert summary_lines(out) == [
        "image-test timings:",
        "  base  1.0 s",
        "image-test: all checks passed",
    ]


@pytest.mark.image
@needs_opt_in
@pytest.mark.timeout(2400)
def test_image_builds_and_runs(pytestconfig: pytest.Config) -> None:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    proc = subprocess.run(
        [str(ROOT / "scripts/image-test")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=2300,
        check=False,
    )
    output = proc.stdout + proc.stderr
    report = pytestconfig.stash.setdefault(SUMMARY_KEY, [])
    report.extend(summary_lines(proc.stdout))
    if proc.returncode != 0:
        sys.stdout.write(output[-20000:])
    assert proc.returncode == 0, "scripts/image-test failed: its output is above"
    assert "image-test: all checks passed" in proc.stdout
