"""SylkServer application `sylkgateway`: sylkgateway inside a running SylkServer, mounted on SylkServer's web
server (sylk/gateway/embedding.py says how, and which settings it reads; docs/operations.md, "Embedding in
SylkServer").

SylkServer imports every `sylk/applications/<name>/__init__.py` and its application metaclass instantiates each
SylkApplication subclass at once: importing this module and creating the application start nothing. SylkServer calls
`start()` once its web server listens, and `stop()` when it shuts down.

This module needs SylkServer (`sylk.applications`); the rest of sylkgateway does not.
"""

from __future__ import annotations

from typing import Any

from sylk.applications import SylkApplication  # type: ignore[attr-defined]  # SylkServer's, installed beside it
from sylk.gateway.embedding import EmbeddedGateway

__all__ = ["SylkGatewayApplication"]


class SylkGatewayApplication(SylkApplication):  # type: ignore[misc]  # SylkServer names it sylkgateway
    """The gateway as a SylkServer application. Its SIP goes through Janus, never through SylkServer: the SIP
    requests SylkServer routes here (X-Sylk-App, or [Server] application_map) are refused."""

    def __init__(self) -> None:
        self.gateway = EmbeddedGateway()

    def start(self) -> None:
        self.gateway.start()

    def stop(self) -> None:
        self.gateway.stop()

    def incoming_session(self, session: Any) -> None:
        session.reject(488)

    def incoming_subscription(self, request: Any, data: Any) -> None:
        request.reject(405)

    def incoming_referral(self, request: Any, data: Any) -> None:
        request.reject(405)

    def incoming_message(self, request: Any, data: Any) -> None:
        request.answer(405)
