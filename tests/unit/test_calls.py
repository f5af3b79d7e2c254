"""Calls over the Janus SIP backend and the fake Janus: outgoing and incoming flows, the account's lines (master
and helpers), request errors, and what ends calls."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sylk.gateway.call import TERMINATE_TIMEOUT
from sylk.gateway.config import WebRTCGatewayConfig
from sylk.gateway.connection import Connection
from sylk.gateway.sylkrtc import model
from tests.fakes import FakePeer
from tests.unit.test_connection import ALICE, ConnectionTestCase

BOB = "bob@example.com"
CANDIDATE = {"candidate": "candidate:1 1 udp 2122194687 127.0.0.1 50000 typ host", "sdpMid": "0",
             "sdpMLineIndex": 0}


class CallTestCase(ConnectionTestCase):
    def calls(self, peer: FakePeer, session: str | None = None) -> list[Any]:
        """The session states reported so far (for one session), with sdp/reason where given."""
        shown = []
        for event in peer.events:
            if isinstance(event, model.SessionStateChanged) and session in (None, event.session):
                extra = event.sdp if event.sdp is not None else event.reason
                shown.append(event.state if extra is None else (event.state, extra))
        return shown

    def account_events(self, peer: FakePeer, kind: type) -> list[Any]:
        return [event for event in peer.events if isinstance(event, kind)]

    def dial(self, connection: Connection, session: str = "s1", uri: str = BOB) -> str | None:
        return self.request(connection, model.SessionCreate, account=ALICE, session=session, uri=uri,
                            sdp="v=0 offer")

    def line_of(self) -> int:
        """The line of the one outgoing call in progress."""
        outgoing = {body["call_id"] for body in self.janus.call_bodies.values()}
        (handle,) = [h for h, call_id in self.janus.calls.items() if call_id in outgoing]
        return handle

    def session_id(self) -> int:
        return next(iter(self.janus.sessions))


class OutgoingCallTests(CallTestCase):
    def test_a_call_without_registering(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.assertIsNone(self.dial(connection))
        # the master sets the identity (send_register: false), a helper on it places the call
        self.assertEqual(self.janus.kinds(), ["create", "attach", "message:register", "attach", "message:register",
                                              "message:call"])
        session, master = self.master()
        self.assertEqual(self.janus.status[master], "identity")
        (line, body), = self.janus.call_bodies.items()
        self.assertEqual(self.janus.helpers[line], master)
        self.assertEqual(body, {"request": "call", "uri": f"sip:{BOB}",  # plain RTP towards SIP by default
                                "call_id": body["call_id"],  # a Call-ID of our own
                                "autoaccept_reinvites": False})  # the browser answers re-INVITEs
        self.assertRegex(body["call_id"], r"^[A-Za-z0-9_-]{24}$")
        self.assertEqual(self.janus.requests[-1]["jsep"], {"type": "offer", "sdp": "v=0 offer"})
        self.assertEqual(self.calls(peer), ["progress"])
        self.janus.answer_call(session, line)
        self.janus.webrtcup(session, line)
        self.assertEqual(self.calls(peer), ["progress", ("accepted", "v=0 answer"), "established"])

    def test_the_call_goes_through_the_outbound_proxy(self) -> None:
        from sylk.gateway.config import SIPProxy
        connection, _ = self.connect(WebRTCGatewayConfig(outbound_sip_proxy=SIPProxy("127.0.0.1", 5070)))
        self.add(connection)
        self.dial(connection)
        identity = [r["body"] for r in self.janus.requests if r["janus"] == "message"][0]
        self.assertEqual(identity["outbound_proxy"], "sip:127.0.0.1:5070;transport=udp")
        self.assertIs(identity["send_register"], False)
        self.assertEqual(identity["ha1_secret"], "0123456789abcdef0123456789abcdef")

    def test_srtp_towards_sip_when_configured(self) -> None:
        for setting, offered in (("optional", "sdes_optional"), ("mandatory", "sdes_mandatory")):
            connection, _ = self.connect(WebRTCGatewayConfig(sip_srtp=setting))
            self.add(connection)
            self.dial(connection)
            self.assertEqual(self.janus.requests[-1]["body"]["srtp"], offered)

    def test_candidates_sent_early_wait_for_the_call(self) -> None:
        connection, _ = self.connect()
        self.add(connection)
        self.janus.answer = False
        self.dial(connection)
        self.assertIsNone(self.request(connection, model.SessionTrickle, session="s1", candidates=[CANDIDATE]))
        self.assertIsNone(self.request(connection, model.SessionTrickle, session="s1", candidates=[]))
        self.assertNotIn("trickle", self.janus.kinds())
        self.janus.answer = True
        self.janus.clock.advance(10)  # the unanswered requests time out; start over with an answering Janus
        self.assertEqual(self.calls(connection._peer), [("terminated", "Janus did not answer 'attach' within 10 s")])

    def test_candidates_follow_the_call(self) -> None:
        connection, _ = self.connect()
        self.add(connection)
        self.dial(connection)
        self.request(connection, model.SessionTrickle, session="s1", candidates=[CANDIDATE, dict(CANDIDATE,
                                                                                                sdpMid=None)])
        self.request(connection, model.SessionTrickle, session="s1", candidates=[])
        first, last = self.janus.trickles
        self.assertEqual(first["candidates"], [CANDIDATE, {"candidate": CANDIDATE["candidate"],
                                                           "sdpMLineIndex": 0}])
        self.assertEqual(last["candidate"], {"completed": True})
        self.assertEqual(first["handle_id"], next(iter(self.janus.call_bodies)))

    def test_early_media_sdp_is_the_answer_when_the_200_has_none(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.dial(connection)
        line = self.line_of()
        self.janus.early_media(self.session_id(), line)
        self.janus.webrtcup(self.session_id(), line)  # media up before the answer: reported after it
        self.assertEqual(self.calls(peer), ["progress", ("early-media", "v=0 early")])
        self.janus.answer_call(self.session_id(), line, sdp=None)
        self.assertEqual(self.calls(peer), ["progress", ("early-media", "v=0 early"), "accepted", "established"])
        accepted = [e for e in peer.events if getattr(e, "state", None) == "accepted"][0]
        self.assertEqual(accepted.early_sdp, "v=0 early")  # what sylkRTC-1 clients get as the answer

    def test_a_provisional_response_after_early_media_keeps_the_call_in_early_media(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.dial(connection)
        line = self.line_of()
        self.janus.early_media(self.session_id(), line)
        self.janus.sip_event(self.session_id(), line, {"event": "proceeding", "code": 183})  # Janus's order, at times
        states = [(e.state, e.code, e.call_id) for e in peer.events if isinstance(e, model.SessionStateChanged)]
        call_id = self.janus.calls[line]
        self.assertEqual(states, [("progress", None, None), ("early-media", None, call_id), ("proceeding", 183, None)])
        self.assertEqual(connection.sessions["s1"].state, "early-media")
        self.assertIsNone(self.request(connection, model.SessionDtmfInfo, session="s1", digit="1"))  # still allowed

    def test_provisional_responses(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.dial(connection)
        line = self.line_of()
        self.janus.sip_event(self.session_id(), line, {"event": "ringing"})
        self.janus.sip_event(self.session_id(), line, {"event": "proceeding", "code": 180})
        self.janus.sip_event(self.session_id(), line, {"event": "ringing"})  # reported once
        states = [(e.state, e.code) for e in peer.events if isinstance(e, model.SessionStateChanged)]
        self.assertEqual(states, [("progress", None), ("ringing", None), ("proceeding", 180)])
        self.request(connection, model.SessionTerminate, session="s1")  # ringing calls can be cancelled
        self.assertEqual(self.calls(peer)[-1], ("terminated", "487 Request Terminated"))

    def test_headers_both_ways(self) -> None:
        connection, peer = self.connect()
        self.request(connection, model.AccountAdd, account=ALICE, password="0123456789abcdef0123456789abcdef",
                     incoming_header_prefixes=("X-",))
        self.request(connection, model.SessionCreate, account=ALICE, session="s1", uri=BOB, sdp="v=0 offer",
                     headers={"X-Room": "42"})
        identity = [r["body"] for r in self.janus.requests if r["janus"] == "message"][0]
        self.assertEqual(identity["incoming_header_prefixes"], ["X-"])
        (body,) = self.janus.call_bodies.values()
        self.assertEqual(body["headers"], {"X-Room": "42"})
        message = self.janus._event(self.session_id(), self.line_of(), {"event": "accepted",
                                                                        "headers": {"X-Answer": "yes"}})
        message["jsep"] = {"type": "answer", "sdp": "v=0 answer"}
        self.janus.emit(message)
        accepted = [e for e in peer.events if getattr(e, "state", None) == "accepted"][0]
        self.assertEqual((accepted.headers, accepted.sdp), ({"X-Answer": "yes"}, "v=0 answer"))
        self.assertEqual(accepted.call_id, body["call_id"])

    def test_far_end_refuses(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.call_outcome = ("hangup", 486, "Busy Here")
        self.dial(connection)
        self.assertEqual(self.calls(peer), ["progress", ("terminated", "486 Busy Here")])
        self.assertEqual(connection.sessions, {})
        self.assertEqual(self.request(connection, model.SessionTerminate, session="s1"),
                         "Invalid state for terminating session s1: terminated")
        self.assertEqual(self.request(connection, model.SessionTrickle, session="s1", candidates=[]),
                         "Session s1 is terminated")
        self.assertIsNone(self.dial(connection))  # the id can be used again

    def test_cancel_before_the_answer(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.dial(connection)
        line = self.line_of()
        self.assertIsNone(self.request(connection, model.SessionTerminate, session="s1"))
        # the CANCEL is out: ended at once, and the line (which Janus 1.1.2 leaves stuck) is let go
        self.assertEqual(self.janus.kinds()[-2:], ["message:hangup", "detach"])
        self.assertNotIn(line, self.janus.handles())
        self.assertEqual(self.calls(peer), ["progress", ("terminated", "487 Request Terminated")])
        self.assertIsNone(self.dial(connection, "s2"))  # on a fresh line

    def test_hang_up_after_the_answer(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.call_outcome = ("accepted",)
        self.dial(connection)
        self.assertIsNone(self.request(connection, model.SessionTerminate, session="s1"))
        self.assertEqual(self.calls(peer)[-1], ("terminated", "200 OK"))

    def test_far_end_hangs_up(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.call_outcome = ("accepted",)
        self.dial(connection)
        self.janus.remote_hangup(self.session_id(), self.line_of(), 200, "Session Terminated")
        self.assertEqual(self.calls(peer)[-1], ("terminated", "200 OK"))

    def test_terminate_twice(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.answer = False
        self.dial(connection)
        self.janus.answer = True
        self.request(connection, model.SessionTerminate, session="s1")  # not placed yet: ends at once
        self.assertEqual(self.calls(peer), [("terminated", "487 Request Terminated")])

    def test_terminate_is_bounded_when_janus_does_not_answer(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.dial(connection)
        self.janus.answer = False
        self.request(connection, model.SessionTerminate, session="s1")
        self.assertIn("terminating", self.request(connection, model.SessionTerminate, session="s1"))
        self.janus.clock.advance(TERMINATE_TIMEOUT)
        self.assertEqual(self.calls(peer)[-1][0], "terminated")

    def test_request_errors(self) -> None:
        connection, _ = self.connect()
        self.assertEqual(self.dial(connection), f"Unknown account specified for call: {ALICE}")
        self.add(connection)
        self.dial(connection)
        self.assertEqual(self.dial(connection), "Session ID s1 already in use")
        self.assertEqual(self.request(connection, model.SessionAnswer, session="s1", sdp="v=0"),
                         "Cannot answer outgoing session s1")
        self.assertEqual(self.request(connection, model.SessionTerminate, session="s9"), "Unknown session s9")
        self.assertEqual(self.request(connection, model.SessionTrickle, session="s9", candidates=[]),
                         "Unknown session s9")

    def test_concurrent_calls_use_helper_lines(self) -> None:
        connection, peer = self.connect(WebRTCGatewayConfig(max_calls_per_account=2))
        self.add(connection)
        self.janus.call_outcome = ("accepted",)
        self.dial(connection, "s1")
        self.dial(connection, "s2", "carol@example.com")
        self.assertEqual(set(self.janus.call_bodies), set(self.janus.helpers))
        self.assertEqual(len(self.janus.helpers), 2)
        self.assertEqual(self.dial(connection, "s3"), f"Too many calls for account {ALICE} (at most 2)")
        self.request(connection, model.SessionTerminate, session="s1")
        self.assertIsNone(self.dial(connection, "s3"))  # a line is free again: no new helper
        self.assertEqual(len(self.janus.helpers), 2)

    def test_a_registered_account_keeps_one_spare_line(self) -> None:
        connection, peer = self.registered()
        self.assertEqual(len(self.janus.helpers), 1)  # idle, for a call arriving while the master is busy
        sent = len(self.janus.kinds())
        self.dial(connection, "s1")  # takes the spare; no other is attached while the call is being set up
        self.assertEqual(self.janus.kinds()[sent:], ["message:call"])
        self.janus.answer_call(self.session_id(), self.line_of())
        self.assertEqual(self.calls(peer), ["progress", ("accepted", "v=0 answer")])
        self.assertEqual(self.janus.kinds()[sent:], ["message:call", "attach", "message:register"])  # answered: now
        self.assertEqual(len(self.janus.helpers), 2)
        for number in range(2, 5):
            self.dial(connection, f"s{number}")
        self.assertEqual(len(self.janus.call_bodies), 4)
        self.assertEqual(len(self.janus.helpers), 4)  # never more lines than calls allowed

    def test_an_unanswered_call_tops_the_spare_up_when_it_ends(self) -> None:
        connection, peer = self.registered()
        self.dial(connection, "s1")  # takes the spare
        sent = len(self.janus.kinds())
        self.janus.remote_hangup(self.session_id(), self.line_of(), 486, "Busy Here")
        self.assertEqual(self.calls(peer), ["progress", ("terminated", "486 Busy Here")])
        self.assertEqual(self.janus.kinds()[sent:], ["detach", "attach", "message:register"])  # its line retired
        self.assertEqual(len([h for h in self.janus.helpers if h in self.janus.handles()]), 1)


class IncomingCallTests(CallTestCase):
    def ring(self, connection: Connection, peer: FakePeer, displayname: str | None = '"Bob B"',
             call_id: str = "abc@host") -> model.IncomingSession:
        session, master = self.master()
        self.janus.incoming_call(session, master, "sip:bob@example.com", displayname, call_id)
        (incoming,) = self.account_events(peer, model.IncomingSession)[-1:]
        return incoming

    def test_an_incoming_call_rings_in_the_browser(self) -> None:
        connection, peer = self.registered()
        incoming = self.ring(connection, peer)
        self.assertEqual(incoming.account, ALICE)
        self.assertEqual(incoming.originator.uri, BOB)
        self.assertEqual(incoming.originator.display_name, "Bob B")  # Janus 1.1.2's quotes removed
        self.assertEqual(incoming.sdp, "v=0 offer")
        self.assertEqual(incoming.session, str(uuid.UUID(bytes=hashlib.md5(b"abc@host").digest())))
        self.assertIn(incoming.session, connection.sessions)

    def test_answer(self) -> None:
        connection, peer = self.registered()
        session_id = self.ring(connection, peer).session
        self.assertIsNone(self.request(connection, model.SessionAnswer, session=session_id, sdp="v=0 answer"))
        accept = self.janus.requests[-1]
        self.assertEqual((accept["body"], accept["jsep"]), ({"request": "accept", "autoaccept_reinvites": False},
                                                            {"type": "answer", "sdp": "v=0 answer"}))
        self.request(connection, model.SessionTrickle, session=session_id, candidates=[CANDIDATE])
        self.assertEqual(len(self.janus.trickles), 1)
        session, master = self.master()
        self.janus.webrtcup(session, master)
        self.assertEqual(self.calls(peer), ["accepted", "established"])
        self.assertIn("Invalid state for answering", self.request(connection, model.SessionAnswer,
                                                                   session=session_id, sdp="v=0"))
        self.janus.remote_hangup(session, master)
        self.assertEqual(self.calls(peer)[-1], ("terminated", "200 OK"))
        self.assertEqual(self.account_events(peer, model.MissedSession), [])

    def test_reject_with_the_decline_code(self) -> None:
        connection, peer = self.registered()
        session_id = self.ring(connection, peer).session
        self.request(connection, model.SessionTerminate, session=session_id)
        self.assertEqual(self.janus.requests[-1]["body"], {"request": "decline", "code": 486})
        self.assertEqual(self.calls(peer), [("terminated", "486 Busy Here")])

    def test_caller_gives_up(self) -> None:
        connection, peer = self.registered()
        self.ring(connection, peer, displayname=None)
        session, master = self.master()
        self.janus.remote_hangup(session, master, 487, "Request Terminated")
        self.assertEqual(self.calls(peer), [("terminated", "487 Request Terminated")])
        (missed,) = self.account_events(peer, model.MissedSession)
        self.assertEqual((missed.originator.uri, missed.originator.display_name), (BOB, None))

    def test_a_second_call_rings_while_busy(self) -> None:
        connection, peer = self.registered()
        first = self.ring(connection, peer, call_id="one")
        second = self.ring(connection, peer, call_id="two")
        self.assertNotEqual(first.session, second.session)
        self.assertEqual(len(self.janus.calls), 2)

    def test_beyond_the_call_limit_the_call_is_refused_and_missed(self) -> None:
        connection, peer = self.registered(WebRTCGatewayConfig(max_calls_per_account=1))
        self.ring(connection, peer, call_id="one")
        session, master = self.master()
        before = len(self.janus.requests)
        self.janus.incoming_call(session, master, call_id="two")  # on the spare line, but over the limit
        self.assertEqual(self.janus.requests[before]["body"], {"request": "decline", "code": 486})
        self.assertEqual(len(self.account_events(peer, model.IncomingSession)), 1)
        self.assertEqual(len(self.account_events(peer, model.MissedSession)), 1)

    def test_when_janus_has_no_idle_line_the_call_is_missed(self) -> None:
        connection, peer = self.registered()
        session, master = self.master()
        for handle in [master, *self.janus.helpers]:
            self.janus.calls[handle] = "busy"  # every line Janus knows of is in a call
        self.janus.incoming_call(session, master, call_id="two")  # Janus answers 486 by itself
        (missed,) = self.account_events(peer, model.MissedSession)
        self.assertEqual((missed.originator.uri, missed.originator.display_name), (BOB, "Bob"))  # from `caller`

    def test_an_invite_without_sdp_is_refused(self) -> None:
        connection, peer = self.registered()
        session, master = self.master()
        self.janus.incoming_call(session, master, sdp=None)
        self.assertEqual(self.account_events(peer, model.IncomingSession), [])
        self.assertEqual(self.janus.requests[-1]["body"], {"request": "decline", "code": 488})

    def test_same_call_id_on_two_accounts_of_one_connection(self) -> None:
        connection, peer = self.registered()
        self.add(connection, BOB)
        self.request(connection, model.AccountRegister, account=BOB)
        session = self.session_id()
        masters = [h for h in self.janus.sessions[session] if h not in self.janus.helpers]
        for master in masters:
            self.janus.incoming_call(session, master, call_id="forked")
        first, second = self.account_events(peer, model.IncomingSession)
        self.assertNotEqual(first.session, second.session)


class EndingTests(CallTestCase):
    def test_closing_the_connection_hangs_up_first(self) -> None:
        connection, peer = self.registered()
        self.janus.call_outcome = ("accepted",)
        self.dial(connection)
        self.successResultOf(self.flushed(connection.close()))
        kinds = self.janus.kinds()
        self.assertLess(kinds.index("message:hangup"), kinds.index("message:unregister"))
        self.assertEqual(kinds[-1], "destroy")

    def flushed(self, d: Any) -> Any:
        self.janus.flush()
        return d

    def test_removing_the_account_ends_its_calls(self) -> None:
        connection, peer = self.registered()
        self.dial(connection)
        self.request(connection, model.AccountRemove, account=ALICE)
        self.assertEqual(self.calls(peer)[-1], ("terminated", "487 Request Terminated"))
        self.assertEqual(connection.sessions, {})

    def test_losing_janus_ends_the_calls_not_the_connection(self) -> None:
        connection, peer = self.registered()
        self.dial(connection)
        self.link.lose("gone")
        self.assertEqual(self.calls(peer)[-1], ("terminated", "SIP backend lost (gone)"))
        self.assertIsNone(peer.closed)
        self.assertEqual(connection.state, "recovering")

    def test_unregistering_ends_calls_on_helper_lines_only(self) -> None:
        connection, peer = self.registered()
        session, master = self.master()
        self.janus.incoming_call(session, master, call_id="on-master")
        (incoming,) = self.account_events(peer, model.IncomingSession)
        self.dial(connection, "on-helper")
        self.request(connection, model.AccountUnregister, account=ALICE)
        self.assertEqual(self.calls(peer, "on-helper")[-1][0], "terminated")
        self.assertEqual(self.calls(peer, incoming.session), [])  # still ringing
        self.assertIsNone(self.dial(connection, "again"))  # the identity is set again, a helper attached again

    def test_media_failure_hangs_up_the_sip_side(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.call_outcome = ("accepted",)
        self.dial(connection)
        line = self.line_of()
        self.janus.emit({"janus": "hangup", "session_id": self.session_id(), "sender": line,
                         "reason": "DTLS alert"})
        self.assertEqual(self.calls(peer)[-1], ("terminated", "DTLS alert"))
        self.assertEqual(self.janus.kinds()[-2:], ["message:hangup", "detach"])  # then the used helper goes


class DtmfTests(CallTestCase):
    def established(self) -> tuple[Connection, FakePeer, int]:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.call_outcome = ("accepted",)
        self.dial(connection)
        return connection, peer, self.line_of()

    def sent(self) -> list[tuple[str, int]]:
        return [(r["body"]["digit"], r["body"]["duration"]) for r in self.janus.requests
                if r["janus"] == "message" and r["body"]["request"] == "dtmf_info"]

    def test_tones_go_out_one_by_one_with_spacing(self) -> None:
        from sylk.gateway.call import DTMF_GAP
        connection, peer, line = self.established()
        self.assertIsNone(self.request(connection, model.SessionDtmfInfo, session="s1", digit="12#", duration=200))
        self.assertEqual(self.sent(), [("1", 200)])
        self.janus.clock.advance(0.2 + DTMF_GAP - 0.01)
        self.janus.flush()
        self.assertEqual(self.sent(), [("1", 200)])
        self.janus.clock.advance(0.01)
        self.janus.flush()
        self.assertEqual(self.sent(), [("1", 200), ("2", 200)])
        self.request(connection, model.SessionDtmfInfo, session="s1", digit="9", duration=100)  # queued behind
        for _ in range(3):
            self.janus.clock.advance(0.3)
            self.janus.flush()
        self.assertEqual(self.sent(), [("1", 200), ("2", 200), ("#", 200), ("9", 100)])

    def test_only_in_an_answered_call(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.dial(connection)  # ringing, not answered
        self.assertEqual(self.request(connection, model.SessionDtmfInfo, session="s1", digit="1", duration=160),
                         "Invalid state for sending DTMF in session s1: progress")

    def test_ending_the_call_drops_what_is_left(self) -> None:
        connection, peer, line = self.established()
        self.request(connection, model.SessionDtmfInfo, session="s1", digit="123", duration=160)
        self.janus.remote_hangup(self.session_id(), line)
        self.janus.clock.advance(5)
        self.janus.flush()
        self.assertEqual(self.sent(), [("1", 160)])

    def test_tones_from_the_far_end(self) -> None:
        connection, peer, line = self.established()
        session = self.session_id()
        self.janus.sip_event(session, line, {"event": "info", "sender": "sip:bob@example.com",
                                             "type": "application/dtmf-relay", "content": "Signal=5\r\nDuration=250"})
        self.janus.sip_event(session, line, {"event": "info", "type": "application/dtmf", "content": "#"})
        self.janus.sip_event(session, line, {"event": "info", "type": "text/plain", "content": "hello"})
        self.janus.sip_event(session, line, {"event": "dtmf", "signal": "7", "duration": 100})  # Janus >= 1.2.1
        tones = [(e.digit, e.duration, e.method) for e in peer.events if isinstance(e, model.SessionDtmf)]
        self.assertEqual(tones, [("5", 250, "info"), ("#", None, "info"), ("7", 100, "rfc4733")])


class LineRaceTests(CallTestCase):
    """Calls, lines and the master racing each other. Each of these once left a line, a Sofia-stack slot or the
    reactor stuck."""

    def test_calls_waiting_for_a_failed_master_attach_wait_again(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.unanswered = {"attach"}
        self.dial(connection, "s1")  # attaches the master
        self.dial(connection, "s2")  # waits for that attach
        self.janus.clock.advance(10)  # it times out: s1 fails, s2 attaches in turn
        self.assertEqual(self.calls(peer, "s1"), [("terminated", "Janus did not answer 'attach' within 10 s")])
        self.dial(connection, "s3")  # waits for s2's attach (it once found the old wake-up fired, and spun)
        self.assertEqual(self.janus.kinds().count("attach"), 2)
        self.janus.unanswered = set()
        self.janus.clock.advance(10)  # s2's attach times out too; s3 attaches, and Janus answers now
        self.janus.flush()
        self.assertEqual(self.calls(peer, "s2")[-1][0], "terminated")
        self.assertEqual(self.calls(peer, "s3"), ["progress"])

    def test_an_account_closed_while_waiting_to_start_its_stack_gives_its_turn_back(self) -> None:
        from sylk.gateway.janus.sip import NEW_STACKS_AT_ONCE
        connection, peer = self.connect()
        for round_ in range(NEW_STACKS_AT_ONCE):
            busy = [f"busy{round_}-{n}@example.com" for n in range(NEW_STACKS_AT_ONCE)]
            for account in busy:
                self.add(connection, account)
            self.janus.unanswered = {"register"}  # these take every turn, until their requests time out
            for account in busy:
                self.request(connection, model.AccountRegister, account=account)
            self.add(connection, "caller@example.com")
            self.request(connection, model.SessionCreate, account="caller@example.com", session=f"s{round_}",
                         uri=BOB, sdp="v=0")  # its stack waits for a turn
            self.request(connection, model.AccountRemove, account="caller@example.com")
            self.janus.unanswered = set()
            self.janus.clock.advance(10)
            self.janus.flush()
            for account in busy:
                self.request(connection, model.AccountRemove, account=account)
        self.add(connection)
        self.request(connection, model.AccountRegister, account=ALICE)
        self.assertEqual(peer.states()[-2:], ["registering", "registered"])

    def test_a_line_being_bound_is_not_given_to_another_call(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.held = {"register:helper"}
        self.dial(connection, "s1")  # a helper is attached for it, its binding to the master held
        (first,) = self.janus.helpers if self.janus.helpers else [self.janus.requests[-1]["handle_id"]]
        self.request(connection, model.SessionTerminate, session="s1")  # ends at once: nothing went out
        self.assertEqual(self.calls(peer, "s1"), [("terminated", "487 Request Terminated")])
        self.dial(connection, "s2")  # the first helper is not bound yet: a second one is attached
        self.janus.release()
        (placed,) = self.janus.call_bodies  # s1's INVITE never went out; s2's went on the second helper
        self.assertNotEqual(placed, first)
        self.assertEqual(self.calls(peer, "s2"), ["progress"])
        self.assertIsNone(self.dial(connection, "s3"))  # on a fresh helper: the first one carried s1, and is gone
        self.assertNotIn(first, self.janus.call_bodies)
        self.assertNotIn(first, self.janus.handles())
        self.assertEqual(len(self.janus.call_bodies), 2)
        self.assertEqual(self.calls(peer, "s3"), ["progress"])

    def test_terminated_while_janus_takes_the_call(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.held = {"call"}
        self.dial(connection)
        self.request(connection, model.SessionTerminate, session="s1")  # the INVITE is going out: cancel it after
        self.assertEqual(self.janus.kinds()[-1], "message:call")
        self.janus.release()
        self.assertEqual(self.janus.kinds()[-2:], ["message:hangup", "detach"])
        self.assertEqual(self.calls(peer), [("terminated", "487 Request Terminated")])

    def test_a_hangup_janus_ignores_does_not_keep_the_line(self) -> None:
        from sylk.gateway.janus.sipcall import HANGUP_WAIT
        connection, peer = self.connect()
        self.add(connection)
        self.janus.call_outcome = ("accepted",)
        self.dial(connection)
        line = self.line_of()
        del self.janus.calls[line]  # Janus no longer sees a call there: it ignores the hangup, silently
        self.request(connection, model.SessionTerminate, session="s1")
        self.janus.clock.advance(HANGUP_WAIT)
        self.janus.flush()
        self.assertEqual(self.calls(peer)[-1], ("terminated", "Ended without an answer from Janus"))
        self.assertNotIn(line, self.janus.handles())  # given up: detached

    def test_hangups_of_other_calls_are_ignored(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.call_outcome = ("accepted",)
        self.dial(connection)
        line, session = self.line_of(), self.session_id()
        self.janus.emit(self.janus._hangup_event(session, line, 486, "Busy Here", None))  # Janus 1.1.2's stray one
        self.janus.emit(self.janus._hangup_event(session, line, 486, "Busy Here", "another-call"))
        self.assertEqual(self.calls(peer), ["progress", ("accepted", "v=0 answer")])
        self.janus.remote_hangup(session, line)
        self.assertEqual(self.calls(peer)[-1], ("terminated", "200 OK"))

    def test_a_helper_carries_one_call_only(self) -> None:
        # Janus frees a call's ICE agent only a while after the call's end; a new call on the handle before that
        # fails with 490 "Error setting ICE locally". So a used helper is detached and the next call gets another.
        connection, peer = self.registered()
        self.janus.call_outcome = ("hangup", 404, "Not Found")
        self.dial(connection, "s1")
        (first,) = self.janus.call_bodies
        self.assertEqual(self.calls(peer, "s1")[-1], ("terminated", "404 Not Found"))
        self.assertNotIn(first, self.janus.handles())
        self.assertEqual(len([h for h in self.janus.helpers if h in self.janus.handles()]), 1)  # a fresh spare
        self.janus.call_outcome = ("accepted",)
        self.dial(connection, "s2")
        self.assertNotEqual(self.line_of(), first)
        self.assertEqual(self.calls(peer, "s2"), ["progress", ("accepted", "v=0 answer")])

    def answered_on_master(self, connection: Connection, peer: FakePeer, call_id: str) -> str:
        session, master = self.master()
        self.janus.incoming_call(session, master, "sip:bob@example.com", None, call_id)
        session_id = self.account_events(peer, model.IncomingSession)[-1].session
        self.request(connection, model.SessionAnswer, session=session_id, sdp="v=0 answer")
        return session_id

    def test_the_previous_calls_peerconnection_closing_does_not_end_the_next_call(self) -> None:
        # The master is kept (it holds the registration), so its late "Close PC" must be told apart.
        from sylk.gateway.janus.lines import STALE_PC_WINDOW
        connection, peer = self.registered()
        session, master = self.master()
        first = self.answered_on_master(connection, peer, "one")
        call_id = self.janus.calls.pop(master)
        self.janus.emit(self.janus._hangup_event(session, master, 200, "Session Terminated", call_id))  # no Close PC yet
        self.assertEqual(self.calls(peer, first)[-1], ("terminated", "200 OK"))
        second = self.answered_on_master(connection, peer, "two")
        self.janus.emit({"janus": "hangup", "session_id": session, "sender": master, "reason": "Close PC"})  # one's
        self.assertEqual(self.calls(peer, second), ["accepted"])
        self.janus.clock.advance(STALE_PC_WINDOW)
        self.janus.emit({"janus": "hangup", "session_id": session, "sender": master, "reason": "DTLS alert"})
        self.assertEqual(self.calls(peer, second)[-1], ("terminated", "DTLS alert"))

    def test_a_peerconnection_end_that_ended_a_call_does_not_shadow_the_next_calls(self) -> None:
        connection, peer = self.registered()
        session, master = self.master()
        first = self.answered_on_master(connection, peer, "one")
        self.janus.emit({"janus": "hangup", "session_id": session, "sender": master, "reason": "DTLS alert"})
        self.janus._outbox = [m for m in self.janus._outbox if m.get("janus") != "hangup"]  # Janus says it once
        self.janus.flush()
        self.assertEqual(self.calls(peer, first)[-1], ("terminated", "DTLS alert"))
        second = self.answered_on_master(connection, peer, "two")
        self.janus.emit({"janus": "hangup", "session_id": session, "sender": master, "reason": "ICE failed"})
        self.assertEqual(self.calls(peer, second)[-1], ("terminated", "ICE failed"))

    def test_an_invite_janus_binds_before_our_call_moves_the_call_to_another_line(self) -> None:
        connection, peer = self.registered()
        (spare,) = self.janus.helpers
        self.janus.held = {"call", "decline"}  # Janus handles a handle's requests in order: the call first
        self.dial(connection)
        session = self.session_id()
        self.janus.calls[spare] = "intruder"
        message = self.janus._event(session, spare, {"event": "incomingcall", "username": "sip:carol@example.com",
                                                     "call_id": "intruder"})
        message["jsep"] = {"type": "offer", "sdp": "v=0"}
        self.janus.emit(message)
        self.janus.release()  # `call` refused (447), the INVITE declined, the call placed again elsewhere
        self.assertEqual(self.calls(peer, "s1"), ["progress"])
        (placed,) = [h for h, call_id in self.janus.calls.items() if call_id != "intruder"]
        self.assertNotEqual(placed, spare)

    def test_a_spare_line_janus_will_not_bind_is_let_go(self) -> None:
        from sylk.gateway.janus.lines import HELPER_RETRY
        connection, peer = self.connect()
        self.add(connection)
        self.janus.unanswered = {"register:helper"}
        self.request(connection, model.AccountRegister, account=ALICE)
        for _ in range(6):
            self.janus.clock.advance(10 + HELPER_RETRY)  # the binding times out, a new spare is tried later
            self.janus.flush()
        self.assertLessEqual(len(self.janus.handles()), 2)  # the master and the spare being tried, no pile-up

    def test_answering_fails_then_the_caller_is_declined(self) -> None:
        connection, peer = self.registered()
        session, master = self.master()
        self.janus.incoming_call(session, master)
        (incoming,) = self.account_events(peer, model.IncomingSession)
        self.janus.unanswered = {"accept"}
        self.request(connection, model.SessionAnswer, session=incoming.session, sdp="v=0 answer")
        self.janus.clock.advance(10)
        self.janus.flush()
        self.assertEqual(self.janus.requests[-1]["body"], {"request": "decline", "code": 486})
        self.assertNotIn(master, self.janus.calls)  # the caller was told
        self.assertEqual(self.calls(peer, incoming.session)[-1][0], "terminated")

    def test_an_invite_on_a_line_taken_for_an_outgoing_call_is_refused_as_busy(self) -> None:
        connection, peer = self.registered()
        (spare,) = self.janus.helpers
        self.janus.held = {"call"}
        self.dial(connection)  # takes the spare line; Janus has not seen the call yet
        session = self.session_id()
        self.janus.calls[spare] = "intruder"  # and gives that line an INVITE meanwhile
        message = self.janus._event(session, spare, {"event": "incomingcall", "username": "sip:carol@example.com",
                                                     "call_id": "intruder"})
        message["jsep"] = {"type": "offer", "sdp": "v=0"}
        self.janus.emit(message)
        self.assertEqual(self.janus.requests[-1]["body"], {"request": "decline", "code": 486})
        self.assertEqual(len(self.account_events(peer, model.MissedSession)), 1)
        self.janus.release()  # the outgoing call goes on
        self.assertEqual(self.calls(peer, "s1"), ["progress"])

    def test_media_failure_in_early_media_lets_the_line_go(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.dial(connection)
        line, session = self.line_of(), self.session_id()
        self.janus.early_media(session, line)
        self.janus.emit({"janus": "hangup", "session_id": session, "sender": line, "reason": "DTLS alert"})
        self.assertEqual(self.calls(peer)[-1], ("terminated", "DTLS alert"))
        self.assertEqual(self.janus.kinds()[-2:], ["message:hangup", "detach"])  # the CANCEL left it stuck

    def test_a_call_placed_while_unregistering_waits_for_the_end_of_it(self) -> None:
        connection, peer = self.registered()
        self.janus.held = {"unregister"}
        self.request(connection, model.AccountUnregister, account=ALICE)
        self.dial(connection)  # the spare helper is about to go with the registration: wait
        self.assertNotIn("message:call", self.janus.kinds())
        self.janus.release()
        self.assertEqual(self.calls(peer), ["progress"])
        self.assertEqual(self.janus.status[self.master()[1]], "identity")


class UpdateTests(CallTestCase):
    """Re-INVITEs both ways (session-update, `update` events) and hold."""

    def established(self, settings: WebRTCGatewayConfig | None = None) -> tuple[Connection, FakePeer, int]:
        connection, peer = self.connect(settings)
        self.add(connection)
        self.janus.call_outcome = ("accepted",)
        self.dial(connection)
        return connection, peer, self.line_of()

    def updates(self, peer: FakePeer) -> list[tuple[Any, ...]]:
        return [(e.state, e.sdp or e.reason) for e in peer.events if isinstance(e, model.SessionUpdated)]

    def holds(self, peer: FakePeer) -> list[tuple[bool, str]]:
        return [(e.held, e.originator) for e in peer.events if isinstance(e, model.SessionHoldChanged)]

    def test_the_browser_sends_a_new_offer(self) -> None:
        connection, peer, line = self.established()
        self.assertIsNone(self.request(connection, model.SessionUpdate, session="s1", sdp="v=0 reoffer"))
        self.assertEqual((self.janus.requests[-1]["body"], self.janus.requests[-1]["jsep"]),
                         ({"request": "update"}, {"type": "offer", "sdp": "v=0 reoffer", "update": True}))
        self.assertEqual(self.updates(peer), [("accepted", "v=0 reanswer")])
        self.assertIsNone(self.request(connection, model.SessionUpdate, session="s1", sdp="v=0 again"))  # another

    def test_one_update_at_a_time(self) -> None:
        connection, peer, line = self.established()
        self.janus.update_outcome = "silent"
        self.request(connection, model.SessionUpdate, session="s1", sdp="v=0 reoffer")
        self.assertEqual(self.request(connection, model.SessionUpdate, session="s1", sdp="v=0"),
                         "Invalid state for updating session s1: local-updating")
        self.assertEqual(self.request(connection, model.SessionHold, session="s1"),
                         "Invalid state for holding session s1: local-updating")

    def test_an_unanswered_update_fails_after_the_sip_transaction_timeout(self) -> None:
        connection, peer, line = self.established()
        self.janus.update_outcome = "silent"  # a 488 or a 491: Janus 1.1.2 says nothing
        self.request(connection, model.SessionUpdate, session="s1", sdp="v=0 reoffer")
        self.janus.clock.advance(32)
        self.assertEqual(self.updates(peer), [])
        self.janus.clock.advance(1)
        self.assertEqual(self.updates(peer), [("failed", "No answer to the re-INVITE")])
        self.assertEqual(self.calls(peer)[-1], ("accepted", "v=0 answer"))  # the call goes on
        self.assertIsNone(self.request(connection, model.SessionUpdate, session="s1", sdp="v=0 again"))

    def test_no_update_before_the_call_is_accepted(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.dial(connection)
        self.assertEqual(self.request(connection, model.SessionUpdate, session="s1", sdp="v=0"),
                         "Invalid state for updating session s1: progress")

    def test_the_far_end_updates_and_the_browser_answers(self) -> None:
        connection, peer, line = self.established()
        self.janus.remote_reinvite(self.session_id(), line, "v=0\r\nm=audio 9 RTP/AVP 0\r\na=sendonly\r\n")
        self.assertEqual(self.updates(peer), [("received", "v=0\r\nm=audio 9 RTP/AVP 0\r\na=sendonly\r\n")])
        self.assertEqual(self.holds(peer), [(True, "remote")])  # a sendonly offer: the far end holds the call
        self.assertEqual(self.request(connection, model.SessionHold, session="s1"),
                         "Invalid state for holding session s1: remote-updating")
        self.assertIsNone(self.request(connection, model.SessionUpdate, session="s1", sdp="v=0 recvonly answer"))
        self.assertEqual(self.janus.requests[-1]["jsep"], {"type": "answer", "sdp": "v=0 recvonly answer",
                                                           "update": True})
        self.assertNotIn(line, self.janus.reinvited)
        self.janus.remote_reinvite(self.session_id(), line, "v=0\r\nm=audio 9 RTP/AVP 0\r\na=sendrecv\r\n")
        self.assertEqual(self.holds(peer), [(True, "remote"), (False, "remote")])

    def test_both_sides_updating_at_once_fails_the_browsers(self) -> None:
        connection, peer, line = self.established()
        self.janus.update_outcome = "silent"
        self.request(connection, model.SessionUpdate, session="s1", sdp="v=0 reoffer")
        self.janus.remote_reinvite(self.session_id(), line)
        self.assertEqual(self.updates(peer), [("failed", "The far end sent a re-INVITE of its own"),
                                              ("received", "v=0 reoffer\r\na=sendrecv")])
        self.janus.clock.advance(33)  # no second failure for the browser's
        self.assertEqual(len(self.updates(peer)), 2)

    def test_an_update_the_browser_leaves_unanswered_ends_the_call(self) -> None:
        from sylk.gateway.call import UPDATE_ANSWER_WAIT
        connection, peer, line = self.established()
        self.janus.remote_reinvite(self.session_id(), line)
        self.janus.clock.advance(UPDATE_ANSWER_WAIT)
        self.janus.flush()
        self.assertEqual(self.calls(peer)[-1], ("terminated", "The browser did not answer the far end's update "
                                                              f"within {UPDATE_ANSWER_WAIT:g} s"))
        self.assertIn("message:hangup", self.janus.kinds()[-4:])

    def test_an_offerless_reinvite_ends_the_call(self) -> None:
        connection, peer, line = self.established()
        self.janus.remote_reinvite(self.session_id(), line, sdp=None)
        self.assertEqual(self.calls(peer)[-1], ("terminated", "A re-INVITE without SDP is not supported"))
        self.assertIn("message:hangup", self.janus.kinds())

    def test_hold_and_unhold(self) -> None:
        from sylk.gateway.janus.sipcall import REINVITE_SETTLE
        connection, peer, line = self.established()
        self.assertIsNone(self.request(connection, model.SessionHold, session="s1"))
        self.assertIsNone(self.request(connection, model.SessionHold, session="s1", direction="inactive"))
        self.assertIsNone(self.request(connection, model.SessionUnhold, session="s1"))
        # each waits for the previous one's re-INVITE to settle: Janus would drop it while that one is open
        self.assertEqual(self.janus.holds, [(line, "hold sendonly")])
        self.janus.clock.advance(REINVITE_SETTLE)
        self.janus.flush()
        self.assertEqual(self.janus.holds, [(line, "hold sendonly"), (line, "hold inactive")])
        self.janus.clock.advance(REINVITE_SETTLE)
        self.janus.flush()
        self.assertEqual(self.janus.holds, [(line, "hold sendonly"), (line, "hold inactive"), (line, "unhold")])
        self.assertEqual(self.holds(peer), [(True, "local"), (True, "local"), (False, "local")])

    def test_a_hold_right_after_answering_the_far_ends_update_waits_for_it_to_settle(self) -> None:
        from sylk.gateway.janus.sipcall import REINVITE_SETTLE
        connection, peer, line = self.established()
        self.janus.remote_reinvite(self.session_id(), line)
        self.request(connection, model.SessionUpdate, session="s1", sdp="v=0 answer")
        self.assertIsNone(self.request(connection, model.SessionHold, session="s1"))
        self.assertEqual(self.janus.holds, [])  # Janus waits for the far end's ACK: it would drop the hold
        self.janus.clock.advance(REINVITE_SETTLE)
        self.janus.flush()
        self.assertEqual(self.janus.holds, [(line, "hold sendonly")])

    def test_requests_waiting_to_settle_fail_when_the_call_ends(self) -> None:
        connection, peer, line = self.established()
        self.request(connection, model.SessionHold, session="s1")
        self.request(connection, model.SessionUnhold, session="s1")  # waits
        self.janus.remote_hangup(self.session_id(), line)
        self.assertEqual(self.janus.holds, [(line, "hold sendonly")])
        self.assertEqual(self.updates(peer), [])  # nothing more to say about a terminated call

    def test_a_hold_janus_ignores_is_reported_as_a_failed_update(self) -> None:
        connection, peer, line = self.established()
        self.janus.answered.discard(line)  # Janus no longer sees the call as up: it ignores the request
        self.request(connection, model.SessionHold, session="s1")
        self.janus.clock.advance(10)
        self.assertEqual(self.updates(peer), [("failed", "Janus did not answer 'message' within 10 s")])

    def test_sylkrtc1_connections_let_janus_accept_reinvites(self) -> None:
        connection, peer = self.connect()
        connection.answers_reinvites = False  # as for a sylkRTC-1 socket
        self.add(connection)
        self.dial(connection)
        (body,) = self.janus.call_bodies.values()
        self.assertNotIn("autoaccept_reinvites", body)


class OfferHoldsTests(SynchronousTestCase):
    def test_directions(self) -> None:
        from sylk.gateway.call import offer_holds
        audio = "v=0\r\nm=audio 9 RTP/AVP 0\r\n"
        self.assertTrue(offer_holds(audio + "a=sendonly\r\n"))
        self.assertTrue(offer_holds(audio + "a=inactive\r\n"))
        self.assertFalse(offer_holds(audio + "a=sendrecv\r\n"))
        self.assertFalse(offer_holds(audio))  # sendrecv by default
        self.assertTrue(offer_holds("v=0\r\na=sendonly\r\nm=audio 9 RTP/AVP 0\r\n"))  # from the session level
        self.assertFalse(offer_holds(audio + "a=sendonly\r\nm=video 9 RTP/AVP 96\r\na=sendrecv\r\n"))
        self.assertTrue(offer_holds(audio + "a=sendonly\r\nm=video 0 RTP/AVP 96\r\n"))  # a rejected stream
        self.assertFalse(offer_holds("v=0\r\n"))


class TransferTests(CallTestCase):
    """REFER both ways: transfers the browser asks for, and the far end's requests the browser decides on."""

    def established(self, session_id: str = "s1", uri: str = BOB) -> tuple[Connection, FakePeer, int]:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.call_outcome = ("accepted",)
        self.dial(connection, session_id, uri)
        return connection, peer, self.line_of()

    def progress(self, peer: FakePeer) -> list[tuple[Any, ...]]:
        return [(e.state, e.code, e.reason) for e in peer.events if isinstance(e, model.SessionTransferProgress)]

    def test_blind_transfer_and_its_progress(self) -> None:
        connection, peer, line = self.established()
        self.assertIsNone(self.request(connection, model.SessionTransfer, session="s1", uri="carol@example.com"))
        self.assertEqual(self.janus.transfers, [(line, {"request": "transfer", "uri": "sip:carol@example.com"})])
        self.assertEqual(self.request(connection, model.SessionTransfer, session="s1", uri="dave@example.com"),
                         "A transfer of session s1 is already under way")
        session = self.session_id()
        self.janus.refer_notify(session, line, "SIP/2.0 100 Trying")
        self.janus.refer_notify(session, line, "SIP/2.0 180 Ringing")
        self.janus.refer_notify(session, line, "SIP/2.0 200 OK", substate="terminated")
        self.assertEqual(self.progress(peer), [("progress", 100, "Trying"), ("progress", 180, "Ringing"),
                                               ("completed", 200, "OK")])

    def test_auth_challenges_in_the_notifys_are_progress(self) -> None:
        connection, peer, line = self.established()
        self.request(connection, model.SessionTransfer, session="s1", uri="carol@example.com")
        session = self.session_id()
        # Janus, as the transferee, NOTIFYs every answer to its INVITE, the 407 it then answers with credentials too
        for status in ("SIP/2.0 407 Proxy Authentication Required", "SIP/2.0 180 Ringing", "SIP/2.0 200 OK"):
            self.janus.refer_notify(session, line, status)
        self.assertEqual([state for state, _, _ in self.progress(peer)], ["progress", "progress", "completed"])

    def test_a_transfer_that_stops_progressing_fails_in_bounded_time(self) -> None:
        from sylk.gateway.janus.sipcall import TRANSFER_PROGRESS_WAIT
        connection, peer, line = self.established()
        self.request(connection, model.SessionTransfer, session="s1", uri="carol@example.com")
        self.janus.refer_notify(self.session_id(), line, "SIP/2.0 100 Trying")
        self.janus.clock.advance(TRANSFER_PROGRESS_WAIT)
        self.assertEqual(self.progress(peer)[-1], ("failed", None, "The transfer did not complete"))
        self.assertIsNone(self.request(connection, model.SessionTransfer, session="s1", uri="dave@example.com"))

    def test_a_transfer_the_far_end_ignores_fails_in_bounded_time(self) -> None:
        connection, peer, line = self.established()
        self.request(connection, model.SessionTransfer, session="s1", uri="carol@example.com")
        self.janus.clock.advance(33)
        self.assertEqual(self.progress(peer), [("failed", None, "No answer to the transfer request (REFER)")])
        self.assertIsNone(self.request(connection, model.SessionTransfer, session="s1", uri="carol@example.com"))

    def test_attended_transfer_replaces_another_call(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.call_outcome = ("accepted",)
        self.dial(connection, "to-bob")
        self.dial(connection, "to-carol", "carol@example.com")
        carol_call_id = [b["call_id"] for b in self.janus.call_bodies.values() if b["uri"] == "sip:carol@example.com"]
        self.assertIsNone(self.request(connection, model.SessionTransfer, session="to-bob", uri="carol@example.com",
                                       replace_session="to-carol"))
        (_, body), = self.janus.transfers
        self.assertEqual(body["replace"], carol_call_id[0])
        self.assertEqual(self.request(connection, model.SessionTransfer, session="to-carol", uri="bob@example.com",
                                      replace_session="nobody"), "Unknown session nobody")

    def test_no_transfer_before_the_answer(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.dial(connection)
        self.assertEqual(self.request(connection, model.SessionTransfer, session="s1", uri="carol@example.com"),
                         "Invalid state for transferring session s1: progress")

    def test_the_far_end_asks_for_a_transfer_and_the_browser_carries_it_out(self) -> None:
        connection, peer, line = self.established()
        refer_id = self.janus.refer(self.session_id(), line, "sip:carol@example.com;transport=udp",
                                    '"Bob" <sip:bob@example.com>;tag=1')
        (request,) = self.account_events(peer, model.SessionTransferRequest)
        self.assertEqual((request.session, request.refer_to, request.referred_by, request.replaces),
                         ("s1", "carol@example.com", "bob@example.com", False))
        self.assertIsNone(self.request(connection, model.SessionCreate, account=ALICE, session="s2",
                                       uri=request.refer_to, sdp="v=0 offer", refer_session="s1"))
        (body,) = [b for b in self.janus.call_bodies.values() if b["uri"] == "sip:carol@example.com"]
        self.assertEqual(body["refer_id"], refer_id)
        self.assertEqual(self.request(connection, model.SessionTransferReject, session="s1"),
                         "No transfer request for session s1")  # it was taken by s2

    def test_a_transfer_request_outlives_its_call(self) -> None:
        from sylk.gateway.call import TRANSFER_DECISION_WAIT
        connection, peer, line = self.established()
        session = self.session_id()
        first = self.janus.refer(session, line)
        refer_id = self.janus.refer(session, line)  # a newer one: the older is refused to Janus
        self.assertEqual(self.janus.transfers, [(line, {"request": "decline", "refer_id": first, "code": 603})])
        self.janus.remote_hangup(session, line)  # REFER, 202, BYE: how desk phones transfer blindly
        self.assertIsNone(self.request(connection, model.SessionCreate, account=ALICE, session="s2",
                                       uri="carol@example.com", sdp="v=0 offer", refer_session="s1"))
        (body,) = [b for b in self.janus.call_bodies.values() if b["uri"] == "sip:carol@example.com"]
        self.assertEqual(body["refer_id"], refer_id)
        # and one left alone after its call ended is still refused to Janus in time
        self.janus.call_outcome = ("accepted",)
        self.dial(connection, "s3", "dave@example.com")
        dave = [h for h, b in self.janus.call_bodies.items() if b["uri"] == "sip:dave@example.com"][0]
        late = self.janus.refer(session, dave)
        self.janus.remote_hangup(session, dave)
        self.janus.clock.advance(TRANSFER_DECISION_WAIT)
        self.janus.flush()
        self.assertIn({"request": "decline", "refer_id": late, "code": 603}, [b for _, b in self.janus.transfers])

    def test_the_line_that_carried_out_a_transfer_is_let_go(self) -> None:
        connection, peer, line = self.established()
        self.janus.refer(self.session_id(), line)
        self.request(connection, model.SessionCreate, account=ALICE, session="s2", uri="carol@example.com",
                     sdp="v=0 offer", refer_session="s1")
        (carol,) = [h for h, b in self.janus.call_bodies.items() if b["uri"] == "sip:carol@example.com"]
        self.janus.remote_hangup(self.session_id(), carol)
        self.janus.flush()
        self.assertNotIn(carol, self.janus.handles())  # Janus keeps the REFER on it and would tell its sender more

    def test_the_browser_refuses_a_transfer(self) -> None:
        connection, peer, line = self.established()
        refer_id = self.janus.refer(self.session_id(), line)
        self.assertIsNone(self.request(connection, model.SessionTransferReject, session="s1", code=486))
        self.assertEqual(self.janus.transfers, [(line, {"request": "decline", "refer_id": refer_id, "code": 486})])
        self.assertEqual(self.calls(peer)[-1], ("accepted", "v=0 answer"))  # the call goes on

    def test_an_undecided_transfer_request_is_refused(self) -> None:
        from sylk.gateway.call import TRANSFER_DECISION_WAIT
        connection, peer, line = self.established()
        refer_id = self.janus.refer(self.session_id(), line)
        self.janus.clock.advance(TRANSFER_DECISION_WAIT)
        self.janus.flush()
        self.assertEqual(self.janus.transfers, [(line, {"request": "decline", "refer_id": refer_id, "code": 603})])

    def test_a_new_call_needs_a_pending_transfer_request(self) -> None:
        connection, peer, line = self.established()
        self.assertEqual(self.request(connection, model.SessionCreate, account=ALICE, session="s2", uri=BOB,
                                      sdp="v=0", refer_session="s1"), "No transfer request for session s1")
        self.assertNotIn("s2", connection.sessions)


class MessageTests(CallTestCase):
    """SIP MESSAGE for the account and inside calls, with delivery outcomes and IMDNs."""

    def sent(self) -> list[dict[str, Any]]:
        return [body for _, body in self.janus.messages]

    def outcomes(self, peer: FakePeer) -> list[tuple[Any, ...]]:
        return [(e.session, e.message_id, e.state, e.code, e.reason) for e in peer.events
                if isinstance(e, model.DispositionNotification)]

    def send(self, connection: Connection, **fields: Any) -> str | None:
        values = {"account": ALICE, "uri": BOB, "message_id": "m1", "content": "hi"} | fields
        return self.request(connection, model.AccountMessage, **values)

    def test_a_message_without_registering(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.assertIsNone(self.send(connection, timestamp="2026-11-26T07:00:00Z"))
        (body,) = self.sent()
        self.assertEqual({k: body[k] for k in ("request", "uri", "content_type")},
                         {"request": "message", "uri": f"sip:{BOB}", "content_type": "message/cpim"})
        self.assertIn("\r\nimdn.Message-ID: m1\r\n", body["content"])  # (the envelope: test_messages.py)
        self.assertTrue(body["content"].endswith("\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"))
        (event,) = [e for e in peer.events if isinstance(e, model.DispositionNotification)]
        self.assertEqual((event.message_id, event.message_timestamp, event.state, event.code, event.reason),
                         ("m1", "2026-11-26T07:00:00Z", "accepted", 200, "OK"))

    def test_refused_and_unanswered_messages_fail(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.message_outcome = (404, "Not Found")
        self.send(connection, message_id="m1")
        self.janus.message_outcome = None
        self.send(connection, message_id="m2")
        self.janus.clock.advance(33)
        self.assertEqual(self.outcomes(peer), [(None, "m1", "failed", 404, "Not Found"),
                                               (None, "m2", "failed", 408, "Request Timeout")])

    def test_a_disposition_notification_is_an_imdn_in_cpim(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.assertIsNone(self.request(connection, model.AccountDispositionNotification, account=ALICE, uri=BOB,
                                       message_id="their-1", state="displayed", timestamp="2026-11-26T07:00:00Z"))
        (body,) = self.sent()
        self.assertEqual(body["content_type"], "message/cpim")
        self.assertIn("Content-Type: message/imdn+xml", body["content"])
        self.assertIn("<message-id>their-1</message-id>", body["content"])
        self.assertIn("<display-notification><status><displayed/></status></display-notification>", body["content"])
        self.assertEqual(self.outcomes(peer), [])  # nothing to report to the browser

    def test_incoming_messages(self) -> None:
        connection, peer = self.registered()
        session, master = self.master()
        self.janus.incoming_message(session, master, "hello")
        cpim = ("From: Robert <sip:bob@example.com>\r\nTo: <sip:alice@example.com>\r\nNS: imdn <urn:ietf:params:imdn>\r\n"
                "imdn.Message-ID: c-1\r\nDateTime: 2026-11-26T06:00:00Z\r\n"
                "imdn.Disposition-Notification: positive-delivery, display\r\n\r\n"
                "Content-Type: text/plain\r\nContent-Length: 3\r\n\r\nhey")
        self.janus.incoming_message(session, master, cpim, "message/cpim")
        plain, wrapped = [e for e in peer.events if isinstance(e, model.MessageReceived)]
        self.assertEqual((plain.session, plain.sender.uri, plain.sender.display_name, plain.content_type,
                          plain.content), (None, BOB, "Bob", "text/plain", "hello"))
        self.assertEqual(len(plain.message_id), 36)
        self.assertEqual((wrapped.sender.uri, wrapped.sender.display_name, wrapped.message_id, wrapped.timestamp,
                          wrapped.content_type, wrapped.content, wrapped.disposition_notification),
                         ("bob@example.com", "Robert", "c-1", "2026-11-26T06:00:00Z", "text/plain", "hey",
                          ("positive-delivery", "display")))

    def test_an_incoming_imdn_is_a_disposition_notification(self) -> None:
        from sylk.gateway import messages
        connection, peer = self.registered()
        session, master = self.master()
        imdn = messages.imdn("bob@example.com", ALICE, "m1", "delivered", "2026-11-26T07:00:00Z")
        self.janus.incoming_message(session, master, imdn, "message/cpim")
        self.assertEqual(self.outcomes(peer), [(None, "m1", "delivered", 200, "OK")])

    def test_messages_inside_a_call(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.call_outcome = ("accepted",)
        self.dial(connection)
        line = self.line_of()
        self.assertIsNone(self.request(connection, model.SessionMessage, session="s1", message_id="m1",
                                       content="in call"))
        self.assertEqual(self.janus.messages, [(line, {"request": "message", "content_type": "text/plain",
                                                       "content": "in call"})])
        self.assertEqual(self.outcomes(peer), [("s1", "m1", "accepted", 200, "OK")])
        self.janus.incoming_message(self.session_id(), line, "back")
        (message,) = [e for e in peer.events if isinstance(e, model.MessageReceived)]
        self.assertEqual((message.session, message.content), ("s1", "back"))

    def test_a_message_for_the_account_while_the_master_is_in_a_call(self) -> None:
        connection, peer = self.registered()
        session, master = self.master()
        self.janus.incoming_call(session, master)  # from bob, on the master
        self.janus.incoming_message(session, master, "from carol", sender="sip:carol@example.com")
        self.janus.incoming_message(session, master, "from bob")
        carol, bob = [e for e in peer.events if isinstance(e, model.MessageReceived)]
        self.assertIsNone(carol.session)
        self.assertIsNotNone(bob.session)  # the caller's counts as the call's

    def test_an_answer_after_unregistering_still_counts(self) -> None:
        connection, peer = self.registered()
        session, master = self.master()
        self.janus.message_outcome = None  # the answer is on its way
        self.request(connection, model.AccountMessage, account=ALICE, uri=BOB, message_id="m1", content="bye")
        (_, body), = self.janus.messages
        self.request(connection, model.AccountUnregister, account=ALICE)  # the SIP line stays for the answer
        self.assertIn(master, self.janus.handles())
        delivery = self.janus._event(session, master, {"event": "messagedelivery", "code": 200, "reason": "OK"})
        delivery["plugindata"]["data"]["call_id"] = body["call_id"]
        self.janus.emit(delivery)
        self.assertEqual(self.outcomes(peer), [(None, "m1", "accepted", 200, "OK")])
        self.assertNotIn(master, self.janus.handles())  # and then goes

    def test_a_late_answer_for_the_account_is_not_the_calls(self) -> None:
        connection, peer = self.registered()
        session, master = self.master()
        self.janus.incoming_call(session, master)
        (incoming,) = self.account_events(peer, model.IncomingSession)
        self.request(connection, model.SessionAnswer, session=incoming.session, sdp="v=0 answer")
        self.janus.message_outcome = None
        self.send(connection, message_id="out")
        (_, out), = self.janus.messages
        self.janus.clock.advance(33)  # given up on: 408
        self.request(connection, model.SessionMessage, session=incoming.session, message_id="in", content="y")
        late = self.janus._event(session, master, {"event": "messagedelivery", "code": 404, "reason": "Not Found"})
        late["plugindata"]["data"]["call_id"] = out["call_id"]
        self.janus.emit(late)
        self.assertEqual([o[1:4] for o in self.outcomes(peer)], [("out", "failed", 408)])  # "in" still pending

    def test_no_message_in_a_call_not_yet_answered(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.dial(connection)
        self.assertEqual(self.request(connection, model.SessionMessage, session="s1", message_id="m1", content="x"),
                         "Invalid state for sending a message in session s1: progress")
