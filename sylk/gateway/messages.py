"""Instant messages as SylkServer's clients exchange them: CPIM envelopes (RFC 3862) around the content, and
IMDN disposition notifications (RFC 5438). Pure functions: no I/O (what they drop, they log).

The browser's messages go out in a CPIM envelope with the IMDN headers that ask for delivery and display
notifications (as SylkServer sends them, so the Sylk apps' ticks work), or, for deployments of plain SIP phones
that would show the envelope as text, as they are (`[WebRTCGateway] message_format`). Incoming CPIM is
unwrapped, so senders that wrap are understood, and an IMDN inside one becomes a disposition notification. IMDNs
the browser sends are always wrapped, as RFC 5438 requires.

Any far end can send anything, so what is read from an incoming MESSAGE is bounded and checked: an envelope that
is too large or malformed is passed on as what it is (plain content of type message/cpim), an IMDN is parsed only
when small and free of DTDs (no entities, so no entity expansion), and every field taken from either must fit its
bound and hold no control characters, or is replaced by what a plain message gets. Nothing here raises on any
text, and nothing recurses in proportion to its input.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from xml.etree import ElementTree

from twisted.logger import Logger

from sylk.gateway.sip import Originator
from sylk.gateway.sylkrtc.model import DISPOSITION_STATES, DispositionNotification, Event, MessageReceived

IMDN_TYPE = "message/imdn+xml"
CPIM_TYPE = "message/cpim"
# Bounds on what is read from an incoming MESSAGE.
MAX_CPIM = 64 * 1024  # characters; a larger CPIM message is passed on unparsed
MAX_CPIM_HEADER_LINES = 50  # in the envelope, and in the content's MIME headers
MAX_IMDN = 8 * 1024  # characters; a larger IMDN is passed on as a message
MAX_MESSAGE_ID = 256
MAX_DATETIME = 64
MAX_CONTENT_TYPE = 128
MAX_DISPLAY_NAME = 128
MAX_NOTIFICATIONS = 4  # imdn.Disposition-Notification values kept (RFC 5438 defines four)

_IMDN_NS = "urn:ietf:params:xml:ns:imdn"
# What an IMDN may report: the states the browser can send, and the two RFC 5438 adds for intermediaries.
_IMDN_STATES = frozenset(DISPOSITION_STATES) | {"processed", "stored"}
# Which notification element of an IMDN reports each disposition state.
_NOTIFICATION_OF = {state: "display-notification" if state == "displayed" else "delivery-notification"
                    for state in DISPOSITION_STATES}
# Characters no field shown to the browser may hold: controls (C0, DEL, C1), line and paragraph separators, bidi
# overrides (they make a name read as another) and lone surrogates (not text; JSON can carry them).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,64}/[A-Za-z0-9!#$&^_.+-]{1,64}(?: *;[^\x00-\x1f\x7f]*)?")
_NOTIFICATION = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,31}")
_BLANK_LINE = re.compile(r"\r?\n\r?\n")  # the end of a header block, whichever line ends the sender uses
_DTD = re.compile(r"<!\s*(?:DOCTYPE|ENTITY)", re.IGNORECASE)

log = Logger()


@dataclass(frozen=True)
class Message:
    sender: Originator
    content_type: str
    content: str
    message_id: str
    timestamp: str
    disposition_notification: tuple[str, ...] = ()
    named_here: bool = False  # the sender gave no id (no CPIM envelope): `message_id` is the gateway's


@dataclass(frozen=True)
class Disposition:
    """An IMDN: what became of message `message_id` (sent at `message_timestamp`) at its recipient."""

    message_id: str
    state: str
    message_timestamp: str | None


def incoming_event(account: str, session: str | None, sender: Originator, content_type: str,
                   content: str) -> Event | None:
    """The event for an incoming MESSAGE (for the account, or inside the call `session`); None if it is unusable."""
    found = received(content_type, content, sender)
    if found is None:
        return None
    if isinstance(found, Disposition):
        return DispositionNotification(account=account, session=session, message_id=found.message_id,
                                       message_timestamp=found.message_timestamp, state=found.state, code=200,
                                       reason="OK")
    return MessageReceived(account=account, session=session, sender=found.sender, message_id=found.message_id,
                           timestamp=found.timestamp, content_type=found.content_type, content=found.content,
                           disposition_notification=found.disposition_notification or None,
                           named_here=found.named_here)


def outcome_event(account: str, session: str | None, message_id: str, timestamp: str | None,
                  code: int | None, reason: str) -> DispositionNotification:
    """What the answer to one of the browser's MESSAGEs says: `accepted` (2xx) or `failed`."""
    state = "accepted" if code is not None and 200 <= code < 300 else "failed"
    return DispositionNotification(account=account, session=session, message_id=message_id,
                                   message_timestamp=timestamp, state=state, code=code, reason=reason,
                                   of_answer=True)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def received(content_type: str, content: str, sender: Originator) -> Message | Disposition | None:
    """What an incoming MESSAGE says: a message (unwrapped if in CPIM), a disposition notification, or None when
    its content type is unusable (dropped, logged)."""
    if not _is_content_type(content_type):
        log.warn("Dropped a MESSAGE from {sender}: unusable content type {content_type!r}", sender=sender.uri,
                 content_type=content_type[:MAX_CONTENT_TYPE])
        return None
    if media_type(content_type) != CPIM_TYPE:
        return _plain(sender, content_type, content)
    parsed = _parse_cpim(content)
    if parsed is None:
        log.info("A CPIM message from {sender} has no usable envelope ({size} characters); passed on as it is",
                 sender=sender.uri, size=len(content))
        return _plain(sender, content_type, content)
    headers, inner_type, body = parsed
    if media_type(inner_type) == IMDN_TYPE:
        disposition = parse_imdn(body)
        if disposition is not None:
            return disposition
    name = _envelope_display_name(headers.get("from", ""), sender.uri)
    if name is not None:
        # only a display name from the envelope: its From is the sender's say, the SIP From is what the proxy let in
        sender = Originator(sender.uri, name)
    notify = [part.strip() for part in headers.get("imdn.disposition-notification", "").split(",")]
    return Message(sender, inner_type, body,
                   _field(headers.get("imdn.message-id"), MAX_MESSAGE_ID) or str(uuid.uuid4()),
                   _field(headers.get("datetime"), MAX_DATETIME) or now(),
                   tuple(part for part in notify if _NOTIFICATION.fullmatch(part))[:MAX_NOTIFICATIONS])


def parse_imdn(xml: str) -> Disposition | None:
    """The disposition an IMDN reports, or None when it is not a usable one. Only small IMDNs without a DTD are
    parsed: a DOCTYPE would let the sender declare entities (billion laughs, external entities)."""
    if len(xml) > MAX_IMDN or _DTD.search(xml):
        return None
    try:
        root = ElementTree.fromstring(xml)
    except (ElementTree.ParseError, ValueError):  # ValueError: text that is not encodable (lone surrogates)
        return None
    if root.tag != f"{{{_IMDN_NS}}}imdn":
        return None
    ns = {"i": _IMDN_NS}
    message_id = _field((root.findtext("i:message-id", namespaces=ns) or "").strip(), MAX_MESSAGE_ID)
    status = root.find("i:*/i:status", ns)
    if message_id is None or status is None or len(status) == 0:
        return None
    namespace, _, state = status[0].tag.partition("}")
    if namespace != f"{{{_IMDN_NS}" or state not in _IMDN_STATES:
        return None
    timestamp = _field((root.findtext("i:datetime", namespaces=ns) or "").strip(), MAX_DATETIME)
    return Disposition(message_id, state, timestamp)


def imdn(sender: str, recipient: str, message_id: str, state: str, message_timestamp: str | None) -> str:
    """A CPIM-wrapped IMDN from `sender` to `recipient` (user@domain) about their message `message_id`."""
    notification = _NOTIFICATION_OF[state]
    xml = ('<?xml version="1.0" encoding="UTF-8"?>\n'
           f'<imdn xmlns="{_IMDN_NS}">\n'
           f"  <message-id>{_escape(message_id)}</message-id>\n"
           f"  <datetime>{_escape(message_timestamp or now())}</datetime>\n"
           f"  <{notification}><status><{state}/></status></{notification}>\n"
           "</imdn>\n")
    return envelope(Originator(sender), recipient, str(uuid.uuid4()), None, IMDN_TYPE, xml,
                    content_headers="Content-Disposition: notification\r\n")


def envelope(sender: Originator, recipient: str, message_id: str, timestamp: str | None, content_type: str,
             content: str, notifications: tuple[str, ...] = (), content_headers: str = "") -> str:
    """A CPIM message (RFC 3862) from `sender` to `recipient` (user@domain) carrying `content`, with its IMDN
    Message-ID and the notifications it asks for (RFC 5438: positive-delivery, display, ...). The content type
    stays as the browser gave it: the receiving app compares it (text/plain), and the body is UTF-8 as all SIP."""
    name = f'"{_quoted(sender.display_name)}" ' if sender.display_name else ""
    headers = [f"From: {name}<sip:{sender.uri}>", f"To: <sip:{recipient}>", "NS: imdn <urn:ietf:params:imdn>",
               f"imdn.Message-ID: {message_id}", f"DateTime: {timestamp or now()}"]
    if notifications:
        headers.append(f"imdn.Disposition-Notification: {', '.join(notifications)}")
    return ("\r\n".join(headers) + "\r\n\r\n" + f"Content-Type: {content_type}\r\n{content_headers}"
            f"Content-Length: {len(content.encode())}\r\n\r\n{content}")


def _plain(sender: Originator, content_type: str, content: str) -> Message:
    """A message taken as it is: the gateway names it and dates it."""
    return Message(sender, content_type, content, str(uuid.uuid4()), now(), named_here=True)


def _parse_cpim(content: str) -> tuple[dict[str, str], str, str] | None:
    """(message headers by lower-case name, the content's type, the content) of a CPIM message, or None when it is
    too large, lacks the blank lines that end its header blocks, has too many header lines or an unusable content
    type."""
    if len(content) > MAX_CPIM:
        return None
    first = _BLANK_LINE.search(content)
    second = _BLANK_LINE.search(content, first.end()) if first else None
    if first is None or second is None:
        return None
    # the header blocks' line ends are normalised; the body stays exactly as sent
    envelope, mime, body = content[:first.start()], content[first.end():second.start()], content[second.end():]
    headers, mime_headers = _header_block(envelope), _header_block(mime)
    if headers is None or mime_headers is None:
        return None
    inner_type = mime_headers.get("content-type", "text/plain")
    if not _is_content_type(inner_type):
        return None
    return headers, inner_type, body


def _header_block(block: str) -> dict[str, str] | None:
    """Header values by lower-case name; None beyond MAX_CPIM_HEADER_LINES lines."""
    if block.count("\n") >= MAX_CPIM_HEADER_LINES:
        return None
    headers = {}
    for line in block.split("\n"):
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return headers


def _envelope_display_name(cpim_from: str, sender_uri: str) -> str | None:
    """The display name in the envelope's From (`Robert <sip:bob@example.com>`), if that From is the SIP sender."""
    start = cpim_from.find("<")
    end = cpim_from.find(">", start + 1)
    if start < 0 or end < 0:
        return None
    uri = cpim_from[start + 1:end].strip()
    for scheme in ("sip:", "sips:"):
        if uri[:len(scheme)].lower() == scheme:
            uri = uri[len(scheme):]
            break
    if uri.partition(";")[0].lower() != sender_uri.lower():
        return None
    name = cpim_from[:start].strip().strip('"').strip()
    return _field(name, MAX_DISPLAY_NAME)


def _field(value: str | None, limit: int) -> str | None:
    """`value` if it is non-empty, at most `limit` characters and free of unsafe characters; else None."""
    if not value or len(value) > limit or _UNSAFE.search(value):
        return None
    return value


def _is_content_type(value: str) -> bool:
    return _field(value, MAX_CONTENT_TYPE) is not None and _CONTENT_TYPE.fullmatch(value) is not None


def media_type(content_type: str) -> str:
    """The bare media type of a Content-Type (`text/plain;charset=UTF-8` is `text/plain`), in lower case."""
    return content_type.split(";", 1)[0].strip().lower()


def _quoted(text: str) -> str:
    """A display name as a quoted string: no line breaks, quotes and backslashes escaped."""
    return " ".join(text.split()).replace("\\", "\\\\").replace('"', '\\"')


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
