"""ISIPBackend on Janus's SIP plugin: `JanusSIPBackend`, and `JanusSIPSession`, one Janus session per connection.

The backend places a connection's session on the Janus behind its link and shares that Janus fairly (janus/
admission.py); an account's user agent, its lines and calls are in janus/lines.py and janus/sipcall.py, and the SIP
plugin's requests and events in janus/sipcodec.py.
"""

from __future__ import annotations

import weakref
from typing import Callable, Hashable, Protocol

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from sylk.gateway.errors import BackendUnavailable
from sylk.gateway.interfaces import ISIPBackend, ISIPSession, ISIPSessionObserver, ISIPUserAgent, IUserAgentObserver
from sylk.gateway.janus.admission import GatewayFull, StackAdmission
from sylk.gateway.janus.client import JanusAPI, JanusSession
from sylk.gateway.janus.lines import JanusSIPUserAgent, LineSettings
from sylk.gateway.sip import SIPIdentity

# New Sofia stacks let into Janus at once. Janus starts them one at a time on the SIP plugin's single thread
# (~100 ms each), so more only queue up inside Janus, where every request's timeout keeps running; queued here
# (janus/admission.py), a burst of registrations (a reconnect storm) proceeds at Janus's pace instead of timing out,
# and every client gets its turn.
NEW_STACKS_AT_ONCE = 2
# Accounts (SIP stacks) one Janus may hold when its open-files limit is not known (an external Janus).
DEFAULT_ACCOUNT_BUDGET = 2000

__all__ = ["DEFAULT_ACCOUNT_BUDGET", "NEW_STACKS_AT_ONCE", "JanusLink", "JanusSIPBackend", "JanusSIPSession",
           "LineSettings"]


class JanusLink(Protocol):
    """What the backend needs from the connection manager: the API of the current, checked Janus connection."""

    api: JanusAPI | None

    def when_available(self) -> Deferred[None]:
        """Fires once `api` is usable."""


@implementer(ISIPBackend)
class JanusSIPBackend:
    def __init__(self, link: JanusLink, settings: LineSettings, clock: IReactorTime,
                 account_budget: Callable[[], int] = lambda: DEFAULT_ACCOUNT_BUDGET) -> None:
        """`account_budget`: how many SIP stacks the Janus behind the link may hold, asked again for each new link
        (a restarted Janus may have another open-files limit)."""
        self._link = link
        self._settings = settings
        self._clock = clock
        self._account_budget = account_budget
        # One admission per link: a new link is a new (or restarted) Janus, with none of the old stacks.
        self._admissions: weakref.WeakKeyDictionary[JanusAPI, StackAdmission] = weakref.WeakKeyDictionary()

    @property
    def available(self) -> bool:
        return self._link.api is not None

    def when_available(self) -> Deferred[None]:
        return self._link.when_available()

    def open_session(self, observer: ISIPSessionObserver) -> Deferred[ISIPSession]:
        api = self._link.api
        if api is None:
            return fail(BackendUnavailable("Janus is not connected"))
        admission = self._admissions.get(api)
        if admission is None:
            admission = self._admissions[api] = StackAdmission(NEW_STACKS_AT_ONCE, self._account_budget())
        opened: list[JanusSIPSession] = []

        def lost(reason: str) -> None:
            if opened:
                opened[0].release_stacks()
            observer.session_lost(reason)

        def created(session: JanusSession) -> JanusSIPSession:
            client = getattr(observer, "client", None) or session  # turns for new stacks are shared by client
            opened.append(JanusSIPSession(session, self._settings, self._clock, admission, client))
            return opened[0]
        return api.create_session(lost).addCallback(created)


@implementer(ISIPSession)
class JanusSIPSession:
    def __init__(self, session: JanusSession, settings: LineSettings, clock: IReactorTime,
                 admission: StackAdmission, client: Hashable) -> None:
        self._session = session
        self._settings = settings
        self._clock = clock
        self._admission = admission
        self._client = client
        self._agents: list[JanusSIPUserAgent] = []

    def admit_account(self) -> None:
        if self._admission.full:
            raise GatewayFull(self._admission.budget)

    def create_user_agent(self, identity: SIPIdentity, observer: IUserAgentObserver) -> ISIPUserAgent:
        agent = JanusSIPUserAgent(self._session, identity, observer, self._settings, self._clock, self._admission,
                                  self._client)
        self._agents.append(agent)
        return agent

    def close(self) -> Deferred[None]:
        self.release_stacks()
        return self._session.destroy()

    def release_stacks(self) -> None:
        """The session is gone (destroyed or lost), and every SIP stack in it."""
        agents, self._agents = self._agents, []
        for agent in agents:
            self._admission.ended(agent)
