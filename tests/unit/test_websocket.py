"""The WebSocket endpoint with real autobahn protocol code over an in-memory transport: handshake answers, frames
after closing, shutdown, and admission: connections per address, the request rate, browsers that do not read."""

from __future__ import annotations

import base64
import json
import os
import struct
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionAborted, ConnectionLost
from twisted.internet.interfaces import IAddress
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Site

from sylk.gateway.config import WebRTCGatewayConfig
from sylk.gateway.janus.sip import JanusSIPBackend, LineSettings
from sylk.gateway.sylkrtc import model
from sylk.gateway.sylkrtc.channel import CLOSE_POLICY_VIOLATION, encode_json
from sylk.gateway.sylkrtc.dialects import SylkRTC1
from sylk.gateway.websocket import (CLOSE_GOING_AWAY, SLOW_READER_MAX_BYTES, SLOW_READER_TIMEOUT,
                                    GatewayWebSocketFactory, GatewayWebSocketProtocol, SlowReaderGuard,
                                    client_address)
from tests.fakejanus import FakeJanus, FakeLink


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
        elif length == 127:
            length, offset = struct.unpack("!Q", data[2:10])[0], 10
        frames.append((opcode, data[offset:offset + length]))
        data = data[offset + length:]
    return frames


class TCPLikeTransport(StringTransport):
    protocol: Any = None  # a TCP connection's protocol (twisted.web hands it over to the WebSocket protocol)

    def unregisterProducer(self) -> None:
        self.producer = None  # like a TCP transport: fine without a producer (autobahn does it on refusals)


def handshake(protocols: str | None = "sylkRTC-1", origin: str | None = None,
              forwarded_for: str | None = None) -> bytes:
    headers = [b"GET /webrtcgateway/ws HTTP/1.1", b"Host: gateway.example.com", b"Upgrade: websocket",
               b"Connection: Upgrade", b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)),
               b"Sec-WebSocket-Version: 13"]
    if protocols is not None:
        headers.append(b"Sec-WebSocket-Protocol: " + protocols.encode())
    if origin is not None:
        headers.append(b"Origin: " + origin.encode())
    if forwarded_for is not None:
        headers.append(b"X-Forwarded-For: " + forwarded_for.encode())
    return b"\r\n".join(headers) + b"\r\n\r\n"


class Browser:
    """One socket: the handshake, then frames both ways."""

    def __init__(self, factory: GatewayWebSocketFactory, protocols: str | None = "sylkRTC-1",
                 origin: str | None = None, peer: IAddress | None = None, forwarded_for: str | None = None) -> None:
        self.protocol: GatewayWebSocketProtocol = factory.buildProtocol(None)
        self.transport = TCPLikeTransport(peerAddress=peer)
        self.protocol.makeConnection(self.transport)
        self.protocol.dataReceived(handshake(protocols, origin, forwarded_for))
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
        self.link = FakeLink(self.janus.api)
        self.settings = WebRTCGatewayConfig(websocket_ping_interval=0, web_origins=("https://phone.example.com",))
        backend = JanusSIPBackend([self.link], LineSettings(), self.janus.clock)
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
        refused = Browser(self.factory)
        self.assertEqual(refused.status, 503)
        self.assertIn(b"\r\nRetry-After: 1", refused.response)  # Janus is usually back within a second

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

    def test_frames_are_not_logged_one_by_one(self) -> None:
        # autobahn logs every frame at debug level through the socket's logger; twistd would write each one
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        browser = self.ready_browser()
        browser.send(b'{"sylkrtc":"ping","transaction":"p"}')
        self.assertEqual(browser.received(), [{"sylkrtc": "ack", "transaction": "p"}])
        socket_events = [e for e in events if e.get("log_namespace", "").endswith("GatewayWebSocketProtocol")]
        self.assertEqual([e["log_level"] for e in socket_events], [LogLevel.info])  # "Connection ... opened"

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
            self.assertEqual(browser.received(), [("close", CLOSE_GOING_AWAY)])
        self.assertEqual(self.janus.sessions, {})
        self.assertEqual(Browser(self.factory).status, 503)


class GatewayTestCase(SynchronousTestCase):
    """A factory with `settings` over the fake Janus."""

    settings = WebRTCGatewayConfig(websocket_ping_interval=0)
    trusted_proxy_hops = 0

    def setUp(self) -> None:
        self.janus = FakeJanus()
        backend = JanusSIPBackend([FakeLink(self.janus.api)], LineSettings(), self.janus.clock)
        self.factory = GatewayWebSocketFactory(backend, self.settings, self.janus.clock,
                                               trusted_proxy_hops=self.trusted_proxy_hops)

    def ready_browser(self, **options: Any) -> Browser:
        browser = Browser(self.factory, **options)
        self.assertEqual(browser.status, 101)
        self.janus.flush()
        self.assertEqual(browser.received(), [{"sylkrtc": "event", "event": "ready"}])
        return browser


class ConnectionsPerAddressTests(GatewayTestCase):
    settings = WebRTCGatewayConfig(websocket_ping_interval=0, max_connections_per_address=2)

    def test_a_further_handshake_from_the_address_gets_429(self) -> None:
        self.ready_browser()
        self.ready_browser()
        refused = Browser(self.factory)
        self.assertEqual(refused.status, 429)
        self.assertIn(b"Too many connections from this address (at most 2)", refused.response)
        self.assertEqual(len(self.factory.connections), 2)
        self.ready_browser(peer=IPv4Address("TCP", "192.0.2.7", 40000))  # another address is not affected

    def test_a_connection_counts_until_its_close_is_done(self) -> None:
        first, _ = self.ready_browser(), self.ready_browser()
        first.protocol.connectionLost(Failure(ConnectionLost()))  # its backend session is still being destroyed
        self.assertEqual(Browser(self.factory).status, 429)
        self.janus.flush()  # the close is done
        self.assertEqual(Browser(self.factory).status, 101)

    def test_refused_handshakes_do_not_count(self) -> None:
        for _ in range(3):
            self.assertEqual(Browser(self.factory, protocols=None).status, 406)
        self.ready_browser()
        self.ready_browser()

    def test_ipv6_clients_count_by_their_64(self) -> None:
        self.ready_browser(peer=IPv6Address("TCP", "2001:db8::1", 40000))
        self.ready_browser(peer=IPv6Address("TCP", "2001:db8::ffff:2", 40000))
        self.assertEqual(Browser(self.factory, peer=IPv6Address("TCP", "2001:db8::3", 40000)).status, 429)
        self.ready_browser(peer=IPv6Address("TCP", "2001:db8:0:1::1", 40000))

    def test_without_trusted_proxies_x_forwarded_for_is_ignored(self) -> None:
        self.ready_browser(forwarded_for="198.51.100.1")
        self.ready_browser(forwarded_for="198.51.100.2")
        self.assertEqual(Browser(self.factory, forwarded_for="198.51.100.3").status, 429)


class BehindAProxyTests(GatewayTestCase):
    settings = WebRTCGatewayConfig(websocket_ping_interval=0, max_connections_per_address=1)
    trusted_proxy_hops = 1

    def test_clients_are_told_apart_by_what_the_proxy_appended(self) -> None:
        self.ready_browser(forwarded_for="198.51.100.1")
        self.ready_browser(forwarded_for="198.51.100.1, 198.51.100.2")  # the first entry is the client's own claim
        self.assertEqual(Browser(self.factory, forwarded_for="203.0.113.9, 198.51.100.1").status, 429)
        self.ready_browser()  # no header: the TCP peer


class ClientAddressTests(SynchronousTestCase):
    def address(self, host: str, forwarded_for: str | None = None, hops: int = 0) -> str:
        peer = IPv6Address("TCP", host, 1) if ":" in host else IPv4Address("TCP", host, 1)
        return client_address(peer, forwarded_for, hops)

    def test_the_tcp_peer(self) -> None:
        self.assertEqual(self.address("192.0.2.1"), "192.0.2.1")
        self.assertEqual(self.address("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64")
        self.assertEqual(self.address("::ffff:192.0.2.1"), "192.0.2.1")  # IPv4 on a dual-stack listener

    def test_the_entry_as_many_from_the_right_as_there_are_trusted_proxies(self) -> None:
        forwarded = "203.0.113.1, 198.51.100.1, 192.0.2.9"
        self.assertEqual(self.address("10.0.0.1", forwarded, hops=1), "192.0.2.9")
        self.assertEqual(self.address("10.0.0.1", forwarded, hops=2), "198.51.100.1")
        self.assertEqual(self.address("10.0.0.1", "198.51.100.1", hops=2), "198.51.100.1")  # fewer: the leftmost

    def test_no_or_an_empty_header_means_the_tcp_peer(self) -> None:
        self.assertEqual(self.address("10.0.0.1", None, hops=1), "10.0.0.1")
        self.assertEqual(self.address("10.0.0.1", "", hops=1), "10.0.0.1")
        self.assertEqual(self.address("10.0.0.1", "198.51.100.1, ", hops=1), "10.0.0.1")

    def test_entries_with_ports_brackets_or_no_address(self) -> None:
        self.assertEqual(self.address("10.0.0.1", "192.0.2.1:5060", hops=1), "192.0.2.1")
        self.assertEqual(self.address("10.0.0.1", "[2001:db8::1]:443", hops=1), "2001:db8::/64")
        self.assertEqual(self.address("10.0.0.1", "2001:DB8::1", hops=1), "2001:db8::/64")
        self.assertEqual(self.address("10.0.0.1", "Unknown", hops=1), "unknown")


class RequestRateTests(GatewayTestCase):
    settings = WebRTCGatewayConfig(websocket_ping_interval=0, request_rate=1, request_burst=2)

    def test_requests_over_the_rate_are_refused_and_a_flood_is_closed_with_1008(self) -> None:
        browser = self.ready_browser()
        for number in range(4):
            browser.send(b'{"sylkrtc":"ping","transaction":"%d"}' % number)
        error = "Too many requests (at most 1 per second)"
        self.assertEqual(browser.received(), [{"sylkrtc": "ack", "transaction": "0"},
                                              {"sylkrtc": "ack", "transaction": "1"},
                                              {"sylkrtc": "error", "transaction": "2", "error": error},
                                              {"sylkrtc": "error", "transaction": "3", "error": error},
                                              ("close", CLOSE_POLICY_VIOLATION)])
        self.janus.clock.advance(10)
        browser.send(b'{"sylkrtc":"ping","transaction":"late"}')
        self.assertEqual(browser.received(), [])

    def test_the_rate_applies_to_each_connection_alone(self) -> None:
        first, second = self.ready_browser(), self.ready_browser()
        for _ in range(3):
            first.send(b'{"sylkrtc":"ping","transaction":"1"}')
        second.send(b'{"sylkrtc":"ping","transaction":"2"}')
        self.assertEqual(second.received(), [{"sylkrtc": "ack", "transaction": "2"}])


class SlowReaderTests(GatewayTestCase):
    def reader(self, browser: Browser) -> SlowReaderGuard:
        """The socket's producer, registered with its transport."""
        reader = browser.protocol.reader
        assert reader is not None
        self.assertIs(browser.transport.producer, reader)
        self.assertTrue(browser.transport.streaming)
        return reader

    def paused_browser(self) -> Browser:
        browser = self.ready_browser()
        self.reader(browser).pauseProducing()  # what Twisted does when the socket's buffer is full
        self.assertEqual(browser.transport.producerState, "paused")  # its requests are not read meanwhile
        return browser

    def assertDropped(self, browser: Browser) -> None:
        self.assertTrue(browser.transport.disconnected)  # aborted, not closed: a close would wait for it to read
        browser.protocol.connectionLost(Failure(ConnectionAborted()))
        self.janus.flush()
        self.assertEqual(self.factory.connections, {})

    def test_a_browser_that_catches_up_in_time_stays(self) -> None:
        browser = self.paused_browser()
        self.janus.clock.advance(SLOW_READER_TIMEOUT - 1)
        self.reader(browser).resumeProducing()
        self.assertEqual(browser.transport.producerState, "producing")
        self.janus.clock.advance(SLOW_READER_TIMEOUT * 2)
        self.assertFalse(browser.transport.disconnecting)
        browser.send(b'{"sylkrtc":"ping","transaction":"p"}')
        self.assertEqual(browser.received(), [{"sylkrtc": "ack", "transaction": "p"}])

    def test_a_browser_that_does_not_catch_up_in_time_is_dropped(self) -> None:
        browser = self.paused_browser()
        self.janus.clock.advance(SLOW_READER_TIMEOUT - 1)
        self.reader(browser).pauseProducing()  # Twisted does it again at each write while the buffer is full
        self.janus.clock.advance(1)
        self.assertDropped(browser)

    def test_a_browser_that_too_much_waits_for_is_dropped_at_once(self) -> None:
        browser = self.paused_browser()
        event = model.RegistrationStateChanged(account="alice@example.com", state="failed", reason="x" * 60000)
        message = SylkRTC1().encode(event)
        assert message is not None
        frame_size = len(encode_json(message))
        for _ in range(SLOW_READER_MAX_BYTES // frame_size):
            browser.protocol.send_event(event)  # events keep coming while its requests are not read
            self.reader(browser).pauseProducing()  # as Twisted does at each write while the buffer is full
        self.assertFalse(browser.transport.disconnecting)
        browser.protocol.send_event(event)
        self.assertDropped(browser)
        self.janus.clock.advance(SLOW_READER_TIMEOUT)  # the deadline went with it: nothing more happens

    def test_a_paused_browser_that_leaves_leaves_no_deadline_behind(self) -> None:
        browser = self.paused_browser()
        drops: list[bool] = []
        self.patch(browser.protocol, "dropConnection", lambda abort=False: drops.append(abort))
        browser.protocol.connectionLost(Failure(ConnectionLost()))
        self.janus.clock.advance(SLOW_READER_TIMEOUT)
        self.assertEqual(drops, [])


class WebResourceTests(GatewayTestCase):
    """The socket as the gateway serves it: a WebSocketResource under twisted.web, which hands the HTTP channel's
    transport (with the channel still registered as its producer) over to the WebSocket protocol."""

    def test_the_socket_takes_over_the_transport_producer(self) -> None:
        gateway = Resource()
        gateway.putChild(b"ws", WebSocketResource(self.factory))
        root = Resource()
        root.putChild(b"webrtcgateway", gateway)
        site = Site(root, timeout=None, reactor=self.janus.clock)
        transport = TCPLikeTransport()
        channel = site.buildProtocol(transport.getPeer())
        transport.protocol = channel  # as a TCP connection has it
        channel.makeConnection(transport)
        self.assertIsInstance(transport.producer, HTTPChannel)
        channel.dataReceived(handshake())
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101 "), transport.value())
        protocol = transport.protocol
        self.assertIsInstance(protocol, GatewayWebSocketProtocol)
        self.assertIs(transport.producer, protocol.reader)
        self.assertEqual(len(self.factory.connections), 1)
