"""Call: one call of an account, as the browser sees it.

    outgoing: connecting --INVITE sent--> progress [--> proceeding (per provisional), ringing, early-media]
              --answered--> accepted --media up--> established
    incoming: connecting (offered to the browser) --answered by the browser--> accepted --media up--> established
    any state --> terminated (once, with a reason)

Once accepted, a call can be updated (re-INVITEs), one update at a time, beside its state:

    none --session-update (offer)--> local --update accepted / failed--> none
    none --the far end's re-INVITE (update received)--> remote --session-update (answer)--> none
    hold/unhold: a re-INVITE the backend builds itself; allowed when no update is under way

A remote offer the browser does not answer within UPDATE_ANSWER_WAIT ends the call: the far end's re-INVITE
cannot be left hanging, and the backend has no way to answer it without the browser. A transfer the browser asked
for ends the call once it has succeeded (RFC 5589), with the reason TRANSFERRED.

Requests change nothing but the backend's course; states change when the backend reports, and each is reported
to the browser once, in order (media reported up before the answer wait until it comes). Like accounts, calls
never make a request wait for SIP: failures arrive as `terminated` with a reason.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sylk.gateway import messages
from sylk.gateway.errors import APIError
from sylk.gateway.interfaces import ICallObserver, ISIPCall
from sylk.gateway.sip import Originator
from sylk.gateway.sylkrtc.model import (Event, IncomingSession, SessionDtmf, SessionHoldChanged, SessionMessage, SessionState,
                                       SessionStateChanged,
                                       SessionTransferProgress, SessionTransferRequest, SessionUpdated,
                                       TransferState, UpdateState)
from sylk.gateway.util import OneShotObserver, Timer

# How long a call may take to end after the gateway asked the backend to end it.
TERMINATE_TIMEOUT = 10.0
# Silence between DTMF tones sent one after the other, after each tone's own duration.
DTMF_GAP = 0.1
# How long the browser has to answer the far end's re-INVITE (`update` `received`) before the call is ended.
UPDATE_ANSWER_WAIT = 10.0
# How long the browser has to act on the far end's transfer request before it is refused (603) for it.
TRANSFER_DECISION_WAIT = 30.0
# DTMF tones a call keeps waiting to go out (the one going now included); a request that would exceed it is refused.
MAX_QUEUED_TONES = 64
# How a call ends once a transfer this side asked for has succeeded (RFC 5589: the transferor then hangs up).
TRANSFERRED = "Transferred"
# The far end's SDP read by offer_holds(): a larger one, or one of more lines, says nothing about hold.
MAX_SDP = 128 * 1024
MAX_SDP_LINES = 2000

# How a call ended whose backend went away (the start of its reason), and the classes of ends CallMetrics counts.
BACKEND_LOST = "SIP backend lost"
NORMAL, CANCELLED, FAILED, LOST = "normal", "cancelled", "failed", "backend-lost"

# How a call sends a MESSAGE: through its account, which bounds those awaiting their answer (APIError beyond).
MessageSender = Callable[[Callable[[], Deferred[tuple[int, str]]]], Deferred[tuple[int, str]]]

State = SessionState


# The phases of an outgoing call's setup that CallMetrics is told of, in order, and the states that reach them.
SETUP_PHASES = ("invite-sent", "provisional", "accepted", "established")
_SETUP_PHASE_OF = {State.PROGRESS: 0, State.PROCEEDING: 1, State.RINGING: 1, State.EARLY_MEDIA: 1, State.ACCEPTED: 2,
                   State.ESTABLISHED: 3}


class CallMetrics(Protocol):
    def call_setup_phase(self, phase: str, seconds: float) -> None:
        """An outgoing call reached this phase of SETUP_PHASES `seconds` after its session-create (once per phase;
        a phase the call skipped, such as a provisional response, is not reported)."""

    def call_ended(self, how: str) -> None:
        """A call ended: NORMAL, CANCELLED, FAILED or LOST."""

_EARLY = (State.PROGRESS, State.PROCEEDING, State.RINGING, State.EARLY_MEDIA)  # outgoing, before the answer


@implementer(ICallObserver)
class Call:
    log = Logger()

    def __init__(self, session_id: str, account: str, direction: str, notify: Callable[[Event], None],
                 clock: IReactorTime, on_terminated: Callable[[Call, str], None],
                 send_message: MessageSender, metrics: CallMetrics | None = None) -> None:
        self.id = session_id
        self.account = account
        self.direction = direction  # "outgoing" or "incoming"
        self.state = State.CONNECTING
        self.sip_call: ISIPCall | None = None
        self._notify = notify
        self._clock = clock
        self._on_terminated = on_terminated
        self._send_message = send_message
        self._metrics = metrics
        self._created_at = clock.seconds()  # an outgoing call's session-create
        self._setup_phase = -1  # the last of SETUP_PHASES reported
        self._answering = False
        self._terminating: IDelayedCall | None = None
        self._media_up = False
        self._rang = False
        self._early_sdp: str | None = None
        self._tones: list[tuple[str, int]] = []  # DTMF waiting to go out, the first one going now
        self._unanswered_messages: list[SessionMessage] = []  # whose outcome the browser has not been told yet
        self._update: str | None = None  # an update under way: "local" (our offer) or "remote" (theirs)
        self._remote_offer: SessionUpdated | None = None  # the far end's re-INVITE, while `remote`
        self._answer: dict[str, Any] = {}  # what the answer (or early media) brought: sdp, call_id, ...
        self._update_answer_wait = Timer(clock, self._timer_failed)  # the far end's offer awaits the browser's answer
        self._held_remotely = False
        self._transferring = False  # our transfer (REFER) is under way
        self._transferred = False  # our transfer succeeded: the call is ending, as TRANSFERRED
        self._transfer_request = Timer(clock, self._timer_failed)  # the far end's transfer request awaits the browser
        self._referring: ISIPCall | None = None  # the backend call that received it (kept after the call ends)
        self._transfer_request_open = False  # the backend holds the far end's transfer request: undecided or refusing
        self._ended = OneShotObserver()
        self._done = OneShotObserver()
        self.originator: Originator | None = None  # incoming calls: the caller
        self.offer: IncomingSession | None = None  # incoming calls: how the browser was told of it

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
        if len(self._tones) + len(tones) > MAX_QUEUED_TONES:
            raise APIError(f"Too many DTMF tones waiting in session {self.id} (at most {MAX_QUEUED_TONES}, "
                           f"{len(self._tones)} waiting)")
        idle = not self._tones
        self._tones.extend((tone, duration) for tone in tones)
        if idle:
            self._next_tone()

    def update(self, sdp: str) -> None:
        """The browser's new offer, or its answer to the far end's (after `update` `received`)."""
        self._check_in_call("updating")
        if self._update == "remote":
            self._update = None
            self._update_answer_wait.cancel()
            # refused, the far end's re-INVITE would hang unanswered (the backend can't answer it alone): end the call
            self._backend().answer_update(sdp).addErrback(self._backend_failed)
        elif self._update is None:
            self._update = "local"
            self._backend().update(sdp).addErrback(lambda f: self.call_update_failed(str(f.value)))
        else:
            raise APIError(f"Invalid state for updating session {self.id}: {self._shown_state()}")

    def hold(self, direction: str) -> None:
        self._check_in_call("holding", no_update=True)
        self._backend().hold(direction).addCallbacks(lambda _: self._held_locally(True), self._hold_failed)

    def unhold(self) -> None:
        self._check_in_call("unholding", no_update=True)
        self._backend().unhold().addCallbacks(lambda _: self._held_locally(False), self._hold_failed)

    def send_message(self, request: SessionMessage) -> None:
        """An instant message inside the call; its outcome comes as a disposition notification of the session."""
        self._check_in_call("sending a message in")
        backend = self._backend()
        self._unanswered_messages.append(request)
        self._send_message(lambda: backend.send_message(request.content_type, request.content)).addCallbacks(
            lambda answer: self._message_outcome(request, *answer),
            lambda failure: self._message_outcome(request, None, str(failure.value)))

    def transfer(self, uri: str, replace: Call | None) -> None:
        self._check_in_call("transferring")
        if self._transferring:
            raise APIError(f"A transfer of session {self.id} is already under way")
        if replace is not None and (replace is self or replace.state not in (State.ACCEPTED, State.ESTABLISHED)):
            raise APIError(f"Session {replace.id} cannot be replaced: {replace._shown_state()}")
        self._transferring = True
        replaced = replace._backend() if replace is not None else None
        self._backend().transfer(uri, replaced).addErrback(lambda f: self.call_transfer_progress(None,
                                                                                                str(f.value)))

    def reject_transfer(self, code: int) -> None:
        referring = self.pending_transfer_request()
        self._transfer_request.cancel()
        self._refuse_transfer_request(referring, code)

    def pending_transfer_request(self) -> ISIPCall:
        """The far end's pending transfer request (in the backend's call); APIError if there is none."""
        if not self._transfer_request.running or self._referring is None:
            raise APIError(f"No transfer request for session {self.id}")
        return self._referring

    def take_transfer_request(self) -> ISIPCall:
        """The far end's pending transfer request, for the new call that carries it out (and from then on holds
        it); it is no longer this call's after this."""
        referring = self.pending_transfer_request()
        self._transfer_request.cancel()
        self._transfer_request_open = False
        self._check_done()
        return referring

    def when_done(self) -> Deferred[None]:
        """Fires once the call is over and the backend holds nothing more of it: a transfer request of its far end
        (which outlives the call) has been taken by a new call or refused."""
        return self._done.when_fired()

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
            self._enter_early(State.PROCEEDING, code=code)  # once per provisional response

    def call_ringing(self) -> None:
        if self.state in _EARLY and not self._rang:
            self._rang = True
            self._enter_early(State.RINGING)

    def call_early_media(self, sdp: str) -> None:
        if self.state in _EARLY and self._early_sdp is None:
            self._early_sdp = sdp
            self._answer = dict(sdp=sdp, call_id=getattr(self.sip_call, "call_id", None))
            self._enter(State.EARLY_MEDIA, **self._answer)

    def call_accepted(self, sdp: str | None, headers: dict[str, str] | None = None) -> None:
        if self.state == State.CONNECTING or self.state in _EARLY:
            if self.direction == "outgoing":
                call_id = getattr(self.sip_call, "call_id", None)
                self._answer = dict(sdp=sdp, early_sdp=self._early_sdp, call_id=call_id, headers=headers or None)
                self._enter(State.ACCEPTED, **self._answer)
            else:
                self._enter(State.ACCEPTED)
            if self._media_up:
                self._enter(State.ESTABLISHED)

    def call_established(self) -> None:
        if self.state == State.ACCEPTED:
            self._enter(State.ESTABLISHED)
        elif self.state == State.CONNECTING or self.state in _EARLY:
            self._media_up = True  # early media: reported once the call is answered

    def call_update_received(self, sdp: str) -> None:
        if self.state not in (State.ACCEPTED, State.ESTABLISHED) or self._terminating:
            return
        if self._update == "local":  # both sides at once: the far end's goes on (Janus would not report ours)
            self.call_update_failed("The far end sent a re-INVITE of its own")
        self._update = "remote"
        self._remote_offer = SessionUpdated(session=self.id, state=UpdateState.RECEIVED, sdp=sdp)
        self._notify(self._remote_offer)
        held = offer_holds(sdp)
        if held is not None and held != self._held_remotely:
            self._held_remotely = held
            self._notify(SessionHoldChanged(session=self.id, held=held, originator="remote"))
        self._update_answer_wait.start(UPDATE_ANSWER_WAIT, self._update_unanswered)

    def call_update_accepted(self, sdp: str) -> None:
        if self._update == "local" and self.state != State.TERMINATED:
            self._update = None
            self._notify(SessionUpdated(session=self.id, state=UpdateState.ACCEPTED, sdp=sdp))

    def call_update_failed(self, reason: str) -> None:
        if self._update == "local" and self.state != State.TERMINATED:
            self._update = None
            self._notify(SessionUpdated(session=self.id, state=UpdateState.FAILED, reason=reason))

    def call_message(self, sender: Originator, content_type: str, content: str) -> None:
        if self.state != State.TERMINATED:
            event = messages.incoming_event(self.account, self.id, sender, content_type, content)
            if event is not None:
                self._notify(event)

    def call_transfer_progress(self, code: int | None, reason: str | None) -> None:
        if not self._transferring or self.state == State.TERMINATED:
            return
        if code is not None and (code < 200 or code in (401, 407)):  # the far end's call being authenticated
            state = TransferState.PROGRESS
        else:
            state = TransferState.COMPLETED if code is not None and code < 300 else TransferState.FAILED
            self._transferring = False
        self._notify(SessionTransferProgress(session=self.id, state=state, code=code, reason=reason))
        if state == TransferState.COMPLETED:
            # The far end now talks to the target: this call has done its job (RFC 5589 §6: the transferor hangs up).
            self._transferred = True
            self.end()

    def call_transfer_requested(self, refer_to: str, referred_by: str | None, replaces: bool) -> None:
        if self.state == State.TERMINATED:
            return
        self._referring = self.sip_call
        self._transfer_request_open = True
        self._transfer_request.start(TRANSFER_DECISION_WAIT, self._transfer_undecided)
        self._notify(SessionTransferRequest(session=self.id, refer_to=refer_to, referred_by=referred_by,
                                            replaces=replaces))

    def call_dtmf(self, tone: str, duration: int | None, method: str) -> None:
        if self.state != State.TERMINATED:
            self._notify(SessionDtmf(session=self.id, digit=tone, duration=duration, method=method))

    def call_terminated(self, reason: str) -> None:
        if self.state == State.TERMINATED:
            return
        self._tones.clear()
        self._update_answer_wait.cancel()
        # a transfer request outlives the call (a phone sends REFER and BYE at once): the browser may still take it
        if self._terminating is not None and self._terminating.active():
            self._terminating.cancel()
        if self._transferred:
            reason = TRANSFERRED  # whichever side's BYE came first
        for request in list(self._unanswered_messages):  # nothing about the call may come after its end
            self._message_outcome(request, None, "The call ended before the message was answered")
        if self._metrics is not None:
            self._metrics.call_ended(self._how_ended(reason))
        self._enter(State.TERMINATED, reason=reason)
        self.sip_call = None
        self._on_terminated(self, reason)
        self._ended.fire()
        self._check_done()

    # --- internals ---

    def _how_ended(self, reason: str) -> str:
        """LOST with the backend; NORMAL once answered; before that CANCELLED when either side gave up (this side
        ended it, or an incoming call's caller cancelled: 487), else FAILED (refused, unanswered, an error)."""
        if reason.startswith(BACKEND_LOST):
            return LOST
        if self.state in (State.ACCEPTED, State.ESTABLISHED):
            return NORMAL
        if self._terminating is not None or (self.direction == "incoming" and reason.startswith("487")):
            return CANCELLED
        return FAILED

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

    def _enter_early(self, state: str, **details: Any) -> None:
        """A provisional state; reported, but once in early media the call stays there (media flows, DTMF works)."""
        if self.state == State.EARLY_MEDIA:
            self._notify(SessionStateChanged(session=self.id, state=state, **details))
        else:
            self._enter(state, **details)

    def _enter(self, state: str, **details: Any) -> None:
        self.state = state
        self._notify(SessionStateChanged(session=self.id, state=state, **details))
        phase = _SETUP_PHASE_OF.get(state, -1)
        if phase > self._setup_phase and self.direction == "outgoing" and self._metrics is not None:
            self._setup_phase = phase
            self._metrics.call_setup_phase(SETUP_PHASES[phase], self._clock.seconds() - self._created_at)

    def shown_as(self) -> list[Event]:
        """The call's state as events, for a client that takes its connection over (connection-resume): its state
        with what the answer brought (SDP, Call-ID, headers), and the far end's re-INVITE if it awaits an answer;
        an incoming call still ringing is offered again; one that has no state yet, nothing."""
        if self.state == State.CONNECTING:
            return [self.offer] if self.offer is not None and not self._answering else []
        shown: list[Event] = [SessionStateChanged(session=self.id, state=self.state, **self._answer)]
        if self._update == "remote" and self._remote_offer is not None:
            shown.append(self._remote_offer)
        return shown

    def _shown_state(self) -> str:
        if self._terminating and self.state != State.TERMINATED:
            return "terminating"
        if self._update is not None and self.state != State.TERMINATED:
            return f"{self._update}-updating"
        return self.state

    def _check_in_call(self, action: str, no_update: bool = False) -> None:
        if self.state not in (State.ACCEPTED, State.ESTABLISHED) or self._terminating or \
                (no_update and self._update is not None):
            raise APIError(f"Invalid state for {action} session {self.id}: {self._shown_state()}")

    def _held_locally(self, held: bool) -> None:
        if self.state != State.TERMINATED:
            self._notify(SessionHoldChanged(session=self.id, held=held, originator="local"))

    def _hold_failed(self, failure: Failure) -> None:
        self.log.warn("Session {id}: hold/unhold refused: {error}", id=self.id, error=failure.value)
        if self.state != State.TERMINATED:
            self._notify(SessionUpdated(session=self.id, state=UpdateState.FAILED, reason=str(failure.value)))

    def _update_unanswered(self) -> None:
        if self._update == "remote" and self.state != State.TERMINATED:
            self.log.info("Session {id}: the browser did not answer the far end's re-INVITE", id=self.id)
            self._backend_failed(Failure(APIError(
                f"The browser did not answer the far end's update within {UPDATE_ANSWER_WAIT:g} s")))

    def _message_outcome(self, request: SessionMessage, code: int | None, reason: str) -> None:
        if request not in self._unanswered_messages:
            return  # reported as failed when the call ended
        self._unanswered_messages.remove(request)
        self._notify(messages.outcome_event(self.account, self.id, request.message_id, request.timestamp, code,
                                            reason))

    def _transfer_undecided(self) -> None:
        if self._referring is not None:
            self.log.info("Session {id}: the browser did not act on the transfer request; refusing it", id=self.id)
            self._refuse_transfer_request(self._referring, 603)

    def _refuse_transfer_request(self, referring: ISIPCall, code: int) -> None:
        refused = referring.reject_transfer(code)
        refused.addErrback(self._transfer_reject_failed)
        refused.addBoth(self._transfer_request_closed)

    def _transfer_reject_failed(self, failure: Failure) -> None:
        self.log.warn("Session {id}: refusing the transfer request failed: {error}", id=self.id, error=failure.value)

    def _transfer_request_closed(self, _: object) -> None:
        if not self._transfer_request.running:  # not replaced by a newer one meanwhile
            self._transfer_request_open = False
            self._check_done()

    def _check_done(self) -> None:
        if self.state == State.TERMINATED and not self._transfer_request_open:
            self._done.fire()

    def _backend(self) -> ISIPCall:
        assert self.sip_call is not None, "a call that is not terminated has its backend call"
        return self.sip_call

    def _timer_failed(self) -> None:
        self._backend_failed(Failure(APIError("Internal error in the call's timers")))

    def _backend_failed(self, failure: Failure) -> None:
        self.log.warn("Session {id}: {error}", id=self.id, error=failure.value)
        sip_call = self.sip_call
        if sip_call is not None:
            self.call_terminated(str(failure.value))
            sip_call.terminate()  # whatever is left of it in the backend


def offer_holds(sdp: str) -> bool | None:
    """Whether an SDP offer puts the call on hold: each of its active media streams only sends, or is inactive
    (RFC 3264 §8.4; the direction of a stream defaults to the session's, which defaults to sendrecv). None when the
    SDP is beyond MAX_SDP or MAX_SDP_LINES: it says nothing then. Total on any text, in time linear in its size."""
    if len(sdp) > MAX_SDP:
        return None
    lines = sdp.splitlines()
    if len(lines) > MAX_SDP_LINES:
        return None
    session_direction = "sendrecv"
    directions: list[str] = []
    for line in lines:
        if line.startswith("m="):
            parts = line.split()
            directions.append("off" if len(parts) > 1 and parts[1] == "0" else "")
        elif line[2:] in ("sendrecv", "sendonly", "recvonly", "inactive") and line.startswith("a="):
            if directions:
                if directions[-1] != "off":
                    directions[-1] = line[2:]
            else:
                session_direction = line[2:]
    active = [direction or session_direction for direction in directions if direction != "off"]
    return bool(active) and all(direction in ("sendonly", "inactive") for direction in active)
