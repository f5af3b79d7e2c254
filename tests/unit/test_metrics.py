"""Prometheus metrics: requests and errors at the channel, call setups and ends, levels counted at scrape time,
Janus answers, reconnects and restarts, and the metrics listener (only with `metrics_port`)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.error import ProcessTerminated
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import getChildForRequest
from twisted.web.test.requesthelper import DummyRequest

from sylk.gateway.config import Config, JanusConfig, WebRTCGatewayConfig, WebServerConfig, parse_config
from sylk.gateway.connection import Connection
from sylk.gateway.errors import APIError
from sylk.gateway.janus.connector import JanusConnector
from sylk.gateway.janus.process import JanusProcess
from sylk.gateway.janus.sip import JanusSIPBackend, LineSettings
from sylk.gateway.metrics import GatewayMetrics, metrics_root
from sylk.gateway.service import GatewayService
from sylk.gateway.sylkrtc import model
from sylk.gateway.sylkrtc.channel import RequestChannel, TokenBucket
from sylk.gateway.sylkrtc.dialects import SylkRTC1
from sylk.gateway.websocket import GatewayWebSocketFactory
from tests.fakejanus import FakeJanus, FakeLink
from tests.fakes import FakePeer
from tests.unit.test_calls import CallTestCase
from tests.unit.test_connection import ALICE, HA1
from tests.unit.test_janus_connector import FakeLinkProtocol
from tests.unit.test_janus_process import FakeProcessReactor, fake_janus_install
from tests.unit.test_websocket import Browser


def exposition(metrics: GatewayMetrics) -> str:
    return generate_latest(metrics.registry).decode()


class RequestMetricsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.metrics = GatewayMetrics()
        self.sent: list[bytes] = []
        self.channel = RequestChannel("test", SylkRTC1(), self.sent.append, self.handle, 65536, False,
                                      bucket=TokenBucket(1, 3, MemoryReactorClock()), metrics=self.metrics)

    def handle(self, request: model.Request) -> None:
        if isinstance(request, model.AccountRemove):
            raise APIError("Unknown account")
        if isinstance(request, model.AccountUnregister):
            raise RuntimeError("a bug")

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)

    def test_each_answer_counts_once_by_type_and_errors_by_cause(self) -> None:
        self.channel.frame_received(b'{"sylkrtc":"ping","transaction":"1"}', False)
        self.channel.frame_received(b'{"sylkrtc":"account-remove","transaction":"2","account":"a@example.com"}',
                                    False)
        self.channel.frame_received(b'{"sylkrtc":"made-up","transaction":"3"}', False)
        self.channel.frame_received(b'{"sylkrtc":"ping","transaction":"4"}', False)  # over the burst of 3
        self.assertEqual(len(self.sent), 4)
        self.assertEqual(self.value("sylkgateway_requests_total", type="ping"), 1)
        self.assertEqual(self.value("sylkgateway_requests_total", type="account-remove"), 1)
        self.assertEqual(self.value("sylkgateway_requests_total", type="unknown"), 2)  # never "made-up"
        self.assertEqual(self.value("sylkgateway_request_errors_total", type="account-remove", cause="refused"), 1)
        self.assertEqual(self.value("sylkgateway_request_errors_total", type="unknown", cause="invalid"), 1)
        self.assertEqual(self.value("sylkgateway_request_errors_total", type="unknown", cause="rate-limited"), 1)
        self.assertIsNone(self.value("sylkgateway_request_errors_total", type="ping", cause="refused"))
        self.assertNotIn("made-up", exposition(self.metrics))

    def test_a_handler_bug_counts_as_internal(self) -> None:
        self.channel.frame_received(b'{"sylkrtc":"account-unregister","transaction":"1","account":"a@example.com"}',
                                    False)
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(self.value("sylkgateway_request_errors_total", type="account-unregister", cause="internal"),
                         1)


class CallMetricsTests(CallTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.metrics = GatewayMetrics()

    def connect(self, settings: WebRTCGatewayConfig | None = None) -> tuple[Connection, FakePeer]:
        peer = FakePeer()
        settings = settings or self.settings
        connection = Connection("test", self.backend_for(settings), settings, peer, self.janus.clock,
                                metrics=self.metrics)
        connection.open()
        self.janus.flush()
        return connection, peer

    def ended(self, how: str) -> float | None:
        return self.metrics.registry.get_sample_value("sylkgateway_calls_ended_total", {"how": how})

    def setup(self, phase: str, sample: str = "count", **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(f"sylkgateway_call_setup_seconds_{sample}",
                                                      {"phase": phase, **labels})

    def test_setup_time_from_session_create_to_each_phase_and_a_normal_end(self) -> None:
        connection, _ = self.connect()
        self.add(connection)
        self.dial(connection)  # Janus reports the INVITE sent at once
        session, line = self.session_id(), self.line_of()
        for step, event in ((0.1, self.janus.ringing), (0.1, self.janus.answer_call), (0.05, self.janus.webrtcup)):
            self.janus.clock.advance(step)
            event(session, line)
        self.janus.ringing(session, line)  # a late provisional response: not a phase again
        expected = {"invite-sent": 0.0, "provisional": 0.1, "accepted": 0.2, "established": 0.25}
        for phase, seconds in expected.items():
            self.assertEqual(self.setup(phase), 1, phase)
            self.assertAlmostEqual(self.setup(phase, "sum") or 0, seconds, msg=phase)
        self.assertEqual(self.setup("accepted", "bucket", le="0.25"), 1)
        self.assertEqual(self.setup("accepted", "bucket", le="0.1"), 0)
        self.assertIsNone(self.request(connection, model.SessionTerminate, session="s1"))
        self.assertEqual(self.ended("normal"), 1)

    def test_a_phase_the_call_skips_is_not_reported(self) -> None:
        connection, _ = self.connect()
        self.add(connection)
        self.dial(connection)
        self.janus.answer_call(self.session_id(), self.line_of())
        self.assertEqual((self.setup("invite-sent"), self.setup("provisional"), self.setup("accepted")), (1, 0, 1))

    def test_ends_before_the_answer(self) -> None:
        connection, _ = self.connect()
        self.add(connection)
        self.dial(connection, "cancelled")
        self.assertIsNone(self.request(connection, model.SessionTerminate, session="cancelled"))
        self.janus.call_outcome = ("hangup", 486, "Busy Here")
        self.dial(connection, "refused")
        self.assertEqual((self.ended("cancelled"), self.ended("failed")), (1, 1))
        self.assertEqual(self.setup("accepted"), 0)

    def test_an_end_with_the_backend(self) -> None:
        connection, _ = self.connect()
        self.add(connection)
        self.dial(connection)
        self.link.lose()
        self.assertEqual(self.ended("backend-lost"), 1)


class LevelTests(SynchronousTestCase):
    """Levels are counted from the live objects at each scrape."""

    def setUp(self) -> None:
        self.janus = FakeJanus()
        self.link = FakeLink(self.janus.api)
        self.metrics = GatewayMetrics()
        settings = WebRTCGatewayConfig(websocket_ping_interval=0)
        backend = JanusSIPBackend([self.link], LineSettings(), self.janus.clock)
        self.factory = GatewayWebSocketFactory(backend, settings, self.janus.clock, metrics=self.metrics)
        self.metrics.watch(self.factory, [self.link], backend)

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)

    def test_connections_accounts_and_calls_by_state(self) -> None:
        self.assertEqual(self.value("sylkgateway_connections", dialect="sylkRTC-1"), 0)
        browser = Browser(self.factory, "sylkRTC-1")
        self.janus.flush()
        browser.send(f'{{"sylkrtc":"account-add","transaction":"1","account":"{ALICE}","password":"{HA1}"}}'.encode())
        browser.send(f'{{"sylkrtc":"account-register","transaction":"2","account":"{ALICE}"}}'.encode())
        self.janus.flush()
        browser.send(f'{{"sylkrtc":"session-create","transaction":"3","account":"{ALICE}","session":"s1",'
                     f'"uri":"bob@example.com","sdp":"v=0 offer"}}'.encode())
        self.janus.flush()
        self.assertEqual(self.value("sylkgateway_connections", dialect="sylkRTC-1"), 1)
        self.assertEqual(self.value("sylkgateway_connections", dialect="sylkRTC-2"), 0)
        self.assertEqual(self.value("sylkgateway_accounts", state="registered"), 1)
        self.assertEqual(self.value("sylkgateway_accounts", state="failed"), 0)
        self.assertEqual(self.value("sylkgateway_calls", state="progress"), 1)
        self.assertEqual(self.value("sylkgateway_calls", state="established"), 0)

    def test_janus_requests_and_sip_stacks_in_each_queue(self) -> None:
        def queues() -> tuple[float | None, ...]:
            return (self.value("sylkgateway_janus_requests_pending", member="fake"),
                    *(self.value("sylkgateway_sip_stacks", member="fake", stage=stage)
                      for stage in ("alive", "starting", "waiting")))
        self.assertEqual(queues(), (0, 0, 0, 0))
        browsers = [Browser(self.factory, "sylkRTC-1") for _ in range(3)]
        self.janus.flush()
        self.janus.held = {"register"}  # Janus is slow to start the SIP stacks
        for n, browser in enumerate(browsers):
            browser.send(f'{{"sylkrtc":"account-add","transaction":"1","account":"{n}{ALICE}","password":"{HA1}"}}'
                         .encode())
            browser.send(f'{{"sylkrtc":"account-register","transaction":"2","account":"{n}{ALICE}"}}'.encode())
        self.assertEqual(queues(), (3, 0, 0, 0))  # three attaches sent
        self.janus.flush()
        self.assertEqual(queues(), (2, 0, 2, 1))  # two stacks start at once, the third waits its turn
        self.janus.release()
        self.assertEqual(queues(), (0, 3, 0, 0))

    def test_a_janus_reconnect(self) -> None:
        self.assertEqual(self.value("sylkgateway_janus_members"), 1)
        self.assertEqual(self.value("sylkgateway_janus_members_connected"), 1)
        self.link.lose()
        self.assertIn("sylkgateway_janus_members_connected 0.0", exposition(self.metrics))
        self.link.connect(self.janus.api)
        self.assertEqual(self.value("sylkgateway_janus_members_connected"), 1)


class JanusMetricsTests(SynchronousTestCase):
    def test_request_round_trip_time(self) -> None:
        metrics = GatewayMetrics()
        janus = FakeJanus()
        connector = JanusConnector("ws://localhost/", "s3cret", request_timeout=10, trace=False, reactor=janus.clock,
                                   unix_socket=Path("/nonexistent/api.sock"),
                                   answered_in=metrics.janus_request_seconds.observe)
        protocol = FakeLinkProtocol(connector, janus)
        connector._opened(protocol)  # type: ignore[arg-type]  # sends its check, `info`
        janus.api = protocol.api
        janus.clock.advance(0.003)
        janus.flush()  # the answer to `info`, then at once to the probe session's create and destroy
        registry = metrics.registry
        self.assertEqual(registry.get_sample_value("sylkgateway_janus_request_seconds_count"), 3)
        self.assertEqual(registry.get_sample_value("sylkgateway_janus_request_seconds_bucket", {"le": "0.0025"}), 2)
        self.assertEqual(registry.get_sample_value("sylkgateway_janus_request_seconds_bucket", {"le": "0.005"}), 3)

    def test_restarts_by_member(self) -> None:
        root = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, root, True)
        library = fake_janus_install(root / "janus")
        config = parse_config(f"[Janus]\nbinary = /bin/true\nlibrary_dir = {library}\nruntime_dir = {root / 'run'}\n")
        metrics = GatewayMetrics()
        reactor = FakeProcessReactor()
        process = JanusProcess(config, reactor, 1, 2, on_restart=metrics.janus_restarted)
        process.startService()
        self.addCleanup(process.stopService)
        reactor.spawned[0][0].processEnded(Failure(ProcessTerminated(signal=9)))
        self.flushLoggedErrors()
        self.assertEqual(metrics.registry.get_sample_value("sylkgateway_janus_restarts_total", {"member": "janus2"}),
                         1)


class ListenerTests(SynchronousTestCase):
    def service(self, **web: object) -> tuple[GatewayService, MemoryReactorClock]:
        reactor = MemoryReactorClock()
        config = Config(web_server=WebServerConfig(**web), janus=JanusConfig(spawn=False))  # type: ignore[arg-type]
        service = GatewayService(config, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return service, reactor

    def test_no_metrics_listener_by_default(self) -> None:
        service, reactor = self.service()
        self.assertIsNone(service.metrics_listener)
        self.assertEqual([(port, interface) for port, _, _, interface in reactor.tcpServers], [(10888, "127.0.0.1")])

    def test_a_metrics_listener_with_metrics_port(self) -> None:
        service, reactor = self.service(metrics_port=9108, metrics_ip="::1")
        self.assertEqual([(port, interface) for port, _, _, interface in reactor.tcpServers],
                         [(10888, "127.0.0.1"), (9108, "::1")])
        site: Any = reactor.tcpServers[1][1]
        request = DummyRequest([b"metrics"])
        body = site.getResourceFor(request).render(request)
        self.assertIn(b"sylkgateway_janus_members 1.0", body)
        self.assertIn(b"sylkgateway_requests_total", body)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"), [CONTENT_TYPE_LATEST.encode()])


class ResourceTests(SynchronousTestCase):
    def test_only_metrics_is_served(self) -> None:
        root = metrics_root(GatewayMetrics().registry)
        for path in ([b""], [b"webrtcgateway"], [b"health"]):
            request = DummyRequest(path)
            getChildForRequest(root, request).render(request)
            self.assertEqual(request.responseCode, 404, path)
