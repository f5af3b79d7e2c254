"""`/health` and `/ready`: what a load balancer, systemd or an orchestrator asks the gateway.

- `/health` (liveness): 200 while the process serves HTTP at all. Nothing else is checked: a gateway whose Janus is
  away is still alive (it recovers by itself), and restarting it would cost its users their kept state.
- `/ready` (readiness): 200 when a browser connecting now would be served: at least one Janus member is connected
  and checked, and the gateway is not shutting down; otherwise 503 with `Retry-After`, which is also what such a
  browser's handshake gets. The body says how many members are connected, and nothing about where they are.

Both answer JSON, are never cached, and take GET or HEAD only.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, Sequence

from twisted.web.resource import Resource
from twisted.web.server import Request

from sylk.gateway.metrics import JanusMember, connected_members
from sylk.gateway.websocket import RETRY_AFTER, SERVICE_UNAVAILABLE




class _Gateway(Protocol):
    shutting_down: bool


class _JSONResource(Resource):
    isLeaf = True
    allowedMethods = (b"GET", b"HEAD")

    def render_GET(self, request: Request) -> bytes:
        status, body = self.state()
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        if status == SERVICE_UNAVAILABLE:
            request.setHeader(b"retry-after", str(RETRY_AFTER).encode())
        return json.dumps(body).encode() + b"\n"

    render_HEAD = render_GET

    def state(self) -> tuple[int, dict[str, Any]]:
        raise NotImplementedError


class HealthResource(_JSONResource):
    def state(self) -> tuple[int, dict[str, Any]]:
        return 200, {"status": "ok"}


class ReadyResource(_JSONResource):
    def __init__(self, gateway: _Gateway, members: Sequence[JanusMember]) -> None:
        super().__init__()
        self._gateway = gateway
        self._members = members

    def state(self) -> tuple[int, dict[str, Any]]:
        connected = connected_members(self._members)
        ready = connected > 0 and not self._gateway.shutting_down
        body = {"ready": ready, "janus": {"connected": connected, "members": len(self._members)},
                "shutting_down": self._gateway.shutting_down}
        return (200 if ready else SERVICE_UNAVAILABLE), body
