"""Connections kept for a client across sockets: `connection-keep` and `connection-resume`.

A browser's media (browser <-> Janus <-> SIP) does not depend on its WebSocket, so a socket that drops (a proxy
timeout, a network change, a laptop lid) need not cost its calls and registrations. A client that sent
`connection-keep` with a secret token gets its connection kept when the socket closes: the accounts, registrations
and calls go on for `keep_grace` seconds, their events collected by a `DetachedPeer`. A new socket that presents
the token (`connection-resume`) takes the connection over; without one in time, the connection is closed as any
other (calls ended, accounts unregistered).

    attached --socket closes, token kept--> detached --resume--> attached (the token is spent)
                                            detached --keep_grace passes--> closed
    attached --resume from another socket--> attached there (the old socket is closed with 4409)

Tokens live only in this process's memory, as SHA-256 digests, never logged; each is good for one resume.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from sylk.gateway.errors import APIError
from sylk.gateway.interfaces import IConnectionPeer
from sylk.gateway.sylkrtc.model import Event
from sylk.gateway.util import Timer

if TYPE_CHECKING:
    from sylk.gateway.connection import Connection

# Events kept for a detached connection; past this the oldest are dropped and the resume says how many.
MAX_KEPT_EVENTS = 256


@implementer(IConnectionPeer)
class DetachedPeer:
    """Where a kept connection's events go while no socket is attached: a bounded queue, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.missed = 0

    def send_event(self, event: Event) -> None:
        self.events.append(event)
        if len(self.events) > MAX_KEPT_EVENTS:
            del self.events[0]
            self.missed += 1

    def disconnect(self, code: int, reason: str) -> None:
        pass  # no socket to close; the connection closes itself after saying so


class Keeper:
    """The kept connections of one gateway, by the digest of their token."""

    log = Logger()

    def __init__(self, clock: IReactorTime, grace: float) -> None:
        self._clock = clock
        self.grace = grace
        self._by_digest: dict[bytes, Connection] = {}
        self._digest_of: dict[Connection, bytes] = {}
        self._graces: dict[Connection, Timer] = {}

    def keep(self, connection: Connection, token: str) -> None:
        """From now on `connection` is kept when its socket closes, until a resume with `token` (which replaces
        any earlier token of this connection)."""
        digest = _digest(token)
        holder = self._by_digest.get(digest)
        if holder is not None and holder is not connection:
            raise APIError("This token is in use by another connection; choose a new random one")
        if connection not in self._digest_of:
            connection.when_closed().addCallback(lambda _: self._forget(connection))
        else:
            self._by_digest.pop(self._digest_of[connection], None)
        self._by_digest[digest] = connection
        self._digest_of[connection] = digest

    def is_kept(self, connection: Connection) -> bool:
        return connection in self._digest_of

    def detach(self, connection: Connection) -> None:
        """Its socket closed: keep it for `grace` seconds, then close it."""
        timer = self._graces.setdefault(connection, Timer(self._clock))
        timer.start(self.grace, self._expired, connection)

    def take(self, token: str) -> Connection:
        """The connection kept under `token`, no longer kept (the token is spent); APIError if there is none."""
        connection = self._by_digest.pop(_digest(token), None)
        if connection is None:
            raise APIError("Unknown, expired or already used token")
        del self._digest_of[connection]
        grace = self._graces.pop(connection, None)
        if grace is not None:
            grace.cancel()
        return connection

    def _expired(self, connection: Connection) -> None:
        self.log.info("Connection {name}: not resumed within {grace:g} s; closing it", name=connection.name,
                      grace=self.grace)
        self._forget(connection)
        connection.close()

    def _forget(self, connection: Connection) -> None:
        digest = self._digest_of.pop(connection, None)
        if digest is not None:
            self._by_digest.pop(digest, None)
        grace = self._graces.pop(connection, None)
        if grace is not None:
            grace.cancel()


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()
