"""The browser-facing WebSocket endpoint (autobahn): handshake rules and the glue between a socket and its
Connection.

Handshake: the browser must offer a sylkRTC subprotocol we speak (else HTTP 406), come from an allowed origin
(else HTTP 403) and an address with fewer than `max_connections_per_address` connections (else HTTP 429), and the
SIP backend must be up (else HTTP 503). Each accepted socket gets a RequestChannel (frames to requests, one answer
each, at most `request_rate` per second) and a Connection (the state); the socket is the connection's
IConnectionPeer. A browser that stops reading its socket is dropped before what is written to it can pile up.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import itertools
from collections import Counter
from typing import Any, Callable
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from txaio._common import _BatchedTimer
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IAddress, IPushProducer, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from sylk.gateway.config import WebRTCGatewayConfig
from sylk.gateway.connection import Connection
from sylk.gateway.interfaces import IConnectionPeer, ISIPBackend
from sylk.gateway.sylkrtc.channel import RequestChannel, TokenBucket
from sylk.gateway.sylkrtc.dialects import DIALECTS
from sylk.gateway.errors import APIError
from sylk.gateway.keep import DetachedPeer, Keeper
from sylk.gateway.messaging.hub import MessagingHub
from sylk.gateway.metrics import GatewayMetrics
from sylk.gateway.sylkrtc.model import ConnectionKeep, ConnectionResume, Event, Request, Resumed
from sylk.gateway.util import Timer

# Close codes we send: autobahn lets an application use only 1000 and 3000-4999 (1008 goes through _fail).
CLOSE_GOING_AWAY = 1001  # the gateway is stopping (RFC 6455: an endpoint going away)
CLOSE_RESUMED_ELSEWHERE = 4409  # another socket resumed this socket's connection (connection-resume)
# HTTP answers to a handshake (besides autobahn's own ConnectionDeny codes).
SERVICE_UNAVAILABLE = 503
# Seconds a client refused with 503 is told to wait (Retry-After): a spawned Janus is usually connected within a
# second of the gateway's start, and a restarted one within a few.
RETRY_AFTER = 1
TOO_MANY_REQUESTS = 429
# Frames above max_message_size are answered with an error; frames above this many times that size are not even
# read: autobahn closes the socket with 1009 (message too big).
HARD_LIMIT_FACTOR = 4
# A browser whose socket has more unsent data than the transport's buffer (64 KiB) is not reading: it is dropped
# unless it catches up within this many seconds, and as soon as more than this many bytes are written to it
# meanwhile (more than the largest single answer, an address book of up to 1 MiB).
SLOW_READER_TIMEOUT = 30.0
SLOW_READER_MAX_BYTES = 1024 * 1024


class _SocketLogger(Logger):
    """The log of a browser socket. autobahn logs every frame it sends or receives at debug level through its
    protocol's `log`, which is this one, and twistd writes every level: several lines per sylkRTC message, a quarter
    of the gateway's CPU during calls. Only info and above go out."""

    def debug(self, format: str | None = None, **kwargs: object) -> None:
        pass


@implementer(IConnectionPeer)
class GatewayWebSocketProtocol(WebSocketServerProtocol):
    log = _SocketLogger()
    factory: GatewayWebSocketFactory
    channel: RequestChannel | None = None
    connection: Connection | None = None
    address = ""  # whom max_connections_per_address counts this socket against (see client_address)
    reader: SlowReaderGuard | None = None

    def onConnect(self, request: Any) -> str:
        for name in DIALECTS:
            if name in request.protocols:
                break
        else:
            raise ConnectionDeny(ConnectionDeny.NOT_ACCEPTABLE,
                                 f"No compatible protocol specified (offer one of: {', '.join(DIALECTS)})")
        origin = request.headers.get("origin")
        if not origin_allowed(origin, self.factory.settings.web_origins):
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, f"Origin {origin} is not allowed")
        self.address = client_address(self._stream().getPeer(), request.headers.get("x-forwarded-for"),
                                      self.factory.trusted_proxy_hops)
        if self.factory.address_full(self.address):
            limit = self.factory.settings.max_connections_per_address
            self.log.info("Refused a connection from {address}: it has {limit} already", address=self.address,
                          limit=limit)
            raise ConnectionDeny(TOO_MANY_REQUESTS, f"Too many connections from this address (at most {limit})")
        if self.factory.shutting_down:
            raise ConnectionDeny(SERVICE_UNAVAILABLE, "sylkgateway is shutting down")
        if not self.factory.backend.available:
            raise ConnectionDeny(SERVICE_UNAVAILABLE, "SIP backend (Janus) is not available; try again later")
        self.dialect = DIALECTS[name]
        return name

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:
        if code == SERVICE_UNAVAILABLE:  # Janus not there yet, or shutting down: say when to try again
            responseHeaders = [*(responseHeaders or []), ("Retry-After", str(RETRY_AFTER))]
        super().failHandshake(reason, code, responseHeaders)

    def onOpen(self) -> None:
        factory = self.factory
        name = f"{self.peer}#{next(factory.serial)}"
        settings = factory.settings
        self.connection = Connection(name, factory.backend, settings, self, factory.reactor,
                                     answers_reinvites=self.dialect.answers_reinvites, client=self.address,
                                     metrics=factory.metrics, messaging=factory.messaging)
        bucket = TokenBucket(settings.request_rate, settings.request_burst, factory.reactor)
        self.channel = RequestChannel(name, self.dialect, self._send_frame, self._handle_request,
                                      settings.max_message_size, settings.trace_client, bucket=bucket,
                                      disconnect=self._fail, metrics=factory.metrics)
        transport = self._stream()
        self.reader = SlowReaderGuard(transport, factory.reactor, self._drop_slow_reader)
        # Under twisted.web (WebSocketResource) the HTTP channel that handed us the transport is its producer still.
        transport.unregisterProducer()
        transport.registerProducer(self.reader, True)
        factory.connection_opened(self.connection, self)
        self.log.info("Connection {name} opened ({dialect}, client {address})", name=name,
                      dialect=self.dialect.subprotocol, address=self.address)
        self.connection.open()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.channel is not None:
            self.channel.frame_received(payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.reader is not None:
            self.reader.stopProducing()  # autobahn may have unregistered it already: its deadline must go now
        connection, self.connection = self.connection, None
        if connection is None:
            return
        keeper = self.factory.keeper
        if keeper.is_kept(connection) and connection.state in ("ready", "recovering") and connection.accounts and \
                not self.factory.shutting_down:
            self.log.info("Connection {name}: socket closed ({code} {reason}); kept for {grace:g} s",
                          name=connection.name, code=code, reason=reason or "", grace=keeper.grace)
            connection.attach(DetachedPeer())
            keeper.detach(connection)
            return
        self.log.info("Connection {name} closed ({code} {reason})", name=connection.name, code=code,
                      reason=reason or "")
        connection.close()

    def _handle_request(self, request: Request) -> Deferred[None] | None:
        """Requests about the socket's hold on its connection are the socket's; the rest the connection's."""
        connection = self.connection
        if connection is None:
            raise APIError("Connection is closed")
        if isinstance(request, ConnectionKeep):
            self.factory.keeper.keep(connection, request.token)
            return None
        if isinstance(request, ConnectionResume):
            self._resume(connection, request.token)
            return None
        return connection.handle(request)

    def _resume(self, fresh: Connection, token: str) -> None:
        """Take over the connection kept under `token` in place of this socket's own, which has nothing yet."""
        if fresh.state != "ready" or fresh.accounts or fresh.sessions:
            raise APIError("connection-resume must come right after ready, before any account request")
        kept = self.factory.keeper.take(token)
        previous = kept.attach(self)
        if isinstance(previous, GatewayWebSocketProtocol):  # still attached to a socket: it is taken from it
            previous.connection = None
            previous.disconnect(CLOSE_RESUMED_ELSEWHERE, "Resumed on another connection")
        self.connection = kept
        self.factory.connection_moved(kept, self)
        fresh.close()
        self.log.info("Connection {name} resumed on {peer}", name=kept.name, peer=self.peer)
        # after the ack (sent when this returns): what the client missed, then the state, then what happened
        self.factory.reactor.callLater(0, self._send_resume, kept, previous)

    def _send_resume(self, connection: Connection, previous: IConnectionPeer) -> None:
        if self.connection is not connection:
            return  # taken over again meanwhile
        waiting = previous if isinstance(previous, DetachedPeer) else DetachedPeer()
        snapshot = connection.snapshot()
        self.send_event(Resumed(missed=waiting.missed))
        for event in snapshot:
            self.send_event(event)
        shown = {id(event) for event in snapshot}  # a ringing call's offer, a pending re-INVITE: said once
        for event in waiting.events:
            if id(event) not in shown:
                self.send_event(event)

    def _stream(self) -> Any:
        """The transport: TCP, or TLS over it; a consumer and a producer as well as an ITransport."""
        return self.transport

    def _send_frame(self, data: bytes) -> None:
        # Answers can come after the socket started closing (autobahn still delivers frames then); they have
        # nowhere to go, and sendMessage would raise.
        if self.state != self.STATE_OPEN:
            return
        if self.reader is None or self.reader.may_write(len(data)):
            self.sendMessage(data)

    def _fail(self, code: int, reason: str) -> None:
        # sendClose() takes only 1000 and 3000-4999; a protocol-level code (1008) goes out the way autobahn sends
        # its own (1009): a close frame, then the closing handshake (failByDrop is off).
        self._fail_connection(code, reason)

    def _drop_slow_reader(self, why: str) -> None:
        name = self.connection.name if self.connection is not None else self.peer
        self.log.warn("Connection {name}: the browser {why}; dropping it", name=name, why=why)
        self.dropConnection(abort=True)  # a close handshake would wait for the very reads it does not do

    # --- IConnectionPeer ---

    def send_event(self, event: Event) -> None:
        if self.channel is not None:
            self.channel.send_event(event)

    def disconnect(self, code: int, reason: str) -> None:
        if self.state in (self.STATE_OPEN, self.STATE_CONNECTING):
            if code == 1000 or 3000 <= code <= 4999:
                self.sendClose(code, reason[:120])  # a close reason must fit in a control frame
            else:
                self._fail(code, reason[:120])


@implementer(IPushProducer)
class SlowReaderGuard:
    """The socket's streaming producer, so that Twisted pauses it when the transport holds more unsent data than its
    bufferSize (64 KiB): the browser is not reading. While paused, the browser's input is not read either (each
    request would add an answer), and a browser that has not caught up within SLOW_READER_TIMEOUT, or that more
    than SLOW_READER_MAX_BYTES are written to meanwhile, is dropped: nothing piles up for it without bound."""

    def __init__(self, transport: Any, clock: IReactorTime, drop: Callable[[str], None]) -> None:
        self._transport = transport
        self._drop = drop
        self._deadline = Timer(clock)
        self._written_while_paused: int | None = None  # None while the browser keeps up

    def may_write(self, size: int) -> bool:
        """Count a frame about to be written; False when the browser has just been dropped instead."""
        if self._written_while_paused is None:
            return True
        self._written_while_paused += size
        if self._written_while_paused <= SLOW_READER_MAX_BYTES:
            return True
        self.stopProducing()
        self._drop(f"is not reading and more than {SLOW_READER_MAX_BYTES} bytes wait for it")
        return False

    def pauseProducing(self) -> None:
        if self._written_while_paused is not None:
            return  # Twisted pauses again at every write while the buffer is full: the first one counts
        self._written_while_paused = 0
        self._transport.pauseProducing()  # stop reading its requests
        self._deadline.start(SLOW_READER_TIMEOUT, self._drop,
                             f"has not read what was sent to it for {SLOW_READER_TIMEOUT:g} s")

    def resumeProducing(self) -> None:
        self._written_while_paused = None
        self._deadline.cancel()
        self._transport.resumeProducing()

    def stopProducing(self) -> None:
        self._written_while_paused = None
        self._deadline.cancel()


def client_address(peer: IAddress, forwarded_for: str | None, trusted_proxy_hops: int) -> str:
    """Whom max_connections_per_address counts a socket against: the TCP peer's IP address or, behind
    `trusted_proxy_hops` proxies, the entry that many from the right of X-Forwarded-For, the one the proxy nearest
    the client appended (with fewer entries the leftmost, as autobahn's trustXForwardedFor picks it: each was
    appended by a trusted proxy). IPv6 addresses count by their /64: one host usually holds a whole /64."""
    host = getattr(peer, "host", None) or str(peer)
    if trusted_proxy_hops and forwarded_for:
        host = [entry.strip() for entry in forwarded_for.split(",")][-trusted_proxy_hops:][0] or host
    try:
        address = ipaddress.ip_address(_without_port(host))
    except ValueError:
        return host.lower()  # not an IP address (a proxy's "unknown"): counted as written
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # an IPv4 client of a dual-stack listener
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _without_port(host: str) -> str:
    """`[2001:db8::1]:443` and `192.0.2.1:443` (as some proxies write X-Forwarded-For) without the port."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host


def origin_allowed(origin: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether a page from `origin` may connect. Patterns are origins with optional `*` (and `?`) wildcards,
    compared without default ports (autobahn's own check wants explicit ports, so `https://example.com` would never
    match). Clients that send no Origin are not browsers and are let through: an Origin header protects users'
    browsers, it does not authenticate anyone."""
    if "*" in allowed or origin is None:
        return True
    normalized = _normalize_origin(origin)
    return normalized is not None and any(
        fnmatch.fnmatchcase(normalized, _literal_brackets(_normalize_origin(pattern) or pattern.lower()))
        for pattern in allowed)


def _literal_brackets(pattern: str) -> str:
    """fnmatch reads `[...]` as a set of characters; in an origin it is an IPv6 address (`http://[::1]:8080`)."""
    return pattern.replace("[", "[[]")


def _normalize_origin(origin: str) -> str | None:
    try:
        parts = urlsplit(origin.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    default = {"http": 80, "https": 443}.get(parts.scheme)
    host = parts.netloc.rpartition("@")[2]
    if port is not None and port == default:
        host = host.rpartition(":")[0]
    return f"{parts.scheme}://{host}"


class GatewayWebSocketFactory(WebSocketServerFactory):
    protocol = GatewayWebSocketProtocol  # type: ignore[assignment]  # a protocol class is what autobahn wants here

    def __init__(self, backend: ISIPBackend, settings: WebRTCGatewayConfig, reactor: Any,
                 trusted_proxy_hops: int = 0, metrics: GatewayMetrics | None = None,
                 messaging: MessagingHub | None = None) -> None:
        super().__init__(protocols=list(DIALECTS), server="sylkgateway")
        # autobahn's handshake, ping and close timers on the reactor given, as everything else (txaio's own would
        # take the global reactor, where a test's fake clock never runs them); batched as autobahn does
        self._batched_timer = _BatchedTimer(200.0, 1000, seconds_provider=reactor.seconds,
                                            delayed_call_creator=reactor.callLater)
        self.metrics = metrics
        self.messaging = messaging
        self.backend = backend
        self.settings = settings
        self.reactor = reactor
        self.trusted_proxy_hops = trusted_proxy_hops
        self.connections: dict[Connection, GatewayWebSocketProtocol] = {}  # until their close() is done
        self._per_address: Counter[str] = Counter()  # the same, by client address
        self.keeper = Keeper(reactor, settings.keep_grace)
        self.shutting_down = False
        self.serial = itertools.count(1)
        hard_limit = settings.max_message_size * HARD_LIMIT_FACTOR
        ping = settings.websocket_ping_interval
        self.setProtocolOptions(
            autoPingInterval=ping,
            autoPingTimeout=ping / 2,
            maxMessagePayloadSize=hard_limit,
            maxFramePayloadSize=hard_limit,
            openHandshakeTimeout=10,
            closeHandshakeTimeout=2,
            failByDrop=False,  # refuse protocol violations (such as a frame over the hard limit) with a close frame
        )

    def address_full(self, address: str) -> bool:
        return self._per_address[address] >= self.settings.max_connections_per_address

    def connection_opened(self, connection: Connection, socket: GatewayWebSocketProtocol) -> None:
        self.connections[connection] = socket
        self._per_address[socket.address] += 1
        connection.when_closed().addCallback(lambda _: self.connection_closed(connection))

    def connection_moved(self, connection: Connection, socket: GatewayWebSocketProtocol) -> None:
        """A kept connection was resumed on another socket: it counts for that socket's address from now on."""
        self._uncount(connection)
        self.connections[connection] = socket
        self._per_address[socket.address] += 1

    def connection_closed(self, connection: Connection) -> None:
        """The connection's close() is done: it counts no more (until then its accounts may still hold SIP stacks,
        and a kept one counts while detached)."""
        self._uncount(connection)

    def _uncount(self, connection: Connection) -> None:
        socket = self.connections.pop(connection, None)
        if socket is not None:
            self._per_address[socket.address] -= 1
            if not self._per_address[socket.address]:
                del self._per_address[socket.address]

    @staticmethod
    def _goodbye(_: object, socket: GatewayWebSocketProtocol, reason: str) -> None:
        socket.disconnect(CLOSE_GOING_AWAY, reason)

    def close_all(self, reason: str) -> Deferred[Any]:
        """End every browser's calls and unregister its accounts (Connection.close, bounded), then close its socket
        with 1001 and `reason`: the browser sees its calls end before the socket does."""
        self.shutting_down = True  # handshakes still under way are refused from now on
        closing = []
        for connection, socket in list(self.connections.items()):
            closed = connection.close()
            closed.addBoth(self._goodbye, socket, reason)
            closing.append(closed)
        return DeferredList(closing, consumeErrors=True)
