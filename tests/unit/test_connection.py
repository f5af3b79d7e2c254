"""Connection and SIPAccount over the Janus SIP backend and the fake Janus: the registration state machine,
ownership, closing and backend loss."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from sylk.gateway.account import UNREGISTER_TIMEOUT
from sylk.gateway.config import SIPProxy, WebRTCGatewayConfig
from sylk.gateway.connection import CLOSE_BACKEND_UNAVAILABLE, CLOSE_TIMEOUT, MAX_QUEUED_BEFORE_READY, Connection
from sylk.gateway.errors import APIError
from sylk.gateway.janus.lines import DETACH_WAIT
from sylk.gateway.janus.sip import JanusSIPBackend, LineSettings
from sylk.gateway.sylkrtc import model
from tests.fakejanus import FakeJanus, FakeLink
from tests.fakes import FakePeer

ALICE = "alice@example.com"
HA1 = "0123456789abcdef0123456789abcdef"


class ConnectionTestCase(SynchronousTestCase):
    settings = WebRTCGatewayConfig()

    def setUp(self) -> None:
        self.janus = FakeJanus()
        self.link = FakeLink(self.janus.api)
        self.backend = self.backend_for(self.settings)

    def backend_for(self, settings: WebRTCGatewayConfig) -> JanusSIPBackend:
        lines = LineSettings(max_lines=settings.max_calls_per_account, srtp=settings.sip_srtp,
                             route=settings.outbound_sip_proxy)
        return JanusSIPBackend([self.link], lines, self.janus.clock)

    def connect(self, settings: WebRTCGatewayConfig | None = None) -> tuple[Connection, FakePeer]:
        peer = FakePeer()
        settings = settings or self.settings
        connection = Connection("test", self.backend_for(settings), settings, peer, self.janus.clock)
        connection.open()
        self.janus.flush()
        return connection, peer

    def request(self, connection: Connection, cls: type[model.Request], **fields: Any) -> str | None:
        """Send a request and settle Janus; returns None for an ack or the error text."""
        d = connection.handle(cls(transaction="t", **fields))
        self.janus.flush()
        return self.answer(d)

    def answer(self, d: Deferred[None]) -> str | None:
        results: list[Any] = []
        d.addBoth(results.append)
        self.assertEqual(len(results), 1, "the request was not answered")
        if results[0] is None:
            return None
        results[0].trap(APIError)
        return str(results[0].value)

    def master(self) -> tuple[int, int]:
        """(session, handle) of the one account's master SIP handle in the fake Janus."""
        (session,) = self.janus.sessions if len(self.janus.sessions) == 1 else [next(iter(self.janus.sessions))]
        (handle,) = [h for h in self.janus.sessions[session] if h not in self.janus.helpers]
        return session, handle

    def add(self, connection: Connection, account: str = ALICE) -> None:
        self.assertIsNone(self.request(connection, model.AccountAdd, account=account, password=HA1))

    def registered(self, settings: WebRTCGatewayConfig | None = None) -> tuple[Connection, FakePeer]:
        connection, peer = self.connect(settings)
        self.add(connection)
        self.assertIsNone(self.request(connection, model.AccountRegister, account=ALICE))
        self.assertEqual(peer.states(), ["registering", "registered"])
        return connection, peer


class OpeningTests(ConnectionTestCase):
    def test_ready_once_the_backend_session_exists(self) -> None:
        peer = FakePeer()
        connection = Connection("test", self.backend, self.settings, peer, self.janus.clock)
        connection.open()
        self.assertEqual(peer.events, [])
        self.janus.flush()
        self.assertEqual(peer.events, [model.Ready()])
        self.assertEqual(connection.state, "ready")

    def test_requests_before_ready_are_handled_in_order_after_it(self) -> None:
        peer = FakePeer()
        connection = Connection("test", self.backend, self.settings, peer, self.janus.clock)
        connection.open()
        first = connection.handle(model.AccountAdd(transaction="1", account=ALICE, password=HA1))
        second = connection.handle(model.AccountAdd(transaction="2", account=ALICE, password=HA1))
        self.janus.flush()
        self.assertIsNone(self.answer(first))
        self.assertEqual(self.answer(second), f"Account {ALICE} already added")

    def test_backend_unavailable_disconnects_and_answers_queued_requests(self) -> None:
        self.link.api = None
        peer = FakePeer()
        connection = Connection("test", self.backend, self.settings, peer, self.janus.clock)
        queued = connection.handle(model.AccountAdd(transaction="1", account=ALICE, password=HA1))
        connection.open()
        self.assertIn("SIP backend unavailable", self.answer(queued))
        self.assertEqual(peer.closed[0], CLOSE_BACKEND_UNAVAILABLE)
        self.assertEqual(connection.state, "closed")

    def test_closed_before_ready_destroys_the_late_session(self) -> None:
        peer = FakePeer()
        connection = Connection("test", self.backend, self.settings, peer, self.janus.clock)
        connection.open()
        self.successResultOf(connection.close())
        self.janus.flush()
        self.assertEqual(self.janus.kinds(), ["create", "destroy"])
        self.assertEqual(peer.events, [])


class AccountManagementTests(ConnectionTestCase):
    def test_add_and_remove(self) -> None:
        connection, _ = self.connect()
        self.add(connection)
        self.assertEqual(self.request(connection, model.AccountAdd, account=ALICE, password=HA1),
                         f"Account {ALICE} already added")
        self.assertIsNone(self.request(connection, model.AccountRemove, account=ALICE))
        self.assertEqual(self.request(connection, model.AccountRemove, account=ALICE),
                         f"Unknown account specified for remove: {ALICE}")
        self.add(connection)  # can be added again

    def test_unknown_account(self) -> None:
        connection, _ = self.connect()
        for cls, action in ((model.AccountRegister, "register"), (model.AccountUnregister, "unregister")):
            self.assertEqual(self.request(connection, cls, account=ALICE),
                             f"Unknown account specified for {action}: {ALICE}")

    def test_sip_domains_limit_accounts(self) -> None:
        connection, _ = self.connect(WebRTCGatewayConfig(sip_domains=("example.org",)))
        self.assertEqual(self.request(connection, model.AccountAdd, account=ALICE, password=HA1),
                         "SIP domain not allowed: example.com")
        self.add(connection, "alice@example.org")

    def test_accounts_per_connection_are_limited(self) -> None:
        connection, _ = self.connect(WebRTCGatewayConfig(max_accounts_per_connection=2))
        self.add(connection, "a@example.com")
        self.add(connection, "b@example.com")
        self.assertIn("Too many accounts", self.request(connection, model.AccountAdd, account="c@example.com",
                                                        password=HA1))

    def test_removed_accounts_still_unregistering_count_towards_the_limit(self) -> None:
        # add/register/remove in a loop must not pile up SIP handles in Janus
        connection, _ = self.connect(WebRTCGatewayConfig(max_accounts_per_connection=1))
        self.janus.hold_registrations = True
        self.add(connection)
        self.request(connection, model.AccountRegister, account=ALICE)
        self.request(connection, model.AccountRemove, account=ALICE)
        self.assertIn("Too many accounts", self.request(connection, model.AccountAdd, account=ALICE, password=HA1))
        self.assertEqual(len(self.janus.handles()), 1)
        self.janus.finish_registration()  # registered, then unregistered at once, released
        self.add(connection)

    def test_adding_does_not_touch_sip(self) -> None:
        connection, _ = self.connect()
        self.add(connection)
        self.assertEqual(self.janus.kinds(), ["create"])


class RegistrationTests(ConnectionTestCase):
    def test_register_sends_the_ha1_and_routes_by_domain(self) -> None:
        self.registered()
        (body,) = self.janus.register_bodies.values()  # the helpers' registers are not kept
        self.assertEqual(body["username"], f"sip:{ALICE}")
        self.assertEqual(body["ha1_secret"], HA1)
        self.assertEqual(body["authuser"], "alice")
        self.assertEqual(body["proxy"], "sip:example.com")
        self.assertNotIn("outbound_proxy", body)
        self.assertNotIn("secret", body)
        self.assertEqual(body["register_ttl"], 600)

    def test_register_routes_through_the_outbound_proxy(self) -> None:
        self.registered(WebRTCGatewayConfig(outbound_sip_proxy=SIPProxy("127.0.0.1", 5070, "tcp")))
        (body,) = self.janus.register_bodies.values()  # the helpers' registers are not kept
        self.assertEqual(body["proxy"], "sip:127.0.0.1:5070;transport=tcp")
        self.assertEqual(body["outbound_proxy"], body["proxy"])
        self.assertIs(body["force_tcp"], True)

    def test_tls_proxy_asks_janus_for_a_tls_transport(self) -> None:
        self.registered(WebRTCGatewayConfig(outbound_sip_proxy=SIPProxy("proxy.example.com", 5061, "tls")))
        (body,) = self.janus.register_bodies.values()  # the helpers' registers are not kept
        self.assertEqual(body["proxy"], "sips:proxy.example.com:5061")
        self.assertIs(body["sips"], True)

    def test_the_configured_user_agent_is_the_default(self) -> None:
        self.registered(WebRTCGatewayConfig(user_agent="Gateway 9"))
        (body,) = self.janus.register_bodies.values()  # the helpers' registers are not kept
        self.assertEqual(body["user_agent"], "Gateway 9")

    def test_display_name_and_user_agent_are_passed(self) -> None:
        connection, _ = self.connect()
        self.request(connection, model.AccountAdd, account=ALICE, password=HA1, display_name="Alice A",
                     user_agent="Browser 1")
        self.request(connection, model.AccountRegister, account=ALICE)
        (body,) = self.janus.register_bodies.values()  # the helpers' registers are not kept
        self.assertEqual((body["display_name"], body["user_agent"]), ("Alice A", "Browser 1"))

    def test_failure_reports_the_registrar_reason_and_releases_the_handle(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.registration_outcome = ("failed", 403, "Forbidden")
        self.assertIsNone(self.request(connection, model.AccountRegister, account=ALICE))
        self.assertEqual(peer.states(), ["registering", ("failed", "403 Forbidden")])
        self.assertEqual(self.janus.handles(), set())

    def test_register_again_after_failure(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.registration_outcome = ("failed", 403, "Forbidden")
        self.request(connection, model.AccountRegister, account=ALICE)
        self.janus.registration_outcome = ("registered",)
        self.assertIsNone(self.request(connection, model.AccountRegister, account=ALICE))
        self.assertEqual(peer.states()[-2:], ["registering", "registered"])

    def test_janus_refusing_the_register_request_is_a_failure(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.answer = False
        self.request(connection, model.AccountRegister, account=ALICE)
        self.janus.clock.advance(10)  # the attach request times out
        self.assertEqual(peer.states()[-1][0], "failed")
        self.assertIn("did not answer 'attach'", peer.states()[-1][1])

    def test_register_in_the_wrong_state_is_an_error(self) -> None:
        connection, _ = self.registered()
        self.assertEqual(self.request(connection, model.AccountRegister, account=ALICE),
                         f"Cannot register account {ALICE}: it is registered")
        self.janus.hold_registrations = True
        other, _ = self.connect()
        self.add(other)
        self.request(other, model.AccountRegister, account=ALICE)
        self.assertEqual(self.request(other, model.AccountRegister, account=ALICE),
                         f"Cannot register account {ALICE}: it is registering")

    def test_no_final_answer_times_out(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.hold_registrations = True
        self.request(connection, model.AccountRegister, account=ALICE)
        self.janus.clock.advance(self.settings.register_timeout - 1)
        self.assertEqual(peer.states(), ["registering"])
        self.janus.clock.advance(1)
        self.janus.flush()
        self.assertEqual(peer.states(), ["registering", ("failed", "408 Request Timeout")])
        self.assertEqual(self.janus.handles(), set())
        self.janus.finish_registration()  # a late answer changes nothing
        self.assertEqual(len(peer.states()), 2)

    def test_a_late_failure_of_an_abandoned_operation_does_not_fail_the_next(self) -> None:
        from sylk.gateway import account
        self.patch(account, "UNREGISTER_TIMEOUT", 3.0)  # shorter than Janus's request timeout (10 s here)
        connection, peer = self.registered()
        self.janus.answer = False
        self.request(connection, model.AccountUnregister, account=ALICE)
        self.janus.clock.advance(3)  # the account gives up on the un-REGISTER; its request is still pending
        self.assertEqual(peer.states()[-1], "unregistered")
        self.janus.answer = True
        self.janus.hold_registrations = True
        self.janus.clock.advance(1)
        self.assertIsNone(self.request(connection, model.AccountRegister, account=ALICE))
        self.assertEqual(peer.states()[-1], "registering")
        self.janus.clock.advance(6)  # t=10: the abandoned unregister request times out now
        self.assertEqual(peer.states()[-1], "registering")
        self.janus.finish_registration()
        self.assertEqual(peer.states()[-1], "registered")

    def test_new_sip_stacks_enter_janus_two_at_a_time(self) -> None:
        from sylk.gateway.janus.sip import NEW_STACKS_AT_ONCE
        connection, peer = self.connect()
        accounts = [f"user{n}@example.com" for n in range(NEW_STACKS_AT_ONCE + 2)]
        for account in accounts:
            self.add(connection, account)
        self.janus.unanswered = {"register"}  # Janus busy starting stacks: those requests stay unanswered
        for account in accounts:
            self.request(connection, model.AccountRegister, account=account)
        self.assertEqual(self.janus.kinds().count("message:register"), NEW_STACKS_AT_ONCE)  # the rest wait here
        self.janus.clock.advance(10)  # those time out in Janus; the next ones go in
        self.assertEqual(self.janus.kinds().count("message:register"), 2 * NEW_STACKS_AT_ONCE)

    def test_the_register_timeout_runs_from_when_the_register_is_sent(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.answer = False  # the REGISTER never leaves: Janus's request timeout is what fails it
        self.request(connection, model.AccountRegister, account=ALICE)
        self.janus.clock.advance(10)
        self.assertEqual(peer.states(), ["registering", ("failed", "Janus did not answer 'attach' within 10 s")])

    def test_repeated_registered_events_are_reported_once(self) -> None:
        connection, peer = self.registered()
        session, handle = self.master()
        self.janus.sip_event(session, handle, {"event": "registered", "username": "alice"})
        self.assertEqual(peer.states(), ["registering", "registered"])

    def test_registration_lost_later_is_reported(self) -> None:
        connection, peer = self.registered()
        session, handle = self.master()
        self.janus.sip_event(session, handle, {"event": "registration_failed", "code": 408,
                                               "reason": "Request Timeout"})
        self.assertEqual(peer.states()[-1], ("failed", "408 Request Timeout"))

    def test_janus_detaching_the_handle_is_a_failure(self) -> None:
        connection, peer = self.registered()
        session, handle = self.master()
        self.janus.emit({"janus": "detached", "session_id": session, "sender": handle})
        self.assertEqual(peer.states()[-1], ("failed", "Janus detached the SIP handle"))


class UnregistrationTests(ConnectionTestCase):
    def test_unregister(self) -> None:
        connection, peer = self.registered()
        self.assertIsNone(self.request(connection, model.AccountUnregister, account=ALICE))
        self.assertEqual(peer.states(), ["registering", "registered", "unregistered"])
        self.assertEqual(self.janus.handles(), set())
        self.assertEqual(self.janus.kinds()[-2:], ["message:unregister", "detach"])

    def test_unregister_when_not_registered_is_an_error(self) -> None:
        connection, _ = self.connect()
        self.add(connection)
        self.assertEqual(self.request(connection, model.AccountUnregister, account=ALICE),
                         f"Cannot unregister account {ALICE}: it is unregistered")

    def test_unregister_while_registering_waits_for_the_binding(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.hold_registrations = True
        self.request(connection, model.AccountRegister, account=ALICE)
        self.assertIsNone(self.request(connection, model.AccountUnregister, account=ALICE))
        self.assertIn("already going to unregister",
                      self.request(connection, model.AccountUnregister, account=ALICE))
        self.janus.finish_registration()
        # the binding existed only to be removed: the browser, told `unregistered`, never hears `registered`
        self.assertEqual(peer.states(), ["registering", "unregistered"])
        self.assertIn("message:unregister", self.janus.kinds())

    def test_unregister_while_registering_then_failure_ends_unregistered(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.hold_registrations = True
        self.request(connection, model.AccountRegister, account=ALICE)
        self.request(connection, model.AccountUnregister, account=ALICE)
        self.janus.finish_registration(("failed", 503, "Service Unavailable"))
        self.assertEqual(peer.states(), ["registering", "unregistered"])

    def test_unanswered_unregister_is_bounded(self) -> None:
        connection, peer = self.registered()
        self.janus.answer = False
        self.request(connection, model.AccountUnregister, account=ALICE)
        self.janus.clock.advance(UNREGISTER_TIMEOUT)
        self.assertEqual(peer.states()[-1], "unregistered")


class ClosingTests(ConnectionTestCase):
    def test_remove_unregisters_quietly(self) -> None:
        connection, peer = self.registered()
        self.assertIsNone(self.request(connection, model.AccountRemove, account=ALICE))
        self.assertEqual(peer.states(), ["registering", "registered"])  # no events for a removed account
        self.assertEqual(self.janus.kinds()[-2:], ["message:unregister", "detach"])
        self.assertEqual(self.janus.registered, {})

    def test_close_unregisters_then_destroys_the_session(self) -> None:
        connection, peer = self.registered()
        self.add(connection, "bob@example.com")
        d = connection.close()
        self.janus.flush()
        self.successResultOf(d)
        self.assertEqual(self.janus.kinds()[-3:], ["message:unregister", "detach", "destroy"])
        self.assertEqual(self.janus.sessions, {})
        self.assertEqual(connection.state, "closed")
        self.assertIn("Connection is closed", self.request(connection, model.AccountAdd, account=ALICE,
                                                           password=HA1))

    def detaches(self) -> list[int]:
        return [request["handle_id"] for request in self.janus.requests if request["janus"] == "detach"]

    def test_the_master_goes_once_janus_let_its_helpers_go(self) -> None:
        # Janus 1.1.2 ends a helper on a loop thread, locking its master: a master freed first crashes Janus
        connection, _ = self.registered()
        (helper,) = self.janus.helpers
        (master,) = self.janus.registered
        self.janus.detached_later = True
        self.janus.unanswered.add("unregister")  # closing without un-REGISTER: the account's lines are detached
        closed = connection.close()
        self.janus.clock.pump([1.0] * int(UNREGISTER_TIMEOUT + 1))
        self.janus.flush()
        self.assertEqual(self.detaches(), [helper])
        self.janus.release_detached()
        self.assertEqual(self.detaches(), [helper, master])
        self.janus.release_detached()
        self.successResultOf(closed)
        self.assertEqual(self.janus.kinds()[-1], "destroy")

    def test_after_an_unregister_the_master_waits_for_the_helpers_janus_ends(self) -> None:
        connection, _ = self.registered()
        self.janus.detached_later = True
        closed = connection.close()
        self.janus.flush()
        self.assertEqual(self.detaches(), [])  # Janus is ending the helper by itself
        self.janus.release_detached()
        self.assertEqual(len(self.detaches()), 1)
        self.janus.release_detached()
        self.successResultOf(closed)

    def test_a_helper_being_attached_at_close_goes_before_the_master(self) -> None:
        connection, _ = self.connect()
        self.add(connection)
        self.janus.held.add("register:helper")
        self.request(connection, model.AccountRegister, account=ALICE)  # registered; the spare is being bound
        (master,) = self.janus.registered
        closed = connection.close()
        self.janus.flush()
        self.assertNotIn(master, self.detaches())  # waits for the helper's binding to end
        self.janus.release()
        self.assertEqual(self.detaches()[-1], master)
        self.successResultOf(closed)

    def test_the_master_does_not_wait_forever_for_janus(self) -> None:
        connection, _ = self.registered()
        self.janus.detached_later = True
        closed = connection.close()
        self.janus.flush()
        self.janus.clock.pump([1.0] * int(DETACH_WAIT + 1))
        self.janus.flush()
        self.assertEqual(len(self.detaches()), 1)  # the master, without the helpers' `detached`
        self.janus.clock.pump([1.0] * int(DETACH_WAIT + 1))
        self.janus.flush()
        self.successResultOf(closed)

    def test_close_waits_for_accounts_removed_just_before(self) -> None:
        connection, _ = self.registered()
        self.janus.answer = False
        d = connection.handle(model.AccountRemove(transaction="r", account=ALICE))
        closed = connection.close()
        self.assertIsNone(self.answer(d))
        self.assertNoResult(closed)
        self.janus.clock.advance(UNREGISTER_TIMEOUT)  # gives up on the un-REGISTER; destroys the session
        self.assertNoResult(closed)
        # the account's handles, then the session, which Janus does not answer either: every step is bounded
        self.janus.clock.pump([1.0] * int(2 * DETACH_WAIT + 10))
        self.successResultOf(closed)
        self.assertEqual(self.janus.kinds()[-1], "destroy")

    def test_close_is_bounded_when_registrations_hang(self) -> None:
        connection, _ = self.connect()
        self.add(connection)
        self.janus.hold_registrations = True
        self.request(connection, model.AccountRegister, account=ALICE)
        closed = connection.close()
        self.janus.flush()
        self.assertNoResult(closed)
        self.janus.clock.advance(CLOSE_TIMEOUT)
        self.janus.flush()
        self.successResultOf(closed)
        self.assertEqual(self.janus.kinds()[-1], "destroy")

    def test_close_twice(self) -> None:
        connection, _ = self.registered()
        first, second = connection.close(), connection.close()
        self.janus.flush()
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual(self.janus.kinds().count("destroy"), 1)

    def test_a_backend_that_does_not_come_back_disconnects_the_browser(self) -> None:
        from sylk.gateway.connection import RECOVERY_WAIT
        connection, peer = self.registered()
        self.add(connection, "bob@example.com")
        self.janus.hold_registrations = True
        self.request(connection, model.AccountRegister, account="bob@example.com")
        self.link.lose("Janus went away")
        self.assertIsNone(peer.closed)
        self.janus.clock.advance(RECOVERY_WAIT)
        self.assertEqual(peer.closed, (CLOSE_BACKEND_UNAVAILABLE, "SIP backend lost"))
        self.assertEqual(connection.accounts, {})
        self.successResultOf(connection.close())
        self.assertEqual(self.janus.clock.getDelayedCalls(), [])  # no timers left behind
        events = len(peer.events)
        self.janus.clock.advance(100)
        self.assertEqual(len(peer.events), events)

    def test_shutdown_of_an_account_whose_unregister_fails_at_once(self) -> None:
        from sylk.gateway.account import SIPAccount
        from twisted.internet.defer import fail, succeed

        class FailingUserAgent:
            def register(self, registration): return succeed(None)
            def unregister(self): return fail(RuntimeError("no handle"))
            def close(self): return succeed(None)
        session = SimpleNamespace(create_user_agent=lambda identity, observer: FailingUserAgent())
        owner = SimpleNamespace(account_event=lambda event: None, session_exists=lambda session_id: False,
                                call_started=lambda call: None, call_ended=lambda call: None)
        from sylk.gateway.sip import SIPIdentity
        account = SIPAccount(SIPIdentity(ALICE, HA1), session, self.settings, owner, self.janus.clock)
        account.register()
        account.registration_succeeded()
        self.successResultOf(account.shutdown())
        self.assertEqual(account.state, "unregistered")


class OwnershipTests(ConnectionTestCase):
    def test_same_account_on_two_connections_is_independent(self) -> None:
        first, first_peer = self.registered()
        second, second_peer = self.connect()
        self.add(second)
        self.assertEqual(second_peer.states(), [])
        self.janus.registration_outcome = ("failed", 403, "Forbidden")
        self.request(second, model.AccountRegister, account=ALICE)
        self.assertEqual(first_peer.states(), ["registering", "registered"])
        self.assertEqual(second_peer.states(), ["registering", ("failed", "403 Forbidden")])
        self.request(second, model.AccountRemove, account=ALICE)
        self.assertEqual(first.accounts[ALICE].state, "registered")

    def test_a_connection_cannot_touch_another_connections_account(self) -> None:
        first, _ = self.registered()
        second, _ = self.connect()
        self.assertEqual(self.request(second, model.AccountUnregister, account=ALICE),
                         f"Unknown account specified for unregister: {ALICE}")
        self.assertEqual(first.accounts[ALICE].state, "registered")


class TargetPolicyTests(ConnectionTestCase):
    """Calls, messages, disposition notifications and transfers go only where the operator allows (issue 7)."""

    settings = WebRTCGatewayConfig(sip_target_domains=("example.com",))

    def call(self, connection: Connection, uri: str, session: str = "s1") -> str | None:
        return self.request(connection, model.SessionCreate, account=ALICE, session=session, uri=uri, sdp="v=0")

    def message(self, connection: Connection, uri: str) -> str | None:
        return self.request(connection, model.AccountMessage, account=ALICE, uri=uri, message_id="m1",
                            content="hi", content_type="text/plain")

    def notification(self, connection: Connection, uri: str) -> str | None:
        return self.request(connection, model.AccountDispositionNotification, account=ALICE, uri=uri,
                            message_id="m1", state="delivered")

    def test_calls_go_only_to_allowed_domains(self) -> None:
        connection, _ = self.connect()
        self.add(connection)
        self.assertEqual(self.call(connection, "bob@evil.test"), "SIP domain not allowed as a target: evil.test")
        self.assertEqual((self.janus.call_bodies, connection.sessions), ({}, {}))
        self.assertIsNone(self.call(connection, "bob@example.com"))
        self.assertEqual([body["uri"] for body in self.janus.call_bodies.values()], ["sip:bob@example.com"])

    def test_calls_to_ip_addresses_are_refused_unless_allowed(self) -> None:
        connection, _ = self.connect()
        self.add(connection)
        for uri in ("bob@192.0.2.1", "bob@[2001:db8::1]"):
            self.assertEqual(self.call(connection, uri), f"IP addresses are not allowed as targets: {uri}")
        self.assertEqual(self.janus.call_bodies, {})
        connection, _ = self.connect(WebRTCGatewayConfig(allow_ip_targets=True))
        self.add(connection)
        self.assertIsNone(self.call(connection, "bob@192.0.2.1"))
        self.assertEqual([body["uri"] for body in self.janus.call_bodies.values()], ["sip:bob@192.0.2.1"])

    def test_messages_and_notifications_go_only_to_allowed_targets(self) -> None:
        connection, _ = self.connect()
        self.add(connection)
        self.assertEqual(self.message(connection, "bob@evil.test"), "SIP domain not allowed as a target: evil.test")
        self.assertEqual(self.notification(connection, "bob@192.0.2.1"),
                         "IP addresses are not allowed as targets: bob@192.0.2.1")
        self.assertEqual(self.janus.messages, [])
        self.assertIsNone(self.message(connection, "bob@example.com"))
        self.assertEqual([body["uri"] for _, body in self.janus.messages], ["sip:bob@example.com"])

    def test_transfers_go_only_to_allowed_targets(self) -> None:
        connection, _ = self.connect()
        self.add(connection)
        self.janus.call_outcome = ("accepted",)
        self.call(connection, "bob@example.com")
        self.assertEqual(self.request(connection, model.SessionTransfer, session="s1", uri="carol@evil.test"),
                         "SIP domain not allowed as a target: evil.test")
        self.assertEqual(self.request(connection, model.SessionTransfer, session="s1", uri="carol@[2001:db8::1]"),
                         "IP addresses are not allowed as targets: carol@[2001:db8::1]")
        self.assertEqual(self.janus.transfers, [])
        self.assertIsNone(self.request(connection, model.SessionTransfer, session="s1", uri="carol@example.com"))
        self.assertEqual([body["uri"] for _, body in self.janus.transfers], ["sip:carol@example.com"])


class QueueBeforeReadyTests(ConnectionTestCase):
    def test_requests_beyond_the_bound_are_refused_and_the_others_handled_after_ready(self) -> None:
        connection = Connection("test", self.backend, self.settings, FakePeer(), self.janus.clock)
        connection.open()
        queued = [connection.handle(model.Ping(transaction=str(n))) for n in range(MAX_QUEUED_BEFORE_READY)]
        refused = connection.handle(model.Ping(transaction="one too many"))
        self.assertEqual(self.answer(refused), f"Too many requests before the connection is ready "
                                               f"(at most {MAX_QUEUED_BEFORE_READY})")
        self.janus.flush()
        self.assertEqual([self.answer(d) for d in queued], [None] * MAX_QUEUED_BEFORE_READY)
        self.assertIsNone(self.answer(connection.handle(model.Ping(transaction="after ready"))))

    def test_a_page_adding_and_registering_many_accounts_before_ready_fits(self) -> None:
        settings = WebRTCGatewayConfig()
        connection = Connection("test", self.backend, settings, FakePeer(), self.janus.clock)
        connection.open()
        answers = []
        for n in range(settings.max_accounts_per_connection):
            account = f"user{n}@example.com"
            answers.append(connection.handle(model.AccountAdd(transaction=f"a{n}", account=account, password=HA1)))
            answers.append(connection.handle(model.AccountRegister(transaction=f"r{n}", account=account)))
        self.janus.flush()
        self.assertEqual([self.answer(d) for d in answers], [None] * len(answers))

