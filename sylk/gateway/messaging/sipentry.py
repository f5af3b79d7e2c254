"""A SIP entry point for MESSAGEs: what the proxy forks here is kept for the account's devices, online or not.

Janus hears a MESSAGE only for an account registered through it, so a message for a user whose devices are all
offline would be lost. As in SylkServer deployments, the proxy forks every MESSAGE for a local user to the gateway
too; the gateway answers 200 and keeps it in the account's history (MessagingHub.received_by_sip), where the
account's devices find it on their next `account-sync-conversations`. Only the configured trusted proxies may send
here (anyone else: 403), because the gateway takes their word for who sent a message: the proxy authenticated its
own users.

It is a SIP user agent server for MESSAGE and nothing else (OPTIONS is answered, for the proxy's keepalives; ACK
is ignored; other methods get 405), on UDP and TCP at one address. Everything it reads is bounded: a request
beyond MAX_REQUEST bytes or MAX_HEADER_LINES lines, or malformed, is answered 400 when it can be answered at all,
else dropped and logged; a TCP peer that sends more than that without a complete request is disconnected.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from dataclasses import dataclass
from typing import Callable, Iterable

from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from sylk.gateway import __version__
from sylk.gateway.messaging.hub import HistoryUnavailable
from sylk.gateway.sip import Originator
from sylk.gateway.sylkrtc.fields import AOR, ValidationError

MAX_REQUEST = 64 * 1024 + 8 * 1024  # a 64 KiB body and its headers
MAX_HEADER_LINES = 100
MAX_TCP_CONNECTIONS = 64
TCP_IDLE_TIMEOUT = 300.0  # seconds; a proxy's connection stays while it sends, or keeps it alive
# compact header names (RFC 3261 §7.3.3) and the names this module reads
_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "l": "content-length", "c": "content-type"}
_URI = re.compile(r"<?\s*sips?:(?:(?P<user>[^@;>\s]+)@)?(?P<host>[^;>\s:]+|\[[0-9A-Fa-f:.]+\])(?::\d+)?", re.IGNORECASE)
_TAG = re.compile(r";\s*tag=", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

log = Logger()
_AOR = AOR()


@dataclass(frozen=True)
class SIPRequest:
    method: str
    uri: str
    headers: tuple[tuple[str, str], ...]  # (lower-case full name, value), in order
    body: bytes

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name), None)

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


class MalformedRequest(ValueError):
    pass


def parse_request(data: bytes) -> SIPRequest:
    """One SIP request (a UDP datagram, or a TCP frame); MalformedRequest when it is not one this module can read."""
    if len(data) > MAX_REQUEST:
        raise MalformedRequest("request too large")
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        raise MalformedRequest("no end of headers")
    try:
        lines = head.decode("utf-8").split("\r\n")
    except UnicodeDecodeError:
        raise MalformedRequest("headers are not UTF-8") from None
    if len(lines) > MAX_HEADER_LINES:
        raise MalformedRequest("too many header lines")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] != "SIP/2.0" or not parts[0].isalpha():
        raise MalformedRequest("not a SIP/2.0 request line")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # a folded line continues the previous header
            name, value = headers.pop()
            headers.append((name, f"{value} {line.strip()}"))
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or _CONTROL.search(value):
            raise MalformedRequest("a malformed header line")
        name = name.strip().lower()
        headers.append((_COMPACT.get(name, name), value.strip()))
    request = SIPRequest(parts[0].upper(), parts[1], tuple(headers), body)
    length = request.header("content-length")
    if length is not None and (not _is_number(length) or int(length) != len(body)):
        raise MalformedRequest("Content-Length does not match the body")
    for needed in ("via", "from", "to", "call-id", "cseq"):
        if request.header(needed) is None:
            raise MalformedRequest(f"no {needed} header")
    return request


def response(request: SIPRequest, code: int, reason: str, extra: Iterable[str] = ()) -> bytes:
    """The answer to `request`: its Vias, From, To (tagged), Call-ID and CSeq, no body."""
    to = request.header("to") or ""
    if not _TAG.search(to):
        to = f"{to};tag={uuid.uuid4().hex[:16]}"
    lines = [f"SIP/2.0 {code} {reason}", *(f"Via: {via}" for via in request.all("via")),
             f"From: {request.header('from')}", f"To: {to}", f"Call-ID: {request.header('call-id')}",
             f"CSeq: {request.header('cseq')}", f"Server: sylkgateway {__version__}", *extra, "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def _aor(value: str) -> str | None:
    """The user@domain of a From or To header, normalised as the browser's requests are (fields.AOR), or None."""
    found = address_of(value)
    if found is None or found[0] is None:
        return None
    try:
        return _AOR.convert(f"{found[0]}@{found[1]}")
    except ValidationError:
        return None


def address_of(value: str) -> tuple[str | None, str] | None:
    """(user, host) of a SIP URI or name-addr (host in lower case); None when there is none."""
    match = _URI.search(value)
    if match is None:
        return None
    return match.group("user"), match.group("host").lower()


def display_name(value: str) -> str | None:
    name = value.partition("<")[0].strip().strip('"').strip() if "<" in value else ""
    return name[:128] or None


# What to do with a MESSAGE: (account, sender, content type, content) -> nothing; raises ValueError to refuse it.
Deliver = Callable[[str, Originator, str, str], None]


class MessageEntry:
    """What the entry point answers, whatever the transport: the checks, then the delivery."""

    def __init__(self, trusted: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network],
                 domain_allowed: Callable[[str], bool], deliver: Deliver) -> None:
        self._trusted = tuple(trusted)
        self._domain_allowed = domain_allowed
        self._deliver = deliver

    def trusts(self, source: str) -> bool:
        """Whether `source` (an IP address) is one of the trusted proxies. Nothing from others is read at all."""
        try:
            address = ipaddress.ip_address(source.partition("%")[0])
        except ValueError:
            return False
        return any(address in network for network in self._trusted)

    def answer(self, data: bytes, source: str) -> bytes | None:
        """The response to the request in `data` from `source` (an IP address), or None when there is none:
        nothing at all for an untrusted source (no reflection, no log line per packet), nor for what is not a
        request this module can read."""
        if not self.trusts(source):
            return None
        try:
            request = parse_request(data)
        except MalformedRequest as e:
            log.info("SIP entry point: unusable request from {source}: {error}", source=source, error=e)
            return None
        try:
            code, reason, extra = self._decide(request)
        except Exception:  # a bug must not cost the entry point (nor repeat a traceback per packet unseen)
            log.failure("SIP entry point: {method} from {source} failed", method=request.method, source=source)
            code, reason, extra = 500, "Server Internal Error", ()
        return None if code == 0 else response(request, code, reason, extra)

    def _decide(self, request: SIPRequest) -> tuple[int, str, tuple[str, ...]]:
        if request.method == "ACK":
            return 0, "", ()
        if request.method == "OPTIONS":
            return 200, "OK", ("Allow: MESSAGE, OPTIONS",)
        if request.method != "MESSAGE":
            return 405, "Method Not Allowed", ("Allow: MESSAGE, OPTIONS",)
        recipient = _aor(request.header("to") or "")
        sender = _aor(request.header("from") or "")
        if recipient is None or sender is None:
            return 400, "Bad Request", ()
        if not self._domain_allowed(recipient.partition("@")[2]):
            return 404, "Not Found", ()
        content_type = (request.header("content-type") or "text/plain").strip()
        try:
            content = request.body.decode("utf-8")
        except UnicodeDecodeError:
            return 415, "Unsupported Media Type", ()
        originator = Originator(sender, display_name(request.header("from") or ""))
        try:
            self._deliver(recipient, originator, content_type, content)
        except HistoryUnavailable:
            return 503, "Service Unavailable", ()  # nothing could keep it: the proxy should not count it delivered
        except ValueError as e:
            log.info("SIP entry point: MESSAGE for {recipient} refused: {error}", recipient=recipient, error=e)
            return 400, "Bad Request", ()
        return 200, "OK", ()


class MessageEntryUDP(DatagramProtocol):
    def __init__(self, entry: MessageEntry) -> None:
        self._entry = entry

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        answer = self._entry.answer(datagram, addr[0])
        if answer is not None and self.transport is not None:
            self.transport.write(answer, addr)


class _MessageEntryStream(Protocol):
    """SIP over TCP: requests framed by their Content-Length; a connection idle for TCP_IDLE_TIMEOUT is closed."""

    factory: MessageEntryTCP

    def __init__(self) -> None:
        self._buffer = b""
        self._idle: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self.factory.open += 1
        self._idle = self.factory.clock.callLater(TCP_IDLE_TIMEOUT, self._drop, "idle")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.factory.open -= 1
        if self._idle is not None and self._idle.active():
            self._idle.cancel()

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        if self._idle is not None and self._idle.active():
            self._idle.reset(TCP_IDLE_TIMEOUT)
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = self._buffer[:end]
            length = _content_length(head)
            if length is None:
                self._drop("a request without a usable Content-Length")
                return
            total = end + 4 + length
            if total > MAX_REQUEST:
                self._drop("a request too large")
                return
            if len(self._buffer) < total:
                break
            frame, self._buffer = self._buffer[:total], self._buffer[total:]
            answer = self.factory.entry.answer(frame, _host(self.transport.getPeer()))
            if answer is not None:
                self.transport.write(answer)
        if len(self._buffer) > MAX_REQUEST:
            self._drop("too much without a complete request")

    def _drop(self, why: str) -> None:
        assert self.transport is not None
        log.info("SIP entry point: dropping a TCP connection from {peer}: {why}", peer=_host(self.transport.getPeer()),
                 why=why)
        self._buffer = b""
        self.transport.loseConnection()


class MessageEntryTCP(Factory):
    """Connections only from the trusted proxies, and at most MAX_TCP_CONNECTIONS at once (a proxy keeps one or a
    few open): a host that is not one gets its connection closed before anything is read."""

    protocol = _MessageEntryStream  # type: ignore[assignment]  # (how Twisted's own factories declare it too)

    def __init__(self, entry: MessageEntry, clock: IReactorTime) -> None:
        self.entry = entry
        self.clock = clock
        self.open = 0

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        if addr is None or not self.entry.trusts(_host(addr)) or self.open >= MAX_TCP_CONNECTIONS:
            return None
        return super().buildProtocol(addr)  # type: ignore[return-value]  # (a _MessageEntryStream)


def _is_number(text: str) -> bool:
    """A decimal number of at most 7 ASCII digits (str.isdigit alone takes '²', which int() refuses)."""
    return text.isascii() and text.isdigit() and len(text) <= 7


def _content_length(head: bytes) -> int | None:
    """The Content-Length of a header block (0 without one, as for a request that has no body)."""
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in (b"content-length", b"l"):
            value = value.strip()
            return int(value) if value.isdigit() and len(value) <= 7 else None
    return 0


def _host(address: IAddress) -> str:
    return str(getattr(address, "host", ""))
