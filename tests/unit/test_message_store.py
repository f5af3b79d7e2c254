"""The message store: a contract every IMessageStore backend passes (a backend's test case mixes in
`MessageStoreContract` and says how to make a store), then what is SQLite's own."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import tempfile
from datetime import datetime, timedelta, timezone
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from sylk.gateway.messaging.sqlite import MIGRATIONS, SQLiteMessageStore
from sylk.gateway.messaging.store import (CONVERSATION_READ, CONVERSATION_REMOVE, MAX_ADDRESSBOOK, MAX_CONTENT,
                                          MAX_SYNC_BYTES, MESSAGE_REMOVE,
                                          DeviceToken, IMessageStore, InvalidEntry, NewMessage, SchemaTooNew,
                                          StoreClosed)

ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"


def message(message_id: str, contact: str = BOB, direction: str = "outgoing", state: str = "pending",
            content: str = "hello", disposition: tuple[str, ...] = ("positive-delivery", "display")) -> NewMessage:
    return NewMessage(contact=contact, direction=direction, message_id=message_id,
                      timestamp="2026-03-01T10:00:00.000+01:00", content_type="text/plain", content=content,
                      disposition=disposition, state=state)


def database_path(test: TestCase) -> str:
    """A fresh file name in a directory removed after the test. (trial's mktemp would put it under the working
    directory, which is the checkout under pytest.)"""
    directory = tempfile.TemporaryDirectory(prefix="sylkgateway-store-")
    test.addCleanup(directory.cleanup)
    return os.path.join(directory.name, "messages.sqlite")


def tick() -> Any:
    """Let the clock move on, so that what is stored next is stored later."""
    return deferLater(reactor, 0.01, lambda: None)


class MessageStoreContract:
    """What every backend does. Mixed into a TestCase with `make_store`."""

    store: IMessageStore

    def make_store(self) -> IMessageStore:
        raise NotImplementedError

    @inlineCallbacks
    def setUp(self) -> Any:
        self.store = self.make_store()
        yield self.store.open()

    @inlineCallbacks
    def tearDown(self) -> Any:
        try:
            yield self.store.close()
        except StoreClosed:
            pass

    @inlineCallbacks
    def ids(self, account: str, **kwargs: Any) -> Any:
        entries = yield self.store.journal(account, **kwargs)
        return [entry.message_id for entry in entries]

    @inlineCallbacks
    def entry(self, account: str, message_id: str) -> Any:
        entries = yield self.store.journal(account)
        return next(entry for entry in entries if entry.message_id == message_id)

    def test_provides_the_interface(self) -> None:
        self.assertTrue(verifyObject(IMessageStore, self.store))

    @inlineCallbacks
    def test_a_message_comes_back_as_a_sync_conversations_item(self) -> Any:
        stored = yield self.store.add_message(ALICE, message("m1"))
        self.assertTrue(stored)
        [entry] = yield self.store.journal(ALICE)
        self.assertEqual(entry.to_sync_item(), {
            "contact": BOB, "timestamp": "2026-03-01T10:00:00.000+01:00",
            "disposition": ["positive-delivery", "display"], "message_id": "m1", "content_type": "text/plain",
            "content": "hello", "direction": "outgoing", "state": "pending"})

    @inlineCallbacks
    def test_a_duplicate_message_id_is_ignored_within_an_account_only(self) -> Any:
        self.assertTrue((yield self.store.add_message(ALICE, message("m1"))))
        self.assertFalse((yield self.store.add_message(ALICE, message("m1", content="other"))))
        # the receiver's copy of the same message is another account's row
        self.assertTrue((yield self.store.add_message(BOB, message("m1", contact=ALICE, direction="incoming",
                                                                      state="received"))))
        [entry] = yield self.store.journal(ALICE)
        self.assertEqual(entry.content, "hello")

    @inlineCallbacks
    def test_the_journal_keeps_the_order_of_writing(self) -> Any:
        for message_id in ("c", "a", "b"):
            yield self.store.add_message(ALICE, message(message_id))
        self.assertEqual((yield self.ids(ALICE)), ["c", "a", "b"])
        self.assertEqual((yield self.ids(ALICE, message_id="c")), ["a", "b"])
        self.assertEqual((yield self.ids(ALICE, message_id="b")), [])
        self.assertEqual((yield self.ids(ALICE, limit=2)), ["c", "a"])
        self.assertEqual((yield self.ids(ALICE, message_id="c", limit=1)), ["a"])
        self.assertEqual((yield self.ids(ALICE, limit=10 ** 6)), ["c", "a", "b"])  # capped, not refused

    @inlineCallbacks
    def test_since_counts_from_when_entries_were_stored(self) -> Any:
        yield self.store.add_message(ALICE, message("old"))
        yield tick()
        since = datetime.now(timezone.utc)
        yield tick()
        yield self.store.add_message(ALICE, message("new"))
        self.assertEqual((yield self.ids(ALICE, since=since.isoformat())), ["new"])
        # without an offset: UTC
        self.assertEqual((yield self.ids(ALICE, since=since.replace(tzinfo=None).isoformat())), ["new"])
        self.assertEqual((yield self.ids(ALICE, since=(since + timedelta(hours=1)).isoformat())), [])
        # an unknown message_id falls back to since, then to everything
        self.assertEqual((yield self.ids(ALICE, message_id="unknown", since=since.isoformat())), ["new"])
        self.assertEqual((yield self.ids(ALICE, message_id="unknown")), ["old", "new"])
        # a known one wins over since
        self.assertEqual((yield self.ids(ALICE, message_id="old", since=since.isoformat())), ["new"])

    @inlineCallbacks
    def test_states_only_move_forward(self) -> Any:
        yield self.store.add_message(ALICE, message("m1"))
        steps = [("accepted", True, "accepted"), ("delivered", True, "delivered"),
                 ("accepted", False, "delivered"),  # the 200 OK after the far end's IMDN
                 ("failed", False, "delivered"), ("displayed", True, "displayed"), ("delivered", False, "displayed"),
                 ("processed", False, "displayed")]
        for state, changed, now in steps:
            self.assertEqual((yield self.store.update_state(ALICE, "m1", state)), changed, state)
            self.assertEqual((yield self.entry(ALICE, "m1")).state, now, state)

    @inlineCallbacks
    def test_a_delivery_after_a_failure_counts(self) -> Any:
        yield self.store.add_message(ALICE, message("m1"))
        self.assertTrue((yield self.store.update_state(ALICE, "m1", "failed")))
        self.assertFalse((yield self.store.update_state(ALICE, "m1", "error")))
        self.assertTrue((yield self.store.update_state(ALICE, "m1", "delivered")))
        self.assertEqual((yield self.entry(ALICE, "m1")).state, "delivered")

    @inlineCallbacks
    def test_delivered_and_displayed_answer_the_disposition(self) -> Any:
        yield self.store.add_message(ALICE, message("in", direction="incoming", state="received"))
        yield self.store.update_state(ALICE, "in", "delivered")
        entry = yield self.entry(ALICE, "in")
        self.assertEqual((entry.state, entry.disposition), ("received", ("display",)))
        yield self.store.update_state(ALICE, "in", "displayed")
        entry = yield self.entry(ALICE, "in")
        self.assertEqual((entry.state, entry.disposition), ("received", ()))

    @inlineCallbacks
    def test_unknown_states_are_refused(self) -> Any:
        yield self.store.add_message(ALICE, message("m1"))
        for state in ("received", "nonsense"):
            yield self.assertFailure(self.store.update_state(ALICE, "m1", state), InvalidEntry)
        self.assertFalse((yield self.store.update_state(ALICE, "missing", "delivered")))

    @inlineCallbacks
    def test_unread_messages_are_counted_until_displayed_or_read(self) -> Any:
        for message_id, contact in (("u1", BOB), ("u2", BOB), ("u3", CAROL)):
            yield self.store.add_message(ALICE, message(message_id, contact, "incoming", "received"))
        yield self.store.add_message(ALICE, message("quiet", direction="incoming", state="received",
                                                    disposition=("positive-delivery",)))  # asks for no display
        yield self.store.add_message(ALICE, message("mine"))  # outgoing
        self.assertEqual((yield self.store.unread_count(ALICE)), 3)
        yield self.store.update_state(ALICE, "u3", "displayed")
        self.assertEqual((yield self.store.unread_count(ALICE)), 2)
        yield self.store.mark_conversation_read(ALICE, BOB)
        self.assertEqual((yield self.store.unread_count(ALICE)), 0)
        self.assertEqual((yield self.store.unread_count(BOB)), 0)

    @inlineCallbacks
    def test_a_sender_takes_back_a_message_from_the_recipients_history(self) -> Any:
        yield self.store.add_message(BOB, message("m1", ALICE, "incoming", "received"))
        self.assertIsNone((yield self.store.remove_received(BOB, CAROL, "m1")))  # not from carol
        self.assertIsNone((yield self.store.remove_received(CAROL, ALICE, "m1")))  # carol has no such copy
        removal = yield self.store.remove_received(BOB, ALICE, "m1")
        self.assertEqual((removal.removed, removal.entry.content_type, removal.entry.direction),
                         (1, MESSAGE_REMOVE, "incoming"))
        self.assertEqual([entry.content_type for entry in (yield self.store.journal(BOB))], [MESSAGE_REMOVE])
        self.assertEqual((yield self.store.journal(CAROL)), ())  # nothing journalled where nothing was

    @inlineCallbacks
    def test_marking_a_conversation_read(self) -> Any:
        yield self.store.add_message(ALICE, message("b1", direction="incoming", state="received"))
        yield self.store.add_message(ALICE, message("c1", contact=CAROL, direction="incoming", state="received"))
        first = yield self.store.mark_conversation_read(ALICE, BOB)
        second = yield self.store.mark_conversation_read(ALICE, BOB)
        self.assertEqual((yield self.entry(ALICE, "b1")).disposition, ())
        self.assertEqual((yield self.entry(ALICE, "c1")).disposition, ("positive-delivery", "display"))
        # only the latest read mark of a contact stays in the journal
        self.assertEqual((yield self.ids(ALICE)), ["b1", "c1", second.message_id])
        self.assertNotEqual(first.message_id, second.message_id)
        item = second.to_sync_item()
        self.assertEqual((item["content_type"], item["content"], item["direction"], item["state"],
                          item["disposition"]), (CONVERSATION_READ, BOB, "", None, []))
        datetime.fromisoformat(item["timestamp"])
        # a device that synced up to the first read mark still gets what followed
        self.assertEqual((yield self.ids(ALICE, message_id=first.message_id)), [second.message_id])

    @inlineCallbacks
    def test_removing_a_message(self) -> Any:
        yield self.store.add_message(ALICE, message("m1"))
        yield self.store.add_message(ALICE, message("m2"))
        removal = yield self.store.remove_message(ALICE, BOB, "m1")
        self.assertEqual(removal.removed, 1)
        self.assertEqual(removal.entry.content_type, MESSAGE_REMOVE)
        self.assertEqual(json.loads(removal.entry.content), {"contact": BOB, "message_id": "m1",
                                                              "direction": "outgoing"})
        self.assertEqual((yield self.ids(ALICE)), ["m2", removal.entry.message_id])
        # a removed message is not brought back by a late duplicate, and still serves as a sync cursor
        self.assertFalse((yield self.store.add_message(ALICE, message("m1"))))
        self.assertEqual((yield self.ids(ALICE, message_id="m1")), ["m2", removal.entry.message_id])
        # removing what is not there (or not in that conversation) is still journalled, for other devices
        again = yield self.store.remove_message(ALICE, CAROL, "m2", direction="incoming")
        self.assertEqual(again.removed, 0)
        self.assertEqual(json.loads(again.entry.content)["direction"], "incoming")
        self.assertIn("m2", (yield self.ids(ALICE)))

    @inlineCallbacks
    def test_removing_a_conversation(self) -> Any:
        yield self.store.add_message(ALICE, message("b1"))
        yield self.store.mark_conversation_read(ALICE, BOB)
        yield self.store.add_message(ALICE, message("c1", contact=CAROL))
        removal = yield self.store.remove_conversation(ALICE, BOB, "2026-03-02T08:00:00+00:00")
        self.assertEqual(removal.removed, 2)
        self.assertEqual((removal.entry.content_type, removal.entry.content, removal.entry.timestamp,
                          removal.entry.direction), (CONVERSATION_REMOVE, BOB, "2026-03-02T08:00:00+00:00", ""))
        self.assertEqual((yield self.ids(ALICE)), ["c1", removal.entry.message_id])
        yield self.assertFailure(self.store.remove_conversation(ALICE, BOB, "yesterday"), InvalidEntry)

    @inlineCallbacks
    def test_accounts_are_isolated(self) -> Any:
        yield self.store.add_message(ALICE, message("m1"))
        self.assertEqual((yield self.ids(CAROL)), [])
        self.assertEqual((yield self.ids(CAROL, message_id="m1")), [])
        self.assertFalse((yield self.store.update_state(CAROL, "m1", "displayed")))
        self.assertEqual((yield self.store.remove_conversation(CAROL, BOB)).removed, 0)
        self.assertEqual((yield self.store.remove_message(CAROL, BOB, "m1")).removed, 0)
        yield self.store.mark_conversation_read(CAROL, BOB)
        entry = yield self.entry(ALICE, "m1")
        self.assertEqual((entry.state, entry.disposition), ("pending", ("positive-delivery", "display")))
        self.assertEqual((yield self.ids(ALICE)), ["m1"])

    @inlineCallbacks
    def test_values_are_checked(self) -> Any:
        yield self.store.add_message(ALICE, message("big", content="x" * MAX_CONTENT))
        bad = [message("m", content="x" * (MAX_CONTENT - 1) + "é"), message("m", content="a\x00b"),
               message("m", content="\ud800"), message("m", direction="sideways"), message("m", contact="bob"),
               message("m", state="bogus"), message(""), message("m" * 257),
               message("m", disposition=("display", "display")), message("m", disposition=("a",) * 5),
               NewMessage(BOB, "outgoing", "m", "yesterday", "text/plain", "x"),
               NewMessage(BOB, "outgoing", "m", "2026-03-01T10:00:00", "plain", "x"),
               NewMessage(BOB, "outgoing", "m", "2026-03-01T10:00:00", "text/pgp-private-key", "x"),
               NewMessage(BOB, "outgoing", "m", "2026-03-01T10:00:00", "text/pgp-public-key", "x")]
        for new in bad:
            yield self.assertFailure(self.store.add_message(ALICE, new), InvalidEntry)
        for account in ("", "alice", "alice @example.com", "a\n@example.com", "a" * 600 + "@example.com"):
            yield self.assertFailure(self.store.add_message(account, message("m")), InvalidEntry)
        for kwargs in ({"limit": 0}, {"limit": True}, {"since": "soon"}, {"message_id": ""}):
            yield self.assertFailure(self.store.journal(ALICE, **kwargs), InvalidEntry)
        self.assertEqual((yield self.ids(ALICE)), ["big"])

    @inlineCallbacks
    def test_public_keys(self) -> Any:
        self.assertIsNone((yield self.store.public_key(ALICE)))
        yield self.store.set_public_key(ALICE, "-----BEGIN PGP PUBLIC KEY BLOCK-----\n1\n")
        yield self.store.set_public_key(ALICE, "-----BEGIN PGP PUBLIC KEY BLOCK-----\n2\n")
        self.assertEqual((yield self.store.public_key(ALICE)), "-----BEGIN PGP PUBLIC KEY BLOCK-----\n2\n")
        self.assertIsNone((yield self.store.public_key(BOB)))
        yield self.assertFailure(self.store.set_public_key(ALICE, "k" * (MAX_CONTENT + 1)), InvalidEntry)

    @inlineCallbacks
    def test_device_tokens_are_kept_per_app_and_device(self) -> Any:
        phone = DeviceToken.from_request("com.agprojects.sylk-ios", "apns-voip", "ios", "phone", True, "Sylk 3")
        self.assertEqual((phone.token, phone.background_token), ("apns", "voip"))
        tablet = DeviceToken("com.agprojects.sylk", "tablet", "fcm", "android")
        yield self.store.add_device_token(ALICE, tablet)
        yield self.store.add_device_token(ALICE, phone)
        renewed = DeviceToken("com.agprojects.sylk", "tablet", "fcm2", "android")
        yield self.store.add_device_token(ALICE, renewed)
        self.assertEqual((yield self.store.device_tokens(ALICE)), (renewed, phone))
        self.assertEqual((yield self.store.device_tokens(BOB)), ())
        self.assertFalse((yield self.store.remove_device_token(BOB, "com.agprojects.sylk", "tablet")))
        self.assertTrue((yield self.store.remove_device_token(ALICE, "com.agprojects.sylk", "tablet")))
        self.assertFalse((yield self.store.remove_device_token(ALICE, "com.agprojects.sylk", "tablet")))
        self.assertEqual((yield self.store.device_tokens(ALICE)), (phone,))
        yield self.assertFailure(self.store.add_device_token(ALICE, DeviceToken("a", "d", "t" * 513, "ios")),
                                 InvalidEntry)

    @inlineCallbacks
    def test_retention_purges_old_journal_entries_only(self) -> Any:
        yield self.store.add_message(ALICE, message("m1"))
        yield self.store.remove_message(ALICE, BOB, "m1")
        yield self.store.add_message(BOB, message("m2", contact=ALICE))
        yield self.store.set_public_key(ALICE, "key")
        yield self.store.add_device_token(ALICE, DeviceToken("app", "device", "token", "android"))
        self.assertEqual((yield self.store.purge(1)), 0)
        yield tick()
        self.assertEqual((yield self.store.purge(0)), 3)  # tombstones too
        self.assertEqual((yield self.ids(ALICE)), [])
        self.assertEqual((yield self.store.public_key(ALICE)), "key")
        self.assertEqual(len((yield self.store.device_tokens(ALICE))), 1)
        yield self.assertFailure(self.store.purge(-1), InvalidEntry)

    @inlineCallbacks
    def test_a_closed_store_takes_no_calls(self) -> Any:
        yield self.store.add_message(ALICE, message("m1"))
        yield self.store.close()
        yield self.assertFailure(self.store.journal(ALICE), StoreClosed)
        yield self.assertFailure(self.store.close(), StoreClosed)


class SyncBoundContract:
    store: IMessageStore

    @inlineCallbacks
    def test_a_sync_ends_at_its_byte_bound_and_goes_on_from_there(self) -> Any:
        big = "x" * (MAX_CONTENT // 2 - 100)  # (2 bytes a character in UTF-8: within MAX_CONTENT)
        count = MAX_SYNC_BYTES // len(big) + 3
        for n in range(count):
            yield self.store.add_message(ALICE, message(f"m{n}", content="\u00e9" * len(big)))
        first = yield self.store.journal(ALICE)
        self.assertLess(len(first), count)
        rest = yield self.store.journal(ALICE, message_id=first[-1].message_id)
        self.assertEqual([entry.message_id for entry in first + rest], [f"m{n}" for n in range(count)])


class AddressBookContract:
    """The address book part of the contract."""

    store: IMessageStore

    @inlineCallbacks
    def test_entries_are_added_updated_and_deleted(self) -> Any:
        self.assertIsNone((yield self.store.addressbook(ALICE)))
        bob = {"id": "c1", "name": "Bob", "uris": [{"id": "u1", "uri": "bob@example.com"}]}
        self.assertEqual((yield self.store.update_addressbook(ALICE, "contact", "add", bob)), bob)
        yield self.store.update_addressbook(ALICE, "group", "add", {"id": "g1", "name": "Friends", "contacts": []})
        renamed = {**bob, "name": "Robert"}
        self.assertEqual((yield self.store.update_addressbook(ALICE, "contact", "update", renamed)), renamed)
        self.assertEqual((yield self.store.addressbook(ALICE)), {
            "contacts": [renamed], "groups": [{"id": "g1", "name": "Friends", "contacts": []}], "policies": []})
        self.assertEqual((yield self.store.update_addressbook(ALICE, "group", "delete", {"id": "g1"}))["name"],
                         "Friends")
        self.assertEqual((yield self.store.addressbook(ALICE))["groups"], [])
        self.assertIsNone((yield self.store.addressbook(BOB)))  # accounts are isolated

    @inlineCallbacks
    def test_changes_that_do_not_apply_change_nothing(self) -> Any:
        yield self.store.update_addressbook(ALICE, "contact", "add", {"id": "c1"})
        for kind, action, item in (("contact", "add", {"id": "c1"}), ("contact", "update", {"id": "c2"}),
                                   ("policy", "delete", {"id": "p1"}), ("contact", "add", {"name": "no id"}),
                                   ("buddy", "add", {"id": "b1"}), ("contact", "merge", {"id": "c1"}),
                                   ("contact", "add", {"id": "big", "notes": "x" * MAX_ADDRESSBOOK})):
            yield self.assertFailure(self.store.update_addressbook(ALICE, kind, action, item), InvalidEntry)
        self.assertEqual((yield self.store.addressbook(ALICE))["contacts"], [{"id": "c1"}])


class SQLiteMessageStoreTests(MessageStoreContract, AddressBookContract, SyncBoundContract, TestCase):
    timeout = 30

    def make_store(self) -> IMessageStore:
        return SQLiteMessageStore(database_path(self), reactor)


class SQLiteFileTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.path = database_path(self)

    def pragma(self, name: str) -> Any:
        connection = sqlite3.connect(self.path)
        try:
            return connection.execute(f"PRAGMA {name}").fetchone()[0]
        finally:
            connection.close()

    @inlineCallbacks
    def test_a_new_file_is_private_migrated_and_in_wal_mode(self) -> Any:
        store = SQLiteMessageStore(self.path, reactor)
        yield store.open()
        yield store.close()
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertEqual(self.pragma("user_version"), len(MIGRATIONS))
        self.assertEqual(self.pragma("journal_mode"), "wal")

    @inlineCallbacks
    def test_an_empty_file_is_migrated(self) -> Any:
        open(self.path, "wb").close()
        store = SQLiteMessageStore(self.path, reactor)
        yield store.add_message(ALICE, message("m1"))  # without open(): the first call migrates
        yield store.close()
        self.assertEqual(self.pragma("user_version"), len(MIGRATIONS))

    @inlineCallbacks
    def test_reopening_keeps_everything(self) -> Any:
        store = SQLiteMessageStore(self.path, reactor)
        yield store.add_message(ALICE, message("m1"))
        yield store.set_public_key(ALICE, "key")
        yield store.add_device_token(ALICE, DeviceToken("app", "device", "token", "android"))
        yield store.close()
        store = SQLiteMessageStore(self.path, reactor)
        yield store.open()
        self.addCleanup(store.close)
        self.assertEqual([entry.message_id for entry in (yield store.journal(ALICE))], ["m1"])
        self.assertEqual((yield store.public_key(ALICE)), "key")
        self.assertEqual(len((yield store.device_tokens(ALICE))), 1)

    @inlineCallbacks
    def test_a_file_of_the_first_schema_is_migrated_and_keeps_its_data(self) -> Any:
        connection = sqlite3.connect(self.path)
        for statement in MIGRATIONS[0]:
            connection.execute(statement)
        connection.execute("INSERT INTO public_keys (account, public_key, updated_at) VALUES (?, 'key', 0)", (ALICE,))
        connection.execute("PRAGMA user_version = 1")
        connection.commit()
        connection.close()
        store = SQLiteMessageStore(self.path, reactor)
        self.addCleanup(store.close)
        yield store.open()
        self.assertEqual(self.pragma("user_version"), len(MIGRATIONS))
        self.assertEqual((yield store.public_key(ALICE)), "key")
        yield store.update_addressbook(ALICE, "contact", "add", {"id": "c1"})

    @inlineCallbacks
    def test_a_newer_schema_is_refused_and_left_alone(self) -> Any:
        connection = sqlite3.connect(self.path)
        connection.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
        connection.close()
        store = SQLiteMessageStore(self.path, reactor)
        self.addCleanup(store.close)
        yield self.assertFailure(store.open(), SchemaTooNew)
        yield self.assertFailure(store.add_message(ALICE, message("m1")), SchemaTooNew)
        self.assertEqual(self.pragma("user_version"), len(MIGRATIONS) + 1)
        connection = sqlite3.connect(self.path)
        tables = connection.execute("SELECT name FROM sqlite_master").fetchall()
        connection.close()
        self.assertEqual(tables, [])
