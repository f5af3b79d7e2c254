"""An account's events across gateways: with the message store on PostgreSQL, what one gateway forks to an
account's other connections (a message sent, its outcome, an address book change, a read mark or removal) reaches
the account's connections on every other gateway sharing the database, through PostgreSQL's LISTEN/NOTIFY (no
bus of our own).

A gateway publishes through the store's own connection (`pg_notify` in the store's thread), so an event about a
stored change is sent after the change: a device told of it finds it when it syncs. Each gateway listens on a
connection of its own, read by the reactor as the socket becomes readable; what it hears from another gateway
goes to its connections that hold the account (MessagingHub.remote), and what it sent itself is ignored. A lost
listening connection is opened again with backoff; what was published meanwhile is not heard (the devices see
it at their next sync).

PostgreSQL refuses a notification of 8000 bytes or more: an event larger than MAX_PAYLOAD (a long message's
`sync`) stays on its gateway, and is logged.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sylk.gateway.sylkrtc.model import AccountSync, AddressBookUpdated, DispositionNotification, Event

CHANNEL = "sylkgateway_events"
MAX_PAYLOAD = 7900  # bytes; PostgreSQL's limit is 8000
RECONNECT_FIRST, RECONNECT_LAST = 1.0, 30.0  # seconds between attempts to listen again, doubling
# The events that cross gateways, by name (nothing else is rebuilt from what the database says).
CARRIED: dict[str, type[Event]] = {cls.__name__: cls for cls in (AccountSync, DispositionNotification,
                                                                   AddressBookUpdated)}

# Sends one payload on CHANNEL (the store's connection): PostgreSQLMessageStore.notify.
Notify = Callable[[str, str], Deferred[None]]
# What a gateway does with another gateway's event for an account: MessagingHub.remote.
Deliver = Callable[[str, Event], None]


class PostgreSQLEvents(Service):
    log = Logger()

    def __init__(self, dsn: str, reactor: Any, notify: Notify, deliver: Deliver) -> None:
        self._dsn = dsn
        self._reactor = reactor
        self._notify = notify
        self._deliver = deliver
        self.gateway = uuid.uuid4().hex  # this process, as the events it sends say
        self._listener: _Listener | None = None
        self._retry_delay = RECONNECT_FIRST
        self._retrying: Any = None

    # --- publishing (MessagingHub's bus) ---

    def publish(self, account: str, event: Event) -> None:
        name = type(event).__name__
        if name not in CARRIED:
            return
        payload = json.dumps({"gateway": self.gateway, "account": account, "event": name,
                              "fields": event.values()}, separators=(",", ":"))
        if len(payload.encode("utf-8")) > MAX_PAYLOAD:
            self.log.info("An event of {account} too large for the other gateways ({size} bytes) stays here",
                          account=account, size=len(payload))
            return
        self._notify(CHANNEL, payload).addErrback(
            lambda f: self.log.failure("Publishing an event of {account} failed", f, account=account))

    # --- listening ---

    def startService(self) -> None:
        super().startService()
        self._listen()

    def stopService(self) -> Any:
        super().stopService()
        if self._retrying is not None and self._retrying.active():
            self._retrying.cancel()
        self._drop_listener()
        return None

    def _listen(self) -> None:
        deferToThread(self._connect).addCallbacks(self._listening, self._not_listening)

    def _connect(self) -> Any:
        """(In a thread: connecting waits for the network.) A connection in autocommit mode that LISTENs."""
        import psycopg2
        connection = psycopg2.connect(self._dsn)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f"LISTEN {CHANNEL}")
        return connection

    def _listening(self, connection: Any) -> None:
        if not self.running:
            connection.close()
            return
        self._retry_delay = RECONNECT_FIRST
        self._listener = _Listener(connection, self._heard, self._lost)
        self._reactor.addReader(self._listener)
        self.log.info("Listening for the other gateways' events")

    def _not_listening(self, failure: Failure) -> None:
        self.log.warn("Cannot listen for the other gateways' events: {error}", error=failure.value)
        self._again()

    def _lost(self, listener: _Listener, reason: str) -> None:
        if listener is not self._listener:
            return  # (told twice: by the read that failed, then by the reactor)
        self._drop_listener()
        self.log.warn("Stopped hearing the other gateways' events ({reason}); listening again", reason=reason)
        self._again()

    def _drop_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            self._reactor.removeReader(listener)  # (before closing: the reactor asks for its descriptor)
            listener.close()

    def _again(self) -> None:
        if self.running:
            self._retrying = self._reactor.callLater(self._retry_delay, self._listen)
            self._retry_delay = min(self._retry_delay * 2, RECONNECT_LAST)

    def _heard(self, payload: str) -> None:
        try:
            message = json.loads(payload)
            if message["gateway"] == self.gateway:
                return
            event = CARRIED[message["event"]](**message["fields"])
            account = message["account"]
            if not isinstance(account, str):
                raise TypeError("no account")
        except (ValueError, KeyError, TypeError) as e:
            self.log.warn("An unusable event from another gateway: {error}", error=e)
            return
        self._deliver(account, event)


@implementer(IReadDescriptor)
class _Listener:
    """The listening connection as the reactor reads it."""

    def __init__(self, connection: Any, heard: Callable[[str], None],
                 lost: Callable[[_Listener, str], None]) -> None:
        self._connection = connection
        self._heard = heard
        self._lost = lost

    def fileno(self) -> int:
        return int(self._connection.fileno())

    def doRead(self) -> None:
        try:
            self._connection.poll()
        except Exception as e:  # the server went away, or the connection broke
            self._lost(self, str(e).strip() or type(e).__name__)
            return
        while self._connection.notifies:
            self._heard(self._connection.notifies.pop(0).payload)

    def connectionLost(self, reason: Failure) -> None:
        self._lost(self, str(reason.value))

    def logPrefix(self) -> str:
        return "PostgreSQLEvents"

    def close(self) -> None:
        try:
            self._connection.close()
        except Exception:  # (already closed or broken: nothing left to release)
            pass
