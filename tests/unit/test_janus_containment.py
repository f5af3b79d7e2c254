"""Containment in the Janus backend: whatever a far end (through Janus) sends, and whatever goes wrong while it is
handled, ends at most the call or account it concerns; the shared link to Janus and every other connection go on.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from sylk.gateway.janus import sipcodec
from sylk.gateway.janus.sipcall import MAX_WAITING_REINVITES
from sylk.gateway.sylkrtc import model
from tests.unit.test_calls import CallTestCase
from tests.unit.test_connection import ALICE


class LoggedEvents:
    """Collects what is logged while a test runs."""

    def __init__(self, test: SynchronousTestCase) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        test.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def failures(self) -> list[Any]:
        return [event["log_failure"] for event in self.events if "log_failure" in event]

    def texts(self) -> list[str]:
        return [str(event.get("log_format", "")) for event in self.events]


class ContainmentTests(CallTestCase):
    def established(self, connection: Any) -> int:
        self.add(connection)
        self.janus.call_outcome = ("accepted",)
        self.dial(connection)
        return self.line_of()

    def test_the_info_that_took_the_gateway_down(self) -> None:
        # Duration=² (U+00B2): str.isdigit() took it, int() refused it, and the exception closed the Janus link
        connection, peer = self.connect()
        line = self.established(connection)
        self.janus.sip_event(self.session_id(), line, {"event": "info", "type": "application/dtmf-relay",
                                                       "content": "Signal=7\r\nDuration=\u00b2\r\n"})
        self.assertEqual([e for e in peer.events if isinstance(e, model.SessionDtmf)],
                         [model.SessionDtmf(session="s1", digit="7", duration=None, method="info")])
        self.assertEqual(self.calls(peer), ["progress", ("accepted", "v=0 answer")])  # the call goes on

    def test_a_failure_while_handling_an_event_ends_only_that_call(self) -> None:
        first, first_peer = self.connect()
        first_line = self.established(first)
        session_of_first = next(iter(self.janus.sessions))
        second, second_peer = self.connect()
        self.add(second)
        self.dial(second, "s2")
        (second_line,) = [h for h, call_id in self.janus.calls.items() if h != first_line]
        self.janus.answer_call(max(self.janus.sessions), second_line)

        def broken(*args: Any) -> None:
            raise RuntimeError("a bug reached by a far end's INFO")
        first.sessions["s1"].call_dtmf = broken  # type: ignore[method-assign]
        self.janus.sip_event(session_of_first, first_line, {"event": "info", "type": "application/dtmf",
                                                            "content": "5"})
        self.assertEqual(self.calls(first_peer)[-1], ("terminated", "Internal error while handling a SIP event"))
        self.assertNotIn(first_line, self.janus.handles())  # its helper retired: Janus ends the SIP call with it
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.calls(second_peer, "s2"), ["progress", ("accepted", "v=0 answer")])
        self.assertIsNone(self.request(second, model.SessionDtmfInfo, session="s2", digit="1"))  # link still up
        self.assertEqual(first.state, "ready")
        self.assertIsNone(self.request(first, model.Ping))

    def test_a_failure_without_a_call_is_only_logged(self) -> None:
        connection, peer = self.registered()
        account = connection.accounts[ALICE]

        def broken(*args: Any) -> None:
            raise RuntimeError("bug")
        account.message_received = broken  # type: ignore[method-assign]
        session, master = self.master()
        self.janus.incoming_message(session, master)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(account.state, "registered")
        self.assertIsNone(self.request(connection, model.AccountUnregister, account=ALICE))

    def test_events_of_the_wrong_shape_are_dropped(self) -> None:
        logged = LoggedEvents(self)
        connection, peer = self.registered()
        self.dial(connection)
        line, session = self.line_of(), self.session_id()
        _, master = self.master()
        weird: list[Any] = [None, 7, "x" * 100000, [], {"a": [1]}, -1, True, "\x00\r\n", "\ud800"]
        events = ["proceeding", "progress", "accepted", "updatingcall", "transfer", "notify", "info", "dtmf",
                  "messagedelivery", "message", "incomingcall", "missed_call", "registration_failed", "hangup",
                  "registered", "ringing", "calling"]
        for event in events:
            for value in weird:
                result = {key: value for key in ("code", "reason", "call_id", "content", "content_type", "type",
                                                 "sender", "displayname", "username", "headers", "refer_id",
                                                 "refer_to", "notify", "signal", "duration", "master_id")}
                for handle in (line, master):
                    message = self.janus._event(session, handle, dict(result, event=event))
                    message["jsep"] = value
                    self.janus.emit(message)
        self.assertEqual(logged.failures(), [])
        self.assertEqual(connection.state, "ready")

    def test_unknown_plugin_events_are_logged(self) -> None:
        logged = LoggedEvents(self)
        connection, _ = self.registered()
        session, master = self.master()
        self.janus.sip_event(session, master, {"event": "subscribe_succeeded"})
        self.assertTrue(any("Unknown SIP plugin event" in text for text in logged.texts()))

    def test_frames_the_api_does_not_promise_do_not_break_the_link(self) -> None:
        connection, _ = self.registered()
        for frame in ('{"janus":"event","transaction":["x"],"session_id":{"a":1}}', '[1,2]', '"text"', "{",
                      '{"janus":"error","transaction":"sg1","error":"oops"}', "[" * 100000 + "]" * 100000,
                      '{"janus":"event","session_id":1,"sender":[1],"plugindata":[]}'):
            self.janus.api.message_received(frame)
        self.assertIsNone(self.request(connection, model.AccountUnregister, account=ALICE))


class ReinviteQueueTests(CallTestCase):
    def test_queued_holds_are_bounded_and_fail_without_recursion(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.call_outcome = ("accepted",)
        self.dial(connection)
        errors = [self.request(connection, model.SessionHold, session="s1") for _ in range(MAX_WAITING_REINVITES + 3)]
        self.assertEqual(errors[:MAX_WAITING_REINVITES + 1], [None] * (MAX_WAITING_REINVITES + 1))  # 1 sent, 4 wait
        self.assertIn("Too many holds and updates waiting", errors[-1] or "")
        self.janus.remote_hangup(self.session_id(), self.line_of())
        self.assertEqual(self.calls(peer)[-1], ("terminated", "200 OK"))


class DisplayNameTests(CallTestCase):
    def test_a_display_name_cannot_close_its_quotes(self) -> None:
        connection, _ = self.connect()
        self.assertIsNone(self.request(connection, model.AccountAdd, account=ALICE,
                                       password="0123456789abcdef0123456789abcdef",
                                       display_name='Eve" <sip:boss@example.com>;x="\\'))
        self.assertIsNone(self.request(connection, model.AccountRegister, account=ALICE))
        (body,) = self.janus.register_bodies.values()
        self.assertEqual(body["display_name"], 'Eve\\" <sip:boss@example.com>;x=\\"\\\\')


class DecoderTests(SynchronousTestCase):
    def test_dtmf_of_info(self) -> None:
        relay = "application/dtmf-relay"
        self.assertEqual(sipcodec.dtmf_of_info(relay, "Signal=7\r\nDuration=160\r\n"), ("7", 160))
        self.assertEqual(sipcodec.dtmf_of_info(relay, "signal = #\nduration=\u00b2"), ("#", None))
        self.assertEqual(sipcodec.dtmf_of_info("application/dtmf", " a "), ("A", None))
        for kind, content in ((relay, "Signal=77"), (relay, "Signal=\u0667"), (relay, None), (relay, "x" * 5000),
                              ("text/plain", "5"), (None, "5"), (relay, "Duration=100")):
            self.assertIsNone(sipcodec.dtmf_of_info(kind, content), (kind, content))

    def test_bare_uri(self) -> None:
        self.assertEqual(sipcodec.bare_uri('"Bob" <sip:bob@example.com;transport=udp>;tag=x'), "bob@example.com")
        self.assertEqual(sipcodec.bare_uri("sips:bob@example.com?Subject=x"), "bob@example.com")
        for junk in (None, 5, "x" * 1000, "bob\r\n@example.com"):
            self.assertEqual(sipcodec.bare_uri(junk), "")

    def test_reasons_and_codes(self) -> None:
        self.assertEqual(sipcodec.sip_reason(486, "Busy Here"), "486 Busy Here")
        self.assertEqual(sipcodec.sip_reason(200, "to BYE"), "200 OK")
        self.assertEqual(sipcodec.sip_reason("486", "Busy\r\nX-Injected: 1"), "BusyX-Injected: 1")
        self.assertEqual(sipcodec.sip_reason(None, None), "Call ended")
        self.assertEqual(sipcodec.sip_reason(10**9, "x" * 1000), "x" * sipcodec.MAX_REASON)
        self.assertEqual(sipcodec.sipfrag_status("SIP/2.0 180 Ringing\r\n"), (180, "Ringing"))
        self.assertIsNone(sipcodec.sipfrag_status("SIP/2.0 18 Ringing"))

    def test_originator_unquotes_janus_display_names(self) -> None:
        originator = sipcodec.originator("sip:bob@example.com", '"Bob \\"B\\""')
        self.assertEqual((originator.uri, originator.display_name), ("bob@example.com", 'Bob "B"'))


class UndecodableMessageTests(CallTestCase):
    def test_a_message_janus_could_not_decode_is_dropped_not_shown_empty(self) -> None:
        connection, peer = self.registered()
        session, master = self.master()
        # Janus leaves `content` out when the body is not UTF-8
        self.janus.sip_event(session, master, {"event": "message", "sender": "sip:bob@example.com",
                                               "content_type": "text/plain"})
        self.assertEqual([e for e in peer.events if isinstance(e, model.MessageReceived)], [])


class TimerTests(CallTestCase):
    def test_a_failing_timer_ends_its_call_and_nothing_else(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.call_outcome = ("accepted",)
        self.dial(connection)
        sip_call = connection.sessions["s1"].sip_call

        def broken(*args: Any) -> None:
            raise RuntimeError("a bug in a timer")
        sip_call._outcome_unreported = broken  # type: ignore[union-attr]
        self.janus.update_outcome = "silent"  # the re-INVITE's outcome is never reported: its timer runs out
        self.request(connection, model.SessionUpdate, session="s1", sdp="v=0 new offer")
        self.janus.clock.advance(60)
        self.janus.flush()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.calls(peer)[-1], ("terminated", "Internal error in the call's timers"))
        self.assertIsNone(self.request(connection, model.Ping))
