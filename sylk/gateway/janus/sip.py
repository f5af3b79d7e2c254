"""ISIPBackend on Janus's SIP plugin: `JanusSIPBackend`, and `JanusSIPSession`, one Janus session per connection.

The backend has a pool of Janus *members* (each behind its own link: a child the gateway runs, or a Janus server),
and places each connection's session on the usable member with the least load: a member whose SIP stacks are at its
budget goes last; otherwise the fewest sessions of open connections (created or being created) for its budget, then the fewest
stacks.
Sessions come first because a new connection has no accounts yet when it is placed: counting stacks first sent a
whole reconnect storm to the few members that had just let their old stacks go, and made them start hundreds of
stacks each at ~10 a second while the others idled. Over many connections, accounts follow sessions. Each member has its own admission of new stacks (janus/
admission.py), so a member's limits and its failure stay its own: when a member goes away, only the connections
on it lose their sessions, and they recover on whichever member is usable. An account's user agent, its lines and
calls are in janus/lines.py and janus/sipcall.py, and the SIP plugin's requests and events in janus/sipcodec.py.
"""

from __future__ import annotations

import weakref
from typing import Callable, Hashable, Protocol, Sequence

from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from sylk.gateway.errors import BackendUnavailable
from sylk.gateway.interfaces import ISIPBackend, ISIPSession, ISIPSessionObserver, ISIPUserAgent, IUserAgentObserver
from sylk.gateway.janus.admission import DEFAULT_ACCOUNT_BUDGET, GatewayFull, StackAdmission
from sylk.gateway.janus.client import JanusAPI, JanusSession
from sylk.gateway.janus.lines import JanusSIPUserAgent, LineSettings
from sylk.gateway.sip import SIPIdentity

# New Sofia stacks let into Janus at once. Janus starts them one at a time on the SIP plugin's single thread
# (~100 ms each), so more only queue up inside Janus, where every request's timeout keeps running; queued here
# (janus/admission.py), a burst of registrations (a reconnect storm) proceeds at Janus's pace instead of timing out,
# and every client gets its turn.
NEW_STACKS_AT_ONCE = 2

# How long after the backend starts a new session waits for every member to be connected. Spawned members come up
# a few hundred milliseconds apart; without the wait, the clients reconnecting to a restarted gateway would all land
# on whichever member was first.
STARTUP_WAIT = 5.0

__all__ = ["DEFAULT_ACCOUNT_BUDGET", "NEW_STACKS_AT_ONCE", "STARTUP_WAIT", "JanusLink", "JanusSIPBackend", "JanusSIPSession",
           "LineSettings"]


class JanusLink(Protocol):
    """What the backend needs from one member's connection manager: the API of its current, checked Janus
    connection, and how many accounts that Janus may hold."""

    api: JanusAPI | None

    def when_available(self) -> Deferred[None]:
        """Fires once `api` is usable."""

    def account_budget(self) -> int:
        """SIP stacks the Janus behind `api` may hold (asked again for each new connection: a restarted Janus may
        have another open-files limit)."""


@implementer(ISIPBackend)
class JanusSIPBackend:
    def __init__(self, links: Sequence[JanusLink], settings: LineSettings, clock: IReactorTime) -> None:
        """`links`: the pool's members, one link each."""
        self._links = list(links)
        self._settings = settings
        self._clock = clock
        self._starting_until: float | None = clock.seconds() + STARTUP_WAIT  # None once every member was connected
        # One admission per connection to a member: a new connection is a new (or restarted) Janus, with none of the
        # old stacks.
        self._admissions: weakref.WeakKeyDictionary[JanusAPI, StackAdmission] = weakref.WeakKeyDictionary()
        # The sessions of open connections on each member, those being created included (so a burst of connections
        # is spread too) and those of closing connections not (they only wind down: in a reconnect storm, the old
        # connections' sessions must not steer the new ones).
        self._placed: weakref.WeakKeyDictionary[JanusAPI, int] = weakref.WeakKeyDictionary()

    @property
    def available(self) -> bool:
        return any(link.api is not None for link in self._links)

    def when_available(self) -> Deferred[None]:
        if self.available:
            return succeed(None)
        some: Deferred[None] = Deferred()
        for link in self._links:
            link.when_available().addCallback(lambda _: None if some.called else some.callback(None))
        return some

    def open_session(self, observer: ISIPSessionObserver) -> Deferred[ISIPSession]:
        if self._starting_until is not None:
            remaining = self._starting_until - self._clock.seconds()
            if all(link.api is not None for link in self._links) or remaining <= 0:
                self._starting_until = None
            else:
                every_member = gatherResults([link.when_available() for link in self._links], consumeErrors=True)
                every_member.addTimeout(remaining, self._clock)
                return every_member.addBoth(lambda _: self._place(observer))
        return self._place(observer)

    def _place(self, observer: ISIPSessionObserver) -> Deferred[ISIPSession]:
        usable = [(link, link.api) for link in self._links if link.api is not None]
        if not usable:
            return fail(BackendUnavailable("Janus is not connected"))
        admissions = [self._admission(link, api) for link, api in usable]

        def load(i: int) -> tuple[bool, float, float, int]:
            api, admission = usable[i][1], admissions[i]
            sessions = self._placed.get(api, 0)
            return admission.in_use >= admission.budget, sessions / admission.budget, admission.in_use / admission.budget, i
        index = min(range(len(usable)), key=load)
        api, admission = usable[index][1], admissions[index]
        self._placed[api] = self._placed.get(api, 0) + 1
        opened: list[JanusSIPSession] = []

        def unplaced() -> None:
            self._placed[api] -= 1

        def lost(reason: str) -> None:
            if opened:
                opened[0].release_stacks()
            observer.session_lost(reason)

        def created(session: JanusSession) -> JanusSIPSession:
            client = getattr(observer, "client", None) or session  # turns for new stacks are shared by client
            opened.append(JanusSIPSession(session, self._settings, self._clock, admission, client, unplaced))
            return opened[0]

        def failed(failure: Failure) -> Failure:
            unplaced()
            return failure
        return api.create_session(lost).addCallbacks(created, failed)

    def stack_levels(self, api: JanusAPI) -> tuple[int, int, int]:
        """SIP stacks on the Janus behind `api`: alive, starting, and waiting for their turn (its admission)."""
        admission = self._admissions.get(api)
        return (0, 0, 0) if admission is None else admission.levels

    def _admission(self, link: JanusLink, api: JanusAPI) -> StackAdmission:
        admission = self._admissions.get(api)
        if admission is None:
            admission = self._admissions[api] = StackAdmission(NEW_STACKS_AT_ONCE, max(1, link.account_budget()))
        return admission


@implementer(ISIPSession)
class JanusSIPSession:
    def __init__(self, session: JanusSession, settings: LineSettings, clock: IReactorTime,
                 admission: StackAdmission, client: Hashable, unplaced: Callable[[], None] = lambda: None) -> None:
        """`unplaced`: called once, when the session stops counting towards its member's load (its connection is
        closing, or it is gone)."""
        self._session = session
        self._unplaced: Callable[[], None] | None = unplaced
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

    def closing(self) -> None:
        unplaced, self._unplaced = self._unplaced, None
        if unplaced is not None:
            unplaced()

    def close(self) -> Deferred[None]:
        self.release_stacks()
        return self._session.destroy()

    def release_stacks(self) -> None:
        """The session is gone (destroyed or lost), and every SIP stack in it."""
        self.closing()
        agents, self._agents = self._agents, []
        for agent in agents:
            self._admission.ended(agent)
