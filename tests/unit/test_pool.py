"""A pool of Janus members behind one backend: each connection is placed on the least loaded usable member, each
member has its own admission and budget, and a member's failure costs only the connections on it."""

from __future__ import annotations

from unittest import mock

from twisted.trial.unittest import SynchronousTestCase

from sylk.gateway.config import PortRange, WebRTCGatewayConfig, parse_config
from sylk.gateway.connection import Connection
from sylk.gateway.janus.sip import STARTUP_WAIT, JanusSIPBackend, LineSettings
from sylk.gateway.service import _without_password, janus_instances, janus_links
from sylk.gateway.sylkrtc import model
from tests.fakejanus import FakeJanus, FakeLink
from tests.fakes import FakePeer
from tests.unit.test_connection import HA1


class PoolTests(SynchronousTestCase):
    def setUp(self) -> None:
        first = FakeJanus()
        self.members = [first, FakeJanus(first.clock)]
        self.clock = first.clock
        self.links = [FakeLink(member.api) for member in self.members]
        self.backend = JanusSIPBackend(self.links, LineSettings(), self.clock)

    def flush(self) -> None:
        for _ in range(3):
            for member in self.members:
                member.flush()

    def open(self) -> tuple[Connection, FakePeer]:
        peer = FakePeer()
        connection = Connection("test", self.backend, WebRTCGatewayConfig(), peer, self.clock)
        connection.open()
        self.flush()
        return connection, peer

    def request(self, connection: Connection, cls: type[model.Request], **fields: object) -> None:
        connection.handle(cls(transaction="t", **fields))
        self.flush()

    def registered(self, user: str) -> tuple[Connection, FakePeer]:
        connection, peer = self.open()
        self.request(connection, model.AccountAdd, account=f"{user}@example.com", password=HA1)
        self.request(connection, model.AccountRegister, account=f"{user}@example.com")
        self.assertEqual(peer.states(f"{user}@example.com")[-1], "registered")
        return connection, peer

    def member_of(self, connection: Connection) -> int:
        api = connection._session._session.api  # type: ignore[union-attr]
        (index,) = [i for i, member in enumerate(self.members) if member.api is api]
        return index

    def test_connections_go_to_the_least_loaded_member(self) -> None:
        placed = [self.member_of(self.registered(user)[0]) for user in ("a", "b", "c", "d")]
        self.assertEqual(sorted(placed), [0, 0, 1, 1])

    def test_new_connections_are_spread_while_a_member_still_holds_old_stacks(self) -> None:
        # a reconnect storm: the old connections' stacks are still being let go on one member, and the new connections
        # have no accounts yet when they are placed
        old, _ = self.registered("old")
        self.assertEqual(self.member_of(old), 0)
        placed = [self.member_of(self.open()[0]) for _ in range(4)]
        self.assertEqual(sorted(placed), [0, 1, 1, 1])  # by sessions: 1 old + 1 new on member 0, 3 on member 1

    def test_the_sessions_of_closing_connections_do_not_count(self) -> None:
        # a reconnect storm: the old connections are still unregistering, and must not steer the new ones away
        old = [self.registered(user)[0] for user in ("a", "b", "c")]  # members 0, 1, 0
        for member in self.members:
            member.unanswered = {"unregister"}
        for connection in old:
            connection.close()
        self.flush()
        self.assertEqual([connection.state for connection in old], ["closing"] * 3)
        placed = [self.member_of(self.open()[0]) for _ in range(4)]
        self.assertEqual(sorted(placed), [0, 0, 1, 1])

    def test_sessions_wait_at_startup_until_every_member_is_connected(self) -> None:
        self.links[1].lose("not yet")
        waiting = [self.open() for _ in range(2)]
        self.assertEqual([connection.state for connection, _ in waiting], ["opening", "opening"])
        self.members[1] = FakeJanus(self.clock)
        self.links[1].connect(self.members[1].api)
        self.flush()
        self.assertEqual(sorted(self.member_of(connection) for connection, _ in waiting), [0, 1])

    def test_a_member_still_away_after_the_startup_wait_is_not_waited_for(self) -> None:
        self.links[1].lose("not yet")
        connection, _ = self.open()
        self.clock.advance(STARTUP_WAIT)
        self.flush()
        self.assertEqual((connection.state, self.member_of(connection)), ("ready", 0))
        self.assertEqual(self.open()[0].state, "ready")  # no more waiting

    def test_a_full_member_takes_no_more(self) -> None:
        self.links[0].budget = 1
        self.links[1].lose("not yet")  # only the first member is usable for a moment
        self.clock.advance(STARTUP_WAIT)
        first, _ = self.registered("a")
        self.members[1] = FakeJanus(self.clock)
        self.links[1].connect(self.members[1].api)
        second, _ = self.registered("b")
        self.assertEqual((self.member_of(first), self.member_of(second)), (0, 1))

    def test_a_members_failure_costs_only_the_connections_on_it(self) -> None:
        connections = {user: self.registered(user) for user in ("a", "b")}
        on = {self.member_of(connection): (user, connection, peer) for user, (connection, peer) in connections.items()}
        (lost_user, lost, lost_peer), (_, kept, kept_peer) = on[1], on[0]
        events_before = len(kept_peer.events)
        self.links[1].lose("Janus exited")
        self.flush()
        self.assertEqual(len(kept_peer.events), events_before)  # the other member's connection noticed nothing
        self.assertEqual(kept.state, "ready")
        # the one on the lost member re-registered at once on the member still there
        self.assertEqual(lost.state, "ready")
        self.assertEqual(lost_peer.states(f"{lost_user}@example.com")[-2:], ["registering", "registered"])
        self.assertEqual(self.member_of(lost), 0)

    def test_available_while_any_member_is(self) -> None:
        self.links[0].lose()
        self.assertTrue(self.backend.available)
        self.links[1].lose()
        self.assertFalse(self.backend.available)
        waiting = self.backend.when_available()
        self.assertNoResult(waiting)
        self.members[0] = FakeJanus(self.clock)
        self.links[0].connect(self.members[0].api)
        self.successResultOf(waiting)


class PoolConfigurationTests(SynchronousTestCase):
    def test_children_by_default_eight_per_core_at_most_sixteen(self) -> None:
        # a member's registration rate is bounded by a sleep in Janus, not by the CPU
        for cores, members in ((1, 8), (2, 16), (3, 16), (None, 8)):
            with mock.patch("os.cpu_count", return_value=cores):
                self.assertEqual(janus_instances(parse_config("")), members)
        self.assertEqual(janus_instances(parse_config("[Janus]\ninstances = 3\n")), 3)
        self.assertEqual(janus_instances(parse_config("[Janus]\nspawn = no\n")), 0)

    def test_servers_and_their_secrets(self) -> None:
        config = parse_config("[Janus]\nspawn = no\napi_secret = common\n"
                              "servers = ws://janus1:8188, ws://:own%40secret@janus2:8188\n")
        links = janus_links(config, [], FakeJanus().clock)
        self.assertEqual([link.url for link in links], ["ws://janus1:8188", "ws://janus2:8188"])
        self.assertEqual([link._api_secret for link in links], ["common", "own@secret"])
        self.assertEqual(links[0].account_budget(), 2000)

    def test_api_url_without_servers(self) -> None:
        (link,) = janus_links(parse_config("[Janus]\nspawn = no\napi_url = ws://127.0.0.1:9999\n"), [],
                              FakeJanus().clock)
        self.assertEqual(link.url, "ws://127.0.0.1:9999")

    def test_without_password(self) -> None:
        self.assertEqual(_without_password("wss://:s3cr%2Ft@host:8989/path"), ("wss://host:8989/path", "s3cr/t"))
        self.assertEqual(_without_password("ws://host:8188"), ("ws://host:8188", None))

    def test_port_ranges_are_shared_without_overlap(self) -> None:
        shares = [PortRange(20000, 29999).share(index, 3) for index in range(3)]
        self.assertEqual([(s.first, s.last) for s in shares], [(20000, 23332), (23333, 26665), (26666, 29998)])
