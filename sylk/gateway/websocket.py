"""The browser-facing WebSocket endpoint (autobahn): handshake rules and the glue between a socket and its
Connection.

Handshake: the browser must offer a sylkRTC subprotocol we speak (else HTTP 406) and the SIP backend must be up
(else HTTP 503). Each accepted socket gets a RequestChannel (frames to requests, one answer each) and a Connection
(the state); the socket is the connection's IConnectionPeer.
"""

from __future__ import annotations

import fnmatch
import itertools
from typing import Any
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger
from zope.interface import implementer

from sylk.gateway.config import WebRTCGatewayConfig
from sylk.gateway.connection import Connection
from sylk.gateway.interfaces import IConnectionPeer, ISIPBackend
from sylk.gateway.sylkrtc.channel import RequestChannel
from sylk.gateway.sylkrtc.dialects import DIALECTS
from sylk.gateway.sylkrtc.model import Event

# Close codes we send: autobahn lets an application use only 1000 and 3000-4999.
CLOSE_SHUTTING_DOWN = 4001
SERVICE_UNAVAILABLE = 503
# Frames above max_message_size are answered with an error; frames above this many times that size are not even
# read: autobahn closes the socket with 1009 (message too big).
HARD_LIMIT_FACTOR = 4


@implementer(IConnectionPeer)
class GatewayWebSocketProtocol(WebSocketServerProtocol):
    log = Logger()
    factory: GatewayWebSocketFactory
    channel: RequestChannel | None = None
    connection: Connection | None = None

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
        if self.factory.shutting_down:
            raise ConnectionDeny(SERVICE_UNAVAILABLE, "sylkgateway is shutting down")
        if not self.factory.backend.available:
            raise ConnectionDeny(SERVICE_UNAVAILABLE, "SIP backend (Janus) is not available; try again later")
        self.dialect = DIALECTS[name]
        return name

    def onOpen(self) -> None:
        factory = self.factory
        name = f"{self.peer}#{next(factory.serial)}"
        self.connection = Connection(name, factory.backend, factory.settings, self, factory.reactor,
                                     answers_reinvites=self.dialect.answers_reinvites)
        self.channel = RequestChannel(name, self.dialect, self._send_frame, self.connection.handle,
                                      factory.settings.max_message_size, factory.settings.trace_client)
        factory.connections[self.connection] = self
        self.log.info("Connection {name} opened ({dialect})", name=name, dialect=self.dialect.subprotocol)
        self.connection.open()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.channel is not None:
            self.channel.frame_received(payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            self.log.info("Connection {name} closed ({code} {reason})", name=connection.name, code=code,
                          reason=reason or "")
            closed = connection.close()
            closed.addBoth(lambda _: self.factory.connections.pop(connection, None))

    def _send_frame(self, data: bytes) -> None:
        # Answers can come after the socket started closing (autobahn still delivers frames then); they have
        # nowhere to go, and sendMessage would raise.
        if self.state == self.STATE_OPEN:
            self.sendMessage(data)

    # --- IConnectionPeer ---

    def send_event(self, event: Event) -> None:
        if self.channel is not None:
            self.channel.send_event(event)

    def disconnect(self, code: int, reason: str) -> None:
        if self.state in (self.STATE_OPEN, self.STATE_CONNECTING):
            self.sendClose(code, reason[:120])  # a close reason must fit in a control frame


def origin_allowed(origin: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether a page from `origin` may connect. Patterns are origins with optional `*` wildcards, compared without
    default ports (autobahn's own check wants explicit ports, so `https://example.com` would never match).
    Clients that send no Origin are not browsers and are let through: an Origin header protects users' browsers,
    it does not authenticate anyone."""
    if "*" in allowed or origin is None:
        return True
    normalized = _normalize_origin(origin)
    return normalized is not None and any(
        fnmatch.fnmatchcase(normalized, _normalize_origin(pattern) or pattern.lower()) for pattern in allowed)


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
    protocol = GatewayWebSocketProtocol

    def __init__(self, backend: ISIPBackend, settings: WebRTCGatewayConfig, reactor: Any) -> None:
        super().__init__(protocols=list(DIALECTS), server="sylkgateway")
        self.backend = backend
        self.settings = settings
        self.reactor = reactor
        self.connections: dict[Connection, GatewayWebSocketProtocol] = {}  # until their close() is done
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

    def close_all(self, reason: str) -> Deferred[Any]:
        """Say goodbye to every browser and wait until their accounts are unregistered."""
        self.shutting_down = True  # handshakes still under way are refused from now on
        closing = []
        for connection, socket in list(self.connections.items()):
            closing.append(connection.close())  # first, so queued requests are answered on the open socket
            socket.disconnect(CLOSE_SHUTTING_DOWN, reason)
        return DeferredList(closing, consumeErrors=True)
