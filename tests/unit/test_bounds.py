"""Bounds on what a browser or a far end can make an account or a call hold: DTMF waiting to go out, MESSAGEs
awaiting their answer, the far end's SDP; and what an account keeps in the backend when it has nothing going on."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sylk.gateway.account import MAX_PENDING_MESSAGES
from sylk.gateway.call import MAX_QUEUED_TONES, MAX_SDP, MAX_SDP_LINES, offer_holds
from sylk.gateway.connection import Connection
from sylk.gateway.sylkrtc import model
from tests.fakes import FakePeer
from tests.unit.test_calls import BOB, CallTestCase
from tests.unit.test_connection import ALICE
from tests.unit.test_messages import ANY_TEXT

TOO_MANY_MESSAGES = f"Too many messages waiting for an answer (at most {MAX_PENDING_MESSAGES})"


class DtmfQueueTests(CallTestCase):
    def established(self) -> Connection:
        connection, _ = self.connect()
        self.add(connection)
        self.janus.call_outcome = ("accepted",)
        self.dial(connection)
        return connection

    def dtmf(self, connection: Connection, digits: str) -> str | None:
        return self.request(connection, model.SessionDtmfInfo, session="s1", digit=digits, duration=100)

    def test_tones_waiting_are_bounded(self) -> None:
        connection = self.established()
        self.assertIsNone(self.dtmf(connection, "1" * (MAX_QUEUED_TONES - 1)))
        self.assertIsNone(self.dtmf(connection, "2"))
        self.assertEqual(self.dtmf(connection, "3"),
                         f"Too many DTMF tones waiting in session s1 (at most {MAX_QUEUED_TONES}, 64 waiting)")
        self.janus.clock.advance(0.2)  # the first tone is out: room for one more
        self.janus.flush()
        self.assertEqual(self.dtmf(connection, "45"),
                         f"Too many DTMF tones waiting in session s1 (at most {MAX_QUEUED_TONES}, 63 waiting)")
        self.assertIsNone(self.dtmf(connection, "4"))


class MessageWindowTests(CallTestCase):
    def send(self, connection: Connection, message_id: str) -> str | None:
        return self.request(connection, model.AccountMessage, account=ALICE, uri=BOB, message_id=message_id,
                            content="hi")

    def test_messages_awaiting_their_answer_are_bounded_per_account(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.call_outcome = ("accepted",)
        self.dial(connection)
        self.janus.message_outcome = None  # no answers for now
        for number in range(MAX_PENDING_MESSAGES - 2):
            self.assertIsNone(self.send(connection, f"m{number}"))
        self.assertIsNone(self.request(connection, model.SessionMessage, session="s1", message_id="in-call",
                                       content="x"))
        self.assertIsNone(self.request(connection, model.AccountDispositionNotification, account=ALICE, uri=BOB,
                                       message_id="theirs", state="delivered"))
        # the account's own, its IMDNs and its calls' share the bound
        self.assertEqual(self.send(connection, "one-more"), TOO_MANY_MESSAGES)
        self.assertEqual(self.request(connection, model.SessionMessage, session="s1", message_id="m", content="x"),
                         TOO_MANY_MESSAGES)
        self.assertEqual(self.request(connection, model.AccountDispositionNotification, account=ALICE, uri=BOB,
                                      message_id="theirs", state="displayed"), TOO_MANY_MESSAGES)
        self.assertEqual(len(self.janus.messages), MAX_PENDING_MESSAGES)
        self.janus.clock.advance(33)  # unanswered: 408 each, and room again
        self.janus.flush()
        self.janus.message_outcome = (200, "OK")
        self.assertIsNone(self.send(connection, "later"))
        refused = [e for e in peer.events if isinstance(e, model.DispositionNotification) and e.code == 408]
        self.assertEqual(len(refused), MAX_PENDING_MESSAGES - 1)  # (IMDNs' outcomes are logged, not reported)


class OfferHoldsBoundsTests(SynchronousTestCase):
    def test_an_oversized_sdp_says_nothing(self) -> None:
        held = "v=0\r\nm=audio 9 RTP/AVP 0\r\na=sendonly\r\n"
        self.assertTrue(offer_holds(held))
        self.assertIsNone(offer_holds(held + "a=x\r\n" * MAX_SDP_LINES))
        self.assertIsNone(offer_holds(held + "a=" + "x" * MAX_SDP))

    @settings(max_examples=300, deadline=None)
    @given(ANY_TEXT)
    def test_total_on_any_text(self, sdp: str) -> None:
        self.assertIn(offer_holds(sdp), (True, False, None))

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.sampled_from(["m=audio 9 RTP/AVP 0", "m=video 0 RTP/AVP 96", "m=", "a=sendonly", "a=inactive",
                                     "a=recvonly", "a=sendrecv", "a=", "c=IN IP4 0.0.0.0", "\u2028", ""])))
    def test_any_arrangement_of_sdp_lines(self, lines: list[str]) -> None:
        self.assertIn(offer_holds("\r\n".join(lines)), (True, False))


class RemoteHoldTests(CallTestCase):
    def test_the_call_keeps_its_hold_state_when_the_sdp_says_nothing(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.call_outcome = ("accepted",)
        self.dial(connection)
        line = self.line_of()
        self.janus.remote_reinvite(self.session_id(), line, "v=0\r\nm=audio 9 RTP/AVP 0\r\na=sendonly\r\n")
        self.request(connection, model.SessionUpdate, session="s1", sdp="v=0 answer")
        self.janus.clock.advance(2)
        self.janus.remote_reinvite(self.session_id(), line, "v=0\r\na=sendrecv\r\n" + "a=x\r\n" * MAX_SDP_LINES)
        holds = [(e.held, e.originator) for e in peer.events if isinstance(e, model.SessionHoldChanged)]
        self.assertEqual(holds, [(True, "remote")])  # not taken off hold by an SDP it did not read


class TransferEndsTheCallTests(CallTestCase):
    """RFC 5589: once the far end reports that its call to the target succeeded, the transferor hangs up."""

    def transferring(self) -> tuple[Connection, FakePeer, int]:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.call_outcome = ("accepted",)
        self.dial(connection)
        line = self.line_of()
        self.assertIsNone(self.request(connection, model.SessionTransfer, session="s1", uri="carol@example.com"))
        return connection, peer, line

    def story(self, peer: FakePeer) -> list[tuple[Any, ...]]:
        return [("transfer", e.state) if isinstance(e, model.SessionTransferProgress) else (e.state, e.reason)
                for e in peer.events if isinstance(e, (model.SessionTransferProgress, model.SessionStateChanged))]

    def test_a_completed_transfer_ends_the_call(self) -> None:
        connection, peer, line = self.transferring()
        self.janus.refer_notify(self.session_id(), line, "SIP/2.0 180 Ringing")
        self.janus.refer_notify(self.session_id(), line, "SIP/2.0 200 OK", substate="terminated")
        self.assertEqual(self.story(peer)[-3:], [("transfer", "progress"), ("transfer", "completed"),
                                                 ("terminated", "Transferred")])
        self.assertIn((line, "message:hangup"), [(r.get("handle_id"), kind) for r, kind in
                                                 zip(self.janus.requests, self.janus.kinds())])  # the BYE
        self.assertEqual(self.request(connection, model.SessionTerminate, session="s1"),
                         "Invalid state for terminating session s1: terminated")

    def test_the_reason_is_the_same_when_the_far_end_hangs_up_first(self) -> None:
        connection, peer, line = self.transferring()
        self.janus.answer = False  # our BYE gets no answer: the transferee's own BYE ends the call
        self.janus.refer_notify(self.session_id(), line, "SIP/2.0 200 OK", substate="terminated")
        self.janus.answer = True
        self.janus.remote_hangup(self.session_id(), line)
        self.assertEqual(self.story(peer)[-2:], [("transfer", "completed"), ("terminated", "Transferred")])

    def test_a_failed_transfer_leaves_the_call_up(self) -> None:
        connection, peer, line = self.transferring()
        self.janus.refer_notify(self.session_id(), line, "SIP/2.0 486 Busy Here", substate="terminated")
        self.assertEqual(self.story(peer)[-1], ("transfer", "failed"))
        self.assertEqual(connection.sessions["s1"].state, "accepted")


class UnprovenAccountReleaseTests(CallTestCase):
    """An account without a registration keeps no SIP stack in Janus between the things it does."""

    def registration(self, peer: FakePeer) -> list[Any]:
        return [e.state for e in peer.events if isinstance(e, model.RegistrationStateChanged)]

    def handles_left(self) -> set[int]:
        self.janus.clock.advance(0)
        self.janus.flush()
        return self.janus.sessions[self.session_id()]

    def call_and_hang_up(self, connection: Connection, session: str = "s1") -> None:
        self.janus.call_outcome = ("accepted",)
        self.assertIsNone(self.dial(connection, session))
        self.assertIsNone(self.request(connection, model.SessionTerminate, session=session))

    def test_the_stack_goes_with_the_last_call(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.call_and_hang_up(connection)
        self.assertEqual(self.calls(peer), ["progress", ("accepted", "v=0 answer"), ("terminated", "200 OK")])
        self.assertEqual(self.handles_left(), set())
        self.call_and_hang_up(connection, "s2")  # acquired again for the next call
        self.assertEqual(self.calls(peer, "s2"), ["progress", ("accepted", "v=0 answer"), ("terminated", "200 OK")])
        self.assertEqual(self.handles_left(), set())
        self.assertIsNone(self.request(connection, model.AccountRegister, account=ALICE))  # and for registering
        self.assertEqual(self.registration(peer), ["registering", "registered"])

    def test_not_while_another_call_is_up(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.call_outcome = ("accepted",)
        self.dial(connection, "s1")
        self.dial(connection, "s2")
        self.request(connection, model.SessionTerminate, session="s1")
        self.assertEqual(len(self.handles_left()), 2)  # the master and s2's line
        self.request(connection, model.SessionTerminate, session="s2")
        self.assertEqual(self.handles_left(), set())

    def test_a_failed_registration_releases_the_stack_after_its_calls(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.call_outcome = ("accepted",)
        self.dial(connection)
        self.janus.registration_outcome = ("failed", 403, "Forbidden")
        self.request(connection, model.AccountRegister, account=ALICE)
        self.assertEqual(self.registration(peer), ["registering", "failed"])
        self.assertNotEqual(self.handles_left(), set())  # the call goes on
        self.request(connection, model.SessionTerminate, session="s1")
        self.assertEqual(self.handles_left(), set())

    def test_a_registered_account_keeps_its_stack(self) -> None:
        connection, peer = self.registered()
        self.call_and_hang_up(connection)
        session, master = self.master()
        self.assertIn(master, self.handles_left())

    def test_a_message_awaiting_its_answer_keeps_the_stack(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.message_outcome = None
        self.request(connection, model.AccountMessage, account=ALICE, uri=BOB, message_id="m1", content="hi")
        self.call_and_hang_up(connection)
        self.assertNotEqual(self.handles_left(), set())
        self.janus.clock.advance(33)  # no answer: 408
        self.assertEqual(self.handles_left(), set())
        self.janus.message_outcome = (200, "OK")  # a message acquires it again, and lets it go once answered
        self.request(connection, model.AccountMessage, account=ALICE, uri=BOB, message_id="m2", content="hi")
        outcomes = [(e.message_id, e.state) for e in peer.events if isinstance(e, model.DispositionNotification)]
        self.assertEqual(outcomes, [("m1", "failed"), ("m2", "accepted")])
        self.assertEqual(self.handles_left(), set())

    def test_a_pending_transfer_request_keeps_the_stack_until_refused(self) -> None:
        from sylk.gateway.call import TRANSFER_DECISION_WAIT
        connection, peer = self.connect()
        self.add(connection)
        self.janus.call_outcome = ("accepted",)
        self.dial(connection)
        line = self.line_of()
        refer_id = self.janus.refer(self.session_id(), line)
        self.janus.remote_hangup(self.session_id(), line)  # REFER and BYE at once
        self.assertNotEqual(self.handles_left(), set())  # the browser may still take the request
        self.janus.clock.advance(TRANSFER_DECISION_WAIT)
        self.janus.flush()
        self.assertIn({"request": "decline", "refer_id": refer_id, "code": 603}, [b for _, b in self.janus.transfers])
        self.assertEqual(self.handles_left(), set())

    def test_a_transfer_request_taken_by_a_new_call_keeps_the_stack_for_it(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.call_outcome = ("accepted",)
        self.dial(connection)
        line = self.line_of()
        refer_id = self.janus.refer(self.session_id(), line)
        self.janus.remote_hangup(self.session_id(), line)
        self.assertIsNone(self.request(connection, model.SessionCreate, account=ALICE, session="s2",
                                       uri="carol@example.com", sdp="v=0 offer", refer_session="s1"))
        (body,) = [b for b in self.janus.call_bodies.values() if b["uri"] == "sip:carol@example.com"]
        self.assertEqual(body["refer_id"], refer_id)
        self.assertEqual(self.calls(peer, "s2")[-1], ("accepted", "v=0 answer"))
        self.assertNotEqual(self.handles_left(), set())
        self.request(connection, model.SessionTerminate, session="s2")
        self.assertEqual(self.handles_left(), set())
