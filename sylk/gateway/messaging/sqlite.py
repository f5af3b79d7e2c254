"""`IMessageStore` in an SQLite file: the embedded default, for one gateway (several gateways share PostgreSQL).

Queries run in adbapi's thread pool, on one connection (cp_min = cp_max = 1): SQLite takes one writer at a time
anyway, and one thread keeps the calls of the reactor thread in the order they were made. The file is in WAL mode
(readers never wait for the writer; `synchronous = NORMAL` is durable across a process crash, and loses at most the
last commits on power loss). It is created readable by its owner only: it holds people's conversations.

The schema is `MIGRATIONS`, numbered from 1; the file's `PRAGMA user_version` says how many it has had. Opening a
connection applies the missing ones in one transaction, and refuses a file of a newer version (SchemaTooNew)
rather than use or downgrade it.

The queries are sql.py's, shared with the PostgreSQL backend; only the pragmas and the DDL are SQLite's.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from twisted.enterprise import adbapi
from twisted.logger import Logger

from sylk.gateway.messaging.sql import SQLMessageStore, migrations
from sylk.gateway.messaging.store import SchemaTooNew

log = Logger()

BUSY_TIMEOUT = 10.0  # seconds a statement waits for another process's lock (a backup, the sqlite3 shell)

MIGRATIONS = migrations("INTEGER PRIMARY KEY AUTOINCREMENT")


class SQLiteMessageStore(SQLMessageStore):
    """The message store in the SQLite file at `path` (created when missing, with mode 0600)."""

    def __init__(self, path: str | os.PathLike[str], reactor: Any = None) -> None:
        """`reactor`: one with threads and time (IReactorThreads, IReactorTime); the global one by default."""
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        super().__init__(reactor)
        self.path = Path(path)
        self._pool = _PrivateFilePool("sqlite3", str(self.path), check_same_thread=False, timeout=BUSY_TIMEOUT,
                                      cp_min=1, cp_max=1, cp_openfun=self._prepare, cp_reactor=reactor,
                                      cp_noisy=False)

    def __repr__(self) -> str:
        return f"the SQLite file {self.path}"

    def _set_up(self, connection: sqlite3.Connection) -> tuple[int, int] | None:
        """Pragmas, then the schema."""
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            log.warn("Message store {path}: WAL mode unavailable, using {mode}", path=str(self.path), mode=mode)
        connection.execute("PRAGMA synchronous = NORMAL")
        return migrate(connection)


class _PrivateFilePool(adbapi.ConnectionPool):
    """A pool whose database file, when it has to be created, is readable and writable by its owner only (SQLite
    gives its -wal and -shm files the database's mode)."""

    def connect(self) -> Any:
        if self.threadID() not in self.connections:
            descriptor = os.open(self.connargs[0], os.O_RDWR | os.O_CREAT, 0o600)
            os.close(descriptor)
        return super().connect()


def migrate(connection: sqlite3.Connection) -> tuple[int, int] | None:
    """Bring the file to the latest schema in one transaction; (from, to), or None when it was there already."""
    latest = len(MIGRATIONS)
    if _version(connection) == latest:
        return None
    connection.execute("BEGIN IMMEDIATE")  # another process opening the file waits rather than migrating too
    try:
        version = _version(connection)
        for number in range(version + 1, latest + 1):
            for statement in MIGRATIONS[number - 1]:
                connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {latest}")
        connection.commit()
    except BaseException:
        connection.rollback()
        raise
    return (version, latest) if version != latest else None


def _version(connection: sqlite3.Connection) -> int:
    version: int = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise SchemaTooNew(f"The message store's schema is version {version}, newer than this sylkgateway's "
                           f"{len(MIGRATIONS)}: run the newer sylkgateway, or restore a backup of the file")
    return version
