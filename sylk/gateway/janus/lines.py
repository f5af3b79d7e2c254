"""An account's lines in Janus's SIP plugin: `JanusSIPUserAgent` (ISIPUserAgent), its master and helper handles.

A `janus.plugin.sip` handle carries one call at a time, so an account's user agent keeps a set of *lines*:
- the **master** handle runs the account's own Sofia-SIP stack (its port, its credentials). It registers with
  `ha1_secret` when the account registers; before that, a `register` with `send_register: false` only sets the
  identity, which is enough to place calls. Janus answers that one directly with `registered` (`register_sent`
  false), which is not a registration.
- **helper** handles (`type: helper`, the master's `master_id`) share the master's stack. Janus gives an incoming
  INVITE to the master, or to the first idle helper when the master is busy, so a registered account always keeps
  one idle helper (attaching another whenever a line gets busy, up to the call limit): a call arriving while busy
  still rings (without an idle line, Janus answers 486 by itself and reports `missed_call`). An outgoing call's
  spare is attached once that call is answered or over, not while it is being set up: the attach and the binding
  (four Janus messages, two Janus log lines) would compete with the call's own setup for the gateway's loop and
  Janus's SIP thread; outgoing calls leave the master free for incoming ones meanwhile. Outgoing calls go on
  idle helpers, attached as needed (~2 ms each; a handle with a stack of its own would cost ~100 ms of the SIP
  plugin's single thread). One spare rather than a full set: every handle costs Janus, and a full set per
  account made tearing down hundreds of accounts at once overrun the un-REGISTER timeouts.
Outgoing calls never use the master: Janus 1.1.2 cancels an INVITE that has had a provisional response without
ever reporting the end, and leaves that handle unable to call again. A helper carries one call only and is retired
(detached) after it; the master, which holds the registration, must not be. Unregistering makes Janus detach every
helper (their calls end); they are attached again when needed.

The master goes last, once Janus has let every helper go (their `detached` events): a helper's end, which Janus
runs later on a loop thread, locks its master, and Janus 1.1.2 frees a master as soon as its Sofia stack has
stopped, so a master detached first made a mass close crash Janus (a use after free; docs/architecture.md).

SIP-plugin events about the account are dispatched by name to `JanusSIPUserAgent._EH_<event>`; those about a call
go to its `JanusSIPCall` (janus/sipcall.py). Requests are built and events read by janus/sipcodec.py.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Hashable

from twisted.internet import defer
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sylk.gateway.config import SIPProxy
from sylk.gateway.errors import BackendUnavailable
from sylk.gateway.interfaces import ICallObserver, ISIPCall, ISIPUserAgent, IUserAgentObserver
from sylk.gateway.janus import sipcodec
from sylk.gateway.janus.admission import StackAdmission
from sylk.gateway.janus.client import JanusDisconnected, JanusError, JanusHandle, JanusSession, plugin_data
from sylk.gateway.janus.sipcall import JanusSIPCall, answer_of
from sylk.gateway.sip import Registration, SIPIdentity
from sylk.gateway.util import OneShotObserver

# How long a call waits for the master to leave a transient state (registering, ...) before it gives up.
MASTER_WAIT = 15.0
# Delay before trying again to attach the spare helper line a registered account should have.
HELPER_RETRY = 5.0
# After a call ends, Janus may still report the end of its PeerConnection (core `hangup`, "Close PC"); one arriving
# this soon on the line is the old call's, not the next one's.
STALE_PC_WINDOW = 2.0
# How long the master waits for Janus to let a helper go before it is detached anyway.
DETACH_WAIT = 5.0


@dataclass(frozen=True)
class LineSettings:
    max_lines: int = 4  # calls at once per account: the master and max_lines - 1 helpers
    srtp: str = "no"  # towards SIP: no, optional or mandatory (SDES); see docs/configuration.md on optional
    decline_code: int = 486
    route: SIPProxy | None = None  # every request through this proxy; None: to the domain, per RFC 3263
    transaction_timeout: float = 32.0  # Sofia's T1x64: how long a SIP transaction (a re-INVITE) may take
    queue_timeout: float = 45.0  # how long a new SIP stack may wait for its turn (register_timeout)


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
                                    error=sipcodec.phrase(data.get("error"), 200))
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
        self._going: set[Deferred[None]] = set()  # helpers on their way out, and being attached: the master waits
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
        master = lines[0].handle if lines and not lines[0].helper else None
        for line in lines:
            if line.helper:
                self._let_go(line.handle)
            line.handle = None
        if master is None:
            return succeed(None)
        return Deferred.fromCoroutine(self._let_master_go(master))

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
        elif event not in sipcodec.ANSWERS_ONLY and event not in sipcodec.CALL_EVENTS:
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

    def call_answered(self) -> None:
        """An outgoing call was answered (and the browser told): its setup is over, the next spare can be attached."""
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
            self._let_go(line.handle)
            line.handle = None

    def _let_go(self, handle: JanusHandle | None) -> None:
        """Detach a helper's handle; the master will wait until Janus has let it go."""
        if handle is not None:
            self._track(self._session.when_detached(handle.id, DETACH_WAIT))
            handle.detach().addErrback(self._detach_failed)

    def _track(self, going: Deferred[None]) -> None:
        self._going.add(going)
        going.addCallback(lambda _: self._going.discard(going))

    async def _let_master_go(self, master: JanusHandle) -> None:
        while self._going:  # helpers being attached end by letting their handle go, which adds to the set
            await defer.DeferredList(list(self._going))
        gone = self._session.when_detached(master.id, DETACH_WAIT)
        master.detach().addErrback(self._detach_failed)
        await gone

    # --- SIP plugin events about the account ---

    def _EH_registered(self, line: _Line, result: dict[str, Any], jsep: Any) -> None:
        if line.helper:
            return
        self._master_id = sipcodec.integer(result.get("master_id")) or self._master_id
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
        code, reason = sipcodec.status_code(result.get("code")), sipcodec.phrase(result.get("reason"))
        self._observer.registration_failed(f"{code or ''} {reason}".strip() or "Registration failed")

    def _EH_unregistered(self, line: _Line, result: dict[str, Any], jsep: Any) -> None:
        if line.helper:
            return
        helpers, self._helpers = self._helpers, []  # Janus detaches them itself, right after this event
        for helper in helpers:
            if helper.handle is not None:
                self._track(self._session.when_detached(helper.handle.id, DETACH_WAIT))
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
            self._observer.missed_call(sipcodec.originator(result.get("username"), result.get("displayname")))
            return
        caller = sipcodec.originator(result.get("username"), result.get("displayname"))
        call = JanusSIPCall(self, "incoming", None, line)
        call.call_id = sipcodec.call_id(result.get("call_id"))
        call.remote_uri = caller.uri
        call.headers = sipcodec.headers(result.get("headers"))
        line.call = call
        self._ensure_spare_line()
        offer = sipcodec.sdp(jsep, "offer")
        if offer is None:
            # sylkRTC has no way to ask the browser for an offer: refuse calls without SDP (or with an unusable one)
            line.handle.message({"request": "decline", "code": 488}).addErrback(call.request_failed)  # type: ignore[union-attr]
            return
        self._observer.incoming_call(call, caller, offer)

    def _EH_missed_call(self, line: _Line, result: dict[str, Any], jsep: Any) -> None:
        self._observer.missed_call(sipcodec.originator(result.get("caller"), result.get("displayname")))  # not `username`

    def _EH_message(self, line: _Line, result: dict[str, Any], jsep: Any) -> None:
        """A MESSAGE: inside the call on the line, or for the account (those come to the master, which may be in a
        call too: Janus does not say which, so one from the call's far end counts as the call's)."""
        sender = sipcodec.originator(result.get("sender"), result.get("displayname"))
        content_type = sipcodec.content_type(result.get("content_type") or "text/plain")
        # no content: Janus could not pass it on (it was not UTF-8); an empty message would mislead the browser
        content = sipcodec.text(result.get("content"), sipcodec.MAX_CONTENT)
        if content_type is None or not content:
            self.log.warn("Dropped a MESSAGE for {aor} from {sender}: its content type, encoding or size is unusable",
                          aor=self.identity.aor, sender=sender.uri)
            return
        if line.call is not None and (line.helper or line.call.remote_uri == sender.uri):
            line.call.message_received(sender, content_type, content)
        else:
            self._observer.message_received(sender, content_type, content)

    def _EH_messagedelivery(self, line: _Line, result: dict[str, Any], jsep: Any) -> None:
        call_id = sipcodec.call_id(result.get("call_id"))
        delivery = self._deliveries.pop(call_id, None) if call_id is not None else None
        if delivery is not None:
            delivery.callback(sipcodec.delivery_answer(result))
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
        await self._master_request(line, sipcodec.register_body(self.identity, self.settings.route, registration), "registering", generation)

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
                handle = await self._session.attach(sipcodec.SIP_PLUGIN, line)
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
            await self._master_request(line, sipcodec.register_body(self.identity, self.settings.route), "identifying", generation)
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
                                       "headers": {"From": sipcodec.from_header(self.identity)}})
            return await answer_of(delivery, self.settings.transaction_timeout, self.clock)
        finally:
            self._deliveries.pop(call_id, None)

    async def _place(self, call: JanusSIPCall, uri: str, sdp: str, headers: dict[str, str],
                     refer_id: int | None) -> None:
        line = await self._free_line(call)
        if call.is_ended:  # terminated while a line was being found (which freed the line)
            return
        # Our own Call-ID: known before Janus answers, so events of other calls on the line can be told apart.
        body: dict[str, Any] = {"request": "call", "uri": f"sip:{uri}", "call_id": call.call_id}
        srtp = sipcodec.SRTP[self.settings.srtp]
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
            reply = await self._invite(line, body, sdp)
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
            reply = await self._invite(line, body, sdp)
        call.placed(reply)

    def _invite(self, line: _Line, body: dict[str, Any], sdp: str) -> Deferred[dict[str, Any]]:
        """Send the `call`; the spare line is topped up once the call is answered (call_answered) or over."""
        return line.handle.message(body, {"type": "offer", "sdp": sdp})  # type: ignore[union-attr]

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
        return line

    def _new_helper(self) -> _Line:
        line = _Line(self, helper=True)
        line.idle_since = self.clock.seconds()
        self._helpers.append(line)
        return line

    async def _attach_helper(self, line: _Line) -> None:
        """Attach a helper line and bind it to the master; on any failure the line is gone (handle detached)."""
        generation = self._generation
        attaching: Deferred[None] = Deferred()
        self._track(attaching)
        try:
            line.handle = await self._session.attach(sipcodec.SIP_PLUGIN, line)
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
            self._let_go(line.handle)
            line.handle = None
            raise
        finally:
            attaching.callback(None)
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
