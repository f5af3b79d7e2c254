"""MessagingHub: an account's messages beyond one connection — kept in the message store, and followed by the
account's other connections.

One per gateway. Each connection tells it what its accounts send (`sent`) and every account event it passes to
its browser (`account_event`); the hub keeps messages and their news in the store (IMessageStore), and forks
what only one connection can know to the account's other connections, as SylkServer does: a `sync` event for a
message one of them sent, and the outcome of that message's SIP transaction (`accepted`/`failed`). What the far
end sends (messages, IMDNs) is not forked: the proxy forks it to every registered connection already, and the
store keeps one copy (a message is stored once per message_id). A message without an id of its own (no CPIM
envelope: a SIP phone's) would be named anew by each connection it reaches; the hub gives the copies that other
connections of the account receive within FORK_WINDOW the first copy's id and timestamp, so that the account's
devices and its history agree on one message.

Read marks and removals (`mark_read`, `remove_message`, `remove_conversation`) change the store, go to the
account's other connections here as `sync`, and to its devices elsewhere as SylkServer's replication MESSAGEs:
plain MESSAGEs from the account to itself, of types application/sylk-conversation-read, -message-remove and
-conversation-remove with JSON content. The proxy brings those back to this gateway's connections too, which
were told already: the hub drops that echo (the same replication from the account within FORK_WINDOW).
A replication from a device elsewhere is a message like any other, as SylkServer treats it: kept, and shown.

Only connections on which the account proved its credentials, by a registration the registrar accepted (`join`),
take part: their events are kept and forked, and they get the account's forked events. `account-add` takes any
well-formed HA1, so a connection that merely added somebody's account learns nothing of it and can put nothing in
its history or on its other devices (an account may still send without registering: the proxy authenticates the
MESSAGE, but it is neither kept nor forked). A connection leaves when it removes the account or closes; one kept
without a socket (`connection-keep`) stays, and gets what it missed when it resumes.

The store is called off the reactor (its Deferreds); a store failure is logged and loses only the history entry,
never the message (it was sent, or delivered to the browser, already).
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from sylk.gateway import messages
from sylk.gateway.sip import Originator
from sylk.gateway.messaging.store import (CONVERSATION_READ, CONVERSATION_REMOVE, INCOMING, MESSAGE_REMOVE,
                                          NOT_JOURNALLED, OUTGOING, UNREAD_TYPES, DeviceToken, IMessageStore,
                                          InvalidEntry, JournalEntry, NewMessage, Removal)
from sylk.gateway.sylkrtc.model import (AccountMessage, AccountSync, AddressBookUpdated, DispositionNotification,
                                        Event, MessageReceived)

PUBLIC_KEY = "text/pgp-public-key"
# What the browser's MESSAGEs ask the recipient to report (messages.envelope sends the same).
ASKED_NOTIFICATIONS = ("positive-delivery", "display")
# The copies of one id-less message that the proxy forks to an account's connections, and the echo of a
# replication, arrive within milliseconds; the same text again from the same sender on a connection that already
# has it is a new message.
FORK_WINDOW = 30.0
MAX_RECENT = 10000  # id-less messages (and replications) remembered for that; the oldest are forgotten first

# Sends a replication MESSAGE (content type, content) to the account itself: SIPAccount.replicate.
Replicate = Callable[[str, str], None]


@dataclass
class _Named:
    message_id: str
    timestamp: str
    at: float
    seen_by: set[int] = field(default_factory=set)  # id() of the connections that received a copy


class HistoryUnavailable(Exception):
    """The gateway keeps no history now (no store, or it could not be opened): a MESSAGE cannot be kept."""


class Bus(Protocol):
    def publish(self, account: str, event: Event) -> None:
        """Tell the other gateways sharing the store (messaging/events.py)."""


class Notifier(Protocol):
    def message(self, account: str, sender: Originator, content_type: str, content: str) -> Deferred[None]:
        """Wake the account's devices for a message (messaging/push.py)."""


class MessagingPeer(Protocol):
    """A connection, as the hub sees it."""

    name: str

    def deliver(self, event: Event) -> None:
        """Pass an event of another connection's making to the browser as it is (no hooks run again)."""


class MessagingHub:
    log = Logger()

    def __init__(self, store: IMessageStore | None, clock: IReactorTime,
                 key_domains: Callable[[str], bool] = lambda domain: False) -> None:
        """`store`: None keeps no history (messages are only relayed; account-sync-conversations is refused).
        `key_domains`: whose senders' public keys are kept from the messages that carry them (the domains the
        gateway serves: the proxy authenticates their senders)."""
        self.store = store
        self._key_domains = key_domains
        self.push: Notifier | None = None  # wakes the devices of accounts with no connection here
        self.bus: Bus | None = None  # the other gateways sharing the store
        self._clock = clock
        self._holders: dict[str, dict[MessagingPeer, None]] = {}  # account -> connections, in the order they joined
        # id-less messages lately received, by (account, sender, content type, digest of the content)
        self._recent: OrderedDict[tuple[str, str, str, bytes], _Named] = OrderedDict()
        # replications lately sent, by (account, content type, content): when sent
        self._replications: OrderedDict[tuple[str, str, str], float] = OrderedDict()

    def join(self, account: str, connection: MessagingPeer) -> None:
        """`account` proved its credentials on `connection`: it gets the account's forked events from now on."""
        self._holders.setdefault(account, {})[connection] = None

    def leave(self, account: str, connection: MessagingPeer) -> None:
        holders = self._holders.get(account)
        if holders is not None:
            holders.pop(connection, None)
            if not holders:
                del self._holders[account]

    def leave_all(self, connection: MessagingPeer) -> None:
        """`connection` is closing or gone: it takes part in no account any more."""
        for account in [account for account, holders in self._holders.items() if connection in holders]:
            self.leave(account, connection)

    def holders(self, account: str) -> list[MessagingPeer]:
        return list(self._holders.get(account, ()))

    def holds(self, account: str, connection: MessagingPeer) -> bool:
        return connection in self._holders.get(account, {})

    def sent(self, origin: MessagingPeer, request: AccountMessage) -> None:
        """`origin`'s browser sent a message: kept as pending, and its other connections are told (`sync`)."""
        if not self.holds(request.account, origin):
            return
        timestamp = request.timestamp or messages.now()
        if messages.media_type(request.content_type) == PUBLIC_KEY:
            if self.store is not None:  # the account publishes its key (what lookup-public-key answers)
                self._stored(self.store.set_public_key(request.account, request.content), request.account)
        else:
            self._keep(request.account, NewMessage(request.uri, OUTGOING, request.message_id, timestamp,
                                                   request.content_type, request.content, ASKED_NOTIFICATIONS,
                                                   "pending"))
        content = {"sylkrtc": request.name, "account": request.account, "uri": request.uri,
                   "message_id": request.message_id, "content": request.content,
                   "content_type": request.content_type, "timestamp": timestamp}
        self._fork(origin, request.account, AccountSync(account=request.account, type="message", action="add",
                                                         content=content))

    def account_event(self, origin: MessagingPeer, event: Event) -> Event | None:
        """An event `origin` is about to pass to its browser, as it is to pass it (None: not at all): messages
        and their news are kept; the outcome of its own MESSAGE is forked to the account's other connections."""
        if not isinstance(event, MessageReceived | DispositionNotification) or event.session is not None or \
                not self.holds(event.account, origin):
            return event
        if isinstance(event, MessageReceived):
            if self._is_echo(event):
                return None
            event, _ = self._received(origin, event)
        else:
            self.notified(event.account, event.message_id, event.state)
            if event.of_answer:  # (an IMDN, of any state, reaches every device through the proxy)
                self._fork(origin, event.account, event)
        return event

    def _one_name(self, origin: object, event: MessageReceived) -> MessageReceived:
        """The first copy's id and timestamp for another copy of an id-less message (a connection's, or the SIP
        entry point's)."""
        now = self._clock.seconds()
        self._forget_old(self._recent, lambda named: named.at)
        key = (event.account, event.sender.uri, event.content_type, hashlib.sha256(event.content.encode()).digest())
        named = self._recent.get(key)
        if named is None or id(origin) in named.seen_by:
            self._recent.pop(key, None)
            self._recent[key] = _Named(event.message_id, event.timestamp, now, {id(origin)})
            return event
        named.seen_by.add(id(origin))
        return MessageReceived(**{**event.values(), "message_id": named.message_id, "timestamp": named.timestamp})

    def journal(self, account: str, message_id: str | None, since: str | None,
                limit: int) -> Deferred[list[dict[str, Any]]]:
        """The account's stored entries as sync-conversations items; fails with InvalidEntry for a bad `since`."""
        assert self.store is not None
        return self.store.journal(account, message_id, since, limit).addCallback(
            lambda entries: [entry.to_sync_item() for entry in entries])

    def mark_read(self, origin: MessagingPeer, account: str, contact: str, replicate: Replicate) -> Deferred[None]:
        """The conversation with `contact` is read: on the account's other connections and devices too."""
        assert self.store is not None

        def done(_: JournalEntry) -> None:
            self._tell_devices(origin, account, "conversation", "read", {"contact": contact}, CONVERSATION_READ,
                               replicate)
        return self.store.mark_conversation_read(account, contact).addCallback(done)

    def remove_message(self, origin: MessagingPeer, account: str, contact: str, message_id: str,
                       replicate: Replicate) -> Deferred[None]:
        assert self.store is not None
        store = self.store

        def done(_: Removal) -> Deferred[None] | None:
            content = {"contact": contact, "message_id": message_id, "direction": OUTGOING}
            self._tell_devices(origin, account, "message", "remove", content, MESSAGE_REMOVE, replicate)
            if not self.holds(account, origin):
                return None
            # the recipient's copy too, when the recipient keeps its history here (as SylkServer does)
            return store.remove_received(contact, account, message_id).addCallback(theirs)

        def theirs(removal: Removal | None) -> None:
            if removal is not None:
                self._fork(None, contact, AccountSync(account=contact, type="message", action="remove", content={
                    "contact": account, "message_id": message_id, "direction": INCOMING}))
        return self.store.remove_message(account, contact, message_id, OUTGOING).addCallback(done)

    def remove_conversation(self, origin: MessagingPeer, account: str, contact: str,
                            replicate: Replicate) -> Deferred[None]:
        assert self.store is not None

        def done(removal: Removal) -> None:
            content = {"contact": contact, "timestamp": removal.entry.timestamp}
            self._tell_devices(origin, account, "conversation", "remove", content, CONVERSATION_REMOVE, replicate)
        return self.store.remove_conversation(account, contact).addCallback(done)

    def update_addressbook(self, origin: MessagingPeer, account: str, kind: str, action: str,
                           item: dict[str, Any]) -> Deferred[dict[str, Any]]:
        """Change the account's address book; the account's other connections are told (addressbook-updated)."""
        assert self.store is not None

        def done(entry: dict[str, Any]) -> dict[str, Any]:
            if self.holds(account, origin):
                self._fork(origin, account, AddressBookUpdated(account=account, type=kind, action=action, item=entry))
            return entry
        return self.store.update_addressbook(account, kind, action, item).addCallback(done)

    def _tell_devices(self, origin: MessagingPeer, account: str, kind: str, action: str, content: dict[str, str],
                      content_type: str, replicate: Replicate) -> None:
        if not self.holds(account, origin):
            return  # removed (or closed) while the store worked: its SIP lines are gone, and so is its say
        self._fork(origin, account, AccountSync(account=account, type=kind, action=action, content=content))
        text = json.dumps(content)
        self._forget_old(self._replications, lambda sent_at: sent_at)
        self._replications[(account, content_type, text)] = self._clock.seconds()
        replicate(content_type, text)

    def _tell(self, connection: MessagingPeer, event: Event) -> None:
        """One connection's failure to take an event stays its own: the others (and whoever caused it) go on."""
        try:
            connection.deliver(event)
        except Exception:
            self.log.failure("Connection {name}: an event of another device failed", name=connection.name)

    def _is_echo(self, event: MessageReceived) -> bool:
        """Whether a message is a replication this gateway sent, brought back by the proxy."""
        if event.sender.uri != event.account:
            return False
        self._forget_old(self._replications, lambda sent_at: sent_at)
        return (event.account, event.content_type, event.content) in self._replications

    def _forget_old(self, recent: OrderedDict[Any, Any], when: Callable[[Any], float]) -> None:
        """Drop the oldest entries past the window (or beyond MAX_RECENT) from an insertion-ordered memory."""
        now = self._clock.seconds()
        while recent and (len(recent) >= MAX_RECENT or now - when(next(iter(recent.values()))) > FORK_WINDOW):
            recent.popitem(last=False)

    def received_by_sip(self, account: str, sender: Originator, content_type: str, content: str) -> None:
        """A MESSAGE for `account` the proxy forked to the gateway's SIP entry point (sipentry.py): kept for the
        account's devices, offline ones included, under the name its copies on the connections here get; an IMDN
        is news of the account's message. ValueError when it is unusable, HistoryUnavailable without a store."""
        if self.store is None:
            raise HistoryUnavailable("no message store")
        event = messages.incoming_event(account, None, sender, content_type, content)
        if event is None:
            raise ValueError(f"unusable content type {content_type[:128]!r}")
        if isinstance(event, DispositionNotification):
            self.notified(account, event.message_id, event.state)
            return
        assert isinstance(event, MessageReceived)
        if self._is_echo(event):
            return
        event, kept = self._received(self, event)
        if self.push is not None and kept is not None and not self._holders.get(account) and \
                messages.media_type(event.content_type) in UNREAD_TYPES:
            push, content_type, content = self.push, event.content_type, event.content
            kept.addCallback(lambda new: push.message(account, sender, content_type, content) if new else None)

    def _received(self, origin: object, event: MessageReceived) -> tuple[MessageReceived, Deferred[bool] | None]:
        """A message for the account, from a connection's copy or the SIP entry point's: named as its other copies
        are, kept (with its Deferred, see _keep), and a sender's public key kept as SylkServer keeps it (what
        lookup-public-key answers for them), for the senders of the domains served here."""
        if event.named_here:
            event = self._one_name(origin, event)
        if self.store is not None and messages.media_type(event.content_type) == PUBLIC_KEY and \
                self._key_domains(event.sender.uri.rpartition("@")[2]):
            self._stored(self.store.set_public_key(event.sender.uri, event.content), event.account)
        kept = self._keep(event.account, NewMessage(event.sender.uri, INCOMING, event.message_id, event.timestamp,
                                                    event.content_type, event.content,
                                                    tuple(event.disposition_notification or ()), "received"))
        return event, kept

    def notified(self, account: str, message_id: str, state: str) -> None:
        """News of a message's state: the SIP answer, the far end's IMDN, or the account's own report on one it
        received (displayed, ...). Its history says so too."""
        if self.store is not None:
            self._stored(self.store.update_state(account, message_id, state), account)

    def keep_device_token(self, account: str, token: DeviceToken) -> None:
        """A device token of an account registered here (so that its devices can be woken while none is
        connected); nothing without a store."""
        if self.store is not None:
            self._stored(self.store.add_device_token(account, token), account)

    def forget_device_token(self, account: str, app_id: str, device_id: str) -> None:
        if self.store is not None:
            self._stored(self.store.remove_device_token(account, app_id, device_id), account)

    def public_key(self, account: str) -> Deferred[str | None]:
        assert self.store is not None
        return self.store.public_key(account)

    def _keep(self, account: str, message: NewMessage) -> Deferred[bool] | None:
        """Store a message under its bare media type (`text/plain;charset=UTF-8` is text/plain: the apps compare
        it, and the text is Unicode by now); the Deferred fires with whether it was new (False after an error,
        logged)."""
        media_type = messages.media_type(message.content_type)
        if media_type in NOT_JOURNALLED or self.store is None:
            return None  # (keys pass between an account's devices, and are no conversation)
        return self._stored(self.store.add_message(account, replace(message, content_type=media_type)), account)

    def _stored(self, storing: Deferred[Any], account: str) -> Deferred[Any]:
        return storing.addErrback(self._not_stored, account)

    def _not_stored(self, failure: Failure, account: str) -> None:
        if failure.check(InvalidEntry):
            self.log.warn("Not kept in the history of {account}: {error}", account=account, error=failure.value)
        else:
            self.log.failure("The message store failed for {account}", failure, account=account)

    def remote(self, account: str, event: Event) -> None:
        """Another gateway's event for `account` (what it forked there): to the account's connections here."""
        for connection in self.holders(account):
            self._tell(connection, event)

    def _fork(self, origin: MessagingPeer | None, account: str, event: Event) -> None:
        for connection in self.holders(account):
            if connection is not origin:
                self._tell(connection, event)
        if self.bus is not None:
            self.bus.publish(account, event)

