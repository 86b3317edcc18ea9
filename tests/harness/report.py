"""Lines a test wants printed at the end of the run: pytest hides a passing test's output,
and CI should still show, e.g., the soak's seed and fault counts (tests/conftest.py prints)."""

import pytest

SUMMARY_KEY = pytest.StashKey[list[str]]()
