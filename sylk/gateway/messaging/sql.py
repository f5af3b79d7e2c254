"""The message store in SQL, whatever the database: the queries (each an *interaction*, run in a database thread
in one transaction, `txn` a DB-API cursor) and `SQLMessageStore`, which runs them for IMessageStore. The backends
(sqlite.py, postgres.py) add their connection pool, their schema and its migrations.

The queries are standard SQL with `?` parameters (INSERT .. ON CONFLICT and LIMIT read the same in SQLite and
PostgreSQL; a backend whose driver wants another placeholder translates them). An entry's removal keeps its row
with the content wiped (a *tombstone*) until retention deletes it: a device may still sync "after" a removed
message's id, and a late duplicate of a removed message must not bring it back.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Callable

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from sylk.gateway.messaging.store import (CONVERSATION_READ, CONVERSATION_REMOVE, INCOMING, MAX_SYNC, MAX_SYNC_BYTES,
                                          MESSAGE_REMOVE,
                                          NOTIFIED_DISPLAYED, NOTIFIED_NONE, OUTGOING, STATE_RANK, UNREAD_TYPES,
                                          DeviceToken, IMessageStore, InvalidEntry, JournalEntry, NewMessage, Removal,
                                          StoreClosed, check_aor, check_content, check_days, check_device_token,
                                          check_limit, check_message_id, check_new_message, check_timestamp,
                                          check_update_state, iso_now, notified_by, pending_disposition,
                                          removal_content, state_rank, updated_addressbook)

log = Logger()

_ENTRY_COLUMNS = "contact, sent_at, disposition, notified, message_id, content_type, content, direction, state"
_LIVE = "removed_at IS NULL"


def migrations(identity: str) -> tuple[tuple[str, ...], ...]:
    """The schema as numbered migrations (the first is 1), the same for every database but for how it writes an
    auto-numbered primary key (`identity`): what a backend applies, in order, to a database of an older version."""
    return tuple(tuple(statement.format(identity=identity) for statement in migration) for migration in (
        (  # 1: the journal, public keys, device tokens
            """CREATE TABLE journal (
                seq {identity},  -- the journal's order; never reused
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
                document TEXT NOT NULL,  -- JSON: {{"contacts": [...], "groups": [...], "policies": [...]}}
                updated_at BIGINT NOT NULL
            )""",
        ),
    ))


@implementer(IMessageStore)
class SQLMessageStore:
    """IMessageStore over an adbapi pool of ONE connection: calls run in the order they were made (a state
    update never overtakes the message it is about). Subclasses make `self._pool` and implement open()/close()."""

    _pool: adbapi.ConnectionPool

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._closed = False
        self._migrated: tuple[int, int] | None = None  # (from, to) of the last migration, set in the pool's thread

    def open(self) -> Deferred[None]:
        return self._run(self._take_migration).addCallback(self._opened)

    def _prepare(self, connection: Any) -> None:
        """A new connection (the pool's cp_openfun, in its thread): set up by the backend; one it refuses (a
        newer schema) is let go at once."""
        try:
            migrated = self._set_up(connection)
        except BaseException:
            connection.close()
            raise
        if migrated is not None:
            self._migrated = migrated

    def _set_up(self, connection: Any) -> tuple[int, int] | None:
        """The backend's settings and schema migration on a new connection: (from, to) of a migration, or None."""
        raise NotImplementedError

    def _take_migration(self, _txn: Any) -> tuple[int, int] | None:
        migrated, self._migrated = self._migrated, None
        return migrated

    def _opened(self, migrated: tuple[int, int] | None) -> None:
        if migrated is not None:
            log.info("Message store, {store}: schema migrated from version {old} to {new}", store=self,
                     old=migrated[0], new=migrated[1])

    def close(self) -> Deferred[None]:
        if self._closed:
            return fail(StoreClosed("The message store is closed"))
        # The pool's one thread runs calls in order: once this no-op has run there, nothing is under way. (It needs
        # no connection: a database that could not be opened is closed all the same.)
        drained: Deferred[None] = deferToThreadPool(self._reactor, self._pool.threadpool, lambda: None)
        self._closed = True
        return drained.addCallback(lambda _: self._pool.close())

    def add_message(self, account: str, message: NewMessage) -> Deferred[bool]:
        return self._run(add_message, account, message, self._now())

    def update_state(self, account: str, message_id: str, state: str) -> Deferred[bool]:
        return self._run(update_state, account, message_id, state)

    def mark_conversation_read(self, account: str, contact: str) -> Deferred[JournalEntry]:
        return self._run(mark_conversation_read, account, contact, self._now())

    def remove_message(self, account: str, contact: str, message_id: str,
                       direction: str = OUTGOING) -> Deferred[Removal]:
        return self._run(remove_message, account, contact, message_id, direction, self._now())

    def remove_received(self, account: str, sender: str, message_id: str) -> Deferred[Removal | None]:
        return self._run(remove_received, account, sender, message_id, self._now())

    def remove_conversation(self, account: str, contact: str, timestamp: str | None = None) -> Deferred[Removal]:
        return self._run(remove_conversation, account, contact, timestamp, self._now())

    def journal(self, account: str, message_id: str | None = None, since: str | None = None,
                limit: int = MAX_SYNC) -> Deferred[tuple[JournalEntry, ...]]:
        return self._run(journal, account, message_id, since, limit)

    def set_public_key(self, account: str, public_key: str) -> Deferred[None]:
        return self._run(set_public_key, account, public_key, self._now())

    def public_key(self, account: str) -> Deferred[str | None]:
        return self._run(public_key, account)

    def add_device_token(self, account: str, token: DeviceToken) -> Deferred[None]:
        return self._run(add_device_token, account, token, self._now())

    def remove_device_token(self, account: str, app_id: str, device_id: str) -> Deferred[bool]:
        return self._run(remove_device_token, account, app_id, device_id)

    def device_tokens(self, account: str) -> Deferred[tuple[DeviceToken, ...]]:
        return self._run(device_tokens, account)

    def addressbook(self, account: str) -> Deferred[dict[str, Any] | None]:
        return self._run(addressbook, account)

    def update_addressbook(self, account: str, kind: str, action: str,
                           item: dict[str, Any]) -> Deferred[dict[str, Any]]:
        return self._run(update_addressbook, account, kind, action, item, self._now())

    def unread_count(self, account: str) -> Deferred[int]:
        return self._run(unread_count, account)

    def purge(self, older_than_days: float) -> Deferred[int]:
        return self._run(purge, older_than_days, self._now())

    def _run(self, interaction: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """Run `interaction(transaction, *args)` in the pool's thread, in one transaction. Values are checked
        there too: a refused one rolls back nothing but fails the Deferred all the same."""
        if self._closed:
            return fail(StoreClosed("The message store is closed"))
        result: Deferred[Any] = self._pool.runInteraction(interaction, *args)
        return result

    def _now(self) -> int:
        return microseconds(self._reactor.seconds())


# The interactions.

def add_message(txn: Any, account: str, message: NewMessage, now: int) -> bool:
    check_aor(account)
    check_new_message(message)
    _insert(txn, account, message.contact, message.direction, message.message_id, message.content_type,
            message.content, message.timestamp, message.disposition, message.state, now)
    return bool(txn.rowcount == 1)


def update_state(txn: Any, account: str, message_id: str, state: str) -> bool:
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


def mark_conversation_read(txn: Any, account: str, contact: str, now: int) -> JournalEntry:
    check_aor(account)
    check_aor(contact, "contact")
    txn.execute(f"UPDATE journal SET notified = ? WHERE account = ? AND contact = ? AND {_LIVE} AND notified < ?",
                (NOTIFIED_DISPLAYED, account, contact, NOTIFIED_DISPLAYED))
    _tombstone(txn, "account = ? AND contact = ? AND content_type = ?", (account, contact, CONVERSATION_READ), now)
    return _insert_own(txn, account, contact, "", CONVERSATION_READ, contact, iso_now(now / 1e6), now)


def remove_message(txn: Any, account: str, contact: str, message_id: str, direction: str,
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


def remove_received(txn: Any, account: str, sender: str, message_id: str, now: int) -> Removal | None:
    check_aor(account)
    check_aor(sender, "sender")
    check_message_id(message_id)
    removed = _tombstone(txn, "account = ? AND contact = ? AND message_id = ? AND direction = ?",
                         (account, sender, message_id, INCOMING), now)
    if not removed:
        return None
    return Removal(removed, _insert_own(txn, account, sender, INCOMING, MESSAGE_REMOVE,
                                        removal_content(sender, message_id, INCOMING), iso_now(now / 1e6), now))


def remove_conversation(txn: Any, account: str, contact: str, timestamp: str | None, now: int) -> Removal:
    check_aor(account)
    check_aor(contact, "contact")
    if timestamp is None:
        timestamp = iso_now(now / 1e6)
    check_timestamp(timestamp)
    removed = _tombstone(txn, "account = ? AND contact = ?", (account, contact), now)
    return Removal(removed, _insert_own(txn, account, contact, "", CONVERSATION_REMOVE, contact, timestamp, now))


def journal(txn: Any, account: str, message_id: str | None, since: str | None,
             limit: int) -> tuple[JournalEntry, ...]:
    check_aor(account)
    limit = check_limit(limit)
    since_us = microseconds(check_timestamp(since, "since").timestamp()) if since is not None else None
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
    entries: list[JournalEntry] = []
    size = 0
    while size < MAX_SYNC_BYTES:  # read in batches, and stop at the byte bound: the device asks again from there
        rows = txn.fetchmany(100)
        if not rows:
            break
        for row in rows:
            entries.append(_entry(row))
            size += len(entries[-1].content) + 256
            if size >= MAX_SYNC_BYTES:
                break
    return tuple(entries)


def set_public_key(txn: Any, account: str, public_key: str, now: int) -> None:
    check_aor(account)
    check_content(public_key, "public_key")
    txn.execute("INSERT INTO public_keys (account, public_key, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (account) DO UPDATE SET public_key = excluded.public_key, "
                "updated_at = excluded.updated_at", (account, public_key, now))


def public_key(txn: Any, account: str) -> str | None:
    txn.execute("SELECT public_key FROM public_keys WHERE account = ?", (check_aor(account),))
    row = txn.fetchone()
    return str(row[0]) if row is not None else None


def add_device_token(txn: Any, account: str, token: DeviceToken, now: int) -> None:
    check_aor(account)
    check_device_token(token)
    txn.execute("INSERT INTO device_tokens (account, app_id, device_id, token, background_token, platform, silent, "
                "user_agent, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (account, app_id, device_id) DO UPDATE SET token = excluded.token, "
                "background_token = excluded.background_token, platform = excluded.platform, "
                "silent = excluded.silent, user_agent = excluded.user_agent, updated_at = excluded.updated_at",
                (account, token.app_id, token.device_id, token.token, token.background_token, token.platform,
                 int(token.silent), token.user_agent, now))


def remove_device_token(txn: Any, account: str, app_id: str, device_id: str) -> bool:
    txn.execute("DELETE FROM device_tokens WHERE account = ? AND app_id = ? AND device_id = ?",
                (check_aor(account), app_id, device_id))
    return bool(txn.rowcount > 0)


def device_tokens(txn: Any, account: str) -> tuple[DeviceToken, ...]:
    txn.execute("SELECT app_id, device_id, token, platform, silent, background_token, user_agent FROM device_tokens "
                "WHERE account = ? ORDER BY app_id, device_id", (check_aor(account),))
    return tuple(DeviceToken(app_id, device_id, token, platform, bool(silent), background, agent)
                 for app_id, device_id, token, platform, silent, background, agent in txn.fetchall())


def addressbook(txn: Any, account: str) -> dict[str, Any] | None:
    txn.execute("SELECT document FROM addressbooks WHERE account = ?", (check_aor(account),))
    row = txn.fetchone()
    return None if row is None else dict(json.loads(row[0]))


def update_addressbook(txn: Any, account: str, kind: str, action: str, item: dict[str, Any],
                        now: int) -> dict[str, Any]:
    book, entry = updated_addressbook(addressbook(txn, account), kind, action, item)
    txn.execute("INSERT INTO addressbooks (account, document, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (account) DO UPDATE SET document = excluded.document, updated_at = excluded.updated_at",
                (account, json.dumps(book, ensure_ascii=False), now))
    return entry


def unread_count(txn: Any, account: str) -> int:
    txn.execute(f"SELECT COUNT(*) FROM journal WHERE account = ? AND {_LIVE} AND direction = ? AND notified < ? "
                f"AND disposition LIKE ? AND content_type IN ({', '.join('?' * len(UNREAD_TYPES))})",
                (check_aor(account), INCOMING, NOTIFIED_DISPLAYED, '%"display"%', *UNREAD_TYPES))
    return int(txn.fetchone()[0])


def purge(txn: Any, older_than_days: float, now: int) -> int:
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


def microseconds(seconds: float) -> int:
    return int(seconds * 1_000_000)
