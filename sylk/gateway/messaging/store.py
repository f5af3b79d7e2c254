"""The message store: what it keeps, the values it takes and returns, and the checks every backend applies.

SylkServer's gateway (`storage.py`: a Cassandra and a file backend) keeps, per account, a *journal* of messages in
both directions plus entries that record read marks and removals; devices replay it with
`account-sync-conversations`. It also keeps one PGP public key per account and the push device tokens of each
account's devices. This module says the same in an interface, `IMessageStore`, so that SQLite (embedded) and
PostgreSQL (several gateways) backends are interchangeable and pass one contract test.

Every call names the account it acts for, and every query a backend runs filters on it: no call reads or changes
another account's rows. Content comes from browsers and SIP peers, so every value is checked against the bounds
below before it is stored; a value out of bounds fails the call's Deferred with `InvalidEntry` and stores nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import Interface

from sylk.gateway.messages import MAX_CONTENT_TYPE, MAX_DATETIME, MAX_MESSAGE_ID, MAX_NOTIFICATIONS

# Bounds. Content: 64 KiB of UTF-8, the gateway's default max_message_size and SylkServer's practical MESSAGE size.
MAX_CONTENT = 64 * 1024  # bytes of UTF-8, for message content and public keys
MAX_AOR = 512  # characters, as the model's AOR field
MAX_TOKEN_FIELD = 512  # characters: a push token (APNs 64 hex digits, FCM about 160), app and device ids
MAX_USER_AGENT = 1024
MAX_SYNC = 5000  # journal entries per sync: SylkServer's default limit; larger requests get this many
# A sync answer ends once its contents reach about this many characters (at least one entry): 5,000 entries of
# 64 KiB would be 320 MB in one event, built on the reactor thread. The device syncs again after the last id.
MAX_SYNC_BYTES = 4 * 1024 * 1024
DEFAULT_RETENTION_DAYS = 365  # SylkServer's Cassandra tables expire rows after a year (default_time_to_live)

# Address books: the kinds of entry (and the lists they are in), and the size of a whole book once encoded.
ADDRESSBOOK_KINDS = {"contact": "contacts", "group": "groups", "policy": "policies"}
ADDRESSBOOK_ACTIONS = ("add", "update", "delete")
MAX_ADDRESSBOOK = 1024 * 1024

# Content types of the journal entries the store writes itself (SylkServer's names: the apps depend on them).
CONVERSATION_READ = "application/sylk-conversation-read"
CONVERSATION_REMOVE = "application/sylk-conversation-remove"
MESSAGE_REMOVE = "application/sylk-message-remove"
IMDN_ENTRY = "message/imdn"  # a received disposition notification, as the handler journals it
# Key material never goes into the journal: public keys have their own table (set_public_key), private keys (which
# the apps replicate between an account's own devices through the SIP proxy) are never stored, as in SylkServer.
NOT_JOURNALLED = ("text/pgp-public-key", "text/pgp-private-key")

INCOMING, OUTGOING = "incoming", "outgoing"
# What a person reads, for unread counts (SylkServer's list).
UNREAD_TYPES = ("text/plain", "text/html", "application/sylk-file-transfer")

# A message's state only moves forward along this order; an update to an earlier or equal rank is ignored.
# failed/forbidden/error rank below delivered: a late failure (say, one fork of a forked MESSAGE) cannot undo a
# delivery the far end confirmed, while a delivery after a failure is news. `received` (incoming messages) and the
# store's own entries (state None) never change state.
STATE_RANK = {"pending": 0, "accepted": 1, "failed": 2, "forbidden": 2, "error": 2, "delivered": 3, "displayed": 4}
FIXED_RANK = 100
RECEIVED = "received"
MESSAGE_STATES = (*STATE_RANK, RECEIVED)  # SylkServer's sync model accepts exactly these
# RFC 5438 processing notifications: valid IMDN states that say nothing the state does not (see update_state).
UNRANKED_STATES = ("processed", "stored")

# How far a message's disposition requests have been answered (see JournalEntry.disposition).
NOTIFIED_NONE, NOTIFIED_DELIVERED, NOTIFIED_DISPLAYED = 0, 1, 2

_NOTIFICATION = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,31}")
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidEntry(ValueError):
    """A value the store refuses: out of bounds, malformed, or of a kind it never stores."""


class StoreClosed(RuntimeError):
    """The store was closed; it takes no more calls."""


class SchemaTooNew(RuntimeError):
    """The database was written by a newer sylkgateway; this one refuses to touch it rather than downgrade it."""


@dataclass(frozen=True)
class NewMessage:
    """A message to store for an account, either direction, as the client or the SIP peer sent it."""

    contact: str  # the other party's AOR
    direction: str  # INCOMING or OUTGOING
    message_id: str
    timestamp: str  # ISO 8601, kept verbatim as sent
    content_type: str
    content: str
    disposition: tuple[str, ...] = ()  # IMDN Disposition-Notification requested: positive-delivery, display, ...
    state: str = "pending"  # outgoing: pending (or accepted for a copy relayed by SIP); incoming: received


@dataclass(frozen=True)
class JournalEntry:
    """One entry of an account's journal, as `sync-conversations` reports it.

    `disposition` is what is still to be answered: the requested notifications, minus positive-delivery once the
    message is delivered, and none once it is displayed or its conversation was marked read (SylkServer edits the
    stored list the same way)."""

    contact: str
    timestamp: str
    disposition: tuple[str, ...]
    message_id: str
    content_type: str
    content: str
    direction: str  # INCOMING, OUTGOING, or "" for read marks and conversation removals (as SylkServer)
    state: str | None  # None for the store's own entries

    def to_sync_item(self) -> dict[str, Any]:
        """The item of a `sync-conversations` event's `messages` (SylkServer's `Message`, all keys present)."""
        return {"contact": self.contact, "timestamp": self.timestamp, "disposition": list(self.disposition),
                "message_id": self.message_id, "content_type": self.content_type, "content": self.content,
                "direction": self.direction, "state": self.state}


@dataclass(frozen=True)
class Removal:
    """The outcome of a removal: how many stored entries it removed, and the journal entry that records it (written
    even when nothing was there, so that devices holding a copy the store no longer has still follow)."""

    removed: int
    entry: JournalEntry


@dataclass(frozen=True)
class DeviceToken:
    """A device's push token. SylkServer keys them by (account, app_id, device_id): a device re-registering with a
    new token replaces its old one."""

    app_id: str
    device_id: str
    token: str
    platform: str  # pn-type: ios, android, ...
    silent: bool = False
    background_token: str | None = None  # iOS: the VoIP (PushKit) token, sent as "<token>-<background>"
    user_agent: str | None = None

    @classmethod
    def from_request(cls, app: str, token: str, platform: str, device: str, silent: bool,
                     user_agent: str | None) -> DeviceToken:
        """From `account-devicetoken`, splitting an iOS token pair as SylkServer does."""
        background = None
        if platform == "ios" and "-" in token:
            token, background = token.split("-", 1)
        return cls(app_id=app, device_id=device, token=token, platform=platform, silent=silent,
                   background_token=background, user_agent=user_agent)


class IMessageStore(Interface):
    """An account's messages and what goes with them. Every method returns a Deferred (none blocks the reactor);
    invalid values fail it with InvalidEntry, a closed store with StoreClosed."""

    def open() -> Deferred[None]:
        """Create or migrate the schema (SchemaTooNew for a database of a newer version). Other calls open the
        store themselves; the service calls this at start so that a bad database stops it there."""

    def close() -> Deferred[None]:
        """Finish the calls under way, then release the database."""

    def add_message(account: str, message: NewMessage) -> Deferred[bool]:
        """Append a message to the account's journal; False (and nothing changed) when the account already has an
        entry with this message_id, as SylkServer ignores a duplicate. A removed message keeps its id until
        retention, so a late duplicate of it is not brought back. Key material is refused (NOT_JOURNALLED)."""

    def update_state(account: str, message_id: str, state: str) -> Deferred[bool]:
        """Record news of a message: its state moves forward along STATE_RANK only (SylkServer overwrites, so a
        200 OK arriving after the far end's displayed IMDN turned a read message back into accepted); delivered
        and displayed also answer its disposition requests, for incoming messages too (whose state stays
        received). processed and stored (RFC 5438) change nothing. True when something changed."""

    def mark_conversation_read(account: str, contact: str) -> Deferred[JournalEntry]:
        """Every message with the contact counts as displayed (no disposition left), earlier read marks of the
        contact are dropped (as SylkServer's Cassandra backend does), and a read mark is journalled:
        CONVERSATION_READ, content = the contact, direction "", a new message_id, timestamp now."""

    def remove_message(account: str, contact: str, message_id: str, direction: str = OUTGOING) -> Deferred[Removal]:
        """Remove the account's message with that id in its conversation with the contact and journal a
        MESSAGE_REMOVE entry (content: JSON {contact, message_id, direction}; direction "outgoing" when the
        account removed it, "incoming" when the sender removed it from the account's copy)."""

    def remove_received(account: str, sender: str, message_id: str) -> Deferred[Removal | None]:
        """The sender took back their message: remove the account's copy (received from `sender` with that id)
        and journal a MESSAGE_REMOVE entry (direction "incoming"), as SylkServer removes the receiver's copy;
        None, and nothing journalled, when the account has no such copy (it may not even be one of ours)."""

    def remove_conversation(account: str, contact: str, timestamp: str | None = None) -> Deferred[Removal]:
        """Remove every entry of the conversation with the contact and journal a CONVERSATION_REMOVE entry
        (content = the contact, direction ""; timestamp: the one given, as a remote device's request carries it,
        else now)."""

    def journal(account: str, message_id: str | None = None, since: str | None = None,
                limit: int = MAX_SYNC) -> Deferred[tuple[JournalEntry, ...]]:
        """The account's journal in the order it was written, oldest first, at most `limit` (1..MAX_SYNC; more is
        capped) entries and about MAX_SYNC_BYTES of content: those after the entry with `message_id` when the account has one, else those stored
        after `since` (ISO 8601; without an offset: UTC), else all it keeps. Removed entries are left out."""

    def set_public_key(account: str, public_key: str) -> Deferred[None]:
        """Store the account's PGP public key (replacing the previous one)."""

    def public_key(account: str) -> Deferred[str | None]:
        """The account's public key, or None. (`lookup-public-key` reads any account's key: it is public.)"""

    def add_device_token(account: str, token: DeviceToken) -> Deferred[None]:
        """Store a device's token, replacing the one of the same (app_id, device_id)."""

    def remove_device_token(account: str, app_id: str, device_id: str) -> Deferred[bool]:
        """Forget a device's token (account-unregister, or HTTP 410 from the push service); True if there was one."""

    def device_tokens(account: str) -> Deferred[tuple[DeviceToken, ...]]:
        """The account's device tokens, by app_id and device_id."""

    def addressbook(account: str) -> Deferred[dict[str, Any] | None]:
        """The account's address book ({"contacts": [...], "groups": [...], "policies": [...]}), or None when
        it has none stored."""

    def update_addressbook(account: str, kind: str, action: str, item: dict[str, Any]) -> Deferred[dict[str, Any]]:
        """Add, update or delete one entry (`kind`: contact, group or policy; `item` an object with a string `id`)
        of the account's address book, atomically; the entry as it now is (as it was, for a delete). InvalidEntry
        for an add of an id that exists, an update or delete of one that does not, or a book grown beyond
        MAX_ADDRESSBOOK."""

    def unread_count(account: str) -> Deferred[int]:
        """How many messages the account received that ask to be reported displayed and are not yet (nor their
        conversation marked read), of the types a person reads (UNREAD_TYPES): the badge of a push notification,
        as SylkServer counts it."""

    def purge(older_than_days: float) -> Deferred[int]:
        """Retention: delete the journal entries of every account stored more than that many days ago; the
        number deleted. The operator's call (a timer), never reachable from a request."""


# Checks shared by the backends: each returns the value it checked, or raises InvalidEntry.

def check_text(value: object, what: str, most: int, least: int = 1) -> str:
    if not isinstance(value, str):
        raise InvalidEntry(f"{what} must be a string")
    if not least <= len(value) <= most:
        raise InvalidEntry(f"{what} must be {least} to {most} characters long")
    if _CONTROL.search(value):
        raise InvalidEntry(f"{what} must not contain control characters")
    return value


def check_aor(value: object, what: str = "account") -> str:
    """An AOR as the model normalised it (user@domain); compared exactly."""
    aor = check_text(value, what, MAX_AOR)
    if "@" not in aor or any(char.isspace() for char in aor):
        raise InvalidEntry(f"{what} must be an address of record (user@domain)")
    return aor


def check_message_id(value: object) -> str:
    return check_text(value, "message_id", MAX_MESSAGE_ID)


def check_content(value: object, what: str = "content") -> str:
    """Any text (line breaks and tabs included) up to MAX_CONTENT bytes of UTF-8; no NUL, which PostgreSQL's
    text cannot hold, and no lone surrogates, which have no UTF-8 form."""
    if not isinstance(value, str):
        raise InvalidEntry(f"{what} must be a string")
    if "\x00" in value:
        raise InvalidEntry(f"{what} must not contain NUL characters")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidEntry(f"{what} is not valid Unicode") from None
    if size > MAX_CONTENT:
        raise InvalidEntry(f"{what} is {size} bytes long (at most {MAX_CONTENT})")
    return value


def check_timestamp(value: object, what: str = "timestamp") -> datetime:
    """An ISO 8601 date and time (as Python reads it), returned aware: without an offset it is taken as UTC."""
    text = check_text(value, what, MAX_DATETIME)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidEntry(f"{what} must be an ISO 8601 date and time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def check_new_message(message: NewMessage) -> NewMessage:
    check_aor(message.contact, "contact")
    if message.direction not in (INCOMING, OUTGOING):
        raise InvalidEntry(f"direction must be {INCOMING} or {OUTGOING}")
    check_message_id(message.message_id)
    check_timestamp(message.timestamp)
    content_type = check_text(message.content_type, "content_type", MAX_CONTENT_TYPE)
    if not _CONTENT_TYPE.fullmatch(content_type):
        raise InvalidEntry("content_type must be a MIME type (type/subtype)")
    if content_type.lower() in NOT_JOURNALLED:
        raise InvalidEntry(f"{content_type} is not stored as a message")
    check_content(message.content)
    check_disposition(message.disposition)
    if message.state not in MESSAGE_STATES:
        raise InvalidEntry(f"state must be one of {', '.join(MESSAGE_STATES)}")
    return message


def check_disposition(values: object) -> tuple[str, ...]:
    if not isinstance(values, tuple) or len(values) > MAX_NOTIFICATIONS:
        raise InvalidEntry(f"disposition must be a tuple of at most {MAX_NOTIFICATIONS} values")
    if len(set(values)) != len(values) or not all(isinstance(value, str) and _NOTIFICATION.fullmatch(value)
                                                  for value in values):
        raise InvalidEntry("disposition values must be distinct IMDN tokens (positive-delivery, display, ...)")
    return values


def check_update_state(value: object) -> str:
    if value not in STATE_RANK and value not in UNRANKED_STATES:
        raise InvalidEntry(f"state must be one of {', '.join((*STATE_RANK, *UNRANKED_STATES))}")
    return str(value)


def check_device_token(token: DeviceToken) -> DeviceToken:
    for what, value in (("app_id", token.app_id), ("device_id", token.device_id), ("token", token.token),
                        ("platform", token.platform)):
        check_text(value, what, MAX_TOKEN_FIELD)
    if token.background_token is not None:
        check_text(token.background_token, "background_token", MAX_TOKEN_FIELD)
    if token.user_agent is not None:
        check_text(token.user_agent, "user_agent", MAX_USER_AGENT, least=0)
    if not isinstance(token.silent, bool):
        raise InvalidEntry("silent must be a boolean")
    return token


def check_limit(value: object) -> int:
    """1 or more (a bool is no number); capped at MAX_SYNC."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidEntry("limit must be a positive integer")
    return min(value, MAX_SYNC)


def check_days(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 100000:
        raise InvalidEntry("retention must be 0 to 100000 days")
    return float(value)


def pending_disposition(requested: tuple[str, ...], notified: int) -> tuple[str, ...]:
    """What of the requested notifications is still to be answered, after news up to `notified`."""
    if notified >= NOTIFIED_DISPLAYED:
        return ()
    if notified >= NOTIFIED_DELIVERED:
        return tuple(value for value in requested if value != "positive-delivery")
    return requested


def notified_by(state: str) -> int:
    """How far a state answers disposition requests."""
    return {"delivered": NOTIFIED_DELIVERED, "displayed": NOTIFIED_DISPLAYED}.get(state, NOTIFIED_NONE)


def state_rank(state: str | None) -> int:
    return STATE_RANK.get(state, FIXED_RANK) if state is not None else FIXED_RANK


def removal_content(contact: str, message_id: str, direction: str) -> str:
    """MESSAGE_REMOVE's content, SylkServer's AccountMessageRemoveEventData in its key order."""
    return json.dumps({"contact": contact, "message_id": message_id, "direction": direction})


def iso_now(seconds: float) -> str:
    """A timestamp for the store's own entries: ISO 8601, UTC, with its offset."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat()


def updated_addressbook(document: dict[str, Any] | None, kind: str, action: str,
                        item: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the book after the change, the entry as it now is, or was for a delete); InvalidEntry when the change
    does not apply. The same rules for every backend."""
    if kind not in ADDRESSBOOK_KINDS or action not in ADDRESSBOOK_ACTIONS:
        raise InvalidEntry(f"no such address book change: {action} {kind}")
    if not isinstance(item, dict):
        raise InvalidEntry("an address book entry must be an object")
    entry_id = check_text(item.get("id"), "id", 256)
    book = {name: list((document or {}).get(name) or []) for name in ADDRESSBOOK_KINDS.values()}
    entries = book[ADDRESSBOOK_KINDS[kind]]
    index = next((i for i, entry in enumerate(entries) if isinstance(entry, dict) and entry.get("id") == entry_id),
                 None)
    if action == "add":
        if index is not None:
            raise InvalidEntry(f"The {kind} {entry_id} exists already")
        entries.append(item)
        result = item
    elif index is None:
        raise InvalidEntry(f"No {kind} {entry_id}")
    elif action == "update":
        entries[index] = result = item
    else:
        result = entries.pop(index)
    size = len(json.dumps(book, ensure_ascii=False).encode("utf-8"))
    if size > MAX_ADDRESSBOOK:
        raise InvalidEntry(f"The address book would be {size} bytes long (at most {MAX_ADDRESSBOOK})")
    return book, result
