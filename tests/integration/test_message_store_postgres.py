"""The message store's contract against a real PostgreSQL (a cluster of its own, on a Unix socket only), and
what only PostgreSQL has: several gateways migrating one database at once, and sharing events."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from twisted.internet import reactor
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from sylk.gateway.messaging.events import PostgreSQLEvents
from sylk.gateway.messaging.hub import MessagingHub
from sylk.gateway.messaging.postgres import MIGRATIONS, PostgreSQLMessageStore
from sylk.gateway.messaging.store import IMessageStore, SchemaTooNew
from sylk.gateway.sylkrtc import model
from tests.integration.postgres import PostgreSQL
from tests.unit.test_message_store import (ALICE, AddressBookContract, MessageStoreContract, SyncBoundContract,
                                           message)

CLUSTER: list[PostgreSQL] = []


@pytest.fixture(autouse=True, scope="module")
def cluster() -> Iterator[PostgreSQL]:
    database = PostgreSQL().start()
    CLUSTER.append(database)
    try:
        yield database
    finally:
        CLUSTER.clear()
        database.stop()


class PostgreSQLMessageStoreTests(MessageStoreContract, AddressBookContract, SyncBoundContract, TestCase):
    timeout = 30

    def make_store(self) -> IMessageStore:
        CLUSTER[0].reset()
        return PostgreSQLMessageStore(CLUSTER[0].dsn, reactor)


class PostgreSQLSchemaTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        CLUSTER[0].reset()

    def store(self) -> PostgreSQLMessageStore:
        store = PostgreSQLMessageStore(CLUSTER[0].dsn, reactor)
        self.addCleanup(store.close)
        return store

    @inlineCallbacks
    def test_gateways_starting_together_migrate_once(self) -> Any:
        stores = [self.store() for _ in range(3)]
        results = yield DeferredList([store.open() for store in stores], consumeErrors=True)
        self.assertTrue(all(ok for ok, _ in results), results)
        yield stores[0].add_message(ALICE, message("m1"))
        self.assertEqual([entry.message_id for entry in (yield stores[2].journal(ALICE))], ["m1"])

    @inlineCallbacks
    def test_a_newer_schema_is_refused(self) -> Any:
        import psycopg2
        connection = psycopg2.connect(CLUSTER[0].dsn)
        with connection, connection.cursor() as cursor:
            cursor.execute("CREATE TABLE sylkgateway_schema (version INTEGER NOT NULL)")
            cursor.execute("INSERT INTO sylkgateway_schema VALUES (%s)", (len(MIGRATIONS) + 1,))
        connection.close()
        yield self.assertFailure(self.store().open(), SchemaTooNew)


class Device:
    """A connection as the hub sees it: what it is told."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[Any] = []

    def deliver(self, event: Any) -> None:
        self.events.append(event)


class EventsAcrossGatewaysTests(TestCase):
    """Two gateways on one database: what one forks reaches the account's connections on the other, through
    LISTEN/NOTIFY, and nothing comes back to where it started."""

    timeout = 30

    def gateway(self) -> tuple[MessagingHub, PostgreSQLEvents]:
        store = PostgreSQLMessageStore(CLUSTER[0].dsn, reactor)
        self.addCleanup(store.close)
        hub = MessagingHub(store, reactor)
        events = PostgreSQLEvents(store.dsn, reactor, store.notify, hub.remote)
        hub.bus = events
        events.startService()
        self.addCleanup(events.stopService)
        return hub, events

    @inlineCallbacks
    def until(self, condition: Any, what: str, timeout: float = 10) -> Any:
        deadline = reactor.seconds() + timeout
        while not condition():
            if reactor.seconds() > deadline:
                self.fail(f"{what} did not happen within {timeout} s")
            yield deferLater(reactor, 0.05, lambda: None)

    @inlineCallbacks
    def test_a_message_sent_on_one_gateway_reaches_the_devices_on_the_other(self) -> Any:
        CLUSTER[0].reset()
        (hub_a, events_a), (hub_b, events_b) = self.gateway(), self.gateway()
        laptop, phone, tablet = Device("laptop"), Device("phone"), Device("tablet")
        hub_a.join(ALICE, laptop)
        hub_a.join(ALICE, tablet)
        hub_b.join(ALICE, phone)
        yield self.until(lambda: events_a._listener is not None and events_b._listener is not None, "listening")
        hub_a.sent(laptop, model.AccountMessage(transaction="t", account=ALICE, uri="bob@example.com",
                                                message_id="m1", content="hi", content_type="text/plain",
                                                timestamp="2026-12-08T04:00:00Z"))
        yield self.until(lambda: phone.events, "the event on the other gateway")
        (sync,) = phone.events
        self.assertEqual((type(sync), sync.account, sync.type, sync.action, sync.content["message_id"]),
                         (model.AccountSync, ALICE, "message", "add", "m1"))
        self.assertEqual(len(tablet.events), 1)  # told once, here, not again through the database
        self.assertEqual(laptop.events, [])
        yield deferLater(reactor, 0.3, lambda: None)
        self.assertEqual((len(tablet.events), len(phone.events)), (1, 1))
