"""Call: one call of an account, as the browser sees it.

    outgoing: connecting --INVITE sent--> progress [--> proceeding (per provisional), ringing, early-media]
              --answered--> accepted --media up--> established
    incoming: connecting (offered to the browser) --answered by the browser--> accepted --media up--> established
    any state --> terminated (once, with a reason)

Requests change nothing but the backend's course; states change when the backend reports, and each is reported
to the browser once, in order (media reported up before the answer wait until it comes). Like accounts, calls
never make a request wait for SIP: failures arrive as `terminated` with a reason.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sylk.gateway.errors import APIError
from sylk.gateway.interfaces import ICallObserver, ISIPCall
from sylk.gateway.sip import Originator
from sylk.gateway.sylkrtc.model import Event, SessionDtmf, SessionState, SessionStateChanged
from sylk.gateway.util import OneShotObserver

# How long a call may take to end after the gateway asked the backend to end it.
TERMINATE_TIMEOUT = 10.0
# Silence between DTMF tones sent one after the other, after each tone's own duration.
DTMF_GAP = 0.1

State = SessionState
_EARLY = (State.PROGRESS, State.PROCEEDING, State.RINGING, State.EARLY_MEDIA)  # outgoing, before the answer


@implementer(ICallObserver)
class Call:
    log = Logger()

    def __init__(self, session_id: str, account: str, direction: str, notify: Callable[[Event], None],
                 clock: IReactorTime, on_terminated: Callable[[Call, str], None]) -> None:
        self.id = session_id
        self.account = account
        self.direction = direction  # "outgoing" or "incoming"
        self.state = State.CONNECTING
        self.sip_call: ISIPCall | None = None
        self._notify = notify
        self._clock = clock
        self._on_terminated = on_terminated
        self._answering = False
        self._terminating: IDelayedCall | None = None
        self._media_up = False
        self._rang = False
        self._early_sdp: str | None = None
        self._tones: list[tuple[str, int]] = []  # DTMF waiting to go out, the first one going now
        self._ended = OneShotObserver()
        self.originator: Originator | None = None  # incoming calls: the caller

    @property
    def answered(self) -> bool:
        return self._answering or self.state in (State.ACCEPTED, State.ESTABLISHED)

    # --- requests ---

    def answer(self, sdp: str, headers: dict[str, str]) -> None:
        if self.direction != "incoming":
            raise APIError(f"Cannot answer outgoing session {self.id}")
        if self.state != State.CONNECTING or self._answering or self._terminating:
            raise APIError(f"Invalid state for answering session {self.id}: {self._shown_state()}")
        self._answering = True
        self._backend().answer(sdp, headers).addErrback(self._backend_failed)

    def trickle(self, candidates: list[dict[str, Any]]) -> None:
        if self.state == State.TERMINATED:
            raise APIError(f"Session {self.id} is terminated")
        self._backend().trickle(candidates)

    def terminate(self) -> None:
        if self.state == State.TERMINATED or self._terminating:
            raise APIError(f"Invalid state for terminating session {self.id}: {self._shown_state()}")
        self.end()

    def send_dtmf(self, tones: str, duration: int) -> None:
        """Queue DTMF tones to go out as SIP INFO, one by one, each after the previous one's duration and a gap."""
        if self.state not in (State.EARLY_MEDIA, State.ACCEPTED, State.ESTABLISHED) or self._terminating:
            raise APIError(f"Invalid state for sending DTMF in session {self.id}: {self._shown_state()}")
        idle = not self._tones
        self._tones.extend((tone, duration) for tone in tones)
        if idle:
            self._next_tone()

    def end(self) -> Deferred[None]:
        """Make sure the call ends (connection closing, account removed); fires once it has."""
        if self.state != State.TERMINATED and self._terminating is None:
            self._terminating = self._clock.callLater(TERMINATE_TIMEOUT, self.call_terminated,
                                                      "Terminated without an answer from the SIP backend")
            self._backend().terminate()
        return self._ended.when_fired()

    # --- ICallObserver ---

    def call_progress(self) -> None:
        if self.state == State.CONNECTING and self.direction == "outgoing":
            self._enter(State.PROGRESS)

    def call_proceeding(self, code: int) -> None:
        if self.state in _EARLY:
            self._enter(State.PROCEEDING, code=code)  # once per provisional response

    def call_ringing(self) -> None:
        if self.state in _EARLY and not self._rang:
            self._rang = True
            self._enter(State.RINGING)

    def call_early_media(self, sdp: str) -> None:
        if self.state in _EARLY and self._early_sdp is None:
            self._early_sdp = sdp
            self._enter(State.EARLY_MEDIA, sdp=sdp)

    def call_accepted(self, sdp: str | None, headers: dict[str, str] | None = None) -> None:
        if self.state == State.CONNECTING or self.state in _EARLY:
            if self.direction == "outgoing":
                call_id = getattr(self.sip_call, "call_id", None)
                self._enter(State.ACCEPTED, sdp=sdp, early_sdp=self._early_sdp, call_id=call_id,
                            headers=headers or None)
            else:
                self._enter(State.ACCEPTED)
            if self._media_up:
                self._enter(State.ESTABLISHED)

    def call_established(self) -> None:
        if self.state == State.ACCEPTED:
            self._enter(State.ESTABLISHED)
        elif self.state == State.CONNECTING or self.state in _EARLY:
            self._media_up = True  # early media: reported once the call is answered

    def call_dtmf(self, tone: str, duration: int | None, method: str) -> None:
        if self.state != State.TERMINATED:
            self._notify(SessionDtmf(session=self.id, digit=tone, duration=duration, method=method))

    def call_terminated(self, reason: str) -> None:
        if self.state == State.TERMINATED:
            return
        self._tones.clear()
        if self._terminating is not None and self._terminating.active():
            self._terminating.cancel()
        self._enter(State.TERMINATED, reason=reason)
        self.sip_call = None
        self._on_terminated(self, reason)
        self._ended.fire()

    # --- internals ---

    def _next_tone(self) -> None:
        if not self._tones or self.sip_call is None:
            self._tones.clear()
            return
        tone, duration = self._tones[0]
        sent = self.sip_call.send_dtmf_info(tone, duration)
        sent.addErrback(lambda f: self.log.warn("Session {id}: DTMF {tone} not sent: {error}", id=self.id, tone=tone,
                                                error=f.value))
        sent.addBoth(lambda _: self._clock.callLater(duration / 1000 + DTMF_GAP, self._tone_done))

    def _tone_done(self) -> None:
        if self._tones:
            self._tones.pop(0)
        self._next_tone()

    def _enter(self, state: str, **details: Any) -> None:
        self.state = state
        self._notify(SessionStateChanged(session=self.id, state=state, **details))

    def _shown_state(self) -> str:
        return "terminating" if self._terminating and self.state != State.TERMINATED else self.state

    def _backend(self) -> ISIPCall:
        assert self.sip_call is not None, "a call that is not terminated has its backend call"
        return self.sip_call

    def _backend_failed(self, failure: Failure) -> None:
        self.log.warn("Session {id}: {error}", id=self.id, error=failure.value)
        sip_call = self.sip_call
        if sip_call is not None:
            self.call_terminated(str(failure.value))
            sip_call.terminate()  # whatever is left of it in the backend
