"""The benchmark suite: ``python -m bench`` (bench/README.md says what it measures and how)."""
