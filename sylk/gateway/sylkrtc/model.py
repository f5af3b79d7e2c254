"""The gateway's one internal model of the browser API: requests it accepts and events it sends.

Wire dialects (`dialects.py`) translate between these and JSON messages; everything behind the dialect works only
with these classes. Request names are the canonical sylkRTC names (`account-add`, ...); the connection dispatches
each to `_RH_<name with - as _>`.
"""

from __future__ import annotations

from typing import ClassVar

from sylk.gateway.sylkrtc.fields import (AOR, HA1, Boolean, Candidates, Choice, ContentType, Field, HeaderPrefixes,
                                        Headers, Integer, JSONObject, Model, String, Text, Timestamp, Token, Tones,
                                        UserAgent)

MAX_SDP = 32768
MAX_MESSAGE = 16384  # a SIP MESSAGE's content (RFC 3428 wants small ones; Sofia moves big ones to TCP)
DISPOSITION_STATES = ("delivered", "displayed", "failed", "forbidden", "error")  # what an IMDN can say


class Request(Model):
    name: ClassVar[str]
    transaction = String(max_length=256)


class Ping(Request):
    """Nothing but an answer: lets a client check that the gateway (and the connection) is alive."""

    name = "ping"


class LookupPublicKey(Request):
    """The PGP public key an account published (an account-message of type text/pgp-public-key), if any."""

    name = "lookup-public-key"
    uri = AOR()


class ConnectionKeep(Request):
    """Keep this connection's accounts, registrations and calls for a while when its socket closes, for a new socket
    that presents `token` (connection-resume). A new keep replaces the previous token."""

    name = "connection-keep"
    token = Token()


class ConnectionResume(Request):
    """Take over the state kept under `token`; right after `ready`, before any account request."""

    name = "connection-resume"
    token = Token()


class AccountRequest(Request):
    account = AOR()


class AccountAdd(AccountRequest):
    name = "account-add"
    password = HA1()
    display_name = Text(optional=True, allow_empty=True, max_length=128)  # quotes are escaped by the backend
    user_agent = UserAgent(optional=True)
    incoming_header_prefixes = HeaderPrefixes(optional=True, default=())  # pass these incoming headers up


class AccountRemove(AccountRequest):
    name = "account-remove"


class AccountRegister(AccountRequest):
    name = "account-register"


class AccountUnregister(AccountRequest):
    name = "account-unregister"


class AccountDeviceToken(AccountRequest):
    """A push token of one of the user's devices, for the REGISTER Contact (RFC 8599 parameters); no token removes
    the device's. The 2016-2020 clients' `new_token` is read as `token`."""

    name = "account-devicetoken"
    token = String(optional=True, allow_empty=True, max_length=4096)
    platform = String(optional=True, max_length=64)  # ios, android, ... (pn-type; RFC 8599 pn-provider: mapped)
    device = String(optional=True, allow_empty=True, max_length=256)
    silent = Boolean(optional=True, default=False)
    app = String(optional=True, max_length=256)  # pn-app (RFC 8599 pn-param): the app the token belongs to
    new_token = String(optional=True, allow_empty=True, max_length=4096)
    old_token = String(optional=True, allow_empty=True, max_length=4096)


class AccountFetchAddressBook(AccountRequest):
    name = "account-fetch-addressbook"


class AccountUpdateAddressBook(AccountRequest):
    """Add, update or delete one entry of the account's address book; the outcome comes as addressbook-updated
    (to every connection of the account) or addressbook-update-failed (to this one)."""

    name = "account-update-addressbook"
    action = Choice(("add", "update", "delete"))
    type = Choice(("contact", "group", "policy"))
    data = JSONObject()


class AccountMessage(AccountRequest):
    """An instant message to `uri` (SIP MESSAGE, out of any call); the outcome comes as disposition-notification."""

    name = "account-message"
    uri = AOR()
    message_id = Text(max_length=256)  # (it goes into a CPIM header)
    content = String(max_length=MAX_MESSAGE)
    content_type = ContentType(optional=True, default="text/plain")
    timestamp = Timestamp(max_length=64, optional=True)


class AccountDispositionNotification(AccountRequest):
    """Tell `uri` what became of their message `message_id` (an IMDN)."""

    name = "account-disposition-notification"
    uri = AOR()
    message_id = Text(max_length=256)
    state = Choice(DISPOSITION_STATES)
    timestamp = Timestamp(max_length=64, optional=True)  # when their message was sent


class AccountSyncConversations(AccountRequest):
    """The account's stored messages (and read marks and removals) after `message_id`, or stored after `since`,
    or all that are kept: at most `limit`, oldest first, in a sync-conversations event after the ack."""

    name = "account-sync-conversations"
    message_id = Text(max_length=256, optional=True)
    since = Timestamp(max_length=64, optional=True)
    limit = Integer(low=1, high=5000, optional=True, default=5000)


class AccountMarkConversationRead(AccountRequest):
    """Every message of the conversation with `contact` counts as read, on every device of the account."""

    name = "account-mark-conversation-read"
    contact = AOR()


class AccountRemoveMessage(AccountRequest):
    """Remove the account's message `message_id` of the conversation with `contact`, on every device."""

    name = "account-remove-message"
    message_id = Text(max_length=256)
    contact = AOR()


class AccountRemoveConversation(AccountRequest):
    """Remove the whole conversation with `contact`, on every device."""

    name = "account-remove-conversation"
    contact = AOR()


class SessionRequest(Request):
    session = String(max_length=128)


class SessionCreate(AccountRequest, SessionRequest):
    name = "session-create"
    uri = AOR()
    sdp = String(max_length=MAX_SDP)
    headers = Headers(optional=True, default={})
    # the call whose far end asked for this one (`transfer-request`): the new call carries the transfer out
    refer_session = String(max_length=128, optional=True)


class SessionAnswer(SessionRequest):
    name = "session-answer"
    sdp = String(max_length=MAX_SDP)
    headers = Headers(optional=True, default={})


class SessionTrickle(SessionRequest):
    name = "session-trickle"
    candidates = Candidates()


class SessionTerminate(SessionRequest):
    name = "session-terminate"


class SessionDtmfInfo(SessionRequest):
    """Send DTMF as SIP INFO, one tone after the other (RFC 4733 tones go in the media, from the browser)."""

    name = "session-dtmf-info"
    digit = Tones()  # one tone or several
    duration = Integer(low=40, high=5000, optional=True, default=160)  # ms, per tone


class SessionUpdate(SessionRequest):
    """A re-INVITE: the browser's new offer, or, after an `update` event `received`, its answer to the far end's."""

    name = "session-update"
    sdp = String(max_length=MAX_SDP)


class SessionHold(SessionRequest):
    """Put the call on hold: a re-INVITE that makes the far end stop sending (`sendonly`) or both (`inactive`)."""

    name = "session-hold"
    direction = Choice(("sendonly", "inactive"), optional=True, default="sendonly")


class SessionUnhold(SessionRequest):
    name = "session-unhold"


class SessionMessage(SessionRequest):
    """An instant message inside the call's dialog (SIP MESSAGE)."""

    name = "session-message"
    message_id = Text(max_length=256)
    content = String(max_length=MAX_MESSAGE)
    content_type = ContentType(optional=True, default="text/plain")
    timestamp = Timestamp(max_length=64, optional=True)


class SessionTransfer(SessionRequest):
    """Send the far end to `uri` (SIP REFER): a blind transfer, or an attended one that replaces another call of the
    connection (`replace_session`, typically a call with `uri`)."""

    name = "session-transfer"
    uri = AOR()
    replace_session = String(max_length=128, optional=True)


class SessionTransferReject(SessionRequest):
    """Refuse the far end's transfer request (`transfer-request`)."""

    name = "session-transfer-reject"
    code = Integer(low=400, high=699, optional=True, default=603)


class Event(Model):
    """Something the gateway tells the browser, without a transaction."""


class Ready(Event):
    """The connection is usable: its SIP backend session exists."""


class PublicKeyFound(Event):
    """The answer to lookup-public-key: the key, or None when the account has published none."""

    uri = Field()
    public_key = Field(optional=True)


class Resumed(Event):
    """The answer to connection-resume, before the snapshot of the kept state: how many events that happened while
    no socket was attached could not be kept (0 normally; otherwise the client should reload its state)."""

    missed = Field()


class RegistrationState:
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"
    UNREGISTERED = "unregistered"
    UNREGISTERING = "unregistering"  # internal only: sylkRTC has no such event


class RegistrationStateChanged(Event):
    account = Field()
    state = Field()
    reason = Field(optional=True)  # "<code> <phrase>" (or a plain explanation) with FAILED


class RegistrationStateShown(RegistrationStateChanged):
    """An account's current registration state in a connection-resume snapshot (sylkRTC-2 reports `unregistered`
    only there: SylkServer never sends it, and its clients take the unregister's ack as the end)."""


class SessionState:
    CONNECTING = "connecting"  # internal: before the first state the browser hears of
    PROGRESS = "progress"  # outgoing: the INVITE is on its way
    PROCEEDING = "proceeding"  # outgoing: a provisional response (with its code; sylkRTC-2 only)
    RINGING = "ringing"  # outgoing: the callee is alerted (sylkRTC-2 only)
    EARLY_MEDIA = "early-media"  # outgoing: 183 with SDP, the answer for media before the call is answered
    ACCEPTED = "accepted"
    ESTABLISHED = "established"
    TERMINATED = "terminated"


class SessionStateChanged(Event):
    session = Field()
    state = Field()
    sdp = Field(optional=True)  # EARLY_MEDIA, or ACCEPTED of an outgoing call: the SDP answer it brought
    early_sdp = Field(optional=True)  # ACCEPTED after EARLY_MEDIA: the answer given then (for sylkRTC-1)
    code = Field(optional=True)  # PROCEEDING: the provisional status code
    call_id = Field(optional=True)  # EARLY_MEDIA, ACCEPTED: the SIP Call-ID
    headers = Field(optional=True)  # ACCEPTED: the answer's headers matching the account's prefixes
    reason = Field(optional=True)  # TERMINATED


class SessionDtmf(Event):
    """DTMF the far end sent: as SIP INFO, or (with a Janus that reports them) as RFC 4733 events."""

    session = Field()
    digit = Field()
    duration = Field(optional=True)  # ms, when the far end said
    method = Field()  # "info" or "rfc4733"


class UpdateState:
    RECEIVED = "received"  # the far end sent a new offer (`sdp`); answer it with session-update
    ACCEPTED = "accepted"  # the far end answered the browser's new offer (`sdp`)
    FAILED = "failed"  # the browser's re-INVITE (an update, a hold) did not go through (`reason`)


class SessionUpdated(Event):
    session = Field()
    state = Field()
    sdp = Field(optional=True)
    reason = Field(optional=True)


class SessionHoldChanged(Event):
    """The call went on hold or off it: put there by the browser (`local`) or by the far end (`remote`)."""

    session = Field()
    held = Field()  # bool
    originator = Field()  # "local" or "remote"


class TransferState:
    PROGRESS = "progress"  # the transfer target is being called (`code`: 100, 180, ...)
    COMPLETED = "completed"  # the target answered the far end
    FAILED = "failed"  # the far end refused, or its call to the target failed (`code`, `reason`)


class SessionTransferProgress(Event):
    """How a transfer the browser asked for (session-transfer) goes, as the far end reports it."""

    session = Field()
    state = Field()
    code = Field(optional=True)
    reason = Field(optional=True)


class SessionTransferRequest(Event):
    """The far end asks the browser to call `refer_to` instead (an incoming REFER); answer with a session-create
    that names this session in `refer_session`, or with session-transfer-reject."""

    session = Field()
    refer_to = Field()
    referred_by = Field(optional=True)
    replaces = Field()  # bool: an attended transfer, the new call replaces one the target has


class MessageReceived(Event):
    """An instant message for the account: out of any call, or inside one (`session`)."""

    account = Field()
    session = Field(optional=True)
    sender = Field()  # Originator
    message_id = Field()
    timestamp = Field()
    content_type = Field()
    content = Field()
    disposition_notification = Field(optional=True)  # what the sender wants to hear back: ["positive-delivery", ...]
    named_here = Field(optional=True, default=False)  # internal: message_id is the gateway's (the sender gave none)


class DispositionNotification(Event):
    """What became of a message: `accepted`/`failed` from the SIP answer to the browser's MESSAGE (`code`,
    `reason`), or what the recipient reported (an IMDN: `delivered`, `displayed`, ...)."""

    account = Field()
    session = Field(optional=True)
    message_id = Field()
    message_timestamp = Field(optional=True)
    state = Field()
    code = Field(optional=True)  # the SIP status, when there was one
    reason = Field()
    of_answer = Field(optional=True, default=False)  # internal: from the SIP answer to our MESSAGE, not an IMDN


class AddressBookFetched(Event):
    account = Field()
    addressbook = Field()  # a JSON object


class AddressBookUpdated(Event):
    account = Field()
    type = Field()  # contact, group or policy
    action = Field()
    item = Field()  # the entry as it now is (as it was, for a delete)


class AddressBookUpdateFailed(Event):
    account = Field()
    type = Field()
    action = Field()
    error = Field()
    id = Field(optional=True)


class SyncConversations(Event):
    """The answer to account-sync-conversations: stored entries as SylkServer's sync items (JournalEntry)."""

    account = Field()
    messages = Field()  # [{contact, timestamp, disposition, message_id, content_type, content, direction, state}]


class AccountSync(Event):
    """What another connection of the account did, so that this one follows (SylkServer's `sync`): `type`
    message or conversation, `action` add, remove or read, `content` what it concerns (a JSON object)."""

    account = Field()
    type = Field()
    action = Field()
    content = Field()


class IncomingSession(Event):
    account = Field()
    session = Field()
    originator = Field()  # sylk.gateway.sip.Originator
    sdp = Field()  # the offer
    call_id = Field(optional=True)
    headers = Field(optional=True)  # the INVITE's headers matching the account's prefixes


class MissedSession(Event):
    account = Field()
    originator = Field()
