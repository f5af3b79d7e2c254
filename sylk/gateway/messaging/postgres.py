"""`IMessageStore` in PostgreSQL: one history shared by several gateways (`[WebRTCGateway] message_store =
postgresql`, `message_store_dsn`). Needs psycopg2 (Debian python3-psycopg2, or the `postgresql` extra).

The queries are sql.py's, run on one connection (calls in the order they were made), with psycopg2's `%s` for
their `?` placeholders. The schema is `MIGRATIONS`, numbered from 1, recorded in the table sylkgateway_schema; a
gateway that connects first takes an advisory lock, so two gateways starting together do not migrate twice, and a
database migrated by a newer sylkgateway is refused (SchemaTooNew).

An account's events reach its connections on the other gateways through LISTEN/NOTIFY (events.py). Not yet: an
address book changed on two gateways at the same instant may keep only one of the two changes (each change reads
and writes the whole book).
"""

from __future__ import annotations

from typing import Any

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred

from sylk.gateway.messaging.sql import SQLMessageStore, migrations
from sylk.gateway.messaging.store import SchemaTooNew

SCHEMA_LOCK = 0x5917C47E  # the advisory lock that serializes migrations (any constant of this application's)

MIGRATIONS = migrations("BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY")


class PostgreSQLMessageStore(SQLMessageStore):
    """The message store in the PostgreSQL database `dsn` (a libpq connection string)."""

    def __init__(self, dsn: str, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        super().__init__(reactor)
        self._dsn = dsn
        self._pool = _QmarkPool("psycopg2", dsn, cp_min=1, cp_max=1, cp_openfun=self._prepare, cp_reactor=reactor,
                                cp_noisy=False)

    @property
    def dsn(self) -> str:
        return self._dsn

    def notify(self, channel: str, payload: str) -> Deferred[None]:
        """NOTIFY `channel` with `payload` on the store's connection, after what the store was asked before."""
        return self._run(lambda txn: txn.execute("SELECT pg_notify(?, ?)", (channel, payload))).addCallback(
            lambda _: None)

    def __repr__(self) -> str:
        database = next((part.partition("=")[2] for part in self._dsn.split() if part.startswith("dbname=")), "?")
        return f"the PostgreSQL database {database}"  # (never the DSN: it may hold a password)

    def _set_up(self, connection: Any) -> tuple[int, int] | None:
        return migrate(connection)


def migrate(connection: Any) -> tuple[int, int] | None:
    """Bring the database to the latest schema in one transaction; (from, to), or None when it was there."""
    latest = len(MIGRATIONS)
    with connection.cursor() as cursor:
        # another gateway starting now waits here until this transaction ends, then finds the schema done (a lock
        # on the table would come too late: concurrent CREATE TABLE IF NOT EXISTS may fail)
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        cursor.execute("CREATE TABLE IF NOT EXISTS sylkgateway_schema (version INTEGER NOT NULL)")
        cursor.execute("SELECT version FROM sylkgateway_schema")
        row = cursor.fetchone()
        version = 0 if row is None else int(row[0])
        if version > latest:
            connection.rollback()
            raise SchemaTooNew(f"The message store's schema is version {version}, newer than this sylkgateway's "
                               f"{latest}: run the newer sylkgateway")
        for number in range(version + 1, latest + 1):
            for statement in MIGRATIONS[number - 1]:
                cursor.execute(statement)
        if row is None:
            cursor.execute("INSERT INTO sylkgateway_schema (version) VALUES (%s)", (latest,))
        else:
            cursor.execute("UPDATE sylkgateway_schema SET version = %s", (latest,))
    connection.commit()
    return (version, latest) if version != latest else None


class _QmarkTransaction(adbapi.Transaction):
    """sql.py's `?` placeholders as psycopg2's `%s` (its queries hold no other `?` or `%`)."""

    def execute(self, sql: str, parameters: Any = ()) -> Any:
        assert self._cursor is not None  # (adbapi makes it before running an interaction)
        return self._cursor.execute(sql.replace("?", "%s"), parameters)


class _QmarkPool(adbapi.ConnectionPool):
    transactionFactory = _QmarkTransaction
