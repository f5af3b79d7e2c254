"""The message store's contract against a real PostgreSQL (a cluster of its own, on a Unix socket only), and
what only PostgreSQL has: several gateways migrating one database at once."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from twisted.internet import reactor
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.trial.unittest import TestCase

from sylk.gateway.messaging.postgres import MIGRATIONS, PostgreSQLMessageStore
from sylk.gateway.messaging.store import IMessageStore, SchemaTooNew
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
