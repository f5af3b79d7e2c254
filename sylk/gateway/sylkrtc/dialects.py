"""Wire dialects: thin codecs between sylkRTC JSON messages and the internal model.

A connection picks its dialect from the WebSocket subprotocol the browser offered. Only sylkRTC-1 (the seed) exists
today; sylkRTC-2 will be a sibling class with other names and flat events, not a second implementation.
"""

from __future__ import annotations

from typing import Any, Mapping

from sylk.gateway.sylkrtc import model
from sylk.gateway.sylkrtc.fields import ValidationError


class SylkRTC1:
    """sylkRTC-1: the 2015 seed's names (`add_account`, ...) and the 2015 server's dash names (`account-add`, ...);
    events nested under `data` with underscore names."""

    subprotocol = "sylkRTC-1"

    requests: dict[str, type[model.Request]] = {
        **{cls.name: cls for cls in (model.AccountAdd, model.AccountRemove, model.AccountRegister,
                                     model.AccountUnregister, model.SessionCreate, model.SessionAnswer,
                                     model.SessionTrickle, model.SessionTerminate)},
        "add_account": model.AccountAdd,
        "remove_account": model.AccountRemove,
        "register": model.AccountRegister,
        "unregister": model.AccountUnregister,
        "call": model.SessionCreate,
        "answer": model.SessionAnswer,
        "trickle": model.SessionTrickle,
        "terminate": model.SessionTerminate,
    }

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

    def encode(self, event: model.Event) -> dict[str, Any]:
        return getattr(self, f"_encode_{type(event).__name__}")(event)

    def _encode_Ready(self, event: model.Ready) -> dict[str, Any]:
        return {"sylkrtc": "event", "event": "ready"}

    def _encode_RegistrationStateChanged(self, event: model.RegistrationStateChanged) -> dict[str, Any]:
        data = {"state": event.state}
        if event.reason is not None:
            data["reason"] = event.reason
        return {"sylkrtc": "account_event", "account": event.account, "event": "registration_state", "data": data}

    def _encode_SessionStateChanged(self, event: model.SessionStateChanged) -> dict[str, Any]:
        data = {"state": event.state}
        if event.sdp is not None:
            data["sdp"] = event.sdp
        if event.reason is not None:
            data["reason"] = event.reason
        return {"sylkrtc": "session_event", "session": event.session, "event": "state", "data": data}

    def _encode_IncomingSession(self, event: model.IncomingSession) -> dict[str, Any]:
        return {"sylkrtc": "account_event", "account": event.account, "session": event.session,
                "event": "incoming_session", "data": {"originator": _originator(event.originator),
                                                      "sdp": event.sdp}}

    def _encode_MissedSession(self, event: model.MissedSession) -> dict[str, Any]:
        return {"sylkrtc": "account_event", "account": event.account, "event": "missed_session",
                "data": {"originator": _originator(event.originator)}}


def _originator(originator: Any) -> dict[str, str]:
    shown = {"uri": originator.uri}
    if originator.display_name:
        shown["display_name"] = originator.display_name
    return shown


DIALECTS = {dialect.subprotocol: dialect for dialect in (SylkRTC1(),)}
