"""Fixtures for tests that run the real things (Janus, Kamailio, the gateway) on a private loopback."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.integration.gateway import Gateway
from tests.integration.kamailio import Kamailio
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


@pytest.fixture
def kamailio(netns: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Kamailio]:
    """The registrar, for the demo users or for the test module's KAMAILIO_USERS ({user: password})."""
    with Kamailio(tmp_path / "kamailio", users=getattr(request.module, "KAMAILIO_USERS", None)) as registrar:
        yield registrar


def start_gateway(tmp_path: Path, proxy: str, **gateway_options: Any) -> Gateway:
    """The gateway with its Janus, sending all SIP to `proxy` (short SIP timeouts, for tests)."""
    workdir = tmp_path / "gateway"
    workdir.mkdir(exist_ok=True)
    options = {"outbound_sip_proxy": proxy, **gateway_options}
    return Gateway(workdir, {"WebRTCGateway": options, "Janus": {"sip_transaction_timeout": 4}}).start()


@pytest.fixture
def gateway(kamailio: Kamailio, tmp_path: Path) -> Iterator[Gateway]:
    gateway = start_gateway(tmp_path, kamailio.proxy)
    yield gateway
    gateway.stop()
