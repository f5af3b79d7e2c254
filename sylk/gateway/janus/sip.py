"""ISIPBackend on Janus's SIP plugin: one Janus session per connection; per account, a master SIP handle and helpers.

A `janus.plugin.sip` handle carries one call at a time, so an account's user agent keeps a set of *lines*:
- the **master** handle runs the account's own Sofia-SIP stack (its port, its credentials). It registers with
  `ha1_secret` when the account registers; before that, a `register` with `send_register: false` only sets the
  identity, which is enough to place calls. Janus answers that one directly with `registered` (`register_sent`
  false), which is not a registration.
- **helper** handles (`type: helper`, the master's `master_id`) share the master's stack. Janus gives an incoming
  INVITE to the master, or to the first idle helper when the master is busy, so a registered account always keeps
  one idle helper (attaching another whenever a line gets busy, up to the call limit): a call arriving while busy
  still rings (without an idle line, Janus answers 486 by itself and reports `missed_call`). Outgoing calls go on
  idle helpers, attached as needed (~2 ms each; a handle with a stack of its own would cost ~100 ms of the SIP
  plugin's single thread). One spare rather than a full set: every handle costs Janus, and a full set per
  account made tearing down hundreds of accounts at once overrun the un-REGISTER timeouts.
Outgoing calls never use the master: Janus 1.1.2 cancels an INVITE that has had a provisional response without
ever reporting the end, and leaves that handle unable to call again. Such a helper is retired (detached) and
replaced; the master, which holds the registration, must not be. Unregistering makes Janus detach every helper
(their calls end); they are attached again when needed.

SIP-plugin events are dispatched by name: account-level ones to `JanusSIPUserAgent._EH_<event>`, call-level ones
to `JanusSIPCall._EH_<event>`.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Protocol

import weakref

from twisted.internet import defer
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sylk.gateway.config import SIPProxy
from sylk.gateway.errors import APIError, BackendUnavailable
from sylk.gateway.interfaces import (ICallObserver, ISIPBackend, ISIPCall, ISIPSession, ISIPSessionObserver,
                                     ISIPUserAgent, IUserAgentObserver)
from sylk.gateway.janus import sipevents
from sylk.gateway.janus.admission import GatewayFull, StackAdmission
from sylk.gateway.janus.client import (JanusAPI, JanusDisconnected, JanusError, JanusHandle, JanusSession,
                                      plugin_data)
from sylk.gateway.sip import Originator, Registration, SIPIdentity
from sylk.gateway.util import OneShotObserver, Timer

SIP_PLUGIN = "janus.plugin.sip"
# How long a call waits for the master to leave a transient state (registering, ...) before it gives up.
MASTER_WAIT = 15.0
# New Sofia stacks let into Janus at once. Janus starts them one at a time on the SIP plugin's single thread
# (~100 ms each), so more only queue up inside Janus, where every request's timeout keeps running; queued here
# (janus/admission.py), a burst of registrations (a reconnect storm) proceeds at Janus's pace instead of timing out,
# and every client gets its turn.
NEW_STACKS_AT_ONCE = 2
# Accounts (SIP stacks) one Janus may hold when its open-files limit is not known (an external Janus).
DEFAULT_ACCOUNT_BUDGET = 2000
# Delay before trying again to attach the spare helper line a registered account should have.
HELPER_RETRY = 5.0
# How long a call waits for Janus to report its end after a hangup or decline before it gives the line up (under
# Call's TERMINATE_TIMEOUT, so the backend is clean when the browser is told).
HANGUP_WAIT = 8.0
# How long after a re-INVITE of Janus's own (hold, unhold, our answer to the far end's) the next one waits: until
# the far end's 200 (or ACK) Janus drops a hold or unhold without a word and takes a new offer as a second answer.
REINVITE_SETTLE = 1.5
# Holds, unholds and answers to re-INVITEs that may wait for the previous one to settle, per call.
MAX_WAITING_REINVITES = 4
# How long a transfer may go on after the far end's last NOTIFY: a ringing target answers within SIP's Timer C.
TRANSFER_PROGRESS_WAIT = 185.0
# After a call ends, Janus may still report the end of its PeerConnection (core `hangup`, "Close PC"); one arriving
# this soon on the line is the old call's, not the next one's.
STALE_PC_WINDOW = 2.0
_SRTP = {"no": None, "optional": "sdes_optional", "mandatory": "sdes_mandatory"}
# SIP-plugin events that only answer a request of ours (its Deferred has them) or that the gateway has no use for.
_ANSWERS_ONLY = frozenset({"registering", "unregistering", "accepting", "declining", "updating", "updated", "holding",
                           "resuming", "hangingup", "transferring", "infosent", "messagesent", "dtmfsent", "reset"})
# Events about a call; without a call on the line they are strays of one that ended.
_CALL_EVENTS = frozenset({"calling", "proceeding", "ringing", "progress", "accepted", "updatingcall", "transfer",
                          "notify", "info", "dtmf", "hangup"})


class JanusLink(Protocol):
    """What the backend needs from the connection manager: the API of the current, checked Janus connection."""

    api: JanusAPI | None

    def when_available(self) -> Deferred[None]:
        """Fires once `api` is usable."""


@dataclass(frozen=True)
class LineSettings:
    max_lines: int = 4  # calls at once per account: the master and max_lines - 1 helpers
    srtp: str = "no"  # towards SIP: no, optional or mandatory (SDES); see docs/configuration.md on optional
    decline_code: int = 486
    route: SIPProxy | None = None  # every request through this proxy; None: to the domain, per RFC 3263
    transaction_timeout: float = 32.0  # Sofia's T1x64: how long a SIP transaction (a re-INVITE) may take
    queue_timeout: float = 45.0  # how long a new SIP stack may wait for its turn (register_timeout)


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


class _Line:
    """One SIP-plugin handle of an account, and the call it carries."""

    def __init__(self, agent: JanusSIPUserAgent, helper: bool) -> None:
        self.agent = agent
        self.helper = helper
        self.handle: JanusHandle | None = None
        self.ready = False  # attached, and (helpers) bound to the master: it can carry a call
        self.call: JanusSIPCall | None = None
        self.idle_since = 0.0
        self.stale_pc_until = 0.0  # a core hangup before this time is about the line's previous call
        self.refused_invite = False  # an INVITE came while the line was taken: Janus refuses the taker's `call`

    def handle_event(self, message: dict[str, Any]) -> None:
        """An event for this line, handled inside a boundary: whatever goes wrong ends at most the line's call."""
        call = self.call
        try:
            self._dispatch(message)
        except Exception:
            self.agent.event_failed(self, call, message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("janus")
        if kind == "event":
            data = plugin_data(message)
            result = data.get("result")
            if isinstance(result, dict):
                if "call_id" in data and "call_id" not in result:
                    result = {**result, "call_id": data["call_id"]}  # where Janus puts it for `hangup` and others
                self.agent.line_event(self, result, message.get("jsep"))
            elif "error" in data:
                self.agent.log.warn("The SIP plugin reported an error for {aor}: {error}", aor=self.agent.identity.aor,
                                    error=sipevents.phrase(data.get("error"), 200))
        elif kind == "hangup" and self.agent.clock.seconds() < self.stale_pc_until:
            self.stale_pc_until = 0.0  # the previous call's PeerConnection closing
        elif self.call is not None:
            self.call.core_event(kind, message)

    def handle_detached(self) -> None:
        try:
            self.agent.line_detached(self)
        except Exception:
            self.agent.event_failed(self, self.call, {"janus": "detached"})


@implementer(ISIPUserAgent)
class JanusSIPUserAgent:
    log = Logger()

    def __init__(self, session: JanusSession, identity: SIPIdentity, observer: IUserAgentObserver,
                 settings: LineSettings, clock: IReactorTime, admission: StackAdmission, client: Hashable) -> None:
        self._session = session
        self.identity = identity
        self._observer = observer
        self.settings = settings
        self.clock = clock
        self._admission = admission
        self._client = client  # whose turn a new stack of this account takes
        self._turn: Deferred[None] | None = None  # waiting for that turn
        self._has_stack = False  # the master's Sofia stack exists (its first register request was answered)
        self._master: _Line | None = None
        self._master_id: int | None = None  # Janus's id for the master's stack, which helpers name
        self._status = "none"  # the master's plugin state: none, identity, registering, registered, unregistered
        self._status_changed = OneShotObserver()
        self._helpers: list[_Line] = []
        self._deliveries: dict[str, Deferred[tuple[int, str]]] = {}  # our MESSAGEs' answers, by Call-ID
        self._generation = 0  # bumped by close(): work started before it is dropped

    # --- ISIPUserAgent ---

    def register(self, registration: Registration) -> Deferred[None]:
        return Deferred.fromCoroutine(self._register(registration))

    def unregister(self) -> Deferred[None]:
        master = self._master
        if master is None or master.handle is None:
            return fail(BackendUnavailable("not registered"))
        # Calls wait meanwhile: Janus is about to detach the helpers, a call placed on one now would die with it.
        previous = self._status
        self._set_status("unregistering")

        def refused(failure: Failure) -> Failure:
            if self._status == "unregistering":
                self._set_status(previous)
            return failure
        return master.handle.message({"request": "unregister"}).addCallbacks(self._reply, refused,
                                                                             callbackArgs=(master,))

    def call(self, uri: str, sdp: str, headers: dict[str, str], observer: ICallObserver,
             transfer_of: ISIPCall | None = None) -> ISIPCall:
        call = JanusSIPCall(self, "outgoing", observer)
        call.remote_uri = uri
        # The far end's REFER, by Janus's id: Janus adds its Referred-By (and Replaces) to the INVITE and tells the
        # far end how the call goes.
        refer_id = transfer_of.take_refer_id() if isinstance(transfer_of, JanusSIPCall) else None
        Deferred.fromCoroutine(self._place(call, uri, sdp, headers, refer_id)).addErrback(call.failed)
        return call

    def send_message(self, uri: str, content_type: str, content: str) -> Deferred[tuple[int, str]]:
        return Deferred.fromCoroutine(self._send_message(uri, content_type, content))

    def close(self) -> Deferred[None]:
        if self._turn is not None:
            self._turn.cancel()  # waiting to start a stack that is no longer wanted: let the next one have the turn
        self._generation += 1
        lines = ([self._master] if self._master else []) + self._helpers
        self._master, self._helpers, self._master_id = None, [], None
        self._has_stack = False
        self._admission.ended(self)
        self._set_status("none")
        for line in lines:
            if line.handle is not None:
                line.handle.detach().addErrback(self._detach_failed)
                line.handle = None
        return succeed(None)

    # --- events from the lines ---

    def line_event(self, line: _Line, result: dict[str, Any], jsep: dict[str, Any] | None) -> None:
        event = result.get("event")
        if not isinstance(event, str) or not event.isidentifier():
            self.log.warn("Dropped a SIP plugin event without a usable name for {aor}: {event!r:.80}",
                          aor=self.identity.aor, event=event)
            return
        handler = getattr(self, f"_EH_{event}", None)
        if handler is not None:
            handler(line, result, jsep)
        elif line.call is not None and line.call.has_handler(event):
            line.call.plugin_event(event, result, jsep)
        elif event not in _ANSWERS_ONLY and event not in _CALL_EVENTS:
            self.log.warn("Unknown SIP plugin event {event} for {aor}; ignored", event=event, aor=self.identity.aor)

    def event_failed(self, line: _Line, call: JanusSIPCall | None, message: dict[str, Any]) -> None:
        """Handling an event of `line` raised: log it once with its traceback and end what it concerns (the call the
        line carried, if any), never more; the account and every other call go on."""
        self.log.failure("Handling a Janus event for {aor} failed: {message!r:.300}", aor=self.identity.aor,
                         message=message)
        call = call or line.call
        if call is None or call.is_ended:
            return
        try:
            call.abort("Internal error while handling a SIP event")
        except Exception:
            self.log.failure("Ending call {call_id} of {aor} after that failure failed too", call_id=call.call_id,
                             aor=self.identity.aor)

    def line_detached(self, line: _Line) -> None:
        """Janus let a line go by itself (it does so with the helpers when the master unregisters)."""
        if line.call is not None:
            line.call.ended("Janus released the line (the account unregistered)")
        if line is self._master:
            self._master, self._master_id = None, None
            self._has_stack = False
            self._admission.ended(self)
            self._set_status("none")
            self._observer.registration_failed("Janus detached the SIP handle")
        elif line in self._helpers:
            self._helpers.remove(line)

    def line_freed(self, line: _Line, call: JanusSIPCall) -> bool:
        if line.call is not call:
            return False  # the line already carries another call
        line.call = None
        line.idle_since = self.clock.seconds()
        if call.had_media:
            line.stale_pc_until = line.idle_since + STALE_PC_WINDOW
        return True

    def call_over(self, line: _Line, call: JanusSIPCall) -> None:
        """A call on `line` ended. A helper carries one call only: Janus frees a call's WebRTC state (its ICE agent)
        some time after the call's end, and a new call on the handle before then fails ("Error setting ICE
        locally", 490); Janus also keeps a carried-out REFER on the handle and would tell its sender about later
        calls. A fresh helper costs ~2 ms and is usually ready before it is needed (the spare)."""
        if self.line_freed(line, call) and line.helper:
            self.retire(line)
            self._ensure_spare_line()

    def any_handle(self) -> JanusHandle | None:
        """A handle of the account's, for requests that need one but no particular call (refusing a REFER)."""
        for line in [self._master, *self._helpers]:
            if line is not None and line.handle is not None:
                return line.handle
        return None

    def retire(self, line: _Line) -> None:
        """Let go of a helper Janus left in a state it cannot call from again (detaching also ends whatever Janus
        still has on it)."""
        if line in self._helpers:
            self._helpers.remove(line)
            if line.handle is not None:
                line.handle.detach().addErrback(self._detach_failed)
                line.handle = None

    # --- SIP plugin events about the account ---

    def _EH_registered(self, line: _Line, result: dict[str, Any], jsep: Any) -> None:
        if line.helper:
            return
        self._master_id = sipevents.integer(result.get("master_id")) or self._master_id
        if result.get("register_sent") is False:
            self._set_status("identity")  # not a registration: the identity for calls is set
            return
        self._set_status("registered")
        self._observer.registration_succeeded()
        self._ensure_spare_line()

    def _EH_registration_failed(self, line: _Line, result: dict[str, Any], jsep: Any) -> None:
        if line.helper:
            return
        self._set_status("unregistered")
        code, reason = sipevents.status_code(result.get("code")), sipevents.phrase(result.get("reason"))
        self._observer.registration_failed(f"{code or ''} {reason}".strip() or "Registration failed")

    def _EH_unregistered(self, line: _Line, result: dict[str, Any], jsep: Any) -> None:
        if line.helper:
            return
        helpers, self._helpers = self._helpers, []  # Janus detaches them itself, right after this event
        for helper in helpers:
            if helper.call is not None:
                helper.call.ended("Janus released the line (the account unregistered)")
        self._set_status("unregistered")
        self._observer.unregistered()

    def _EH_incomingcall(self, line: _Line, result: dict[str, Any], jsep: dict[str, Any] | None) -> None:
        if line.call is not None:
            # Janus gave the INVITE to a line just taken for an outgoing call (it still looked idle to Janus).
            # Refuse it as busy, as Janus does when no line is idle; the hangup that follows carries the INVITE's
            # Call-ID, so the outgoing call on the line ignores it.
            self.log.info("Refusing an INVITE for {aor} that came on a line taken by another call",
                          aor=self.identity.aor)
            line.refused_invite = True
            line.handle.message({"request": "decline", "code": 486}).addErrback(  # type: ignore[union-attr]
                self._request_failed)
            self._observer.missed_call(sipevents.originator(result.get("username"), result.get("displayname")))
            return
        caller = sipevents.originator(result.get("username"), result.get("displayname"))
        call = JanusSIPCall(self, "incoming", None, line)
        call.call_id = sipevents.call_id(result.get("call_id"))
        call.remote_uri = caller.uri
        call.headers = sipevents.headers(result.get("headers"))
        line.call = call
        self._ensure_spare_line()
        offer = sipevents.sdp(jsep, "offer")
        if offer is None:
            # sylkRTC has no way to ask the browser for an offer: refuse calls without SDP (or with an unusable one)
            line.handle.message({"request": "decline", "code": 488}).addErrback(call.request_failed)  # type: ignore[union-attr]
            return
        self._observer.incoming_call(call, caller, offer)

    def _EH_missed_call(self, line: _Line, result: dict[str, Any], jsep: Any) -> None:
        self._observer.missed_call(sipevents.originator(result.get("caller"), result.get("displayname")))  # not `username`

    def _EH_message(self, line: _Line, result: dict[str, Any], jsep: Any) -> None:
        """A MESSAGE: inside the call on the line, or for the account (those come to the master, which may be in a
        call too: Janus does not say which, so one from the call's far end counts as the call's)."""
        sender = sipevents.originator(result.get("sender"), result.get("displayname"))
        content_type = sipevents.content_type(result.get("content_type") or "text/plain")
        # no content: Janus could not pass it on (it was not UTF-8); an empty message would mislead the browser
        content = sipevents.text(result.get("content"), sipevents.MAX_CONTENT)
        if content_type is None or not content:
            self.log.warn("Dropped a MESSAGE for {aor} from {sender}: its content type, encoding or size is unusable",
                          aor=self.identity.aor, sender=sender.uri)
            return
        if line.call is not None and (line.helper or line.call.remote_uri == sender.uri):
            line.call.message_received(sender, content_type, content)
        else:
            self._observer.message_received(sender, content_type, content)

    def _EH_messagedelivery(self, line: _Line, result: dict[str, Any], jsep: Any) -> None:
        call_id = sipevents.call_id(result.get("call_id"))
        delivery = self._deliveries.pop(call_id, None) if call_id is not None else None
        if delivery is not None:
            delivery.callback(_delivery_answer(result))
        elif line.call is not None and call_id is not None and call_id == line.call.call_id:
            line.call.plugin_event("messagedelivery", result, jsep)  # one sent inside the call
        # else: a late answer to a MESSAGE already given up on (reported as 408)

    # --- internals ---

    def _set_status(self, status: str) -> None:
        self._status = status
        self._notify()

    def _notify(self) -> None:
        """Wake whoever waits for the master to change; each waiter waits again on a fresh observer."""
        observer, self._status_changed = self._status_changed, OneShotObserver()
        observer.fire()

    async def _register(self, registration: Registration) -> None:
        line = await self._master_line()
        generation = self._generation
        await self._master_request(line, self._identity_body(registration), "registering", generation)

    def _reply(self, reply: dict[str, Any], line: _Line) -> None:
        """A plugin's direct answer can already be final (`registered` for an identity, say): handle it as an
        event too; the answers that are only acknowledgements (`registering`, ...) have no handlers."""
        line.handle_event(reply)

    async def _master_request(self, line: _Line, body: dict[str, Any], busy_status: str, generation: int) -> None:
        """A register request on the master; `busy_status` holds other work off until its answer is in. The first
        one starts the account's Sofia stack, so it waits for its turn (janus/admission.py)."""
        previous = self._status
        self._set_status(busy_status)
        starting = False  # holding a turn to start a stack: reported back exactly once
        try:
            if not self._has_stack:
                await self._turn_to_start()
                starting = True
            if generation != self._generation:
                raise BackendUnavailable("closed while waiting to start")
            reply = await line.handle.message(body)  # type: ignore[union-attr]
        except Exception:
            if starting:
                self._admission.started(self, ok=False)
            if generation == self._generation and self._status == busy_status:
                self._set_status(previous if previous != "registered" else "unregistered")
            raise
        if starting:
            self._admission.started(self, ok=generation == self._generation)
        if generation == self._generation:
            self._has_stack = True
            self._reply(reply, line)

    async def _turn_to_start(self) -> None:
        """Wait for this account's turn to start its SIP stack, at most `queue_timeout` (register_timeout)."""
        self._turn = turn = self._admission.reserve(self._client)
        turn.addTimeout(self.settings.queue_timeout, self.clock)
        try:
            await turn
        except defer.TimeoutError:
            raise BackendUnavailable(f"408 The gateway is busy: no SIP stack could be started within "
                                     f"{self.settings.queue_timeout:g} s") from None
        except defer.CancelledError:
            raise BackendUnavailable("closed while waiting to start") from None
        finally:
            self._turn = None

    async def _wait(self, generation: int) -> None:
        """Until the master's state changes (bounded); fails if the user agent is closed meanwhile."""
        changed = self._status_changed.when_fired()
        changed.addTimeout(MASTER_WAIT, self.clock)
        try:
            await changed
        except Exception:
            raise BackendUnavailable(f"the account's SIP line stayed {self._status} for {MASTER_WAIT:g} s") \
                from None
        if generation != self._generation:
            raise BackendUnavailable("closed")

    async def _master_line(self) -> _Line:
        generation = self._generation
        while self._master is not None and self._master.handle is None:  # someone else is attaching it
            await self._wait(generation)
        if self._master is None:
            self._master = line = _Line(self, helper=False)
            try:
                handle = await self._session.attach(SIP_PLUGIN, line)
            except Exception:
                if self._master is line:
                    self._master = None
                self._notify()  # the next waiter attaches it
                raise
            if generation != self._generation:
                handle.detach().addErrback(self._detach_failed)
                raise BackendUnavailable("closed while attaching")
            line.handle = handle
            line.ready = True
            self._notify()  # the handle exists now
        return self._master

    async def _callable_master(self) -> _Line:
        """The master, in a state that allows calls and helpers: registered, or with its identity set."""
        generation = self._generation
        while True:
            line = await self._master_line()
            if self._status in ("identity", "registered"):
                return line
            if self._status in ("registering", "identifying", "unregistering"):
                await self._wait(generation)
                continue
            await self._master_request(line, self._identity_body(), "identifying", generation)
            if self._status not in ("identity", "registered"):
                raise BackendUnavailable(f"Janus did not accept the account's identity ({self._status})")

    async def _send_message(self, uri: str, content_type: str, content: str) -> tuple[int, str]:
        line = await self._callable_master()
        call_id = secrets.token_urlsafe(18)  # ours, so Janus's `messagedelivery` can be matched to it
        # waiting before the request goes: the answer may overtake Janus's reply to it
        delivery: Deferred[tuple[int, str]] = Deferred()
        self._deliveries[call_id] = delivery
        try:
            await line.handle.message({"request": "message", "uri": f"sip:{uri}",  # type: ignore[union-attr]
                                       "content_type": content_type, "content": content, "call_id": call_id,
                                       "headers": {"From": self._from_header()}})
            return await _answer_of(delivery, self.settings.transaction_timeout, self.clock)
        finally:
            self._deliveries.pop(call_id, None)

    async def _place(self, call: JanusSIPCall, uri: str, sdp: str, headers: dict[str, str],
                     refer_id: int | None) -> None:
        line = await self._free_line(call)
        if call.is_ended:  # terminated while a line was being found (which freed the line)
            return
        # Our own Call-ID: known before Janus answers, so events of other calls on the line can be told apart.
        body: dict[str, Any] = {"request": "call", "uri": f"sip:{uri}", "call_id": call.call_id}
        srtp = _SRTP[self.settings.srtp]
        if srtp is not None:
            body["srtp"] = srtp
        if headers:
            body["headers"] = headers
        if self.identity.answers_reinvites:
            body["autoaccept_reinvites"] = False  # re-INVITEs come to us (`updatingcall`), for the browser
        if refer_id is not None:
            body["refer_id"] = refer_id
        call.calling = True
        try:
            reply = await line.handle.message(body, {"type": "offer", "sdp": sdp})  # type: ignore[union-attr]
        except JanusError:
            if not line.refused_invite or call.is_ended:
                raise
            # Janus gave the line to an INVITE just before our `call` (which it refused); once more elsewhere
            self.line_freed(line, call)
            call.calling = False
            line = await self._free_line(call, avoid=line)  # that one is busy declining the INVITE
            if call.is_ended:
                return
            call.calling = True
            reply = await line.handle.message(body, {"type": "offer", "sdp": sdp})  # type: ignore[union-attr]
        call.placed(reply)

    async def _free_line(self, call: JanusSIPCall, avoid: _Line | None = None) -> _Line:
        """An idle helper for an outgoing call, attached if needed (the master must be callable for that)."""
        await self._callable_master()
        idle = [line for line in self._helpers if line.call is None and line.ready and line is not avoid]
        if idle:
            line = min(idle, key=lambda line: line.idle_since)  # idle the longest: Janus may still be cleaning up
        elif len(self._helpers) < self.settings.max_lines:
            line = self._new_helper()
        else:
            raise BackendUnavailable("every line of the account is busy")
        line.call = call  # taken now, before anything else can await
        line.refused_invite = False
        call.line = line
        if not line.ready:
            await self._attach_helper(line)
        self._ensure_spare_line()
        return line

    def _new_helper(self) -> _Line:
        line = _Line(self, helper=True)
        line.idle_since = self.clock.seconds()
        self._helpers.append(line)
        return line

    async def _attach_helper(self, line: _Line) -> None:
        """Attach a helper line and bind it to the master; on any failure the line is gone (handle detached)."""
        generation = self._generation
        try:
            line.handle = await self._session.attach(SIP_PLUGIN, line)
            if generation != self._generation or line not in self._helpers:
                raise BackendUnavailable("closed while attaching a line")
            if self._master_id is None:  # Janus let the master go meanwhile: there is no stack to bind to
                raise BackendUnavailable("the account's SIP stack went away while a line was being added")
            await line.handle.message({"request": "register", "type": "helper",
                                       "username": f"sip:{self.identity.aor}", "master_id": self._master_id})
            if generation != self._generation or line not in self._helpers:
                raise BackendUnavailable("closed while attaching a line")
        except Exception:
            self.retire(line)
            if line.handle is not None and line not in self._helpers:
                line.handle.detach().addErrback(self._detach_failed)
            line.handle = None
            raise
        line.ready = True

    def _ensure_spare_line(self) -> None:
        """While registered: one idle helper for the next incoming call (tried again later if Janus could not
        attach it)."""
        if self._status != "registered" or len(self._helpers) >= self.settings.max_lines or \
                any(line.call is None for line in self._helpers):
            return
        generation = self._generation
        line = self._new_helper()
        Deferred.fromCoroutine(self._attach_helper(line)).addErrback(self._spare_failed, line, generation)

    def _from_header(self) -> str:
        """The account's own From: Janus 1.1.2 sends out-of-dialog MESSAGEs from its stack's default, which is the
        Contact address (alice@192.0.2.2:51485), not the address of record."""
        name = self.identity.display_name
        address = f"<sip:{self.identity.aor}>"
        return f'"{_quoted_string_content(name)}" {address}' if name else address

    def _identity_body(self, registration: Registration | None = None) -> dict[str, Any]:
        """A `register` request: a real one, else one that only sets the identity for calls."""
        identity = self.identity
        body: dict[str, Any] = {
            "request": "register",
            "username": f"sip:{identity.aor}",
            "authuser": identity.user,
            "ha1_secret": identity.ha1,
        }
        if registration is None:
            body["send_register"] = False
        else:
            body["register_ttl"] = registration.ttl
            if registration.contact_params:
                body["contact_params"] = dict(registration.contact_params)  # an object in 1.1.2, not an array
        if identity.display_name:
            body["display_name"] = _quoted_string_content(identity.display_name)
        if identity.user_agent:
            body["user_agent"] = identity.user_agent
        if identity.incoming_header_prefixes:
            body["incoming_header_prefixes"] = list(identity.incoming_header_prefixes)
        body.update(self._route_params())
        return body

    def _route_params(self) -> dict[str, Any]:
        route = self.settings.route
        if route is None:
            return {"proxy": f"sip:{self.identity.domain}"}
        # `proxy` only targets the REGISTER; `outbound_proxy` also routes calls (and spares Sofia DNS lookups of
        # the account's domain, which may not resolve).
        params: dict[str, Any] = {"proxy": sip_uri(route), "outbound_proxy": sip_uri(route)}
        if route.transport == "tcp":
            params["force_tcp"] = True  # Janus >= 0.11.7 needs it for TCP proxies (janus-gateway#2868)
        elif route.transport == "tls":
            params["sips"] = True  # without it the account's Sofia stack has no TLS transport (416)
        return params

    def _spare_failed(self, failure: Failure, line: _Line, generation: int) -> None:
        if generation != self._generation or failure.check(JanusDisconnected, BackendUnavailable):
            return  # closed meanwhile: nothing to add a line to
        self.log.warn("Adding a line for {aor} failed ({error}); trying again in {delay:g} s", aor=self.identity.aor,
                      error=failure.value, delay=HELPER_RETRY)
        self.clock.callLater(HELPER_RETRY, self._retry_spare_line, generation)

    def _retry_spare_line(self, generation: int) -> None:
        if generation == self._generation:
            self._ensure_spare_line()

    def _request_failed(self, failure: Failure) -> None:
        if not failure.check(JanusDisconnected, BackendUnavailable):
            self.log.warn("A request for {aor} was refused: {error}", aor=self.identity.aor, error=failure.value)

    def _detach_failed(self, failure: Failure) -> None:
        if failure.check(JanusError) and failure.value.code == 459:
            return  # no such handle: Janus had let it go already
        if not failure.check(JanusDisconnected):
            self.log.warn("Detaching a SIP handle of {aor} failed: {error}", aor=self.identity.aor,
                          error=failure.value)


@implementer(ISIPCall)
class JanusSIPCall:
    """A call on one line. Candidates that arrive before the call (or the answer) has gone to Janus wait."""

    log = Logger()

    def __init__(self, agent: JanusSIPUserAgent, direction: str, observer: ICallObserver | None,
                 line: _Line | None = None) -> None:
        self.agent = agent
        self.direction = direction
        self.line = line
        # The SIP Call-ID; ours for outgoing calls (Janus takes it), the caller's for incoming ones.
        self.call_id: str | None = secrets.token_urlsafe(18) if direction == "outgoing" else None
        self.headers: dict[str, str] = {}
        self.remote_uri = ""  # the far end, user@domain
        self.calling = False  # outgoing: the `call` request went to Janus
        self._observer = observer
        self._sent = False  # our SDP (offer or answer) is with Janus: candidates can follow
        self._waiting_candidates: list[list[dict[str, Any]]] = []
        self._answered = False  # incoming: Janus took our `accept`
        self._accepted = False
        self._hang_up_when_placed = False
        self._hangup_wait = Timer(agent.clock, self._timer_failed)  # our hangup is out, its end not reported yet
        self._update_wait = Timer(agent.clock, self._timer_failed)  # our re-INVITE is out, its answer not in yet
        self._transfer_wait = Timer(agent.clock, self._timer_failed)  # our REFER is out, its outcome not in yet
        self._settling = Timer(agent.clock, self._timer_failed)  # a re-INVITE of Janus's own may still be open
        self._waiting_to_settle: list[tuple[Callable[[], Deferred[None]], bool, Deferred[None]]] = []
        self._refer_id: int | None = None  # Janus's id of the far end's pending REFER
        self._deliveries: list[Deferred[tuple[int, str]]] = []  # our MESSAGEs in the dialog, oldest first
        self.is_ended = False

    @property
    def had_media(self) -> bool:
        """Janus set up a PeerConnection for the call, whose end it will report."""
        return self._sent

    # --- ISIPCall ---

    def set_observer(self, observer: ICallObserver) -> None:
        self._observer = observer

    def trickle(self, candidates: list[dict[str, Any]]) -> None:
        if self._sent:
            self._send_candidates(candidates)
        else:
            self._waiting_candidates.append(candidates)

    def answer(self, sdp: str, headers: dict[str, str]) -> Deferred[None]:
        handle = self._handle()
        body: dict[str, Any] = {"request": "accept"}
        if headers:
            body["headers"] = headers
        if self.agent.identity.answers_reinvites:
            body["autoaccept_reinvites"] = False
        self._answered = True  # a hangup from now on comes after the accept, in Janus's order
        answer = handle.message(body, {"type": "answer", "sdp": sdp})
        self._sent = True
        self._flush_candidates()

        def refused(failure: Failure) -> Failure:
            self._answered = False  # still ringing in Janus: ending it means declining
            return failure
        return answer.addCallbacks(self._reply, refused)

    def send_dtmf_info(self, tone: str, duration: int) -> Deferred[None]:
        return self._request({"request": "dtmf_info", "digit": tone, "duration": duration})

    def update(self, sdp: str) -> Deferred[None]:
        # Janus 1.1.2 reports the answer (`accepted` + jsep) but not a failure (a 488, a 491, a timeout).
        return self._after_settling(lambda: self._request_with_outcome(
            {"request": "update"}, {"type": "offer", "sdp": sdp, "update": True}, self._update_wait,
            "call_update_failed", "No answer to the re-INVITE"), settle=False)

    def answer_update(self, sdp: str) -> Deferred[None]:
        return self._after_settling(lambda: self._request({"request": "update"},
                                                          {"type": "answer", "sdp": sdp, "update": True}))

    def hold(self, direction: str) -> Deferred[None]:
        return self._after_settling(lambda: self._request({"request": "hold", "direction": direction}))

    def unhold(self) -> Deferred[None]:
        return self._after_settling(lambda: self._request({"request": "unhold"}))

    def send_message(self, content_type: str, content: str) -> Deferred[tuple[int, str]]:
        # Janus reports the answer with the dialog's Call-ID, the same for every MESSAGE in it: answers are
        # matched in order.
        delivery: Deferred[tuple[int, str]] = Deferred()
        self._deliveries.append(delivery)

        def forget(result: Any) -> Any:
            if delivery in self._deliveries:
                self._deliveries.remove(delivery)
            return result
        sent = self._request({"request": "message", "content_type": content_type, "content": content})
        return sent.addCallback(lambda _: _answer_of(delivery, self.agent.settings.transaction_timeout,
                                                     self.agent.clock)).addBoth(forget)

    def transfer(self, uri: str, replace: ISIPCall | None) -> Deferred[None]:
        body: dict[str, Any] = {"request": "transfer", "uri": f"sip:{uri}"}
        if replace is not None:
            body["replace"] = replace.call_id  # Janus builds the Replaces from that call's dialog
        # Janus 1.1.2 does not report the REFER's own answer: a refusal (405, 603, ...) shows only as no NOTIFY.
        return self._request_with_outcome(body, None, self._transfer_wait, "call_transfer_progress", None,
                                          "No answer to the transfer request (REFER)")

    def reject_transfer(self, code: int) -> Deferred[None]:
        # Janus finds the REFER by its id, whatever the state of the call or the handle sent through (the call
        # may be over, its line given up): any handle of the account will do
        refer_id = self.take_refer_id()
        if refer_id is None:
            return fail(BackendUnavailable("no transfer request to refuse"))
        body = {"request": "decline", "refer_id": refer_id, "code": code}
        handle = self.line.handle if self.line is not None and self.line.handle is not None else \
            self.agent.any_handle()
        if handle is None:
            return fail(BackendUnavailable("the account has no SIP line left"))
        return handle.message(body).addCallback(lambda _: None)

    def take_refer_id(self) -> int | None:
        refer_id, self._refer_id = self._refer_id, None
        return refer_id

    def terminate(self) -> None:
        if self.is_ended or self._hangup_wait.running:
            return
        if self.direction == "outgoing" and not self.calling:
            self.ended("487 Request Terminated")  # not placed yet: nothing went out
            return
        if self.line is None or self.line.handle is None:
            self.ended("Janus released the line")  # the account is closing: its handles are gone with the call
            return
        if self.direction == "outgoing" and not self._sent:
            self._hang_up_when_placed = True  # Janus has the `call` but has not answered it yet
            return
        self._hang_up()

    def _hang_up(self) -> None:
        if self.direction == "incoming" and not self._answered:
            body = {"request": "decline", "code": self.agent.settings.decline_code}
        else:
            body = {"request": "hangup"}  # a CANCEL while inviting, else a BYE
        request = self._handle().message(body)
        if self.direction == "outgoing" and not self._accepted:
            request.addCallback(self._cancelled)  # Janus 1.1.2 may never report this call's end
        request.addErrback(self.request_failed)
        # Janus ignores a hangup in a state it does not expect, without a word: don't wait for ever.
        self._hangup_wait.start(HANGUP_WAIT, self._hangup_unanswered)

    def _timer_failed(self) -> None:
        if not self.is_ended:
            self.abort("Internal error in the call's timers")

    def abort(self, reason: str) -> None:
        """End the call at once because the gateway cannot go on with it (handling one of its events failed): tell
        the observer, and make Janus end whatever it has of it (a helper is retired, which ends its call)."""
        line, answered = self.line, self._answered or self._accepted or self.direction == "outgoing"
        self.ended(reason)
        if line is None or line.handle is None:
            return
        if line.helper:
            self.agent.retire(line)
        else:
            body = {"request": "hangup"} if answered else {"request": "decline", "code": 500}
            line.handle.message(body).addErrback(self.request_failed)

    def _hangup_unanswered(self) -> None:
        if self.is_ended:
            return
        line = self.line
        self.log.warn("Janus did not end call {call_id} in {wait:g} s; giving its line up", call_id=self.call_id,
                      wait=HANGUP_WAIT)
        self.ended("Ended without an answer from Janus")
        if line is not None and line.helper:
            self.agent.retire(line)  # detaching makes Janus end whatever is left of the call

    # --- from the user agent ---

    def placed(self, reply: dict[str, Any]) -> None:
        """The `call` request was accepted (`calling`)."""
        self.call_id = sipevents.call_id(plugin_data(reply).get("call_id")) or self.call_id
        self._sent = True
        if self._hang_up_when_placed:
            self._hang_up()
            return
        self._flush_candidates()
        self._reply(reply)

    def failed(self, failure: Failure) -> None:
        """Placing or answering the call failed before SIP could say anything."""
        self.log.info("Call failed in Janus: {error}", error=failure.value)
        self.ended(str(failure.value))

    def request_failed(self, failure: Failure) -> None:
        if not self.is_ended:
            self.log.warn("A request about a call was refused: {error}", error=failure.value)

    def _cancelled(self, reply: dict[str, Any]) -> None:
        """Janus accepted to cancel the INVITE (`hangingup`): the CANCEL is out. After a provisional response,
        Janus 1.1.2 reports nothing more and leaves the line stuck, so end the call here and retire the line."""
        line = self.line
        self.ended("487 Request Terminated")
        if line is not None:
            self.agent.retire(line)

    def has_handler(self, event: str) -> bool:
        return hasattr(self, f"_EH_{event}")

    def plugin_event(self, event: str, result: dict[str, Any], jsep: dict[str, Any] | None) -> None:
        handler = getattr(self, f"_EH_{event}", None)
        if handler is not None:
            handler(result, jsep)

    def core_event(self, kind: str | None, message: dict[str, Any]) -> None:
        if kind == "webrtcup" and not self.is_ended:
            self._observer_call("call_established")
        elif kind == "hangup" and not self.is_ended:
            # The PeerConnection is gone (ICE or DTLS failed, the browser vanished) while SIP thinks the call is
            # still up: end the SIP side too.
            reason = sipevents.phrase(message.get("reason")) or "Media closed"
            line = self.line
            self._handle().message({"request": "hangup"}).addErrback(self.request_failed)
            self.ended(reason)
            if line is not None:
                line.stale_pc_until = 0.0  # this was the PeerConnection's end: Janus reports it only once
                if self.direction == "outgoing" and not self._accepted:
                    self.agent.retire(line)  # that hangup was a CANCEL: as in _cancelled, the line is stuck after it

    def ended(self, reason: str) -> None:
        if self.is_ended:
            return
        self.is_ended = True
        for wait in (self._hangup_wait, self._update_wait, self._transfer_wait, self._settling):
            wait.cancel()
        if self.line is not None:
            self.agent.call_over(self.line, self)
        self._observer_call("call_terminated", reason)
        self._settled()  # fails what waited to be sent (its requester knows by now that the call is over)

    # --- SIP plugin events about the call ---

    def _EH_calling(self, result: dict[str, Any], jsep: Any) -> None:
        self._observer_call("call_progress")

    def _EH_proceeding(self, result: dict[str, Any], jsep: Any) -> None:
        code = sipevents.status_code(result.get("code"))
        if code is not None:
            self._observer_call("call_proceeding", code)

    def _EH_ringing(self, result: dict[str, Any], jsep: Any) -> None:
        self._observer_call("call_ringing")

    def _EH_progress(self, result: dict[str, Any], jsep: dict[str, Any] | None) -> None:
        answer = sipevents.sdp(jsep)
        if answer is not None:
            self._observer_call("call_early_media", answer)  # 183 with SDP: the later 200 comes without it

    def _EH_accepted(self, result: dict[str, Any], jsep: dict[str, Any] | None) -> None:
        if self._update_wait.running:  # the answer to our re-INVITE
            self._update_wait.cancel()
            answer = sipevents.sdp(jsep)
            if answer is not None:
                self._observer_call("call_update_accepted", answer)
            else:
                self._observer_call("call_update_failed", "The far end's answer had no SDP")
            return
        if self._accepted:
            return  # a repeated one: after a hold Janus 1.1.2 may report the 200 again
        self._accepted = True
        if self.direction == "outgoing":
            self._observer_call("call_accepted", sipevents.sdp(jsep), sipevents.headers(result.get("headers")) or None)
        else:
            self._observer_call("call_accepted", None, None)

    def _EH_updatingcall(self, result: dict[str, Any], jsep: dict[str, Any] | None) -> None:
        """The far end's re-INVITE (Janus passes it up because `autoaccept_reinvites` is off)."""
        offer = sipevents.sdp(jsep, "offer")
        if offer is not None:
            self._observer_call("call_update_received", offer)
            return
        # An offerless re-INVITE wants an offer from the browser, which sylkRTC cannot ask for; Janus would wait for
        # ever, the far end too: end the call rather than leave it stuck.
        self.log.warn("Ending call {call_id}: the far end sent a re-INVITE without SDP", call_id=self.call_id)
        self._handle().message({"request": "hangup"}).addErrback(self.request_failed)
        self.ended("A re-INVITE without SDP is not supported")

    def message_received(self, sender: Originator, content_type: str, content: str) -> None:
        """A MESSAGE in the call's dialog (the user agent sorts MESSAGEs out, see its _EH_message)."""
        self._observer_call("call_message", sender, content_type, content)

    def _EH_messagedelivery(self, result: dict[str, Any], jsep: Any) -> None:
        if self._deliveries:
            self._deliveries.pop(0).callback(_delivery_answer(result))

    def _EH_transfer(self, result: dict[str, Any], jsep: Any) -> None:
        """The far end's REFER (Janus answered it 202): the browser decides whether to call the target."""
        if self._refer_id is not None:  # a newer one replaces it: refuse the older one, which Janus still holds
            self.reject_transfer(603).addErrback(self.request_failed)
        refer_id, refer_to = sipevents.integer(result.get("refer_id")), sipevents.bare_uri(result.get("refer_to"))
        if refer_id is None or not refer_to:
            self.log.warn("Ignoring a transfer request (REFER) without a usable target in call {call_id}",
                          call_id=self.call_id)
            return
        self._refer_id = refer_id
        referred_by = sipevents.bare_uri(result.get("referred_by")) or None
        if referred_by is None or sipevents.is_contact_address(referred_by):
            # A Janus (another sylkgateway, say) names the transferor by its stack's Contact address, which it cannot
            # change; the REFER comes from the far end of this call, so name that party instead.
            referred_by = self.remote_uri or referred_by
        self._observer_call("call_transfer_requested", refer_to, referred_by, bool(result.get("replaces")))

    def _EH_notify(self, result: dict[str, Any], jsep: Any) -> None:
        """A NOTIFY about our REFER: its body is the status line of the far end's call to the target."""
        if (sipevents.text(result.get("notify"), 32) or "").lower() != "refer":
            return
        status = sipevents.sipfrag_status(result.get("content"))
        if status is None:
            return
        code, reason = status
        if code < 200 or code in (401, 407):  # progress (Janus passes on the auth challenges it answers, too)
            self._transfer_wait.start(TRANSFER_PROGRESS_WAIT, self._outcome_unreported, "call_transfer_progress",
                                      None, "The transfer did not complete")
        else:
            self._transfer_wait.cancel()
        self._observer_call("call_transfer_progress", code, reason)

    def _EH_info(self, result: dict[str, Any], jsep: Any) -> None:
        """SIP INFO from the far end; DTMF in it (application/dtmf-relay or application/dtmf) is passed up."""
        dtmf = sipevents.dtmf_of_info(result.get("type"), result.get("content"))
        if dtmf is not None:
            self._observer_call("call_dtmf", *dtmf, "info")

    def _EH_dtmf(self, result: dict[str, Any], jsep: Any) -> None:
        """RFC 4733 tones from the far end: reported by Janus 1.2.1 and newer (1.1.2 relays them silently)."""
        tone = sipevents.text(result.get("signal"), 1) or ""
        if re.fullmatch(r"[0-9*#A-Da-d]", tone):
            self._observer_call("call_dtmf", tone.upper(), sipevents.integer(result.get("duration")), "rfc4733")

    def _EH_hangup(self, result: dict[str, Any], jsep: Any) -> None:
        if self.call_id is not None and result.get("call_id") != self.call_id:
            return  # another call's: a refused INVITE's, or a stray one Janus 1.1.2 sends without a Call-ID
        self.ended(sipevents.sip_reason(result.get("code"), result.get("reason")))

    # --- internals ---

    def _request(self, body: dict[str, Any], jsep: dict[str, Any] | None = None) -> Deferred[None]:
        """A request about the call whose answer needs no handling; fires with None once Janus took it."""
        return self._handle().message(body, jsep).addCallback(lambda _: None)

    def _request_with_outcome(self, body: dict[str, Any], jsep: dict[str, Any] | None, wait: Timer,
                              report: str, *failure: Any) -> Deferred[None]:
        """A request whose SIP outcome Janus reports later, or never: past Sofia's own transaction timeout the
        observer hears `report(*failure)`; the outcome's handler cancels `wait`."""
        sent = self._request(body, jsep)
        wait.start(self.agent.settings.transaction_timeout + 1.0, self._outcome_unreported, report, *failure)

        def refused(refusal: Failure) -> Failure:
            wait.cancel()
            return refusal
        return sent.addErrback(refused)

    def _after_settling(self, send: Callable[[], Deferred[None]], settle: bool = True) -> Deferred[None]:
        """Send a re-INVITE-making request once the previous one had time to settle (REINVITE_SETTLE), in order;
        `settle`: the request itself makes the next ones wait. At most MAX_WAITING_REINVITES wait."""
        if not self._settling.running and not self._waiting_to_settle:
            return self._send_settling(send, settle)
        if len(self._waiting_to_settle) >= MAX_WAITING_REINVITES:
            raise APIError(f"Too many holds and updates waiting to be sent in this call (at most "
                           f"{MAX_WAITING_REINVITES})")
        waiter: Deferred[None] = Deferred()
        self._waiting_to_settle.append((send, settle, waiter))
        return waiter

    def _send_settling(self, send: Callable[[], Deferred[None]], settle: bool) -> Deferred[None]:
        def sent(result: Any) -> Any:
            if settle and not isinstance(result, Failure):
                self._settling.start(REINVITE_SETTLE, self._settled)
            else:
                self._settled()
            return result
        return send().addBoth(sent)

    def _settled(self) -> None:
        if self.is_ended:  # what waited fails (a loop: one waiter after the other, however many)
            waiting, self._waiting_to_settle = self._waiting_to_settle, []
            for _, _, waiter in waiting:
                waiter.errback(BackendUnavailable("the call ended"))
        elif self._waiting_to_settle and not self._settling.running:
            send, settle, waiter = self._waiting_to_settle.pop(0)
            self._send_settling(send, settle).chainDeferred(waiter)

    def _outcome_unreported(self, report: str, *failure: Any) -> None:
        if not self.is_ended:
            self._observer_call(report, *failure)

    def _reply(self, reply: dict[str, Any]) -> None:
        result = plugin_data(reply).get("result")
        if isinstance(result, dict):
            self.plugin_event(str(result.get("event")), result, reply.get("jsep"))

    def _handle(self) -> JanusHandle:
        if self.line is None or self.line.handle is None:
            raise BackendUnavailable("the call has no line")
        return self.line.handle

    def _flush_candidates(self) -> None:
        waiting, self._waiting_candidates = self._waiting_candidates, []
        for candidates in waiting:
            self._send_candidates(candidates)

    def _send_candidates(self, candidates: list[dict[str, Any]]) -> None:
        if self.is_ended or self.line is None or self.line.handle is None:
            return
        handle = self.line.handle
        if candidates:
            payload: dict[str, Any] = {"candidates": [{k: v for k, v in c.items() if v is not None}
                                                      for c in candidates]}
        else:
            payload = {"candidate": {"completed": True}}
        handle.session.request({"janus": "trickle", **payload}, handle_id=handle.id).addErrback(
            self.request_failed)

    def _observer_call(self, method: str, *args: Any) -> None:
        if self._observer is not None:
            getattr(self._observer, method)(*args)


def _answer_of(delivery: Deferred[tuple[int, str]], transaction_timeout: float,
               clock: IReactorTime) -> Deferred[tuple[int, str]]:
    """A MESSAGE's answer as Janus reports it, or 408 once Sofia's transaction would have timed out."""
    return delivery.addTimeout(transaction_timeout + 1.0, clock, onTimeoutCancel=lambda *_: (408, "Request Timeout"))


def _quoted_string_content(text: str) -> str:
    """`text` escaped for the inside of a SIP quoted-string (RFC 3261 quoted-pair): Janus writes the display name
    as `"<name>" <sip:...>` without escaping, so a quote in it would end the string and inject header syntax."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _delivery_answer(result: dict[str, Any]) -> tuple[int, str]:
    """A MESSAGE's SIP answer from `messagedelivery` (0 when Janus gave no usable code)."""
    return sipevents.status_code(result.get("code")) or 0, sipevents.phrase(result.get("reason"))


def sip_uri(proxy: SIPProxy) -> str:
    port = f":{proxy.port}" if proxy.port else ""
    if proxy.transport == "tls":
        return f"sips:{proxy.host}{port}"
    return f"sip:{proxy.host}{port};transport={proxy.transport}"
