"""Failures around the gateway, over the fake Janus: Janus going away costs the calls, not the connections, and
wanted registrations are made again once it is back; a registrar that fails for a transient reason is retried with
a growing backoff for as long as the browser wants the account registered."""

from __future__ import annotations

from sylk.gateway.account import REGISTER_RETRY_FIRST, REGISTER_RETRY_LAST
from sylk.gateway.connection import CLOSE_BACKEND_UNAVAILABLE, RECOVERY_RETRY
from sylk.gateway.sylkrtc import model
from tests.fakejanus import FakeJanus
from tests.unit.test_calls import CallTestCase
from tests.unit.test_connection import ALICE, HA1

BOB = "bob@example.com"


class JanusRestartTests(CallTestCase):
    def new_janus(self) -> None:
        """Janus is back (a new process: nothing of the old one is left)."""
        self.janus = FakeJanus(self.janus.clock)
        self.link.connect(self.janus.api)
        self.janus.flush()

    def test_calls_end_registrations_come_back_and_the_connection_stays(self) -> None:
        connection, peer = self.registered()
        self.request(connection, model.AccountAdd, account=BOB, password=HA1)  # added, never registered
        self.dial(connection)
        self.link.lose("Janus exited")
        self.assertEqual(self.calls(peer)[-1], ("terminated", "SIP backend lost (Janus exited)"))
        self.assertEqual(peer.states(ALICE), ["registering", "registered", "registering"])
        self.assertIsNone(peer.closed)
        waiting = connection.handle(model.AccountRegister(transaction="t", account=BOB))  # kept until Janus is back
        self.assertNoResult(waiting)
        self.new_janus()
        self.assertIsNone(self.successResultOf(waiting))
        self.assertEqual(peer.states(ALICE), ["registering", "registered", "registering", "registered"])
        self.assertEqual(peer.states(BOB), ["registering", "registered"])
        self.assertEqual(len(self.janus.register_bodies), 2)  # both REGISTERed with the new Janus
        self.assertIsNone(self.dial(connection, "s2"))  # and calls work again
        self.assertEqual(self.calls(peer, "s2"), ["progress"])

    def test_an_account_that_was_not_registered_stays_so(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.link.lose()
        self.new_janus()
        self.assertEqual(peer.states(ALICE), [])
        self.assertEqual(self.janus.register_bodies, {})

    def test_an_unregister_under_way_is_done_by_the_loss(self) -> None:
        connection, peer = self.registered()
        self.janus.unanswered = {"unregister"}
        self.request(connection, model.AccountUnregister, account=ALICE)
        self.link.lose()
        self.new_janus()
        self.assertEqual(peer.states(ALICE), ["registering", "registered", "unregistered"])
        self.assertEqual(self.janus.register_bodies, {})

    def test_a_removed_account_still_unregistering_is_gone_with_janus(self) -> None:
        connection, _ = self.registered()
        self.janus.unanswered = {"unregister"}
        self.request(connection, model.AccountRemove, account=ALICE)
        self.link.lose()
        self.new_janus()
        self.assertEqual(connection._releasing, {})
        self.assertIsNone(self.request(connection, model.AccountAdd, account=ALICE, password=HA1))

    def test_janus_not_back_in_time_disconnects(self) -> None:
        from sylk.gateway.connection import RECOVERY_WAIT
        connection, peer = self.registered()
        self.link.lose()
        waiting = connection.handle(model.Ping(transaction="t"))
        self.janus.clock.advance(RECOVERY_WAIT)
        self.assertEqual(peer.closed, (CLOSE_BACKEND_UNAVAILABLE, "SIP backend lost"))
        self.assertIn("SIP backend lost", str(self.failureResultOf(waiting).value))
        self.assertEqual(connection.state, "closed")
        self.assertEqual(self.janus.clock.getDelayedCalls(), [])

    def test_closing_while_janus_is_away(self) -> None:
        connection, peer = self.registered()
        self.link.lose()
        self.successResultOf(connection.close())
        self.assertEqual(self.janus.clock.getDelayedCalls(), [])
        self.new_janus()
        self.assertEqual(self.janus.sessions, {})  # nothing made again for a closed connection

    def test_a_janus_that_refuses_sessions_is_asked_again_later(self) -> None:
        connection, peer = self.registered()
        self.link.lose()
        self.janus = FakeJanus(self.janus.clock)
        self.janus.unanswered = {"create"}
        self.link.connect(self.janus.api)
        self.janus.clock.advance(10)  # the create times out
        self.janus.unanswered = set()
        self.janus.clock.advance(RECOVERY_RETRY)
        self.janus.flush()
        self.assertEqual(connection.state, "ready")
        self.assertEqual(peer.states(ALICE)[-1], "registered")


class RegistrationRetryTests(CallTestCase):
    def register_attempts(self) -> int:
        return len([r for r in self.janus.requests if r["janus"] == "message" and r["body"].get("request") == "register"
                    and "type" not in r["body"] and r["body"].get("send_register") is not False])

    def failed_reasons(self, peer: object) -> list[str]:
        return [e.reason for e in peer.events  # type: ignore[attr-defined]
                if isinstance(e, model.RegistrationStateChanged) and e.state == "failed"]

    def test_a_registrar_that_is_down_is_tried_again_with_backoff(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.registration_outcome = ("failed", 503, "Service Unavailable")
        self.request(connection, model.AccountRegister, account=ALICE)
        attempts = [self.register_attempts()]
        delay = REGISTER_RETRY_FIRST
        for _ in range(8):
            self.janus.clock.advance(delay)
            self.janus.flush()
            attempts.append(self.register_attempts())
            delay = min(delay * 2, REGISTER_RETRY_LAST)
        self.assertEqual(attempts, list(range(1, 10)))  # one more attempt each backoff, however long it grew
        self.assertEqual(peer.states(ALICE)[:4], ["registering", ("failed", "503 Service Unavailable"),
                                                  "registering", ("failed", "503 Service Unavailable")])
        self.janus.registration_outcome = ("registered",)
        self.janus.clock.advance(REGISTER_RETRY_LAST)
        self.janus.flush()
        self.assertEqual(peer.states(ALICE)[-2:], ["registering", "registered"])

    def test_wrong_credentials_are_not_tried_again(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.registration_outcome = ("failed", 403, "Forbidden")
        self.request(connection, model.AccountRegister, account=ALICE)
        self.janus.clock.advance(REGISTER_RETRY_LAST * 4)
        self.janus.flush()
        self.assertEqual(peer.states(ALICE), ["registering", ("failed", "403 Forbidden")])

    def test_unregistering_stops_the_retries(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.registration_outcome = ("failed", 408, "Request Timeout")
        self.request(connection, model.AccountRegister, account=ALICE)
        self.assertIsNone(self.request(connection, model.AccountUnregister, account=ALICE))
        self.janus.clock.advance(REGISTER_RETRY_LAST * 4)
        self.janus.flush()
        self.assertEqual(peer.states(ALICE), ["registering", ("failed", "408 Request Timeout"), "unregistered"])
        self.assertIn("it is unregistered", self.request(connection, model.AccountUnregister, account=ALICE) or "")

    def test_registering_again_while_waiting_goes_at_once(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.registration_outcome = ("failed", 503, "Service Unavailable")
        self.request(connection, model.AccountRegister, account=ALICE)
        self.janus.registration_outcome = ("registered",)
        self.assertIsNone(self.request(connection, model.AccountRegister, account=ALICE))
        self.janus.clock.advance(REGISTER_RETRY_LAST * 4)
        self.janus.flush()
        self.assertEqual(peer.states(ALICE)[-2:], ["registering", "registered"])
        self.assertEqual(peer.states(ALICE).count("registering"), 2)

    def test_a_registration_lost_later_is_made_again(self) -> None:
        connection, peer = self.registered()
        session, master = self.master()
        self.janus.sip_event(session, master, {"event": "registration_failed", "code": 408,
                                               "reason": "Request Timeout"})  # a refresh nobody answered
        self.janus.clock.advance(REGISTER_RETRY_FIRST)
        self.janus.flush()
        self.assertEqual(peer.states(ALICE), ["registering", "registered", ("failed", "408 Request Timeout"),
                                              "registering", "registered"])
