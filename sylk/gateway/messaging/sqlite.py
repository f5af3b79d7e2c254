"""`IMessageStore` in an SQLite file: the embedded default, for one gateway (several gateways share PostgreSQL).

Queries run in adbapi's thread pool, on one connection (cp_min = cp_max = 1): SQLite takes one writer at a time
anyway, and one thread keeps the calls of the reactor thread in the order they were made. The file is in WAL mode
(readers never wait for the writer; `synchronous = NORMAL` is durable across a process crash, and loses at most the
last commits on power loss). It is created readable by its owner only: it holds people's conversations.

The schema is `MIGRATIONS`, numbered from 1; the file's `PRAGMA user_version` says how many it has had. Opening a
connection applies the missing ones in one transaction, and refuses a file of a newer version (SchemaTooNew)
rather than use or downgrade it.

The queries below are standard SQL with `?` parameters (INSERT .. ON CONFLICT and LIMIT, which PostgreSQL reads
the same way), so the PostgreSQL backend can run them with its own placeholder; only the pragmas and the column
types of the DDL are SQLite's. An entry's removal keeps its row with the content wiped (a *tombstone*) until
retention deletes it: a device may still sync "after" a removed message's id, and a late duplicate of a removed
message must not bring it back.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any, Callable

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from sylk.gateway.messaging.store import (CONVERSATION_READ, CONVERSATION_REMOVE, INCOMING, MAX_SYNC, MESSAGE_REMOVE,
                                          NOTIFIED_DISPLAYED, NOTIFIED_NONE, OUTGOING, STATE_RANK, UNREAD_TYPES,
                                          DeviceToken, updated_addressbook,
                                          IMessageStore, InvalidEntry, JournalEntry, NewMessage, Removal,
                                          SchemaTooNew, StoreClosed, check_aor, check_content, check_days,
                                          check_device_token, check_limit, check_message_id, check_new_message,
                                          check_timestamp, check_update_state, iso_now, notified_by,
                                          pending_disposition, removal_content, state_rank)

log = Logger()

BUSY_TIMEOUT = 10.0  # seconds a statement waits for another process's lock (a backup, the sqlite3 shell)

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: the journal, public keys, device tokens
        """CREATE TABLE journal (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- the journal's order; never reused
            account TEXT NOT NULL,
            message_id TEXT NOT NULL,
            contact TEXT NOT NULL,
            direction TEXT NOT NULL,
            content_type TEXT NOT NULL,
            content TEXT NOT NULL,
            sent_at TEXT NOT NULL,  -- the timestamp the client or the peer gave, verbatim
            disposition TEXT NOT NULL,  -- JSON array: the notifications requested
            notified INTEGER NOT NULL,  -- how far they were answered (store.NOTIFIED_*)
            state TEXT,
            state_rank INTEGER NOT NULL,  -- store.STATE_RANK of state, FIXED_RANK when it never changes
            created_at BIGINT NOT NULL,  -- when stored: microseconds since 1970, UTC, the gateway's clock
            removed_at BIGINT,  -- a tombstone's removal time, NULL while the entry is live
            UNIQUE (account, message_id)
        )""",
        "CREATE INDEX journal_by_account_seq ON journal (account, seq)",
        "CREATE INDEX journal_by_account_created ON journal (account, created_at)",
        "CREATE INDEX journal_by_account_contact ON journal (account, contact)",
        "CREATE INDEX journal_by_created ON journal (created_at)",
        """CREATE TABLE public_keys (
            account TEXT PRIMARY KEY,
            public_key TEXT NOT NULL,
            updated_at BIGINT NOT NULL
        )""",
        """CREATE TABLE device_tokens (
            account TEXT NOT NULL,
            app_id TEXT NOT NULL,
            device_id TEXT NOT NULL,
            token TEXT NOT NULL,
            background_token TEXT,
            platform TEXT NOT NULL,
            silent INTEGER NOT NULL,
            user_agent TEXT,
            updated_at BIGINT NOT NULL,
            PRIMARY KEY (account, app_id, device_id)
        )""",
    ),
    (  # 2: address books
        """CREATE TABLE addressbooks (
            account TEXT PRIMARY KEY,
            document TEXT NOT NULL,  -- JSON: {"contacts": [...], "groups": [...], "policies": [...]}
            updated_at BIGINT NOT NULL
        )""",
    ),
)

_ENTRY_COLUMNS = "contact, sent_at, disposition, notified, message_id, content_type, content, direction, state"
_LIVE = "removed_at IS NULL"


@implementer(IMessageStore)
class SQLiteMessageStore:
    """The message store in the SQLite file at `path` (created when missing, with mode 0600)."""

    def __init__(self, path: str | os.PathLike[str], reactor: Any = None) -> None:
        """`reactor`: one with threads and time (IReactorThreads, IReactorTime); the global one by default."""
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.path = Path(path)
        self._reactor = reactor
        self._closed = False
        self._migrated: tuple[int, int] | None = None  # (from, to) of the last migration, set in the pool's thread
        self._pool = _PrivateFilePool("sqlite3", str(self.path), check_same_thread=False, timeout=BUSY_TIMEOUT,
                                      cp_min=1, cp_max=1, cp_openfun=self._prepare, cp_reactor=reactor,
                                      cp_noisy=False)

    def __repr__(self) -> str:
        return f"the SQLite file {self.path}"

    def open(self) -> Deferred[None]:
        return self._run(self._take_migration).addCallback(self._opened)

    def _take_migration(self, _txn: Any) -> tuple[int, int] | None:
        migrated, self._migrated = self._migrated, None
        return migrated

    def _opened(self, migrated: tuple[int, int] | None) -> None:
        if migrated is not None:
            log.info("Message store {path}: schema migrated from version {old} to {new}", path=str(self.path),
                     old=migrated[0], new=migrated[1])

    def close(self) -> Deferred[None]:
        if self._closed:
            return fail(StoreClosed("The message store is closed"))
        # The pool's one thread runs calls in order: once this no-op has run there, nothing is under way. (It needs
        # no connection: a file that could not be opened is closed all the same.)
        drained: Deferred[None] = deferToThreadPool(self._reactor, self._pool.threadpool, lambda: None)
        self._closed = True
        return drained.addCallback(lambda _: self._pool.close())

    def add_message(self, account: str, message: NewMessage) -> Deferred[bool]:
        return self._run(_add_message, account, message, self._now())

    def update_state(self, account: str, message_id: str, state: str) -> Deferred[bool]:
        return self._run(_update_state, account, message_id, state)

    def mark_conversation_read(self, account: str, contact: str) -> Deferred[JournalEntry]:
        return self._run(_mark_conversation_read, account, contact, self._now())

    def remove_message(self, account: str, contact: str, message_id: str,
                       direction: str = OUTGOING) -> Deferred[Removal]:
        return self._run(_remove_message, account, contact, message_id, direction, self._now())

    def remove_conversation(self, account: str, contact: str, timestamp: str | None = None) -> Deferred[Removal]:
        return self._run(_remove_conversation, account, contact, timestamp, self._now())

    def journal(self, account: str, message_id: str | None = None, since: str | None = None,
                limit: int = MAX_SYNC) -> Deferred[tuple[JournalEntry, ...]]:
        return self._run(_journal, account, message_id, since, limit)

    def set_public_key(self, account: str, public_key: str) -> Deferred[None]:
        return self._run(_set_public_key, account, public_key, self._now())

    def public_key(self, account: str) -> Deferred[str | None]:
        return self._run(_public_key, account)

    def add_device_token(self, account: str, token: DeviceToken) -> Deferred[None]:
        return self._run(_add_device_token, account, token, self._now())

    def remove_device_token(self, account: str, app_id: str, device_id: str) -> Deferred[bool]:
        return self._run(_remove_device_token, account, app_id, device_id)

    def device_tokens(self, account: str) -> Deferred[tuple[DeviceToken, ...]]:
        return self._run(_device_tokens, account)

    def addressbook(self, account: str) -> Deferred[dict[str, Any] | None]:
        return self._run(_addressbook, account)

    def update_addressbook(self, account: str, kind: str, action: str,
                           item: dict[str, Any]) -> Deferred[dict[str, Any]]:
        return self._run(_update_addressbook, account, kind, action, item, self._now())

    def unread_count(self, account: str) -> Deferred[int]:
        return self._run(_unread_count, account)

    def purge(self, older_than_days: float) -> Deferred[int]:
        return self._run(_purge, older_than_days, self._now())

    def _run(self, interaction: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """Run `interaction(transaction, *args)` in the pool's thread, in one transaction. Values are checked
        there too: a refused one rolls back nothing but fails the Deferred all the same."""
        if self._closed:
            return fail(StoreClosed("The message store is closed"))
        result: Deferred[Any] = self._pool.runInteraction(interaction, *args)
        return result

    def _now(self) -> int:
        return _microseconds(self._reactor.seconds())

    def _prepare(self, connection: sqlite3.Connection) -> None:
        """A new connection (in the pool's thread): pragmas, then the schema. A refused file is let go at once."""
        try:
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                log.warn("Message store {path}: WAL mode unavailable, using {mode}", path=str(self.path), mode=mode)
            connection.execute("PRAGMA synchronous = NORMAL")
            migrated = migrate(connection)
        except BaseException:
            connection.close()
            raise
        if migrated is not None:
            self._migrated = migrated


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


# The interactions: each runs in the pool's thread, in one transaction, `txn` being a DB-API cursor.

def _add_message(txn: Any, account: str, message: NewMessage, now: int) -> bool:
    check_aor(account)
    check_new_message(message)
    _insert(txn, account, message.contact, message.direction, message.message_id, message.content_type,
            message.content, message.timestamp, message.disposition, message.state, now)
    return bool(txn.rowcount == 1)


def _update_state(txn: Any, account: str, message_id: str, state: str) -> bool:
    check_aor(account)
    check_message_id(message_id)
    if check_update_state(state) not in STATE_RANK:
        return False
    rank = STATE_RANK[state]
    txn.execute(f"UPDATE journal SET state = ?, state_rank = ? WHERE account = ? AND message_id = ? AND {_LIVE} "
                "AND state_rank < ?", (state, rank, account, message_id, rank))
    changed = txn.rowcount
    notified = notified_by(state)
    if notified != NOTIFIED_NONE:
        txn.execute(f"UPDATE journal SET notified = ? WHERE account = ? AND message_id = ? AND {_LIVE} "
                    "AND notified < ?", (notified, account, message_id, notified))
        changed += txn.rowcount
    return bool(changed > 0)


def _mark_conversation_read(txn: Any, account: str, contact: str, now: int) -> JournalEntry:
    check_aor(account)
    check_aor(contact, "contact")
    txn.execute(f"UPDATE journal SET notified = ? WHERE account = ? AND contact = ? AND {_LIVE} AND notified < ?",
                (NOTIFIED_DISPLAYED, account, contact, NOTIFIED_DISPLAYED))
    _tombstone(txn, "account = ? AND contact = ? AND content_type = ?", (account, contact, CONVERSATION_READ), now)
    return _insert_own(txn, account, contact, "", CONVERSATION_READ, contact, iso_now(now / 1e6), now)


def _remove_message(txn: Any, account: str, contact: str, message_id: str, direction: str,
                    now: int) -> Removal:
    check_aor(account)
    check_aor(contact, "contact")
    check_message_id(message_id)
    if direction not in (INCOMING, OUTGOING):
        raise InvalidEntry(f"direction must be {INCOMING} or {OUTGOING}")
    removed = _tombstone(txn, "account = ? AND contact = ? AND message_id = ?", (account, contact, message_id), now)
    entry = _insert_own(txn, account, contact, direction, MESSAGE_REMOVE,
                        removal_content(contact, message_id, direction), iso_now(now / 1e6), now)
    return Removal(removed, entry)


def _remove_conversation(txn: Any, account: str, contact: str, timestamp: str | None, now: int) -> Removal:
    check_aor(account)
    check_aor(contact, "contact")
    if timestamp is None:
        timestamp = iso_now(now / 1e6)
    check_timestamp(timestamp)
    removed = _tombstone(txn, "account = ? AND contact = ?", (account, contact), now)
    return Removal(removed, _insert_own(txn, account, contact, "", CONVERSATION_REMOVE, contact, timestamp, now))


def _journal(txn: Any, account: str, message_id: str | None, since: str | None,
             limit: int) -> tuple[JournalEntry, ...]:
    check_aor(account)
    limit = check_limit(limit)
    since_us = _microseconds(check_timestamp(since, "since").timestamp()) if since is not None else None
    after = None
    if message_id is not None:
        txn.execute("SELECT seq FROM journal WHERE account = ? AND message_id = ?",
                    (account, check_message_id(message_id)))
        row = txn.fetchone()
        after = row[0] if row is not None else None
    conditions: list[str] = ["account = ?", _LIVE]
    parameters: list[object] = [account]
    if after is not None:  # the cursor's own row may be a tombstone: its place in the order still counts
        conditions.append("seq > ?")
        parameters.append(after)
    elif since_us is not None:
        conditions.append("created_at > ?")
        parameters.append(since_us)
    txn.execute(f"SELECT {_ENTRY_COLUMNS} FROM journal WHERE {' AND '.join(conditions)} ORDER BY seq LIMIT ?",
                (*parameters, limit))
    return tuple(_entry(row) for row in txn.fetchall())


def _set_public_key(txn: Any, account: str, public_key: str, now: int) -> None:
    check_aor(account)
    check_content(public_key, "public_key")
    txn.execute("INSERT INTO public_keys (account, public_key, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (account) DO UPDATE SET public_key = excluded.public_key, "
                "updated_at = excluded.updated_at", (account, public_key, now))


def _public_key(txn: Any, account: str) -> str | None:
    txn.execute("SELECT public_key FROM public_keys WHERE account = ?", (check_aor(account),))
    row = txn.fetchone()
    return str(row[0]) if row is not None else None


def _add_device_token(txn: Any, account: str, token: DeviceToken, now: int) -> None:
    check_aor(account)
    check_device_token(token)
    txn.execute("INSERT INTO device_tokens (account, app_id, device_id, token, background_token, platform, silent, "
                "user_agent, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (account, app_id, device_id) DO UPDATE SET token = excluded.token, "
                "background_token = excluded.background_token, platform = excluded.platform, "
                "silent = excluded.silent, user_agent = excluded.user_agent, updated_at = excluded.updated_at",
                (account, token.app_id, token.device_id, token.token, token.background_token, token.platform,
                 int(token.silent), token.user_agent, now))


def _remove_device_token(txn: Any, account: str, app_id: str, device_id: str) -> bool:
    txn.execute("DELETE FROM device_tokens WHERE account = ? AND app_id = ? AND device_id = ?",
                (check_aor(account), app_id, device_id))
    return bool(txn.rowcount > 0)


def _device_tokens(txn: Any, account: str) -> tuple[DeviceToken, ...]:
    txn.execute("SELECT app_id, device_id, token, platform, silent, background_token, user_agent FROM device_tokens "
                "WHERE account = ? ORDER BY app_id, device_id", (check_aor(account),))
    return tuple(DeviceToken(app_id, device_id, token, platform, bool(silent), background, agent)
                 for app_id, device_id, token, platform, silent, background, agent in txn.fetchall())


def _addressbook(txn: Any, account: str) -> dict[str, Any] | None:
    txn.execute("SELECT document FROM addressbooks WHERE account = ?", (check_aor(account),))
    row = txn.fetchone()
    return None if row is None else dict(json.loads(row[0]))


def _update_addressbook(txn: Any, account: str, kind: str, action: str, item: dict[str, Any],
                        now: int) -> dict[str, Any]:
    book, entry = updated_addressbook(_addressbook(txn, account), kind, action, item)
    txn.execute("INSERT INTO addressbooks (account, document, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (account) DO UPDATE SET document = excluded.document, updated_at = excluded.updated_at",
                (account, json.dumps(book, ensure_ascii=False), now))
    return entry


def _unread_count(txn: Any, account: str) -> int:
    txn.execute(f"SELECT COUNT(*) FROM journal WHERE account = ? AND {_LIVE} AND direction = ? AND notified < ? "
                f"AND disposition LIKE ? AND content_type IN ({', '.join('?' * len(UNREAD_TYPES))})",
                (check_aor(account), INCOMING, NOTIFIED_DISPLAYED, '%"display"%', *UNREAD_TYPES))
    return int(txn.fetchone()[0])


def _purge(txn: Any, older_than_days: float, now: int) -> int:
    cutoff = now - int(check_days(older_than_days) * 86400 * 1_000_000)
    txn.execute("DELETE FROM journal WHERE created_at < ?", (cutoff,))
    return int(txn.rowcount)


def _insert(txn: Any, account: str, contact: str, direction: str, message_id: str, content_type: str,
            content: str, timestamp: str, disposition: tuple[str, ...], state: str | None, now: int) -> None:
    txn.execute("INSERT INTO journal (account, message_id, contact, direction, content_type, content, sent_at, "
                "disposition, notified, state, state_rank, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (account, message_id) DO NOTHING",
                (account, message_id, contact, direction, content_type, content, timestamp,
                 json.dumps(list(disposition)), NOTIFIED_NONE, state, state_rank(state), now))


def _insert_own(txn: Any, account: str, contact: str, direction: str, content_type: str, content: str,
                timestamp: str, now: int) -> JournalEntry:
    """Journal an entry of the store's own (a read mark, a removal) under a new message_id."""
    message_id = str(uuid.uuid4())
    _insert(txn, account, contact, direction, message_id, content_type, content, timestamp, (), None, now)
    return JournalEntry(contact, timestamp, (), message_id, content_type, content, direction, None)


def _tombstone(txn: Any, where: str, parameters: tuple[str, ...], now: int) -> int:
    """Wipe the live entries matching `where`, keeping their rows (ids, order) until retention; how many."""
    txn.execute(f"UPDATE journal SET removed_at = ?, content = '', disposition = '[]' WHERE {where} AND {_LIVE}",
                (now, *parameters))
    return int(txn.rowcount)


def _entry(row: tuple[Any, ...]) -> JournalEntry:
    contact, timestamp, disposition, notified, message_id, content_type, content, direction, state = row
    requested = tuple(json.loads(disposition))
    return JournalEntry(contact, timestamp, pending_disposition(requested, notified), message_id, content_type,
                        content, direction, state)


def _microseconds(seconds: float) -> int:
    return int(seconds * 1_000_000)
