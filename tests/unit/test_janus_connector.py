"""JanusConnector's checks and liveness, over the fake Janus: a new link is checked before use, then pinged; a
Janus that stops answering is noticed within ping_interval + ping_timeout, the link is dropped (every session on it
is lost) and the owner is told, so that a spawned Janus is killed and started again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sylk.gateway.janus.client import STALLED_AFTER_TIMEOUTS
from sylk.gateway.janus.connector import BUSY_PATIENCE, JanusConnector
from tests.fakejanus import FakeJanus

PING_INTERVAL, PING_TIMEOUT = 3.0, 5.0


class FakeLinkProtocol:
    """What the connector needs of its WebSocket protocol: frames go to the fake Janus."""

    stalled = False
    busy_since: float | None = None

    def __init__(self, connector: JanusConnector, janus: FakeJanus) -> None:
        self.api: Any = None
        self.dropped = False
        self._connector = connector
        self._janus = janus

    def send_text(self, text: str) -> None:
        self._janus._received(text)

    def dropConnection(self, abort: bool = False) -> None:
        self.dropped = True
        self._connector._closed(self, "dropped")  # type: ignore[arg-type]


class ConnectorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.janus = FakeJanus()
        self.stalls: list[None] = []
        self.connector = JanusConnector("ws://localhost/", "s3cret", request_timeout=10, trace=False,
                                        reactor=self.janus.clock, unix_socket=Path("/nonexistent/api.sock"),
                                        ping_interval=PING_INTERVAL,
                                        ping_timeout=PING_TIMEOUT, on_stalled=lambda: self.stalls.append(None))
        self.connector.running = True  # as started, without connecting anywhere
        self.protocol = FakeLinkProtocol(self.connector, self.janus)
        self.connector._opened(self.protocol)  # type: ignore[arg-type]
        self.janus.api = self.protocol.api  # the fake Janus answers the connector's own API
        self.janus.flush()

    def advance(self, seconds: float) -> None:
        self.janus.clock.advance(seconds)
        self.janus.flush()

    def test_a_checked_link_is_offered_and_pinged(self) -> None:
        self.assertIs(self.connector.api, self.protocol.api)
        for _ in range(3):
            self.advance(PING_INTERVAL)
        self.assertEqual([r["janus"] for r in self.janus.requests].count("ping"), 3)
        self.assertEqual(self.stalls, [])

    def test_a_stalled_janus_is_noticed_and_the_link_dropped(self) -> None:
        lost: list[str] = []
        self.protocol.api.create_session(lost.append)
        self.janus.flush()
        self.janus.answer = False  # SIGSTOP
        self.advance(PING_INTERVAL)
        self.advance(PING_TIMEOUT - 0.1)
        self.assertEqual(self.stalls, [])
        self.advance(0.1)
        self.assertTrue(self.protocol.dropped)
        self.assertEqual(self.stalls, [None])
        self.assertIsNone(self.connector.api)  # browsers are refused with 503 until a new Janus is checked
        self.assertEqual(lost, ["dropped"])

    def test_a_janus_that_does_not_answer_its_check_is_stalled(self) -> None:
        self.janus.answer = False
        protocol = FakeLinkProtocol(self.connector, self.janus)
        self.connector._opened(protocol)  # type: ignore[arg-type]
        self.advance(PING_TIMEOUT)
        self.assertTrue(protocol.dropped)
        self.assertEqual(self.stalls, [None])

    def test_requests_timing_out_in_a_row_mean_a_stall(self) -> None:
        api = self.protocol.api
        self.janus.unanswered = {"create"}  # the core answers pings, but nothing else (a deadlocked Janus)
        for _ in range(STALLED_AFTER_TIMEOUTS):
            api.create_session(lambda reason: None).addErrback(lambda _: None)
        self.janus.clock.advance(10)
        self.assertTrue(self.protocol.dropped)
        self.assertEqual(self.stalls, [None])

    def test_one_slow_answer_is_not_a_stall(self) -> None:
        api = self.protocol.api
        self.janus.unanswered = {"create"}
        for _ in range(STALLED_AFTER_TIMEOUTS - 1):
            api.create_session(lambda reason: None).addErrback(lambda _: None)
        self.advance(10)  # pings answered meanwhile reset the count
        api.create_session(lambda reason: None).addErrback(lambda _: None)
        self.advance(10)
        self.assertFalse(self.protocol.dropped)

    def busy(self, seconds: float) -> None:
        """Pings stay unanswered while Janus answers a request every second (a backlog it works through)."""
        self.janus.unanswered = {"ping"}
        for _ in range(int(seconds)):
            self.protocol.api.info().addErrback(lambda _: None)  # fails once the link is dropped
            self.advance(1)

    def test_a_late_ping_while_other_answers_keep_coming_is_a_backlog_not_a_stall(self) -> None:
        self.busy(BUSY_PATIENCE - PING_TIMEOUT - PING_INTERVAL)
        self.assertFalse(self.protocol.dropped)
        self.assertEqual(self.stalls, [])
        self.janus.unanswered = set()  # caught up: the next ping is answered
        for _ in range(int(PING_TIMEOUT + PING_INTERVAL)):
            self.advance(1)
        self.assertIsNone(self.protocol.busy_since)
        self.busy(BUSY_PATIENCE - PING_TIMEOUT - PING_INTERVAL)  # patience starts again
        self.assertFalse(self.protocol.dropped)

    def test_a_backlog_is_not_waited_for_forever(self) -> None:
        self.busy(BUSY_PATIENCE + PING_INTERVAL + PING_TIMEOUT)
        self.assertTrue(self.protocol.dropped)
        self.assertEqual(self.stalls, [None])

    def test_a_late_ping_with_nothing_else_answered_is_a_stall(self) -> None:
        self.janus.unanswered = {"ping"}
        self.advance(PING_INTERVAL)
        self.advance(PING_TIMEOUT)
        self.assertTrue(self.protocol.dropped)

    def test_a_frame_that_is_not_utf8_is_decoded_with_replacement_not_refused(self) -> None:
        # autobahn would fail the whole link (every user on this Janus) on one bad byte; the API decodes with
        # replacement and drops what it cannot use
        self.assertFalse(self.connector._factory.utf8validateIncoming)
        protocol = self.connector._factory.buildProtocol(None)
        protocol.api = self.protocol.api
        protocol.onMessage(b'{"janus":"event","session_id":1,"note":"\xff"}', False)  # no exception: dropped
