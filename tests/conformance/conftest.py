"""Fixtures of the conformance suite."""

from collections.abc import Iterator

import pytest
from conformance_support import Services, running_services


@pytest.fixture
def services(etcd_endpoints: list[str], root_prefix: str) -> Iterator[Services]:
    """The writer's app and the replica's sidecar on one etcd prefix (``running_services``)."""
    with running_services(etcd_endpoints, root_prefix) as both:
        yield both
