"""Wire dialects: thin codecs between sylkRTC JSON messages and the internal model.

A connection picks its dialect from the WebSocket subprotocols the browser offered, preferring sylkRTC-2. Both
dialects drive the same model; they differ only in request names and in how events are shaped:

- sylkRTC-1 (2015, the seed): the seed's names (`add_account`, `call`, ...) and the 2015 server's dash names
  (`account-add`, `session-create`, ...); events nested under `data`, with underscore names
  (`{"sylkrtc": "account_event", "event": "registration_state", "data": {...}}`).
- sylkRTC-2 (SylkServer since 2017): the dash names only; events flat, with dash names
  (`{"sylkrtc": "account-event", "event": "registration-state", "state": ...}`), `ready-event`.
"""

from __future__ import annotations

from typing import Any, Mapping

from sylk.gateway.sylkrtc import model
from sylk.gateway.sylkrtc.fields import ValidationError

# The requests every dialect accepts under their canonical (dash) names.
_CANONICAL = (model.Ping, model.LookupPublicKey, model.ConnectionKeep, model.ConnectionResume, model.AccountAdd, model.AccountRemove, model.AccountRegister, model.AccountUnregister,
              model.AccountMessage, model.AccountDispositionNotification, model.SessionMessage,
              model.AccountDeviceToken, model.AccountFetchAddressBook, model.AccountUpdateAddressBook,
              model.AccountSyncConversations,
              model.AccountMarkConversationRead, model.AccountRemoveMessage, model.AccountRemoveConversation,
              model.SessionCreate, model.SessionAnswer, model.SessionTrickle, model.SessionTerminate,
              model.SessionDtmfInfo, model.SessionUpdate, model.SessionHold, model.SessionUnhold,
              model.SessionTransfer, model.SessionTransferReject)


class Dialect:
    """Decoding, answers and event encoding, dispatched to `_encode_<Event class>`."""

    subprotocol: str
    requests: dict[str, type[model.Request]]
    # Whether its clients answer the far end's re-INVITEs (`update` `received`); if not, the backend accepts those
    # as they are, without the browser.
    answers_reinvites: bool

    def decode(self, message: Mapping[str, Any]) -> model.Request:
        """Turn a JSON object that has a `sylkrtc` key into a request; raises ValidationError."""
        kind = message["sylkrtc"]
        cls = self.requests.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise ValidationError(f"unknown request type {kind!r:.80}")
        return cls.parse(message)

    def ack(self, transaction: str) -> dict[str, Any]:
        return {"sylkrtc": "ack", "transaction": transaction}

    def error(self, transaction: Any, reason: str) -> dict[str, Any]:
        message = {"sylkrtc": "error", "error": reason}
        if transaction is not None:
            message["transaction"] = transaction
        return message

    def encode(self, event: model.Event) -> dict[str, Any] | None:
        """The message for an event, or None when the dialect has no way to say it."""
        return getattr(self, f"_encode_{type(event).__name__}")(event)


class SylkRTC1(Dialect):
    subprotocol = "sylkRTC-1"
    answers_reinvites = False  # the seed's clients know nothing of updates
    requests = {
        **{cls.name: cls for cls in _CANONICAL},
        "add_account": model.AccountAdd,
        "remove_account": model.AccountRemove,
        "register": model.AccountRegister,
        "unregister": model.AccountUnregister,
        "call": model.SessionCreate,
        "answer": model.SessionAnswer,
        "trickle": model.SessionTrickle,
        "terminate": model.SessionTerminate,
    }

    def _encode_Ready(self, event: model.Ready) -> dict[str, Any]:
        return {"sylkrtc": "event", "event": "ready"}

    def _encode_Resumed(self, event: model.Resumed) -> dict[str, Any]:
        return {"sylkrtc": "event", "event": "resumed", "data": {"missed": event.missed}}

    def _encode_PublicKeyFound(self, event: model.PublicKeyFound) -> dict[str, Any]:
        return {"sylkrtc": "event", "event": "lookup_public_key",
                "data": {"uri": event.uri, "public_key": event.public_key}}

    def _encode_RegistrationStateChanged(self, event: model.RegistrationStateChanged) -> dict[str, Any]:
        data = _present(state=event.state, reason=event.reason)
        return {"sylkrtc": "account_event", "account": event.account, "event": "registration_state", "data": data}

    _encode_RegistrationStateShown = _encode_RegistrationStateChanged

    def _encode_SessionStateChanged(self, event: model.SessionStateChanged) -> dict[str, Any] | None:
        if event.state not in _SYLKRTC_1_STATES:
            return None  # sylkRTC-1 had no ringing, proceeding or early media; the early answer comes with accepted
        data = _present(state=event.state, sdp=event.sdp or event.early_sdp, reason=event.reason)
        return {"sylkrtc": "session_event", "session": event.session, "event": "state", "data": data}

    def _encode_SessionDtmf(self, event: model.SessionDtmf) -> dict[str, Any]:
        data = _present(digit=event.digit, duration=event.duration, method=event.method)
        return {"sylkrtc": "session_event", "session": event.session, "event": "dtmf", "data": data}

    def _encode_SessionUpdated(self, event: model.SessionUpdated) -> dict[str, Any]:
        data = _present(state=event.state, sdp=event.sdp, reason=event.reason)
        return {"sylkrtc": "session_event", "session": event.session, "event": "update", "data": data}

    def _encode_SessionHoldChanged(self, event: model.SessionHoldChanged) -> dict[str, Any]:
        return {"sylkrtc": "session_event", "session": event.session, "event": "hold",
                "data": {"held": event.held, "originator": event.originator}}

    def _encode_SessionTransferProgress(self, event: model.SessionTransferProgress) -> dict[str, Any]:
        data = _present(state=event.state, code=event.code, reason=event.reason)
        return {"sylkrtc": "session_event", "session": event.session, "event": "transfer", "data": data}

    def _encode_SessionTransferRequest(self, event: model.SessionTransferRequest) -> dict[str, Any]:
        data = _present(refer_to=event.refer_to, referred_by=event.referred_by, replaces=event.replaces)
        return {"sylkrtc": "session_event", "session": event.session, "event": "transfer_request", "data": data}

    def _encode_MessageReceived(self, event: model.MessageReceived) -> dict[str, Any]:
        return _about(event, "session_event", "account_event", "message", {"data": _message(event)})

    def _encode_AddressBookFetched(self, event: model.AddressBookFetched) -> dict[str, Any]:
        return {"sylkrtc": "account_event", "account": event.account, "event": "addressbook_fetched",
                "data": {"addressbook": event.addressbook}}

    def _encode_AddressBookUpdated(self, event: model.AddressBookUpdated) -> dict[str, Any]:
        return {"sylkrtc": "account_event", "account": event.account, "event": "addressbook_updated",
                "data": {"type": event.type, "action": event.action, event.type: event.item}}

    def _encode_AddressBookUpdateFailed(self, event: model.AddressBookUpdateFailed) -> dict[str, Any]:
        return {"sylkrtc": "account_event", "account": event.account, "event": "addressbook_update_failed",
                "data": {"type": event.type, "action": event.action, "error": event.error, "id": event.id}}

    def _encode_SyncConversations(self, event: model.SyncConversations) -> dict[str, Any]:
        return {"sylkrtc": "account_event", "account": event.account, "event": "sync_conversations",
                "data": {"messages": event.messages}}

    def _encode_AccountSync(self, event: model.AccountSync) -> dict[str, Any]:
        return {"sylkrtc": "account_event", "account": event.account, "event": "sync",
                "data": {"type": event.type, "action": event.action, "content": event.content}}

    def _encode_DispositionNotification(self, event: model.DispositionNotification) -> dict[str, Any]:
        return _about(event, "session_event", "account_event", "disposition_notification",
                      {"data": _disposition(event)})

    def _encode_IncomingSession(self, event: model.IncomingSession) -> dict[str, Any]:
        return {"sylkrtc": "account_event", "account": event.account, "session": event.session,
                "event": "incoming_session", "data": {"originator": _originator(event.originator),
                                                      "sdp": event.sdp}}

    def _encode_MissedSession(self, event: model.MissedSession) -> dict[str, Any]:
        return {"sylkrtc": "account_event", "account": event.account, "event": "missed_session",
                "data": {"originator": _originator(event.originator)}}


class SylkRTC2(Dialect):
    subprotocol = "sylkRTC-2"
    answers_reinvites = True  # as SylkServer's clients do since 2026-05
    requests = {cls.name: cls for cls in _CANONICAL}

    def _encode_Ready(self, event: model.Ready) -> dict[str, Any]:
        return {"sylkrtc": "ready-event"}

    def _encode_Resumed(self, event: model.Resumed) -> dict[str, Any]:
        return {"sylkrtc": "resumed-event", "missed": event.missed}

    def _encode_PublicKeyFound(self, event: model.PublicKeyFound) -> dict[str, Any]:
        return {"sylkrtc": "lookup-public-key-event", "uri": event.uri, "public_key": event.public_key}

    def _encode_RegistrationStateChanged(self, event: model.RegistrationStateChanged) -> dict[str, Any] | None:
        if event.state == model.RegistrationState.UNREGISTERED:
            return None  # as SylkServer: sylkrtc.js ends the registration at the ack (and resets it to null)
        return self._encode_RegistrationStateShown(event)

    def _encode_RegistrationStateShown(self, event: model.RegistrationStateChanged) -> dict[str, Any]:
        return {"sylkrtc": "account-event", "account": event.account, "event": "registration-state",
                **_present(state=event.state, reason=event.reason)}

    def _encode_SessionStateChanged(self, event: model.SessionStateChanged) -> dict[str, Any]:
        return {"sylkrtc": "session-event", "session": event.session, "event": "state",
                **_present(state=event.state, code=event.code, sdp=event.sdp, call_id=event.call_id,
                           headers=event.headers, reason=event.reason)}

    def _encode_SessionDtmf(self, event: model.SessionDtmf) -> dict[str, Any]:
        return {"sylkrtc": "session-event", "session": event.session, "event": "dtmf",
                **_present(digit=event.digit, duration=event.duration, method=event.method)}

    def _encode_SessionUpdated(self, event: model.SessionUpdated) -> dict[str, Any]:
        return {"sylkrtc": "session-event", "session": event.session, "event": "update",
                **_present(state=event.state, sdp=event.sdp, reason=event.reason)}

    def _encode_SessionHoldChanged(self, event: model.SessionHoldChanged) -> dict[str, Any]:
        return {"sylkrtc": "session-event", "session": event.session, "event": "hold", "held": event.held,
                "originator": event.originator}

    def _encode_SessionTransferProgress(self, event: model.SessionTransferProgress) -> dict[str, Any]:
        return {"sylkrtc": "session-event", "session": event.session, "event": "transfer",
                **_present(state=event.state, code=event.code, reason=event.reason)}

    def _encode_SessionTransferRequest(self, event: model.SessionTransferRequest) -> dict[str, Any]:
        return {"sylkrtc": "session-event", "session": event.session, "event": "transfer-request",
                **_present(refer_to=event.refer_to, referred_by=event.referred_by, replaces=event.replaces)}

    def _encode_MessageReceived(self, event: model.MessageReceived) -> dict[str, Any]:
        return _about(event, "session-event", "account-event", "message", _message(event))

    def _encode_AddressBookFetched(self, event: model.AddressBookFetched) -> dict[str, Any]:
        return {"sylkrtc": "account-event", "account": event.account, "event": "addressbook-fetched",
                "addressbook": event.addressbook}

    def _encode_AddressBookUpdated(self, event: model.AddressBookUpdated) -> dict[str, Any]:
        return {"sylkrtc": "account-event", "account": event.account, "event": "addressbook-updated",
                "type": event.type, "action": event.action, event.type: event.item}

    def _encode_AddressBookUpdateFailed(self, event: model.AddressBookUpdateFailed) -> dict[str, Any]:
        return {"sylkrtc": "account-event", "account": event.account, "event": "addressbook-update-failed",
                "type": event.type, "action": event.action, "error": event.error, "id": event.id}

    def _encode_SyncConversations(self, event: model.SyncConversations) -> dict[str, Any]:
        return {"sylkrtc": "account-event", "account": event.account, "event": "sync-conversations",
                "messages": event.messages}

    def _encode_AccountSync(self, event: model.AccountSync) -> dict[str, Any]:
        return {"sylkrtc": "account-event", "account": event.account, "event": "sync", "type": event.type,
                "action": event.action, "content": event.content}

    def _encode_DispositionNotification(self, event: model.DispositionNotification) -> dict[str, Any]:
        return _about(event, "session-event", "account-event", "disposition-notification", _disposition(event))

    def _encode_IncomingSession(self, event: model.IncomingSession) -> dict[str, Any]:
        return {"sylkrtc": "account-event", "account": event.account, "event": "incoming-session",
                "session": event.session, "originator": _originator(event.originator), "sdp": event.sdp,
                **_present(call_id=event.call_id, headers=event.headers)}

    def _encode_MissedSession(self, event: model.MissedSession) -> dict[str, Any]:
        return {"sylkrtc": "account-event", "account": event.account, "event": "missed-session",
                "originator": _originator(event.originator)}


_SYLKRTC_1_STATES = (model.SessionState.PROGRESS, model.SessionState.ACCEPTED, model.SessionState.ESTABLISHED,
                     model.SessionState.TERMINATED)


def _present(**values: Any) -> dict[str, Any]:
    """The fields that have a value (events leave out what does not apply)."""
    return {key: value for key, value in values.items() if value is not None}


def _originator(originator: Any) -> dict[str, str]:
    shown = {"uri": originator.uri}
    if originator.display_name:
        shown["display_name"] = originator.display_name
    return shown


# By preference: a browser that offers both gets sylkRTC-2.
DIALECTS: dict[str, Dialect] = {dialect.subprotocol: dialect for dialect in (SylkRTC2(), SylkRTC1())}


def _about(event: model.MessageReceived | model.DispositionNotification, session_kind: str, account_kind: str,
           name: str, fields: dict[str, Any]) -> dict[str, Any]:
    """A message event about a call (`session`) or about the account."""
    if event.session is not None:
        return {"sylkrtc": session_kind, "session": event.session, "event": name, **fields}
    return {"sylkrtc": account_kind, "account": event.account, "event": name, **fields}


def _message(event: model.MessageReceived) -> dict[str, Any]:
    return _present(sender=_originator(event.sender), timestamp=event.timestamp,
                    disposition_notification=list(event.disposition_notification or ()) or None,
                    message_id=event.message_id, content_type=event.content_type, content=event.content)


def _disposition(event: model.DispositionNotification) -> dict[str, Any]:
    return _present(message_id=event.message_id, message_timestamp=event.message_timestamp, state=event.state,
                    code=event.code, reason=event.reason)
