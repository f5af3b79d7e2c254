"""connection-keep and connection-resume over real autobahn sockets and the fake Janus: a kept connection outlives
its socket (registrations and calls go on, events are kept), a new socket takes it over with the token, and one
that is not resumed in time is cleaned up as any closed connection."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from sylk.gateway.config import WebRTCGatewayConfig
from sylk.gateway.janus.sip import JanusSIPBackend, LineSettings
from sylk.gateway.keep import MAX_KEPT_EVENTS
from sylk.gateway.sylkrtc.fields import ValidationError
from sylk.gateway.sylkrtc.model import ConnectionKeep
from sylk.gateway.websocket import CLOSE_RESUMED_ELSEWHERE, GatewayWebSocketFactory
from tests.fakejanus import FakeJanus, FakeLink
from tests.unit.test_websocket import Browser

TOKEN = "vN3q7Zk2Lr0pXc8sWt4yUe"  # 22 characters, as a client makes them from 16 random bytes
OTHER = "Qm5rT8wZ1xKc3vLp9sNb7dYh"
HA1 = "0123456789abcdef0123456789abcdef"
ALICE = "alice@example.com"
GRACE = 120.0


class KeepTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.janus = FakeJanus()
        self.link = FakeLink(self.janus.api)
        settings = WebRTCGatewayConfig(websocket_ping_interval=0, keep_grace=GRACE)
        backend = JanusSIPBackend([self.link], LineSettings(), self.janus.clock)
        self.factory = GatewayWebSocketFactory(backend, settings, self.janus.clock)
        self.serial = 0

    def browser(self) -> Browser:
        browser = Browser(self.factory, "sylkRTC-2")
        self.janus.flush()
        self.assertEqual(browser.received(), [{"sylkrtc": "ready-event"}])
        return browser

    def request(self, browser: Browser, kind: str, **fields: Any) -> dict[str, Any]:
        """Send a request, settle Janus and the clock's immediate calls; return the answer (events are kept)."""
        self.serial += 1
        transaction = f"t{self.serial}"
        browser.send(json.dumps({"sylkrtc": kind, "transaction": transaction, **fields}).encode())
        self.janus.flush()
        self.janus.clock.advance(0)
        self.janus.flush()
        self.pending = browser.received()
        (answer,) = [m for m in self.pending if m.get("transaction") == transaction]
        return answer

    def registered_and_in_a_call(self, browser: Browser) -> None:
        self.assertEqual(self.request(browser, "account-add", account=ALICE, password=HA1)["sylkrtc"], "ack")
        self.request(browser, "account-register", account=ALICE)
        self.janus.call_outcome = ("accepted",)
        self.request(browser, "session-create", account=ALICE, session="s1", uri="bob@example.com", sdp="v=0 offer")

    def drop(self, browser: Browser) -> None:
        browser.protocol.connectionLost(Failure(ConnectionLost()))
        self.janus.flush()

    def master(self) -> tuple[int, int]:
        (session,) = self.janus.sessions
        (master,) = [h for h in self.janus.sessions[session] if h not in self.janus.helpers]
        return session, master


class KeepTests(KeepTestCase):
    def test_a_kept_connection_outlives_its_socket_and_is_resumed(self) -> None:
        first = self.browser()
        self.registered_and_in_a_call(first)
        self.assertEqual(self.request(first, "connection-keep", token=TOKEN), {"sylkrtc": "ack", "transaction": "t4"})
        self.drop(first)
        self.assertNotIn("unregister", [r["body"].get("request") for r in self.janus.requests if "body" in r])
        self.assertEqual(len(self.janus.calls), 1)  # the call is still up in Janus
        session, master = self.master()
        self.janus.incoming_call(session, master, call_id="while-away")  # rings while nobody is attached
        self.janus.clock.advance(GRACE - 1)
        second = self.browser()
        answer = self.request(second, "connection-resume", token=TOKEN)
        self.assertEqual(answer["sylkrtc"], "ack")
        events = [m for m in self.pending if m is not answer]
        self.assertEqual(events[0], {"sylkrtc": "resumed-event", "missed": 0})
        self.assertEqual(events[1], {"sylkrtc": "account-event", "account": ALICE, "event": "registration-state",
                                     "state": "registered"})
        self.assertEqual({k: v for k, v in events[2].items() if k != "call_id"},
                         {"sylkrtc": "session-event", "session": "s1", "event": "state", "state": "accepted",
                          "sdp": "v=0 answer"})  # what the answer brought, in case its event was lost
        self.assertEqual((events[3]["event"], events[3]["originator"]["uri"]), ("incoming-session",
                                                                               "bob@example.com"))
        self.assertEqual(len(events), 4)  # the ringing call is offered once, not again from what was kept
        self.assertEqual(len(self.janus.sessions), 1)  # the new socket's own session is gone: the kept one serves
        incoming = events[3]["session"]
        self.assertEqual(self.request(second, "session-terminate", session="s1")["sylkrtc"], "ack")
        self.assertEqual(self.request(second, "session-answer", session=incoming, sdp="v=0 answer")["sylkrtc"], "ack")

    def test_a_connection_not_resumed_in_time_is_cleaned_up(self) -> None:
        first = self.browser()
        self.registered_and_in_a_call(first)
        self.request(first, "connection-keep", token=TOKEN)
        self.drop(first)
        self.janus.clock.advance(GRACE)
        self.janus.flush()
        self.assertIn("unregister", [r["body"].get("request") for r in self.janus.requests if "body" in r])
        self.assertIn("hangup", [r["body"].get("request") for r in self.janus.requests if "body" in r])
        self.assertEqual(self.janus.sessions, {})
        self.assertEqual(self.factory.connections, {})
        second = self.browser()
        self.assertEqual(self.request(second, "connection-resume", token=TOKEN)["error"],
                         "Unknown, expired or already used token")

    def test_a_token_is_good_for_one_resume(self) -> None:
        first = self.browser()
        self.registered_and_in_a_call(first)
        self.request(first, "connection-keep", token=TOKEN)
        self.drop(first)
        second = self.browser()
        self.assertEqual(self.request(second, "connection-resume", token=TOKEN)["sylkrtc"], "ack")
        third = self.browser()
        self.assertEqual(self.request(third, "connection-resume", token=TOKEN)["error"],
                         "Unknown, expired or already used token")
        self.drop(second)  # not kept again without a new connection-keep: closed as usual
        self.assertIn("unregister", [r["body"].get("request") for r in self.janus.requests if "body" in r])

    def test_a_wrong_token_changes_nothing(self) -> None:
        first = self.browser()
        self.registered_and_in_a_call(first)
        self.request(first, "connection-keep", token=TOKEN)
        self.drop(first)
        second = self.browser()
        self.assertEqual(self.request(second, "connection-resume", token=OTHER)["error"],
                         "Unknown, expired or already used token")
        self.assertEqual(self.request(second, "connection-resume", token=TOKEN)["sylkrtc"], "ack")

    def test_resuming_takes_the_connection_from_a_socket_still_open(self) -> None:
        first = self.browser()
        self.registered_and_in_a_call(first)
        self.request(first, "connection-keep", token=TOKEN)
        second = self.browser()
        self.assertEqual(self.request(second, "connection-resume", token=TOKEN)["sylkrtc"], "ack")
        self.assertEqual(first.received(), [("close", CLOSE_RESUMED_ELSEWHERE)])
        self.drop(first)
        self.assertNotIn("unregister", [r["body"].get("request") for r in self.janus.requests if "body" in r])
        self.assertEqual(self.request(second, "session-terminate", session="s1")["sylkrtc"], "ack")

    def test_resume_comes_first(self) -> None:
        first = self.browser()
        self.registered_and_in_a_call(first)
        self.request(first, "connection-keep", token=TOKEN)
        self.drop(first)
        second = self.browser()
        self.request(second, "account-add", account="bob@example.com", password=HA1)
        self.assertEqual(self.request(second, "connection-resume", token=TOKEN)["error"],
                         "connection-resume must come right after ready, before any account request")

    def test_what_overflows_while_detached_is_counted(self) -> None:
        first = self.browser()
        self.registered_and_in_a_call(first)
        self.request(first, "connection-keep", token=TOKEN)
        self.drop(first)
        session, master = self.master()
        for n in range(MAX_KEPT_EVENTS + 10):
            self.janus.incoming_message(session, master, content=f"m{n}")
        second = self.browser()
        self.request(second, "connection-resume", token=TOKEN)
        self.assertEqual(self.pending[1], {"sylkrtc": "resumed-event", "missed": 10})
        messages = [m["content"] for m in self.pending if m.get("event") == "message"]
        self.assertEqual(messages[-1], f"m{MAX_KEPT_EVENTS + 9}")
        self.assertEqual(len(messages), MAX_KEPT_EVENTS)

    def test_a_connection_without_accounts_is_not_kept(self) -> None:
        first = self.browser()
        self.request(first, "connection-keep", token=TOKEN)
        self.drop(first)
        self.assertEqual(self.factory.connections, {})

    def test_stopping_the_gateway_cleans_kept_connections_up(self) -> None:
        first = self.browser()
        self.registered_and_in_a_call(first)
        self.request(first, "connection-keep", token=TOKEN)
        self.drop(first)
        closing = self.factory.close_all("sylkgateway is shutting down")
        self.janus.flush()
        self.successResultOf(closing)
        self.assertIn("unregister", [r["body"].get("request") for r in self.janus.requests if "body" in r])
        self.assertEqual(self.factory.connections, {})


class TokenTests(SynchronousTestCase):
    def test_tokens_must_be_long_and_random(self) -> None:
        self.assertEqual(ConnectionKeep.parse({"transaction": "t", "token": TOKEN}).token, TOKEN)
        for bad, why in (("short", "22 to 128 characters"), ("a" * 22, "not a few characters repeated"),
                         ("abcabcabcabcabcabcabcabc", "not a few characters repeated"),
                         (TOKEN + "!", "22 to 128"), ("x" * 129, "at most 128")):
            self.assertIn(why, str(self.assertRaises(ValidationError, ConnectionKeep.parse,
                                                     {"transaction": "t", "token": bad})))

    def test_tokens_are_never_shown(self) -> None:
        self.assertNotIn(TOKEN, repr(ConnectionKeep(transaction="t", token=TOKEN)))
        from sylk.gateway.sylkrtc.channel import _redacted
        self.assertNotIn(TOKEN, _redacted(json.dumps({"sylkrtc": "connection-keep", "token": TOKEN}).encode()))


class SnapshotTests(KeepTestCase):
    def test_a_reinvite_awaiting_the_browser_is_in_the_snapshot(self) -> None:
        first = self.browser()
        self.registered_and_in_a_call(first)
        self.request(first, "connection-keep", token=TOKEN)
        (line,) = [h for h in self.janus.calls if h in self.janus.helpers]
        (session,) = self.janus.sessions
        self.janus.remote_reinvite(session, line)
        self.drop(first)
        second = self.browser()
        self.request(second, "connection-resume", token=TOKEN)
        updates = [m for m in self.pending if m.get("event") == "update"]
        self.assertEqual([u["state"] for u in updates], ["received"])  # once, from the snapshot (then kept ones)

    def test_a_reinvite_that_came_while_detached_is_shown_once(self) -> None:
        first = self.browser()
        self.registered_and_in_a_call(first)
        self.request(first, "connection-keep", token=TOKEN)
        self.drop(first)
        (line,) = [h for h in self.janus.calls if h in self.janus.helpers]
        (session,) = self.janus.sessions
        self.janus.remote_reinvite(session, line)
        second = self.browser()
        self.request(second, "connection-resume", token=TOKEN)
        self.assertEqual([m["state"] for m in self.pending if m.get("event") == "update"], ["received"])
