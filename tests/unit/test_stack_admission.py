"""Admission of new SIP stacks into one Janus: at most two starting at once, turns shared round-robin between clients
so that a greedy one cannot starve the others, a bounded wait, and a budget of stacks refused with a clear error
well before Janus would run out of descriptors."""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.trial.unittest import SynchronousTestCase

from sylk.gateway.config import WebRTCGatewayConfig
from sylk.gateway.connection import Connection
from sylk.gateway.janus.admission import GatewayFull, StackAdmission
from sylk.gateway.janus.sip import JanusSIPBackend, LineSettings
from sylk.gateway.sylkrtc import model
from tests.fakejanus import FakeJanus
from tests.fakes import FakePeer
from tests.unit.test_connection import HA1, ConnectionTestCase


class StackAdmissionTests(SynchronousTestCase):
    def test_two_at_once_then_round_robin_between_clients(self) -> None:
        admission = StackAdmission(at_once=2, budget=100)
        order: list[str] = []
        for name in ("a1", "a2", "a3", "a4", "a5"):
            admission.reserve("greedy").addCallback(lambda _, name=name: order.append(name))
        admission.reserve("modest").addCallback(lambda _: order.append("b1"))
        self.assertEqual(order, ["a1", "a2"])
        for _ in range(4):
            admission.started(object(), ok=True)
        self.assertEqual(order, ["a1", "a2", "a3", "b1", "a4", "a5"])

    def test_the_budget_counts_alive_starting_and_waiting_stacks(self) -> None:
        admission = StackAdmission(at_once=1, budget=2)
        holder = object()
        admission.reserve("c")
        waiting = admission.reserve("c")
        self.assertTrue(admission.full)
        self.assertIsInstance(self.failureResultOf(admission.reserve("other"), GatewayFull).value, GatewayFull)
        admission.started(holder, ok=True)
        self.successResultOf(waiting)
        admission.started(object(), ok=False)
        self.assertEqual(admission.in_use, 1)
        admission.ended(holder)
        admission.ended(holder)  # twice is harmless
        self.assertEqual(admission.in_use, 0)

    def test_a_waiter_that_gives_up_leaves_the_queue(self) -> None:
        admission = StackAdmission(at_once=1, budget=10)
        admission.reserve("c")
        waiting = admission.reserve("c")
        waiting.cancel()
        self.failureResultOf(waiting, CancelledError)
        self.assertEqual(admission.in_use, 1)
        admission.started(object(), ok=False)
        self.assertEqual(admission.in_use, 0)

    def test_the_error_is_clear(self) -> None:
        self.assertEqual(str(GatewayFull(6451)), "503 The gateway is full (6451 SIP accounts); try again later")


class SharedBackendTestCase(ConnectionTestCase):
    """Several connections on one backend (one Janus), as in the gateway."""

    def setUp(self) -> None:
        super().setUp()
        self.link.budget = 100
        self.shared = JanusSIPBackend([self.link], LineSettings(queue_timeout=45.0), self.janus.clock)

    def open(self) -> tuple[Connection, FakePeer]:
        peer = FakePeer()
        connection = Connection("test", self.shared, WebRTCGatewayConfig(), peer, self.janus.clock)
        connection.open()
        self.janus.flush()
        return connection, peer

    def add_and_register(self, connection: Connection, user: str) -> str | None:
        error = self.request(connection, model.AccountAdd, account=f"{user}@example.com", password=HA1)
        return error or self.request(connection, model.AccountRegister, account=f"{user}@example.com")

    def registers_sent(self) -> list[str]:
        return [r["body"]["username"] for r in self.janus.requests
                if r["janus"] == "message" and r["body"].get("request") == "register" and "type" not in r["body"]]



class BackendAdmissionTests(SharedBackendTestCase):
    def test_a_greedy_connection_does_not_starve_another(self) -> None:
        greedy, _ = self.open()
        modest, peer = self.open()
        self.janus.held = {"register"}
        for n in range(10):
            self.add_and_register(greedy, f"g{n}")
        self.add_and_register(modest, "bob")
        self.assertEqual(self.registers_sent(), ["sip:g0@example.com", "sip:g1@example.com"])
        self.janus.release()
        sent = self.registers_sent()
        self.assertEqual(len(sent), 11)
        self.assertEqual(sent.index("sip:bob@example.com"), 3)  # its turn came in the first round, not the last
        self.assertEqual(peer.states("bob@example.com"), ["registering", "registered"])

    def test_waiting_for_a_turn_is_bounded(self) -> None:
        self.shared = JanusSIPBackend([self.link], LineSettings(queue_timeout=5.0), self.janus.clock)
        first, _ = self.open()
        self.janus.unanswered = {"register"}  # Janus takes the two starting stacks and stays silent (10 s)
        self.add_and_register(first, "a")
        self.add_and_register(first, "b")
        second, peer = self.open()
        self.add_and_register(second, "bob")
        self.janus.clock.advance(5)
        self.janus.flush()
        self.assertEqual(peer.states("bob@example.com"), [
            "registering", ("failed", "408 The gateway is busy: no SIP stack could be started within 5 s")])

    def test_accounts_beyond_the_budget_are_refused_and_room_comes_back(self) -> None:
        self.link.budget = 2
        connection, peer = self.open()
        self.assertIsNone(self.add_and_register(connection, "a"))
        self.assertIsNone(self.add_and_register(connection, "b"))
        other, _ = self.open()
        error = self.request(other, model.AccountAdd, account="c@example.com", password=HA1)
        self.assertEqual(error, "503 The gateway is full (2 SIP accounts); try again later")
        self.request(connection, model.AccountRemove, account="a@example.com")
        self.janus.flush()
        self.assertIsNone(self.add_and_register(other, "c"))
        self.assertEqual(other.accounts["c@example.com"].state, "registered")

    def test_a_closed_connection_gives_its_stacks_back(self) -> None:
        self.link.budget = 1
        connection, _ = self.open()
        self.add_and_register(connection, "a")
        connection.close()
        self.janus.flush()
        other, _ = self.open()
        self.assertIsNone(self.add_and_register(other, "b"))

    def test_a_lost_session_gives_its_stacks_back(self) -> None:
        self.link.budget = 1
        connection, peer = self.open()
        self.add_and_register(connection, "a")
        session = next(iter(self.janus.api.sessions.values()))
        session.lost("Janus session timed out")
        self.janus.flush()
        # the connection made a new session and registered again: within the budget of 1, so the lost stack was
        # given back
        self.assertEqual(peer.states("a@example.com"), ["registering", "registered", "registering", "registered"])

    def test_a_new_janus_starts_with_a_new_budget(self) -> None:
        self.link.budget = 1
        connection, peer = self.open()
        self.add_and_register(connection, "a")
        self.link.lose()
        self.janus = FakeJanus(self.janus.clock)
        self.link.connect(self.janus.api)
        self.janus.flush()
        self.assertEqual(peer.states("a@example.com"), ["registering", "registered", "registering", "registered"])
        other, _ = self.open()
        self.assertEqual(self.request(other, model.AccountAdd, account="b@example.com", password=HA1),
                         "503 The gateway is full (1 SIP accounts); try again later")


class LeavingTheQueueTests(SharedBackendTestCase):
    def test_a_closed_connection_gives_its_queued_turns_up_at_once(self) -> None:
        greedy, _ = self.open()
        self.janus.held = {"register"}
        for n in range(10):
            self.add_and_register(greedy, f"g{n}")
        closed = greedy.close()
        self.janus.release()
        self.janus.flush()
        self.successResultOf(closed)
        self.assertEqual(len(self.registers_sent()), 2)  # the eight still waiting never started a stack
        modest, peer = self.open()
        self.add_and_register(modest, "bob")
        self.assertEqual(peer.states("bob@example.com"), ["registering", "registered"])

    def test_a_removed_account_leaves_the_queue(self) -> None:
        connection, peer = self.open()
        self.janus.held = {"register"}
        for n in range(3):
            self.add_and_register(connection, f"g{n}")
        self.assertIsNone(self.request(connection, model.AccountRemove, account="g2@example.com"))
        self.janus.release()
        self.assertEqual(self.registers_sent(), ["sip:g0@example.com", "sip:g1@example.com"])
        self.assertNotIn("g2@example.com", connection.accounts)
