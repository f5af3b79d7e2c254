"""Instant messages as SylkServer's clients exchange them: CPIM envelopes (RFC 3862) around the content, and
IMDN disposition notifications (RFC 5438). Pure functions: no I/O.

Messages the gateway sends for the browser go out as they are (a SIP phone shows a text/plain MESSAGE; it would
not unwrap CPIM). Incoming CPIM is unwrapped, so senders that wrap (Sylk clients, SylkServer) are understood, and
an IMDN inside one becomes a disposition notification. IMDNs the browser sends are wrapped, as RFC 5438 requires.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from xml.etree import ElementTree

from sylk.gateway.sip import Originator
from sylk.gateway.sylkrtc.model import DISPOSITION_STATES, DispositionNotification, Event, MessageReceived

IMDN_TYPE = "message/imdn+xml"
CPIM_TYPE = "message/cpim"
_IMDN_NS = "urn:ietf:params:xml:ns:imdn"
# Which notification element of an IMDN reports each disposition state.
_NOTIFICATION_OF = {state: "display-notification" if state == "displayed" else "delivery-notification"
                    for state in DISPOSITION_STATES}


@dataclass(frozen=True)
class Message:
    sender: Originator
    content_type: str
    content: str
    message_id: str
    timestamp: str
    disposition_notification: tuple[str, ...] = ()


@dataclass(frozen=True)
class Disposition:
    """An IMDN: what became of message `message_id` (sent at `message_timestamp`) at its recipient."""

    message_id: str
    state: str
    message_timestamp: str | None


def incoming_event(account: str, session: str | None, sender: Originator, content_type: str,
                   content: str) -> Event:
    """The event for an incoming MESSAGE (for the account, or inside the call `session`)."""
    found = received(content_type, content, sender)
    if isinstance(found, Disposition):
        return DispositionNotification(account=account, session=session, message_id=found.message_id,
                                       message_timestamp=found.message_timestamp, state=found.state, code=200,
                                       reason="OK")
    return MessageReceived(account=account, session=session, sender=found.sender, message_id=found.message_id,
                           timestamp=found.timestamp, content_type=found.content_type, content=found.content,
                           disposition_notification=found.disposition_notification or None)


def outcome_event(account: str, session: str | None, message_id: str, timestamp: str | None,
                  code: int | None, reason: str) -> DispositionNotification:
    """What the answer to one of the browser's MESSAGEs says: `accepted` (2xx) or `failed`."""
    state = "accepted" if code is not None and 200 <= code < 300 else "failed"
    return DispositionNotification(account=account, session=session, message_id=message_id,
                                   message_timestamp=timestamp, state=state, code=code, reason=reason)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def received(content_type: str, content: str, sender: Originator) -> Message | Disposition:
    """What an incoming MESSAGE says: a message (unwrapped if in CPIM), or a disposition notification."""
    if content_type.split(";")[0].strip().lower() != CPIM_TYPE:
        return Message(sender, content_type, content, str(uuid.uuid4()), now())
    headers, inner_type, body = _parse_cpim(content)
    if inner_type.split(";")[0].strip().lower() == IMDN_TYPE:
        disposition = parse_imdn(body)
        if disposition is not None:
            return disposition
    cpim_sender = headers.get("from", "")
    uri = re.search(r"<(?:sips?:)?([^>;]+)", cpim_sender)
    name = cpim_sender.split("<")[0].strip().strip('"').strip() if "<" in cpim_sender else ""
    if uri is not None and uri.group(1).lower() == sender.uri.lower():
        # only a display name from the envelope: its From is the sender's say, the SIP From is what the proxy let in
        sender = Originator(sender.uri, name or sender.display_name)
    notify = tuple(part.strip() for part in headers.get("imdn.disposition-notification", "").split(",")
                   if part.strip())
    return Message(sender, inner_type or "text/plain", body, headers.get("imdn.message-id") or str(uuid.uuid4()),
                   headers.get("datetime") or now(), notify)


def parse_imdn(xml: str) -> Disposition | None:
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return None
    ns = {"i": _IMDN_NS}
    message_id = root.findtext("i:message-id", namespaces=ns)
    status = root.find("i:*/i:status", ns)
    if not message_id or status is None or len(status) == 0:
        return None
    state = status[0].tag.rpartition("}")[2]
    return Disposition(message_id.strip(), state, (root.findtext("i:datetime", namespaces=ns) or "").strip() or None)


def imdn(sender: str, recipient: str, message_id: str, state: str, message_timestamp: str | None) -> str:
    """A CPIM-wrapped IMDN from `sender` to `recipient` (user@domain) about their message `message_id`."""
    notification = _NOTIFICATION_OF[state]
    xml = ('<?xml version="1.0" encoding="UTF-8"?>\n'
           f'<imdn xmlns="{_IMDN_NS}">\n'
           f"  <message-id>{_escape(message_id)}</message-id>\n"
           f"  <datetime>{_escape(message_timestamp or now())}</datetime>\n"
           f"  <{notification}><status><{state}/></status></{notification}>\n"
           "</imdn>\n")
    return (f"From: <sip:{sender}>\r\nTo: <sip:{recipient}>\r\nNS: imdn <urn:ietf:params:imdn>\r\n"
            f"imdn.Message-ID: {uuid.uuid4()}\r\nDateTime: {now()}\r\n\r\n"
            f"Content-Type: {IMDN_TYPE}\r\nContent-Disposition: notification\r\n"
            f"Content-Length: {len(xml.encode())}\r\n\r\n{xml}")


def _parse_cpim(content: str) -> tuple[dict[str, str], str, str]:
    """(message headers by lower-case name, the content's type, the content) of a CPIM message."""
    text = content.replace("\r\n", "\n")
    envelope, _, rest = text.partition("\n\n")
    mime, _, body = rest.partition("\n\n")
    headers = _header_block(envelope)
    return headers, _header_block(mime).get("content-type", "text/plain"), body


def _header_block(block: str) -> dict[str, str]:
    headers = {}
    for line in block.split("\n"):
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return headers


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
