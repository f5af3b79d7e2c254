"""The gateway inside another Twisted web server (SylkServer's, sylk/applications/sylkgateway): built without a
listener of its own, its resource tree serves the demo page and the WebSocket under another `Site`, in a running
reactor."""

from __future__ import annotations

import signal
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody
from twisted.web.resource import Resource
from twisted.web.server import Site

from sylk.gateway.embedding import MountError, mount_path
from sylk.gateway.config import Config, JanusConfig, WebRTCGatewayConfig, WebServerConfig
from sylk.gateway.service import GatewayService

# Nothing listens on port 1: the link to Janus keeps failing, so the gateway is up without a SIP backend.
NO_JANUS = JanusConfig(spawn=False, api_url="ws://127.0.0.1:1")
GATEWAY = WebRTCGatewayConfig(web_origins=("http://127.0.0.1",))  # not *: no warning at start


class WithoutListenerTests(SynchronousTestCase):
    def test_nothing_listens_and_sighup_is_left_alone(self) -> None:
        clock = MemoryReactorClock()
        before = signal.getsignal(signal.SIGHUP)
        service = GatewayService(Config(gateway=GATEWAY, janus=NO_JANUS), clock, listen=False)
        service.startService()
        try:
            self.assertEqual(clock.tcpServers, [])
            self.assertEqual(clock.sslServers, [])
            self.assertIs(signal.getsignal(signal.SIGHUP), before)
            self.assertIsNone(service.web)
        finally:
            service.stopService()
        self.assertIs(signal.getsignal(signal.SIGHUP), before)

    def test_the_metrics_listener_is_still_started_when_asked_for(self) -> None:
        clock = MemoryReactorClock()
        config = Config(web_server=WebServerConfig(metrics_port=9100), gateway=GATEWAY, janus=NO_JANUS)
        service = GatewayService(config, clock, listen=False)
        service.startService()
        service.stopService()
        self.assertEqual([port for port, *_ in clock.tcpServers], [9100])

    def test_its_own_listener_and_certificate_settings_raise_no_warning(self) -> None:
        from sylk.gateway.service import exposure_warnings
        config = Config(web_server=WebServerConfig(local_ip="0.0.0.0"), janus=NO_JANUS)
        self.assertEqual(len(exposure_warnings(config)), 2)  # web_origins *, and plain ws:// on the network
        self.assertEqual(len(exposure_warnings(config, listen=False)), 1)  # web_origins * only


class MountPathTests(SynchronousTestCase):
    def test_webrtcgateway_unless_sylkservers_own_gateway_is_loaded(self) -> None:
        self.assertEqual(mount_path("", sylkserver_gateway_loaded=False), "webrtcgateway")
        self.assertEqual(mount_path("", sylkserver_gateway_loaded=True), "sylkgateway")

    def test_a_configured_path(self) -> None:
        self.assertEqual(mount_path(" /phone/ ", sylkserver_gateway_loaded=True), "phone")
        self.assertEqual(mount_path("webrtcgateway", sylkserver_gateway_loaded=False), "webrtcgateway")

    def test_a_path_someone_else_holds_is_refused(self) -> None:
        with self.assertRaisesRegex(MountError, "SylkServer's own webrtcgateway"):
            mount_path("webrtcgateway", sylkserver_gateway_loaded=True)
        with self.assertRaisesRegex(MountError, "already mounted"):
            mount_path("conference", sylkserver_gateway_loaded=False, taken={b"conference": Resource()})

    def test_more_than_one_segment_is_refused(self) -> None:
        for bad in ("a/b", "..", "a b", "é"):
            with self.assertRaisesRegex(MountError, "one URL path segment"):
                mount_path(bad, sylkserver_gateway_loaded=False)


class Response(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if b"\r\n\r\n" in self.data and not self.done.called:
            self.done.callback(self.data)


HANDSHAKE = (b"GET /webrtcgateway/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
             b"Sec-WebSocket-Protocol: sylkRTC-2\r\nOrigin: http://127.0.0.1\r\n\r\n")


class MountedUnderAnotherSiteTests(TestCase):
    """Another program's Site (as SylkServer's WebServer: a root Resource, register_resource = putChild), listening
    on a real port in trial's running reactor."""

    timeout = 30

    @inlineCallbacks
    def setUp(self) -> Any:
        self.service = GatewayService(Config(gateway=GATEWAY, janus=NO_JANUS), reactor, listen=False)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        root = Resource()
        root.putChild(b"conference", Resource())  # the host's own resources stay as they are
        root.putChild(b"webrtcgateway", self.service.resource)
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(root))
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    @inlineCallbacks
    def test_the_demo_page_and_the_library(self) -> Any:
        agent = Agent(reactor)
        for path, expected in ((b"/webrtcgateway/", b"<html"), (b"/webrtcgateway/sylkrtc.js", b"")):
            response = yield agent.request(b"GET", b"http://127.0.0.1:%d%s" % (self.port, path))
            body = yield readBody(response)
            self.assertEqual(response.code, 200, path)
            self.assertIn(expected, body.lower())

    @inlineCallbacks
    def handshake(self) -> Any:
        protocol = Response()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), protocol)
        protocol.transport.write(HANDSHAKE)
        try:
            answer = yield protocol.done
        finally:
            protocol.transport.abortConnection()
        # the gateway's side of an opened socket is done (its Connection closed, its timers gone)
        factory = self.service.websocket_factory
        for _ in range(100):
            if not factory.connections:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        # autobahn leaves a 5 s timer of the finished handshake behind (Deferred.addTimeout on a Deferred that
        # nothing fires once the socket is gone): harmless, but trial wants a clean reactor
        for call in reactor.getDelayedCalls():
            if "timeItOut" in getattr(call.func, "__qualname__", "") and call.active():
                call.cancel()
        return answer.split(b"\r\n", 1)[0]

    @inlineCallbacks
    def test_the_websocket_without_janus_says_try_later(self) -> Any:
        status = yield self.handshake()
        self.assertIn(b" 503 ", status)

    @inlineCallbacks
    def test_the_websocket_with_a_sip_backend_upgrades(self) -> Any:
        self.patch(self.service.websocket_factory, "backend", AvailableBackend(self.service.websocket_factory.backend))
        status = yield self.handshake()
        self.assertIn(b" 101 ", status)


class AvailableBackend:
    """The gateway's backend, saying it is available (a Janus link would be)."""

    available = True

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)
