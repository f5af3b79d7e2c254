"""The WebSocket endpoint with real autobahn protocol code over an in-memory transport: handshake answers, frames
after closing, and shutdown."""

from __future__ import annotations

import base64
import json
import os
import struct
from types import SimpleNamespace
from typing import Any

from twisted.internet.error import ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from sylk.gateway.config import WebRTCGatewayConfig
from sylk.gateway.janus.sip import JanusSIPBackend, LineSettings
from sylk.gateway.websocket import CLOSE_SHUTTING_DOWN, GatewayWebSocketFactory, GatewayWebSocketProtocol
from tests.fakejanus import FakeJanus


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked frame, as browsers send them."""
    mask = os.urandom(4)
    length = len(payload)
    header = bytes([0x80 | opcode]) + (bytes([0x80 | length]) if length < 126 else
                                       bytes([0x80 | 126]) + struct.pack("!H", length))
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of the unmasked frames a server sent."""
    frames = []
    while data:
        opcode, length = data[0] & 0x0F, data[1] & 0x7F
        offset = 2
        if length == 126:
            length, offset = struct.unpack("!H", data[2:4])[0], 4
        frames.append((opcode, data[offset:offset + length]))
        data = data[offset + length:]
    return frames


class TCPLikeTransport(StringTransport):
    def unregisterProducer(self) -> None:
        self.producer = None  # like a TCP transport: fine without a producer (autobahn does it on refusals)


class Browser:
    """One socket: the handshake, then frames both ways."""

    def __init__(self, factory: GatewayWebSocketFactory, protocols: str | None = "sylkRTC-1",
                 origin: str | None = None) -> None:
        self.protocol: GatewayWebSocketProtocol = factory.buildProtocol(None)
        self.transport = TCPLikeTransport()
        self.protocol.makeConnection(self.transport)
        headers = [b"GET /webrtcgateway/ws HTTP/1.1", b"Host: gateway.example.com", b"Upgrade: websocket",
                   b"Connection: Upgrade", b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)),
                   b"Sec-WebSocket-Version: 13"]
        if protocols is not None:
            headers.append(b"Sec-WebSocket-Protocol: " + protocols.encode())
        if origin is not None:
            headers.append(b"Origin: " + origin.encode())
        self.protocol.dataReceived(b"\r\n".join(headers) + b"\r\n\r\n")
        self.response, _, rest = self.transport.value().partition(b"\r\n\r\n")
        self.transport.clear()
        self._pending = rest

    @property
    def status(self) -> int:
        return int(self.response.split(b" ")[1])

    def send(self, payload: bytes, opcode: int = 0x1) -> None:
        self.protocol.dataReceived(client_frame(payload, opcode))

    def received(self) -> list[Any]:
        """Text frames as JSON; a close frame as ("close", code)."""
        data, self._pending = self._pending + self.transport.value(), b""
        self.transport.clear()
        result: list[Any] = []
        for opcode, payload in server_frames(data):
            if opcode == 0x8:
                result.append(("close", struct.unpack("!H", payload[:2])[0]))
            else:
                result.append(json.loads(payload))
        return result


class WebSocketTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.janus = FakeJanus()
        self.link = SimpleNamespace(api=self.janus.api)
        self.settings = WebRTCGatewayConfig(websocket_ping_interval=0, web_origins=("https://phone.example.com",))
        backend = JanusSIPBackend(self.link, LineSettings(), self.janus.clock)
        self.factory = GatewayWebSocketFactory(backend, self.settings, self.janus.clock)

    def ready_browser(self) -> Browser:
        browser = Browser(self.factory)
        self.janus.flush()
        self.assertEqual(browser.received(), [{"sylkrtc": "event", "event": "ready"}])
        return browser

    def test_handshake_selects_sylkrtc_1_and_sends_ready(self) -> None:
        browser = Browser(self.factory, "chat, sylkRTC-1")
        self.assertEqual(browser.status, 101)
        self.assertIn(b"Sec-WebSocket-Protocol: sylkRTC-1", browser.response)
        self.janus.flush()
        self.assertEqual(browser.received(), [{"sylkrtc": "event", "event": "ready"}])

    def test_sylkrtc_2_is_preferred(self) -> None:
        browser = Browser(self.factory, "sylkRTC-1, sylkRTC-2")
        self.assertIn(b"Sec-WebSocket-Protocol: sylkRTC-2", browser.response)
        self.janus.flush()
        self.assertEqual(browser.received(), [{"sylkrtc": "ready-event"}])
        browser.send(b'{"sylkrtc":"ping","transaction":"p"}')
        self.assertEqual(browser.received(), [{"sylkrtc": "ack", "transaction": "p"}])

    def test_handshake_refusals(self) -> None:
        self.assertEqual(Browser(self.factory, None).status, 406)
        self.assertEqual(Browser(self.factory, "sylkRTC-9").status, 406)
        self.assertEqual(Browser(self.factory, origin="https://evil.example.net").status, 403)
        self.assertEqual(Browser(self.factory, origin="https://phone.example.com").status, 101)
        self.link.api = None
        self.assertEqual(Browser(self.factory).status, 503)

    def test_requests_are_answered_on_the_socket(self) -> None:
        browser = self.ready_browser()
        browser.send(b'{"sylkrtc":"add_account","transaction":"1","account":"a@example.com",'
                     b'"password":"0123456789abcdef0123456789abcdef"}')
        self.assertEqual(browser.received(), [{"sylkrtc": "ack", "transaction": "1"}])

    def test_browser_leaving_with_a_queued_request_loses_nothing_else(self) -> None:
        browser = Browser(self.factory)
        browser.send(b'{"sylkrtc":"register","transaction":"1","account":"a@example.com"}')
        browser.protocol.connectionLost(Failure(ConnectionLost()))
        self.janus.flush()  # the late session is destroyed; the queued request's answer has nowhere to go
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertIn("destroy", self.janus.kinds())
        self.assertEqual(self.factory.connections, {})

    def test_frames_after_our_close_frame_are_ignored(self) -> None:
        browser = self.ready_browser()
        browser.protocol.disconnect(4503, "SIP backend lost")
        browser.send(b"not json")
        browser.send(b'{"sylkrtc":"register","transaction":"1","account":"a@example.com"}')
        self.assertEqual(browser.received(), [("close", 4503)])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_shutdown_closes_every_browser_and_refuses_new_ones(self) -> None:
        browsers = [self.ready_browser(), self.ready_browser()]
        closing = self.factory.close_all("sylkgateway is shutting down")
        self.janus.flush()
        self.successResultOf(closing)
        for browser in browsers:
            self.assertEqual(browser.received(), [("close", CLOSE_SHUTTING_DOWN)])
        self.assertEqual(self.janus.sessions, {})
        self.assertEqual(Browser(self.factory).status, 503)
