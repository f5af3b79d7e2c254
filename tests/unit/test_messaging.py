"""MessagingHub with connections over the fake Janus: what is kept in the store, what an account's other
connections are told (`sync`, the outcome of a MESSAGE), who takes part (only connections on which the account
registered), and account-sync-conversations. The store is a recording stand-in here; the SQLite store itself is
tested by its contract in test_message_store.py."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed

from sylk.gateway.config import WebRTCGatewayConfig
from sylk.gateway import messages
from sylk.gateway.connection import RECOVERY_WAIT, STORE_TIMEOUT, Connection
from sylk.gateway.messaging.hub import FORK_WINDOW, MessagingHub
from sylk.gateway.messaging.store import (CONVERSATION_READ, CONVERSATION_REMOVE, MESSAGE_REMOVE, DeviceToken,
                                          InvalidEntry, JournalEntry, NewMessage, Removal, updated_addressbook)
from sylk.gateway.sip import Originator
from sylk.gateway.sylkrtc import model
from tests.fakes import FakePeer
from tests.unit.test_connection import ALICE, ConnectionTestCase

BOB = "bob@example.com"
ENTRY = JournalEntry(BOB, "2026-12-08T03:00:00Z", ("display",), "m0", "text/plain", "earlier", "incoming", "received")


class RecordingStore:
    """What the hub asks of the store; the journal it answers with (or the error) is set by the test."""

    def __init__(self) -> None:
        self.added: list[tuple[str, NewMessage]] = []
        self.updates: list[tuple[str, str, str]] = []
        self.journal_asked: list[tuple[Any, ...]] = []
        self.entries: tuple[JournalEntry, ...] = (ENTRY,)
        self.journal_error: Exception | None = None
        self.public_keys: dict[str, str] = {}
        self.changes: list[tuple[str, ...]] = []
        self.tokens: dict[tuple[str, str, str], DeviceToken] = {}
        self.books: dict[str, dict[str, Any]] = {}

    def add_message(self, account: str, message: NewMessage) -> Deferred[bool]:
        self.added.append((account, message))
        return succeed(True)

    def update_state(self, account: str, message_id: str, state: str) -> Deferred[bool]:
        self.updates.append((account, message_id, state))
        return succeed(True)

    def mark_conversation_read(self, account: str, contact: str) -> Deferred[JournalEntry]:
        self.changes.append(("read", account, contact))
        return succeed(JournalEntry(contact, "2026-12-08T03:05:00+00:00", (), "r1", CONVERSATION_READ, contact, "",
                                    None))

    def remove_message(self, account: str, contact: str, message_id: str, direction: str) -> Deferred[Removal]:
        self.changes.append(("remove", account, contact, message_id, direction))
        return succeed(Removal(1, ENTRY))

    def remove_received(self, account: str, sender: str, message_id: str) -> Deferred[Removal | None]:
        self.changes.append(("remove received", account, sender, message_id))
        return succeed(Removal(1, ENTRY) if account == BOB else None)

    def remove_conversation(self, account: str, contact: str, timestamp: str | None = None) -> Deferred[Removal]:
        self.changes.append(("remove conversation", account, contact))
        return succeed(Removal(2, JournalEntry(contact, "2026-12-08T03:06:00+00:00", (), "r2", CONVERSATION_REMOVE,
                                               contact, "", None)))

    def add_device_token(self, account: str, token: DeviceToken) -> Deferred[None]:
        self.tokens[(account, token.app_id, token.device_id)] = token
        return succeed(None)

    def remove_device_token(self, account: str, app_id: str, device_id: str) -> Deferred[bool]:
        return succeed(self.tokens.pop((account, app_id, device_id), None) is not None)

    def addressbook(self, account: str) -> Deferred[dict[str, Any] | None]:
        return succeed(self.books.get(account))

    def update_addressbook(self, account: str, kind: str, action: str,
                           item: dict[str, Any]) -> Deferred[dict[str, Any]]:
        try:
            self.books[account], entry = updated_addressbook(self.books.get(account), kind, action, item)
        except InvalidEntry as e:
            return fail(e)
        return succeed(entry)

    def set_public_key(self, account: str, public_key: str) -> Deferred[None]:
        self.public_keys[account] = public_key
        return succeed(None)

    def public_key(self, account: str) -> Deferred[str | None]:
        return succeed(self.public_keys.get(account))

    def journal(self, account: str, message_id: str | None = None, since: str | None = None,
                limit: int = 5000) -> Deferred[tuple[JournalEntry, ...]]:
        self.journal_asked.append((account, message_id, since, limit))
        return fail(self.journal_error) if self.journal_error is not None else succeed(self.entries)


class MessagingTestCase(ConnectionTestCase):
    settings = WebRTCGatewayConfig(websocket_ping_interval=0)

    def setUp(self) -> None:
        super().setUp()
        self.store = RecordingStore()
        self.hub = MessagingHub(self.store, self.janus.clock)  # type: ignore[arg-type]  # (the part it uses)

    def device(self, name: str, register: bool = True) -> tuple[Connection, FakePeer]:
        peer = FakePeer()
        connection = Connection(name, self.backend, self.settings, peer, self.janus.clock, messaging=self.hub)
        connection.open()
        self.janus.flush()
        self.add(connection)
        if register:
            self.assertIsNone(self.request(connection, model.AccountRegister, account=ALICE))
        return connection, peer

    def send(self, connection: Connection, message_id: str = "m1") -> str | None:
        return self.request(connection, model.AccountMessage, account=ALICE, uri=BOB, message_id=message_id,
                            content="hi", timestamp="2026-12-08T03:01:00Z")

    def master_of(self, session: int) -> tuple[int, int]:
        """(session, handle) of the account's master line on that connection's Janus session."""
        (handle,) = [h for h in self.janus.sessions[session] if h not in self.janus.helpers]
        return session, handle

    @staticmethod
    def of(peer: FakePeer, kind: type[model.Event]) -> list[Any]:
        return [event for event in peer.events if isinstance(event, kind)]


class ForkTests(MessagingTestCase):
    def test_a_message_is_kept_and_the_other_device_follows(self) -> None:
        laptop, laptop_peer = self.device("laptop")
        phone, phone_peer = self.device("phone")
        self.assertIsNone(self.send(laptop))
        self.assertEqual(self.store.added, [(ALICE, NewMessage(BOB, "outgoing", "m1", "2026-12-08T03:01:00Z",
                                                                "text/plain", "hi", ("positive-delivery", "display"),
                                                                "pending"))])
        (sync,) = self.of(phone_peer, model.AccountSync)
        self.assertEqual((sync.account, sync.type, sync.action), (ALICE, "message", "add"))
        self.assertEqual(sync.content, {"sylkrtc": "account-message", "account": ALICE, "uri": BOB,
                                        "message_id": "m1", "content": "hi", "content_type": "text/plain",
                                        "timestamp": "2026-12-08T03:01:00Z"})
        self.assertEqual(self.of(laptop_peer, model.AccountSync), [])  # not to itself
        # the SIP answer: the sender and the other device hear it, the store records it
        (outcome,) = self.of(laptop_peer, model.DispositionNotification)
        self.assertEqual(self.of(phone_peer, model.DispositionNotification), [outcome])
        self.assertEqual(self.store.updates, [(ALICE, "m1", "accepted")])

    def test_what_the_far_end_sends_is_kept_once_and_not_forked(self) -> None:
        laptop, laptop_peer = self.device("laptop")
        phone, phone_peer = self.device("phone")
        session = next(iter(self.janus.sessions))
        _, master = self.master_of(session)
        self.janus.incoming_message(session, master, content="hello")
        (received,) = self.of(laptop_peer, model.MessageReceived)
        self.assertEqual(self.of(phone_peer, model.MessageReceived), [])  # the proxy forks to its own binding
        ((account, stored),) = self.store.added
        self.assertEqual((account, stored.direction, stored.contact, stored.message_id, stored.content,
                          stored.state), (ALICE, "incoming", received.sender.uri, received.message_id, "hello",
                                          "received"))

    def test_the_copies_of_an_id_less_message_are_one_message(self) -> None:
        laptop, laptop_peer = self.device("laptop")
        phone, phone_peer = self.device("phone")
        laptop_session, phone_session = list(self.janus.sessions)
        self.janus.incoming_message(*self.master_of(laptop_session), content="hello")  # a SIP phone's: no CPIM
        self.janus.clock.advance(0.05)
        self.janus.incoming_message(*self.master_of(phone_session), content="hello")
        (first,) = self.of(laptop_peer, model.MessageReceived)
        (copy,) = self.of(phone_peer, model.MessageReceived)
        self.assertEqual((copy.message_id, copy.timestamp), (first.message_id, first.timestamp))
        self.assertEqual({message.message_id for _, message in self.store.added}, {first.message_id})
        # the same text again is a new message: on a connection that has the first, or after FORK_WINDOW
        self.janus.incoming_message(*self.master_of(laptop_session), content="hello")
        self.janus.clock.advance(FORK_WINDOW + 1)
        self.janus.incoming_message(*self.master_of(phone_session), content="hello")
        ids = [event.message_id for event in self.of(laptop_peer, model.MessageReceived) +
               self.of(phone_peer, model.MessageReceived)]
        self.assertEqual(len(set(ids)), 3, ids)


    def test_a_connection_that_did_not_register_takes_no_part(self) -> None:
        laptop, laptop_peer = self.device("laptop")
        intruder, intruder_peer = self.device("intruder", register=False)  # any well-formed HA1 is taken by add
        self.assertIsNone(self.send(intruder))  # sent (the proxy authenticates it), but neither kept nor forked
        self.assertEqual((self.store.added, self.store.updates), ([], []))
        self.assertEqual(self.of(laptop_peer, model.AccountSync), [])
        self.assertIsNone(self.send(laptop, "m2"))
        self.assertEqual(self.of(intruder_peer, model.AccountSync), [])  # and hears nothing of the account

    def test_a_removed_account_or_a_closed_connection_leaves(self) -> None:
        laptop, laptop_peer = self.device("laptop")
        phone, phone_peer = self.device("phone")
        tablet, tablet_peer = self.device("tablet")
        self.assertIsNone(self.request(phone, model.AccountRemove, account=ALICE))
        tablet.close()
        self.janus.flush()
        self.assertIsNone(self.send(laptop))
        self.assertEqual(self.of(phone_peer, model.AccountSync) + self.of(tablet_peer, model.AccountSync), [])
        self.assertEqual(self.hub.holders(ALICE), [laptop])


class SyncConversationsTests(MessagingTestCase):
    def sync(self, connection: Connection, **fields: Any) -> str | None:
        return self.request(connection, model.AccountSyncConversations, account=ALICE, **fields)

    def test_the_journal_follows_the_ack(self) -> None:
        laptop, peer = self.device("laptop")
        before = len(peer.events)
        self.assertIsNone(self.sync(laptop, message_id="m0", limit=10))
        self.assertEqual(self.store.journal_asked, [(ALICE, "m0", None, 10)])
        self.assertEqual(peer.events[before:], [])  # the event comes after the ack, on the next reactor turn
        self.janus.clock.advance(0)
        (event,) = peer.events[before:]
        self.assertEqual(event, model.SyncConversations(account=ALICE, messages=[ENTRY.to_sync_item()]))

    def test_only_after_a_registration(self) -> None:
        laptop, _ = self.device("laptop", register=False)
        self.assertEqual(self.sync(laptop), f"Account {ALICE} must register before its conversations can be synced")
        self.assertEqual(self.store.journal_asked, [])

    def test_a_bad_since_is_the_request_error(self) -> None:
        laptop, _ = self.device("laptop")
        self.store.journal_error = InvalidEntry("since must be an ISO 8601 date and time")
        self.assertEqual(self.sync(laptop, since="yesterday"), "since must be an ISO 8601 date and time")

    def test_without_a_store(self) -> None:
        self.hub.store = None
        laptop, _ = self.device("laptop")
        self.assertEqual(self.sync(laptop), "This gateway keeps no message history")


class PublicKeyTests(MessagingTestCase):
    KEY = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n...\n-----END PGP PUBLIC KEY BLOCK-----"

    def publish(self, connection: Connection, content_type: str = "text/pgp-public-key") -> None:
        self.assertIsNone(self.request(connection, model.AccountMessage, account=ALICE, uri=ALICE, message_id="k1",
                                       content=self.KEY, content_type=content_type))

    def lookup(self, connection: Connection, peer: FakePeer, uri: str = ALICE) -> model.PublicKeyFound:
        before = len(peer.events)
        self.assertIsNone(self.request(connection, model.LookupPublicKey, uri=uri))
        self.janus.clock.advance(0)  # after the ack
        (found,) = peer.events[before:]
        return found

    def test_a_published_key_is_what_lookup_finds(self) -> None:
        laptop, peer = self.device("laptop")
        self.assertEqual(self.lookup(laptop, peer), model.PublicKeyFound(uri=ALICE, public_key=None))
        self.publish(laptop)
        self.assertEqual(self.lookup(laptop, peer), model.PublicKeyFound(uri=ALICE, public_key=self.KEY))
        self.assertEqual(self.store.added, [])  # a key is no message of the conversation

    def test_only_a_registered_account_publishes_and_private_keys_are_never_kept(self) -> None:
        intruder, _ = self.device("intruder", register=False)
        self.publish(intruder)
        laptop, _ = self.device("laptop")
        self.publish(laptop, "text/pgp-private-key")  # to the account's own devices only
        self.assertEqual((self.store.public_keys, self.store.added), ({}, []))

    def test_without_a_store(self) -> None:
        self.hub.store = None
        laptop, _ = self.device("laptop")
        self.assertEqual(self.request(laptop, model.LookupPublicKey, uri=BOB), "This gateway keeps no public keys")

    def test_a_senders_key_is_kept_for_the_domains_served_here(self) -> None:
        self.hub._key_domains = lambda domain: domain == "example.com"
        laptop, _ = self.device("laptop")
        master = self.master_of(next(iter(self.janus.sessions)))
        self.janus.incoming_message(*master, content=self.KEY, content_type="text/pgp-public-key")
        self.janus.incoming_message(*master, content="theirs", content_type="text/pgp-public-key",
                                    sender="sip:mallory@elsewhere.test")
        self.assertEqual(self.store.public_keys, {BOB: self.KEY})
        self.assertEqual(self.store.added, [])


class ReadMarkAndRemovalTests(MessagingTestCase):
    """What one device does to the history, the account's other devices follow: here as `sync`, elsewhere through
    the replication MESSAGE to the account itself (whose echo here is dropped)."""

    def replications(self) -> list[tuple[str, str, Any]]:
        return [(body["uri"], body["content_type"], json.loads(body["content"])) for _, body in self.janus.messages
                if body["content_type"].startswith("application/sylk-")]

    def test_a_read_mark(self) -> None:
        laptop, laptop_peer = self.device("laptop")
        phone, phone_peer = self.device("phone")
        self.assertIsNone(self.request(laptop, model.AccountMarkConversationRead, account=ALICE, contact=BOB))
        self.assertEqual(self.store.changes, [("read", ALICE, BOB)])
        self.assertEqual(self.of(phone_peer, model.AccountSync),
                         [model.AccountSync(account=ALICE, type="conversation", action="read",
                                            content={"contact": BOB})])
        self.assertEqual(self.of(laptop_peer, model.AccountSync), [])
        self.assertEqual(self.replications(), [(f"sip:{ALICE}", CONVERSATION_READ, {"contact": BOB})])
        # the proxy brings the replication back to both connections here: neither shows it again
        for session in self.janus.sessions:
            self.janus.incoming_message(*self.master_of(session), content=json.dumps({"contact": BOB}),
                                        content_type=CONVERSATION_READ, sender=f"sip:{ALICE}", displayname=None)
        self.assertEqual(self.of(laptop_peer, model.MessageReceived) + self.of(phone_peer, model.MessageReceived), [])
        self.assertEqual(self.store.added, [])

    def test_a_replication_from_a_device_elsewhere_is_a_message(self) -> None:
        laptop, laptop_peer = self.device("laptop")
        self.janus.incoming_message(*self.master_of(next(iter(self.janus.sessions))),
                                    content=json.dumps({"contact": BOB}), content_type=CONVERSATION_READ,
                                    sender=f"sip:{ALICE}", displayname=None)
        (message,) = self.of(laptop_peer, model.MessageReceived)
        self.assertEqual((message.content_type, json.loads(message.content)), (CONVERSATION_READ, {"contact": BOB}))

    def test_removals(self) -> None:
        laptop, _ = self.device("laptop")
        phone, phone_peer = self.device("phone")
        self.assertIsNone(self.request(laptop, model.AccountRemoveMessage, account=ALICE, contact=BOB,
                                       message_id="m1"))
        self.assertIsNone(self.request(laptop, model.AccountRemoveConversation, account=ALICE, contact=BOB))
        self.assertEqual(self.store.changes, [("remove", ALICE, BOB, "m1", "outgoing"),
                                              ("remove received", BOB, ALICE, "m1"),
                                              ("remove conversation", ALICE, BOB)])
        self.assertEqual([(sync.type, sync.action, sync.content) for sync in self.of(phone_peer, model.AccountSync)],
                         [("message", "remove", {"contact": BOB, "message_id": "m1", "direction": "outgoing"}),
                          ("conversation", "remove", {"contact": BOB, "timestamp": "2026-12-08T03:06:00+00:00"})])
        self.assertEqual([(kind, content) for _, kind, content in self.replications()],
                         [(MESSAGE_REMOVE, {"contact": BOB, "message_id": "m1", "direction": "outgoing"}),
                          (CONVERSATION_REMOVE, {"contact": BOB, "timestamp": "2026-12-08T03:06:00+00:00"})])

    def test_only_for_an_account_registered_here_on_a_gateway_that_keeps_history(self) -> None:
        intruder, _ = self.device("intruder", register=False)
        self.assertEqual(self.request(intruder, model.AccountMarkConversationRead, account=ALICE, contact=BOB),
                         f"Account {ALICE} must register before its conversations can be marked")
        self.assertEqual((self.store.changes, self.replications()), ([], []))
        self.hub.store = None
        laptop, _ = self.device("laptop")
        self.assertEqual(self.request(laptop, model.AccountRemoveConversation, account=ALICE, contact=BOB),
                         "This gateway keeps no message history")



class DeviceTokenAndPushTests(MessagingTestCase):
    """Tokens of accounts registered here are kept (and forgotten at account-unregister, as SylkServer does); a
    message that reaches the gateway by SIP for an account with no connection here wakes its devices."""

    def setUp(self) -> None:
        super().setUp()
        self.pushed: list[tuple[str, Originator, str, str]] = []
        self.hub.push = self  # type: ignore[assignment]  # (records what it is asked to push)

    def message(self, account: str, sender: Originator, content_type: str, content: str) -> Deferred[None]:
        self.pushed.append((account, sender, content_type, content))
        return succeed(None)

    def token(self, connection: Connection) -> None:
        self.assertIsNone(self.request(connection, model.AccountDeviceToken, account=ALICE, token="t1",
                                       platform="ios", device="d1", app="com.example.sylk"))

    def test_kept_once_registered_and_forgotten_at_unregister(self) -> None:
        laptop, _ = self.device("laptop", register=False)
        self.token(laptop)
        self.assertEqual(self.store.tokens, {})  # not proven yet
        self.assertIsNone(self.request(laptop, model.AccountRegister, account=ALICE))
        self.assertEqual(list(self.store.tokens), [(ALICE, "com.example.sylk", "d1")])
        self.assertIsNone(self.request(laptop, model.AccountUnregister, account=ALICE))
        self.assertEqual(self.store.tokens, {})

    def test_a_message_by_sip_wakes_an_account_with_no_connection_here(self) -> None:
        bob = Originator(BOB, "Bob")
        self.hub.received_by_sip(ALICE, bob, "text/plain", "wake up")
        self.hub.received_by_sip(ALICE, bob, "application/im-iscomposing+xml", "<typing/>")  # nobody reads that
        self.assertEqual(self.pushed, [(ALICE, bob, "text/plain", "wake up")])
        laptop, _ = self.device("laptop")
        self.hub.received_by_sip(ALICE, bob, "text/plain", "you are here")  # the device gets it itself
        self.assertEqual(len(self.pushed), 1)


class AddressBookTests(MessagingTestCase):
    def update(self, connection: Connection, action: str, data: dict[str, Any]) -> str | None:
        return self.request(connection, model.AccountUpdateAddressBook, account=ALICE, action=action, type="contact",
                            data=data)

    def test_a_change_is_answered_after_the_ack_and_told_to_the_other_devices(self) -> None:
        laptop, laptop_peer = self.device("laptop")
        phone, phone_peer = self.device("phone")
        bob = {"id": "c1", "name": "Bob", "uris": [{"id": "u1", "uri": BOB}]}
        before = len(laptop_peer.events)
        self.assertIsNone(self.update(laptop, "add", bob))
        self.assertEqual(laptop_peer.events[before:], [])  # after the ack
        self.janus.clock.advance(0)
        updated = model.AddressBookUpdated(account=ALICE, type="contact", action="add", item=bob)
        self.assertEqual(laptop_peer.events[before:], [updated])
        self.assertEqual(self.of(phone_peer, model.AddressBookUpdated), [updated])
        # and what account-fetch-addressbook answers from now on
        self.assertIsNone(self.request(phone, model.AccountFetchAddressBook, account=ALICE))
        self.janus.clock.advance(0)
        (fetched,) = self.of(phone_peer, model.AddressBookFetched)
        self.assertEqual(fetched.addressbook, {"contacts": [bob], "groups": [], "policies": []})

    def test_a_change_that_does_not_apply_fails_for_its_device_only(self) -> None:
        laptop, laptop_peer = self.device("laptop")
        phone, phone_peer = self.device("phone")
        self.assertIsNone(self.update(laptop, "delete", {"id": "c9"}))
        self.janus.clock.advance(0)
        self.assertEqual(self.of(laptop_peer, model.AddressBookUpdateFailed), [model.AddressBookUpdateFailed(
            account=ALICE, type="contact", action="delete", error="No contact c9", id="c9")])
        self.assertEqual(self.of(phone_peer, model.AddressBookUpdateFailed), [])

    def test_only_for_an_account_registered_here(self) -> None:
        intruder, _ = self.device("intruder", register=False)
        self.assertEqual(self.update(intruder, "add", {"id": "c1"}),
                         f"Account {ALICE} must register before its address book can be updated")
        self.assertEqual(self.store.books, {})


class ReviewedEdgeTests(MessagingTestCase):
    """What an attacker's review found, kept fixed."""

    def test_an_imdn_is_not_forked_only_the_sip_answer_is(self) -> None:
        laptop, laptop_peer = self.device("laptop")
        phone, phone_peer = self.device("phone")
        session = next(iter(self.janus.sessions))
        imdn = messages.imdn(BOB, ALICE, "m1", "failed", None)  # bob's app says: not delivered
        self.janus.incoming_message(*self.master_of(session), content=imdn, content_type="message/cpim")
        self.assertEqual(len(self.of(laptop_peer, model.DispositionNotification)), 1)
        self.assertEqual(self.of(phone_peer, model.DispositionNotification), [])  # the proxy brings phone its own

    def test_a_content_type_with_parameters_is_kept_as_its_media_type(self) -> None:
        laptop, _ = self.device("laptop")
        self.janus.incoming_message(*self.master_of(next(iter(self.janus.sessions))), content="hi",
                                    content_type="text/plain;charset=UTF-8")
        ((_, stored),) = self.store.added
        self.assertEqual(stored.content_type, "text/plain")

    def test_a_connection_the_backend_gave_up_on_takes_part_no_more(self) -> None:
        laptop, _ = self.device("laptop")
        self.link.lose("Janus went away")
        self.janus.clock.advance(RECOVERY_WAIT + 1)
        self.assertEqual(self.hub.holders(ALICE), [])

    def test_nothing_is_replicated_for_an_account_removed_meanwhile(self) -> None:
        laptop, _ = self.device("laptop")
        slow: Deferred[JournalEntry] = Deferred()
        self.store.mark_conversation_read = lambda account, contact: slow  # type: ignore[method-assign]
        laptop.handle(model.AccountMarkConversationRead(transaction="t1", account=ALICE, contact=BOB))
        self.assertIsNone(self.request(laptop, model.AccountRemove, account=ALICE))
        before = list(self.janus.requests)
        slow.callback(ENTRY)
        self.janus.flush()
        self.assertEqual(self.janus.requests[len(before):], [])  # no SIP line taken again for a MESSAGE

    def test_a_credential_refused_later_ends_the_part(self) -> None:
        laptop, peer = self.device("laptop")
        laptop.account_event(model.RegistrationStateChanged(account=ALICE, state="failed",
                                                            reason="403 Forbidden"))
        self.assertEqual(self.hub.holders(ALICE), [])

    def test_a_display_notification_the_account_sends_is_in_its_history(self) -> None:
        laptop, _ = self.device("laptop")
        self.assertIsNone(self.request(laptop, model.AccountDispositionNotification, account=ALICE, uri=BOB,
                                       message_id="theirs", state="displayed"))
        self.assertEqual(self.store.updates, [(ALICE, "theirs", "displayed")])


class RecipientCopyTests(MessagingTestCase):
    def test_the_recipients_devices_here_are_told_when_their_copy_goes(self) -> None:
        laptop, _ = self.device("laptop")
        bob_peer = FakePeer()
        self.hub.join(BOB, _Told(bob_peer))
        self.assertIsNone(self.request(laptop, model.AccountRemoveMessage, account=ALICE, contact=BOB,
                                       message_id="m1"))
        self.assertEqual([(sync.account, sync.type, sync.action, sync.content) for sync in
                          self.of(bob_peer, model.AccountSync)],
                         [(BOB, "message", "remove", {"contact": ALICE, "message_id": "m1", "direction": "incoming"})])


class _Told:
    """A connection of another account, as the hub sees it."""

    name = "told"

    def __init__(self, peer: FakePeer) -> None:
        self.peer = peer

    def deliver(self, event: model.Event) -> None:
        self.peer.send_event(event)


class StoreTimeoutTests(MessagingTestCase):
    def test_a_store_that_does_not_answer_costs_an_error_not_an_open_request(self) -> None:
        laptop, _ = self.device("laptop")
        self.store.journal = lambda *args, **kwargs: Deferred()  # type: ignore[method-assign]  # (never answers)
        answer = laptop.handle(model.AccountSyncConversations(transaction="t", account=ALICE))
        self.janus.clock.advance(STORE_TIMEOUT + 1)
        self.assertEqual(self.answer(answer), f"The message store did not answer within {STORE_TIMEOUT:g} s")


class ContainmentTests(MessagingTestCase):
    def test_a_connection_failing_to_take_an_event_costs_only_itself(self) -> None:
        laptop, _ = self.device("laptop")
        broken, tablet = _Told(FakePeer()), _Told(FakePeer())
        broken.deliver = lambda event: 1 / 0  # type: ignore[method-assign]
        self.hub.join(ALICE, broken)
        self.hub.join(ALICE, tablet)
        self.assertIsNone(self.send(laptop))  # the sender still gets its ack
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)  # the sync and the outcome
        self.assertEqual(len(self.of(tablet.peer, model.AccountSync)), 1)
