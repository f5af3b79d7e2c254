"""Fixtures for tests that run the real things (Janus, Kamailio, the gateway) on a private loopback."""

from __future__ import annotations

import os
import shutil
from typing import Iterator

import pytest

from tests.integration.netns import network_namespace


@pytest.fixture
def netns() -> Iterator[str]:
    """Run the test inside a fresh, loopback-only network namespace (see netns.py)."""
    if os.geteuid() != 0:
        pytest.skip("integration tests need root to create network namespaces")
    if shutil.which("ip") is None:
        pytest.skip("integration tests need iproute2 (make test installs it)")
    with network_namespace() as name:
        yield name
