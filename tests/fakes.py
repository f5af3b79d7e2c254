"""Small fakes shared by unit tests."""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from sylk.gateway.interfaces import IConnectionPeer
from sylk.gateway.sylkrtc.model import Event, RegistrationStateChanged


@implementer(IConnectionPeer)
class FakePeer:
    """The browser end of a connection: records what the connection sends it."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.closed: tuple[int, str] | None = None

    def send_event(self, event: Event) -> None:
        self.events.append(event)

    def disconnect(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def states(self, account: str | None = None) -> list[Any]:
        """The registration states reported so far (for one account), with reasons where given."""
        return [e.state if e.reason is None else (e.state, e.reason) for e in self.events
                if isinstance(e, RegistrationStateChanged) and (account is None or e.account == account)]
