"""`/health` and `/ready`: liveness regardless of Janus, readiness only with a connected member and not while
shutting down (503 with Retry-After, as a browser's handshake would get)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from sylk.gateway.health import HealthResource, ReadyResource


@dataclass
class Member:
    api: Any = None


@dataclass
class Gateway:
    shutting_down: bool = False


def get(resource: Any, method: bytes = b"GET") -> tuple[int, Any, DummyRequest]:
    request = DummyRequest([b""])
    request.method = method
    body = resource.render(request)
    return request.responseCode or 200, json.loads(body) if body else None, request


class HealthTests(SynchronousTestCase):
    def test_alive(self) -> None:
        status, body, request = get(HealthResource())
        self.assertEqual((status, body), (200, {"status": "ok"}))
        self.assertEqual(request.responseHeaders.getRawHeaders(b"cache-control"), [b"no-store"])

    def test_ready_with_a_connected_member(self) -> None:
        gateway, members = Gateway(), [Member(), Member(api=object())]
        status, body, _ = get(ReadyResource(gateway, members))
        self.assertEqual((status, body), (200, {"ready": True, "janus": {"connected": 1, "members": 2},
                                                "shutting_down": False}))

    def test_not_ready_without_janus_or_while_shutting_down(self) -> None:
        gateway, members = Gateway(), [Member()]
        resource = ReadyResource(gateway, members)
        status, body, request = get(resource)
        self.assertEqual((status, body["ready"]), (503, False))
        self.assertEqual(request.responseHeaders.getRawHeaders(b"retry-after"), [b"1"])
        members[0].api = object()
        gateway.shutting_down = True
        self.assertEqual(get(resource)[:2], (503, {"ready": False, "janus": {"connected": 1, "members": 1},
                                                   "shutting_down": True}))

    def test_only_get_and_head(self) -> None:
        from twisted.web.error import UnsupportedMethod
        self.assertRaises(UnsupportedMethod, get, HealthResource(), b"POST")
        self.assertEqual(get(HealthResource(), b"HEAD")[0], 200)
