"""Fixtures of the conformance suite (``conformance_support.services``)."""

from conformance_support import services

__all__ = ["services"]
