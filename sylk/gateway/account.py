"""SIPAccount: one account on one connection: its registration state machine and its calls.

    unregistered --register--> registering --ok--> registered --unregister--> unregistering --ok--> unregistered
                               registering/registered --failure--> failed --register--> registering ...
                               failed --(transient failure) after a backoff--> registering ...
                               failed --unregister--> unregistered (no more retries)

An account the browser asked to register stays wanted registered until it unregisters (or is removed): a failure
that says nothing about the credentials (no answer, 408, 480, 5xx, the backend away) is retried after a growing
backoff, each attempt reported as `registering` then its outcome; one that does (401, 403, 404, ...) is not. When
the backend (Janus) goes away, the calls end and a wanted registration is made again on the new backend session.

Every change of registration state is reported to the browser once, as a RegistrationStateChanged event. Requests
that make no sense in the current state raise APIError naming the state. Waits on the backend are bounded by
timers, so an account always reaches a final state. Calls (`call.py`) are placed and received through the same
backend user agent, registered or not, up to `max_calls_per_account` at once. `shutdown()` (account removed,
connection closed) ends the calls and removes the binding at the registrar before the backend is released.

The backend user agent (a SIP stack in Janus) is held only while something needs it: a registration (being) in
place, a call (or its far end's transfer request), a MESSAGE awaiting its answer. An account whose credentials
were never proven (or whose registration failed) keeps nothing in the backend between its calls and messages.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, TypeVar
from urllib.parse import quote

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sylk.gateway.call import BACKEND_LOST, Call, CallMetrics
from sylk.gateway.config import WebRTCGatewayConfig
from sylk.gateway.errors import APIError
from sylk.gateway import messages
from sylk.gateway.interfaces import ISIPCall, ISIPSession, IUserAgentObserver
from sylk.gateway.sip import Originator, Registration, SIPIdentity
from sylk.gateway.sylkrtc.model import (AccountDeviceToken, AccountDispositionNotification, AccountMessage,
                                        AddressBookFetched, Event, IncomingSession, MissedSession, RegistrationState,
                                        RegistrationStateChanged)
from sylk.gateway.util import OneShotObserver, Timer

# How long an un-REGISTER may take before the account gives up waiting and releases the backend anyway.
UNREGISTER_TIMEOUT = 10.0
# The biggest address book file served.
MAX_ADDRESSBOOK = 1024 * 1024
# An account's address book is read at most once per this many seconds (it is read off the reactor, one at a time).
ADDRESSBOOK_FETCH_INTERVAL = 1.0
# An account's MESSAGEs (its own and its calls') awaiting their SIP answer; more are refused until answers come.
MAX_PENDING_MESSAGES = 16
# Devices whose push tokens an account keeps (the oldest is forgotten first).
MAX_PUSH_DEVICES = 8
# Retrying a registration that failed for a transient reason: the first wait, doubling up to the last, each with
# up to a fifth less at random so that accounts that failed together do not retry together.
REGISTER_RETRY_FIRST = 2.0
REGISTER_RETRY_LAST = 120.0
# Janus 1.1.2 cuts each Contact parameter at 254 characters (name=value): longer ones are refused.
MAX_CONTACT_PARAM = 254
# RFC 8599 pn-provider names for the platforms Sylk clients report.
_PUSH_PROVIDERS = {"ios": "apns", "apple": "apns", "android": "fcm", "firebase": "fcm"}


@dataclass(frozen=True)
class PushToken:
    """A device's push token, as a device reported it (account-devicetoken)."""

    token: str
    platform: str | None
    app: str | None
    silent: bool
    device: str = ""

    def contact_params(self, style: str = "sylk") -> tuple[tuple[str, str], ...]:
        """The REGISTER Contact parameters: `sylk`, the names SylkServer writes and Sylk's push service reads
        (pn-app, pn-tok, pn-type with the platform as reported, pn-device, pn-silent 0 or 1), or `rfc8599`
        (pn-provider with the platform mapped to apns/fcm, pn-prid, pn-param)."""
        if style == "rfc8599":
            params = [("pn-provider", _PUSH_PROVIDERS.get((self.platform or "").lower(), self.platform or "")),
                      ("pn-prid", self.token), ("pn-param", self.app or "")]
        else:
            params = [("pn-app", self.app or ""), ("pn-tok", self.token), ("pn-type", self.platform or ""),
                      ("pn-device", self.device), ("pn-silent", "1" if self.silent else "0")]
        return tuple((name, quote(value, safe="-_.!~*'()[]/:&+$")) for name, value in params if value)

State = RegistrationState
_T = TypeVar("_T")
# Runs blocking work (reading a file) away from the reactor; the Deferred fires in the reactor with its result.
BlockingRunner = Callable[[Callable[[], _T]], Deferred[_T]]


class AccountOwner(Protocol):
    """What an account needs from its connection."""

    def account_event(self, event: Event) -> None: ...

    def session_exists(self, session_id: str) -> bool: ...

    def call_started(self, call: Call) -> None: ...

    def call_ended(self, call: Call) -> None: ...


@implementer(IUserAgentObserver)
class SIPAccount:
    log = Logger()

    def __init__(self, identity: SIPIdentity, session: ISIPSession, settings: WebRTCGatewayConfig,
                 owner: AccountOwner, clock: IReactorTime,
                 run_blocking: BlockingRunner[dict[str, Any]] = deferToThread,
                 metrics: CallMetrics | None = None) -> None:
        self.identity = identity
        self.state = State.UNREGISTERED
        self.reason: str | None = None  # why it is `failed`
        self.calls: dict[str, Call] = {}
        self._settings = settings
        self._owner: AccountOwner | None = owner  # None once the backend is gone
        self._quiet = False  # after shutdown() or abandon(): no more account events, only the ends of its calls
        self._releasing = False  # shutdown() has ended the calls and is releasing the backend
        self._clock = clock
        self._metrics = metrics  # for its calls
        self._user_agent = session.create_user_agent(identity, self)
        self._timer: IDelayedCall | None = None
        self._operation = 0  # counts backend operations, so a late failure of an abandoned one is ignored
        self._unregister_when_registered = False
        self._register_sent = False  # the REGISTER went out (it may first wait for its turn in the backend)
        self.wants_registration = False  # the browser asked to register and has not unregistered since
        self._retry = Timer(clock)  # a transient failure's next attempt
        self._retry_delay = REGISTER_RETRY_FIRST
        self._released: OneShotObserver | None = None  # set by shutdown(): fired once the backend is released
        self.push_tokens: dict[str, PushToken] = {}  # by device; the latest one reported goes into REGISTERs
        self.authenticated = False  # the registrar has accepted the credentials once (on this connection)
        self._messages_in_flight = 0  # their answers come through the backend user agent: keep it meanwhile
        self._calls_not_done: set[Call] = set()  # calls not over, or whose far end's transfer request is open
        self._idle_check = Timer(clock)
        self.run_blocking = run_blocking  # (tests replace it)
        self._reading_addressbook = False
        self._addressbook_fetched_at: float | None = None

    @property
    def aor(self) -> str:
        return self.identity.aor

    @property
    def shown_state(self) -> str:
        """The registration state as the browser knows it (it has no `unregistering`: the binding is still there)."""
        return State.REGISTERED if self.state == State.UNREGISTERING else self.state

    # --- requests ---

    def register(self) -> None:
        if self.state in (State.REGISTERING, State.REGISTERED, State.UNREGISTERING):
            raise APIError(f"Cannot register account {self.aor}: it is {self.state}")
        self.wants_registration = True
        self._retry_delay = REGISTER_RETRY_FIRST
        self._start_registering()

    def unregister(self) -> None:
        if self.state == State.FAILED and self.wants_registration:
            self.wants_registration = False  # no more retries
            self._retry.cancel()
            self._finish(State.UNREGISTERED)
            return
        self.wants_registration = False
        if self.state == State.REGISTERING:
            # The REGISTER is on its way; remove the binding as soon as it exists.
            if self._unregister_when_registered:
                raise APIError(f"Account {self.aor} is already going to unregister")
            self._unregister_when_registered = True
        elif self.state == State.REGISTERED:
            self._start_unregister()
        else:
            raise APIError(f"Cannot unregister account {self.aor}: it is {self.state}")

    def call(self, session_id: str, uri: str, sdp: str, headers: dict[str, str],
             transfer_of: Call | None = None) -> Call:
        """Place a call; its progress is reported as session events. `transfer_of`: the call whose far end asked
        for this one (its transfer request, taken by this call)."""
        self._check_call_limit()
        referring = transfer_of.take_transfer_request() if transfer_of is not None else None
        call = self._new_call(session_id, "outgoing")
        call.sip_call = self._user_agent.call(uri, sdp, headers, call, transfer_of=referring)
        return call

    def set_push_token(self, request: AccountDeviceToken) -> None:
        """Keep (or with no token, forget) a device's push token; the next REGISTER carries the latest one."""
        token = request.token if request.token is not None else request.new_token
        device = request.device or ""
        if token:
            push = PushToken(token, request.platform, request.app, request.silent, device)
            params = push.contact_params(self._settings.push_parameters)
            too_long = [name for name, value in params if len(name) + 1 + len(value) > MAX_CONTACT_PARAM]
            if too_long:
                raise APIError(f"Push parameter {too_long[0]} too long for a SIP Contact (at most "
                               f"{MAX_CONTACT_PARAM} characters with its name, once URI-escaped)")
        self.push_tokens.pop(device, None)
        if token:
            self.push_tokens[device] = push
            while len(self.push_tokens) > MAX_PUSH_DEVICES:
                del self.push_tokens[next(iter(self.push_tokens))]

    def fetch_addressbook(self, stored: Callable[[], Deferred[dict[str, Any] | None]] | None = None) -> Deferred[None]:
        """Answer with the account's address book: the one `stored` in the message store (account-update-
        addressbook), else `addressbook_dir`/<user@domain>.json, else an empty one. Read off the reactor; the
        Deferred fires once it has been read (a bad file fails it with the request's error), and the event follows
        the ack. Only for an account whose credentials the registrar accepted (`account-add` takes any well-formed
        HA1), one read at a time and at most one per ADDRESSBOOK_FETCH_INTERVAL."""
        if not self.authenticated:
            raise APIError(f"Account {self.aor} must register before its address book can be fetched")
        if self._reading_addressbook:
            raise APIError(f"The address book of {self.aor} is being read already")
        now = self._clock.seconds()
        if self._addressbook_fetched_at is not None and now - self._addressbook_fetched_at < ADDRESSBOOK_FETCH_INTERVAL:
            raise APIError(f"The address book of {self.aor} was fetched less than {ADDRESSBOOK_FETCH_INTERVAL:g} s "
                           f"ago (at most one fetch per {ADDRESSBOOK_FETCH_INTERVAL:g} s)")
        self._addressbook_fetched_at = now
        self._reading_addressbook = True
        reading = (stored() if stored is not None else succeed(None)).addCallback(
            lambda book: book if book is not None else self._addressbook_file())
        reading.addBoth(self._addressbook_read)
        return reading.addCallbacks(self._addressbook_fetched, self._addressbook_unusable)

    def _addressbook_file(self) -> Deferred[dict[str, Any]]:
        folder = self._settings.addressbook_dir
        if folder is None:
            return succeed({})
        path = folder / f"{quote(self.aor, safe='@.-_+')}.json"  # no path separators from the address
        return self.run_blocking(lambda: _read_addressbook(path))

    def send_message(self, request: AccountMessage) -> None:
        """Send an instant message, registered or not; its outcome comes as a disposition notification."""
        content_type, content = request.content_type, request.content
        if self._settings.message_format == "cpim":
            sender = Originator(self.aor, self.identity.display_name)
            content = messages.envelope(sender, request.uri, request.message_id, request.timestamp, content_type,
                                        content, notifications=("positive-delivery", "display"))
            content_type = messages.CPIM_TYPE
        self._send_message(request.uri, content_type, content).addCallbacks(
            lambda answer: self._event(messages.outcome_event(self.aor, None, request.message_id, request.timestamp,
                                                              *answer)),
            lambda failure: self._event(messages.outcome_event(self.aor, None, request.message_id,
                                                               request.timestamp, None, str(failure.value))))

    def replicate(self, content_type: str, content: str) -> None:
        """Tell the account's devices elsewhere (any SIP client registered for it) what one of its devices did: a
        plain MESSAGE to the account itself, as SylkServer sends them (MessagingHub keeps its echo from ours)."""
        if self._quiet or self._owner is None:
            return  # removed or gone: no SIP line is taken for it any more
        self._send_message(self.aor, content_type, content).addBoth(self._notice_answered, content_type, self.aor)

    def send_disposition(self, request: AccountDispositionNotification) -> None:
        """Tell a sender what became of their message (an IMDN, wrapped in CPIM)."""
        body = messages.imdn(self.aor, request.uri, request.message_id, request.state, request.timestamp)
        self._send_message(request.uri, messages.CPIM_TYPE, body).addBoth(self._notice_answered,
                                                                          "disposition notification", request.uri)

    def shutdown(self) -> Deferred[None]:
        """Stop reporting to the browser, end the calls, remove the binding if there is one, release the backend."""
        self._quiet = True
        self.wants_registration = False
        self._retry.cancel()
        self._released = OneShotObserver()
        ending = [call.end() for call in list(self.calls.values())]
        DeferredList(ending).addCallback(lambda _: self._release())
        return self._released.when_fired()

    def abandon(self) -> None:
        """The backend is gone (and the registration and calls with it) for good: stop timers and reporting."""
        self._quiet = True  # (the ends of its calls are still reported)
        for call in list(self.calls.values()):
            call.call_terminated(BACKEND_LOST)
        self._owner = None
        self._operation += 1
        self._cancel_timer()
        self._retry.cancel()
        if self._released is not None:
            self._released.fire()

    def backend_lost(self, reason: str) -> None:
        """The backend went away with this account's registration and calls; a new one follows (backend_restored),
        unless the account was being removed, which is then done."""
        for call in list(self.calls.values()):
            call.call_terminated(f"{BACKEND_LOST} ({reason})")
        self._operation += 1  # what the old backend may still report is void
        self._cancel_timer()
        self._retry.cancel()
        self._register_sent = False
        if self._released is not None:  # removed, or its connection closing: nothing left to undo
            self._quiet = True
            self._released.fire()
            return
        if self.state in (State.REGISTERING, State.REGISTERED) and self.wants_registration and \
                not self._unregister_when_registered:
            if self.state != State.REGISTERING:
                self._enter(State.REGISTERING)  # registered again as soon as there is a backend
        elif self.state in (State.REGISTERING, State.REGISTERED, State.UNREGISTERING):
            self._unregister_when_registered = False
            self._enter(State.UNREGISTERED, report=self.state != State.UNREGISTERING)

    def backend_restored(self, session: ISIPSession) -> None:
        """A new backend session after backend_lost(): a new user agent, and the registration again if wanted."""
        self._user_agent = session.create_user_agent(self.identity, self)
        if self.state == State.REGISTERING:
            self._start_registering(announce=False)  # backend_lost() reported it
        elif self.state == State.FAILED and self.wants_registration:
            self._retry.start(0, self._retry_registration)

    # --- IUserAgentObserver ---

    def registration_succeeded(self) -> None:
        if self.state != State.REGISTERING:
            return  # a refresh, or news of an attempt this account already gave up on
        self.authenticated = True
        self._retry_delay = REGISTER_RETRY_FIRST
        # unregistered while registering: the browser took the ack as the end (sylkRTC-2 says no more of it)
        self._enter(State.REGISTERED, report=not self._unregister_when_registered)
        if self._unregister_when_registered:
            self._start_unregister()

    def registration_failed(self, reason: str) -> None:
        if self.state in (State.REGISTERING, State.REGISTERED):
            if self._unregister_when_registered:
                self._finish(State.UNREGISTERED)
            else:
                self._finish(State.FAILED, reason)
                if self.wants_registration and not self._releasing and _transient(reason):
                    delay = self._retry_delay * random.uniform(0.8, 1.0)
                    self._retry_delay = min(self._retry_delay * 2, REGISTER_RETRY_LAST)
                    self._retry.start(delay, self._retry_registration)
        elif self.state == State.UNREGISTERING:
            self.log.warn("Un-REGISTER of {aor} did not complete ({reason}); releasing it", aor=self.aor,
                          reason=reason)
            self._finish(State.UNREGISTERED)

    def unregistered(self) -> None:
        if self.state in (State.UNREGISTERING, State.REGISTERED):
            self._finish(State.UNREGISTERED)

    def incoming_call(self, sip_call: ISIPCall, originator: Originator, sdp: str) -> None:
        if self._quiet or self._owner is None:
            sip_call.terminate()  # going away: refuse it (the caller hears the decline code)
            return
        if len(self.calls) >= self._settings.max_calls_per_account:
            sip_call.terminate()
            self.missed_call(originator)  # as when Janus itself answers busy
            return
        session_id = _session_id(getattr(sip_call, "call_id", None))
        if self._owner.session_exists(session_id):  # a forking proxy rang two accounts of this connection
            session_id = _session_id(None)
        call = self._new_call(session_id, "incoming", originator)
        call.sip_call = sip_call
        sip_call.set_observer(call)
        call.offer = IncomingSession(account=self.aor, session=call.id, originator=originator, sdp=sdp,
                                     call_id=getattr(sip_call, "call_id", None),
                                     headers=getattr(sip_call, "headers", None) or None)
        self._event(call.offer)

    def missed_call(self, originator: Originator) -> None:
        self._event(MissedSession(account=self.aor, originator=originator))

    def message_received(self, sender: Originator, content_type: str, content: str) -> None:
        event = messages.incoming_event(self.aor, None, sender, content_type, content)
        if event is not None:
            self._event(event)

    # --- for calls ---

    def track_message(self, send: Callable[[], Deferred[tuple[int, str]]]) -> Deferred[tuple[int, str]]:
        """Send a MESSAGE (the account's or one of its calls') with `send`, as one awaiting its answer: at most
        MAX_PENDING_MESSAGES at once (each holds a transaction, and the backend, until answered or timed out)."""
        if self._messages_in_flight >= MAX_PENDING_MESSAGES:
            raise APIError(f"Too many messages waiting for an answer (at most {MAX_PENDING_MESSAGES})")
        self._messages_in_flight += 1

        def answered(result: Any) -> Any:
            self._messages_in_flight -= 1
            self._release_when_idle()
            return result
        return maybeDeferred(send).addBoth(answered)

    # --- internals ---

    def _check_call_limit(self) -> None:
        if len(self.calls) >= self._settings.max_calls_per_account:
            raise APIError(f"Too many calls for account {self.aor} (at most "
                           f"{self._settings.max_calls_per_account})")

    def _new_call(self, session_id: str, direction: str, originator: Originator | None = None) -> Call:
        call = Call(session_id, self.aor, direction, self._call_event, self._clock, self._call_ended,
                    self.track_message, self._metrics)
        call.originator = originator
        self.calls[session_id] = call
        self._calls_not_done.add(call)
        call.when_done().addCallback(self._call_done, call)
        if self._owner is not None:
            self._owner.call_started(call)
        return call

    def _call_ended(self, call: Call, reason: str) -> None:
        self.calls.pop(call.id, None)
        if self._owner is not None:
            self._owner.call_ended(call)
        if call.direction == "incoming" and not call.answered and reason.startswith("487"):
            self._event(MissedSession(account=self.aor, originator=call.originator))  # the caller gave up

    def _event(self, event: Event) -> None:
        if self._owner is not None and not self._quiet:
            self._owner.account_event(event)

    def _call_event(self, event: Event) -> None:
        if self._owner is not None:
            self._owner.account_event(event)

    def _send_message(self, uri: str, content_type: str, content: str) -> Deferred[tuple[int, str]]:
        return self.track_message(lambda: self._user_agent.send_message(uri, content_type, content))

    def _call_done(self, _: object, call: Call) -> None:
        self._calls_not_done.discard(call)
        # on the next turn: the call's end may still be going out through the backend (its BYE), and a call taking
        # its transfer request may be about to start
        self._idle_check.start(0, self._release_when_idle)

    def _release_when_idle(self) -> None:
        """Without a registration, release the backend once nothing needs it: no call (nor transfer request of
        one) and no MESSAGE awaiting its answer. The next register(), call or message acquires it again."""
        if self._quiet:
            return  # shutdown() releases it, or abandon(): the backend is gone
        if self.state in (State.UNREGISTERED, State.FAILED) and not self._calls_not_done and \
                not self._messages_in_flight:
            self._close_user_agent()

    def _addressbook_read(self, result: _T) -> _T:
        self._reading_addressbook = False
        return result

    def _addressbook_fetched(self, addressbook: dict[str, Any]) -> None:
        # the event follows the request's ack, which the channel sends once this returns
        self._clock.callLater(0, self._event, AddressBookFetched(account=self.aor, addressbook=addressbook))

    def _addressbook_unusable(self, failure: Failure) -> None:
        if failure.check(OSError, ValueError):
            self.log.error("Address book of {aor} is unusable: {error}", aor=self.aor, error=failure.value)
        else:
            self.log.failure("Reading the address book of {aor} failed", failure, aor=self.aor)
        raise APIError(f"The address book of {self.aor} is unavailable")

    def _notice_answered(self, answer: tuple[int, str] | Failure, what: str, uri: str) -> None:
        """A MESSAGE the browser does not hear the outcome of (an IMDN, a replication): a failure is logged."""
        if isinstance(answer, Failure) or not 200 <= answer[0] < 300:
            self.log.warn("A {what} from {aor} to {uri} was not delivered: {answer}", what=what, aor=self.aor,
                          uri=uri, answer=answer.value if isinstance(answer, Failure) else answer)

    def _start_registering(self, announce: bool = True) -> None:
        """Send a REGISTER (`announce`: report `registering`, unless the browser was told so already)."""
        self._retry.cancel()
        self._unregister_when_registered = False
        self._register_sent = False
        self._enter(State.REGISTERING, report=announce)
        latest = list(self.push_tokens.values())[-1:]
        registration = Registration(ttl=self._settings.register_ttl,
                                    contact_params=latest[0].contact_params(self._settings.push_parameters)
                                    if latest else ())
        self._operation += 1
        self._user_agent.register(registration).addCallbacks(
            self._registration_sent, self._request_failed, callbackArgs=(self._operation,),
            errbackArgs=(self._operation,))

    def _retry_registration(self) -> None:
        if self.state == State.FAILED and self.wants_registration and not self._quiet:
            self._start_registering()

    def _start_unregister(self) -> None:
        self._unregister_when_registered = False
        self._enter(State.UNREGISTERING, timeout=UNREGISTER_TIMEOUT, report=False)
        self._operation += 1
        self._user_agent.unregister().addErrback(self._request_failed, self._operation)

    def _registration_sent(self, _: object, operation: int) -> None:
        """The REGISTER is on its way (the backend may have queued it first): from now its answer is awaited."""
        if operation == self._operation and self.state == State.REGISTERING:
            self._register_sent = True
            self._start_timer(self._settings.register_timeout)

    def _request_failed(self, failure: Failure, operation: int) -> None:
        if operation == self._operation:
            self.registration_failed(str(failure.value))

    def _enter(self, state: str, timeout: float | None = None, report: bool = True, reason: str | None = None) -> None:
        self.state = state
        self.reason = reason
        self._cancel_timer()
        if timeout is not None:
            self._start_timer(timeout)
        if report:
            self._event(RegistrationStateChanged(account=self.aor, state=state, reason=reason))

    def _finish(self, state: str, reason: str | None = None) -> None:
        """Reach a final registration state; without calls, the backend is released until it is needed again."""
        self._enter(state, reason=reason)
        self._unregister_when_registered = False
        if self._releasing:
            self._close_user_agent().addCallback(self._released.fire)  # type: ignore[union-attr]
        else:
            self._release_when_idle()

    def _release(self) -> None:
        """After shutdown() ended the calls: unregister if needed, then release the backend."""
        self._releasing = True
        if self.state == State.REGISTERED:
            self._start_unregister()
        elif self.state == State.REGISTERING and not self._register_sent:
            # still waiting for its turn to start a SIP stack: nothing went out, nothing to undo
            self._operation += 1
            self._enter(State.UNREGISTERED, report=False)
            self._close_user_agent().addCallback(self._released.fire)  # type: ignore[union-attr]
        elif self.state == State.REGISTERING:
            self._unregister_when_registered = True
        elif self.state != State.UNREGISTERING:
            self._close_user_agent().addCallback(self._released.fire)  # type: ignore[union-attr]

    def _close_user_agent(self) -> Deferred[None]:
        closed = self._user_agent.close()
        closed.addErrback(lambda f: self.log.failure("Releasing {aor} failed", f, aor=self.aor))
        return closed

    def _start_timer(self, timeout: float) -> None:
        self._cancel_timer()
        self._timer = self._clock.callLater(timeout, self.registration_failed, "408 Request Timeout")

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


def _transient(reason: str) -> bool:
    """Whether a registration failure says nothing about the credentials, so that trying again later may work: no
    SIP status at all (a timeout, the backend away), 408, 480, or a server error (5xx). Not 401/403/404 and the like,
    nor Sofia's own 9xx (a credential it could not use)."""
    status = re.match(r"([1-9][0-9]{2})\b", reason)
    if status is None:
        return True
    code = int(status.group(1))
    return code in (408, 480) or 500 <= code < 600


def _read_addressbook(path: Path) -> dict[str, Any]:
    """An address book file (blocking: run off the reactor): a JSON object, {} when there is none; raises
    OSError or ValueError for an unusable one."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_ADDRESSBOOK + 1)  # never more, whatever the file's size says meanwhile
    except FileNotFoundError:
        return {}
    if len(data) > MAX_ADDRESSBOOK:
        raise ValueError(f"{path}: larger than {MAX_ADDRESSBOOK} bytes")
    try:
        addressbook = json.loads(data.decode("utf-8"))
    except RecursionError:  # nested deeper than the parser's stack allows
        raise ValueError(f"{path}: nested too deeply") from None
    if not isinstance(addressbook, dict):
        raise ValueError(f"{path}: not a JSON object")
    return addressbook


def _session_id(call_id: str | None) -> str:
    """Incoming sessions are named after the SIP Call-ID (as SylkServer does, so push notifications carrying the
    Call-ID can be matched), or at random without one."""
    if call_id:
        return str(uuid.UUID(bytes=hashlib.md5(call_id.encode()).digest()))
    return str(uuid.uuid4())
