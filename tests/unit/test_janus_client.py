"""JanusAPI against the fake Janus: transactions, routing by sender, timeouts, keepalives, connection loss."""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sylk.gateway.janus.client import JanusDisconnected, JanusError, JanusHandle, JanusSession, JanusTimeout
from tests.fakejanus import FakeJanus


class RecordingListener:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.detached = 0

    def handle_event(self, message: dict[str, Any]) -> None:
        self.events.append(message)

    def handle_detached(self) -> None:
        self.detached += 1


class JanusAPITests(SynchronousTestCase):
    def setUp(self) -> None:
        self.janus = FakeJanus()
        self.api = self.janus.api
        self.lost: list[str] = []

    def session(self) -> JanusSession:
        d = self.api.create_session(self.lost.append)
        self.janus.flush()
        return self.successResultOf(d)

    def handle(self, session: JanusSession) -> tuple[JanusHandle, RecordingListener]:
        listener = RecordingListener()
        d = session.attach("janus.plugin.sip", listener)
        self.janus.flush()
        return self.successResultOf(d), listener

    def test_requests_carry_transaction_and_secret(self) -> None:
        d = self.api.info()
        self.janus.flush()
        self.assertEqual(self.successResultOf(d)["version_string"], "1.1.2")
        request = self.janus.requests[0]
        self.assertEqual(request["apisecret"], "s3cret")
        self.assertTrue(request["transaction"])

    def test_transactions_are_unique(self) -> None:
        for _ in range(3):
            self.api.info()
        self.assertEqual(len({r["transaction"] for r in self.janus.requests}), 3)

    def test_core_error_fails_the_request(self) -> None:
        self.janus.api_secret = "other"
        d = self.api.create_session(self.lost.append)
        self.janus.flush()
        error = self.failureResultOf(d, JanusError).value
        self.assertEqual(error.code, 403)

    def test_plugin_message_settles_on_the_event_not_the_ack(self) -> None:
        handle, listener = self.handle(self.session())
        self.janus.hold_registrations = True
        d = handle.message({"request": "register", "username": "sip:alice@example.com"})
        self.assertNoResult(d)  # nothing is delivered before flush()
        self.janus.flush()
        reply = self.successResultOf(d)
        self.assertEqual(reply["plugindata"]["data"]["result"]["event"], "registering")
        self.assertEqual(listener.events, [])  # the answer is not also an event

    def test_plugin_error_fails_the_request(self) -> None:
        handle, _ = self.handle(self.session())
        d = handle.message({"request": "bogus"})
        self.janus.flush()
        error = self.failureResultOf(d, JanusError).value
        self.assertEqual(error.code, 442)

    def test_plugin_error_with_code_zero_still_fails(self) -> None:
        handle, _ = self.handle(self.session())
        self.janus.answer = False
        d = handle.message({"request": "hangup"})
        transaction = self.janus.requests[-1]["transaction"]
        self.janus.emit({"janus": "ack", "session_id": handle.session.id, "transaction": transaction})
        self.assertNoResult(d)
        self.janus.emit({"janus": "event", "session_id": handle.session.id, "sender": handle.id,
                         "transaction": transaction, "plugindata": {"plugin": "janus.plugin.sip", "data": {
                             "sip": "event", "error_code": 0, "error": "Wrong state (not in a call?)"}}})
        self.assertEqual(str(self.failureResultOf(d, JanusError).value),
                         "Janus error 0: Wrong state (not in a call?)")

    def test_later_events_with_the_same_transaction_go_to_the_handle(self) -> None:
        handle, listener = self.handle(self.session())
        self.janus.answer = False
        d = handle.message({"request": "call", "uri": "sip:bob@example.com"})
        transaction = self.janus.requests[-1]["transaction"]
        self.janus.sip_event(handle.session.id, handle.id, {"event": "calling"}, transaction)
        self.successResultOf(d)
        self.janus.sip_event(handle.session.id, handle.id, {"event": "ringing"}, transaction)
        self.assertEqual([e["plugindata"]["data"]["result"]["event"] for e in listener.events], ["ringing"])

    def test_events_are_routed_by_sender(self) -> None:
        session = self.session()
        first, first_listener = self.handle(session)
        second, second_listener = self.handle(session)
        self.janus.sip_event(session.id, second.id, {"event": "registered", "username": "bob"})
        self.assertEqual(first_listener.events, [])
        self.assertEqual(len(second_listener.events), 1)

    def test_messages_for_unknown_sessions_or_handles_are_dropped(self) -> None:
        session = self.session()
        _, listener = self.handle(session)
        self.janus.sip_event(session.id + 999, 1, {"event": "registered"})
        self.janus.sip_event(session.id, 12345, {"event": "registered"})
        self.api.message_received("not json")
        self.api.message_received("[1, 2]")
        self.assertEqual(listener.events, [])
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_request_times_out(self) -> None:
        self.janus.answer = False
        d = self.api.info()
        self.janus.clock.advance(9.9)
        self.assertNoResult(d)
        self.janus.clock.advance(0.2)
        self.assertIn("within 10 s", str(self.failureResultOf(d, JanusTimeout).value))
        # a late answer is ignored
        self.janus.emit({"janus": "server_info", "transaction": self.janus.requests[0]["transaction"]})

    def test_keepalive_is_sent_and_pushed_back_by_traffic(self) -> None:
        session = self.session()
        self.assertEqual(self.api.keepalive_interval, 25.0)
        self.janus.clock.advance(20)
        self.handle(session)  # traffic on the session pushes the keepalive back
        self.janus.clock.advance(20)
        self.assertNotIn("keepalive", self.janus.kinds())
        self.janus.clock.advance(6)
        self.janus.flush()
        self.assertEqual(self.janus.kinds().count("keepalive"), 1)
        self.janus.clock.advance(25)
        self.assertEqual(self.janus.kinds().count("keepalive"), 2)

    def test_keepalive_for_a_vanished_session_reports_it_lost(self) -> None:
        session = self.session()
        del self.janus.sessions[session.id]
        self.janus.clock.advance(25)
        self.janus.flush()
        self.assertEqual(self.lost, ["Janus no longer knows the session"])

    def test_session_timeout_event_reports_it_lost(self) -> None:
        session = self.session()
        self.janus.emit({"janus": "timeout", "session_id": session.id})
        self.assertEqual(self.lost, ["Janus session timed out"])
        self.assertNotIn(session.id, self.api.sessions)

    def test_unsolicited_detach_is_reported(self) -> None:
        session = self.session()
        handle, listener = self.handle(session)
        self.janus.emit({"janus": "detached", "session_id": session.id, "sender": handle.id})
        self.assertEqual(listener.detached, 1)
        self.assertNotIn(handle.id, session.handles)

    def test_own_detach_is_not_reported(self) -> None:
        session = self.session()
        handle, listener = self.handle(session)
        d = handle.detach()
        self.janus.flush()
        self.successResultOf(d)
        self.assertEqual(listener.detached, 0)

    def test_connection_loss_fails_pending_requests_and_loses_sessions(self) -> None:
        session = self.session()
        self.janus.answer = False
        pending = self.api.info()
        self.api.connection_lost("gone")
        self.failureResultOf(pending, JanusDisconnected)
        self.assertEqual(self.lost, ["gone"])
        self.failureResultOf(self.api.info(), JanusDisconnected)
        self.failureResultOf(session.attach("janus.plugin.sip", RecordingListener()), JanusDisconnected)
        self.janus.clock.advance(100)  # no keepalives for a lost session
        self.assertNotIn("keepalive", self.janus.kinds())

    def test_destroy_forgets_the_session_at_once(self) -> None:
        session = self.session()
        d = session.destroy()
        self.assertNotIn(session.id, self.api.sessions)
        self.janus.flush()
        self.successResultOf(d)
        self.assertEqual(self.lost, [])  # destroying is not losing
        self.successResultOf(session.destroy())  # twice is harmless

    def test_a_send_that_raises_fails_the_request(self) -> None:
        from sylk.gateway.janus.client import JanusAPI

        def closing(text: str) -> None:
            raise RuntimeError("Attempt to send on a closed protocol")
        api = JanusAPI(closing, self.janus.clock)
        self.failureResultOf(api.info(), JanusDisconnected)
        self.assertEqual(self.janus.clock.getDelayedCalls(), [])

    def test_cancelling_a_request_stops_its_timer(self) -> None:
        self.janus.answer = False
        d = self.api.info()
        d.cancel()
        self.failureResultOf(d)
        self.assertEqual(self.janus.clock.getDelayedCalls(), [])

    def test_traces_leave_out_secrets(self) -> None:
        from twisted.logger import Logger
        from sylk.gateway.janus.client import JanusAPI
        logged: list[dict[str, Any]] = []
        api = JanusAPI(lambda text: None, self.janus.clock, api_secret="topsecret", trace=True)
        api.log = Logger(observer=logged.append)
        api.request({"janus": "message", "body": {"request": "register", "ha1_secret": "0" * 32}})
        (event,) = logged
        self.assertNotIn("topsecret", event["text"])
        self.assertNotIn("0" * 32, event["text"])
        self.assertIn('"ha1_secret":"***"', event["text"])

    def test_frames_are_compact_json(self) -> None:
        sent: list[str] = []
        from sylk.gateway.janus.client import JanusAPI
        api = JanusAPI(sent.append, self.janus.clock)
        api.request({"janus": "info", "x": {"a": [1, 2]}})
        self.assertEqual(sent[0], json.dumps(json.loads(sent[0]), separators=(",", ":")))
        self.assertNotIn("apisecret", json.loads(sent[0]))  # no secret configured, none sent
